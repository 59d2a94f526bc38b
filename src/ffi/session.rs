//! Sessions: generation with a KV cache kept across calls.

use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex};

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle_if};
use super::lmx_status;
use super::model::{lmx_model, model_ref};
use super::params::{generate_params, lmx_generate_params, token_ids};
use super::result::{lmx_finish_reason, lmx_metrics, write_metrics};
use super::text::{extra_vars, lmx_message, messages};
use crate::engine::{Event, FinishReason, Metrics, Session};
use crate::{Error, ErrorKind, Result};

/// The outcome of the last finished generation of a session: how it ended, its metrics and
/// its assistant message as JSON (see lmx_session_last_message()).
pub(crate) struct Last {
    pub finish: FinishReason,
    pub metrics: Metrics,
    pub message: String,
}

pub(crate) type LastResult = Arc<Mutex<Option<Last>>>;

/// A generation session on a model (opaque). Keeps its KV cache between calls. One generation
/// at a time per session (another call meanwhile gets LMX_STATUS_BUSY); separate sessions may
/// generate from separate threads at once. lmx_session_cancel() may be called from any thread.
pub struct lmx_session {
    pub(crate) session: Arc<Session>,
    pub(crate) last: LastResult,
}
handle_type!(lmx_session);

pub(crate) fn session_ref(p: *const lmx_session) -> Result<Arc<lmx_session>> {
    handle_ref(p, "session")
}

/// Called for each generated piece: the token id (-1 for a last piece of text released when
/// generation ends without a token of its own), its text (UTF-8, NUL-terminated, `len` bytes,
/// valid only during the call; may be empty while a multi-token character or a possible stop
/// string is held back) and `user_data`. Return 0 to go on, non-zero to stop (the call then
/// returns LMX_OK with finish reason LMX_FINISH_CANCELLED). Runs on the calling thread.
pub type lmx_token_callback =
    Option<extern "C" fn(token: i32, text: *const c_char, len: usize, user_data: *mut c_void) -> i32>;

/// Creates a session on `model` and writes it to `*session_out` (not NULL); free it with
/// lmx_session_free(). The session keeps the model's weights alive even if the model handle is
/// freed first. Thread-safe. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_session_create(
    model: *const lmx_model,
    session_out: *mut *mut lmx_session,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(session_out, "session_out")?;
        let session = Arc::new(Session::new(m)?);
        o.set(into_handle(lmx_session { session, last: Arc::new(Mutex::new(None)) }));
        Ok(())
    })
}

/// Frees a session (NULL accepted). Returns LMX_OK; LMX_STATUS_BUSY (nothing freed) while a
/// generation or an lmx_stream runs on it; LMX_STATUS_INVALID_ARGUMENT for a pointer that is
/// not a live session. Must not race with another call on the same session.
#[no_mangle]
pub extern "C" fn lmx_session_free(session: *mut lmx_session) -> lmx_status {
    status(|| {
        let freed = take_handle_if(session, "session", |s| {
            if s.session.cached_tokens().is_err() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "the session is generating; cancel it or free its stream first",
                ));
            }
            Ok(())
        })?;
        drop(freed);
        Ok(())
    })
}

/// Empties the session's KV cache. Returns LMX_OK, LMX_STATUS_BUSY or
/// LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_session_reset(session: *mut lmx_session) -> lmx_status {
    status(|| session_ref(session)?.session.reset())
}

/// Asks the session's running generation to stop after the current prefill chunk or token;
/// the generate call then returns LMX_STATUS_CANCELLED. With no generation running it does
/// nothing (a later generation is not affected). Callable from any thread at any time,
/// including from a token callback. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_session_cancel(session: *const lmx_session) -> lmx_status {
    status(|| {
        session_ref(session)?.session.cancel();
        Ok(())
    })
}

/// Writes how the session's last finished generation ended to `*finish_out` (may be NULL)
/// and its metrics to `*metrics_out` (may be NULL; struct_size set). LMX_FINISH_NONE and zero
/// metrics before any generation finished. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT
/// (a bad handle or metrics struct_size; nothing is written then).
#[no_mangle]
pub extern "C" fn lmx_session_last_result(
    session: *const lmx_session,
    finish_out: *mut lmx_finish_reason,
    metrics_out: *mut lmx_metrics,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let last =
            s.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|l| (l.finish, l.metrics.clone()));
        let (finish, metrics) = match last {
            Some((f, m)) => (lmx_finish_reason::from(f), m),
            None => (lmx_finish_reason::LMX_FINISH_NONE, Metrics::default()),
        };
        if !metrics_out.is_null() {
            write_metrics(metrics_out, &metrics)?;
        }
        super::boundary::write_opt(finish_out, finish);
        Ok(())
    })
}

/// Runs a generation through the callback and records its result.
fn run(
    s: &lmx_session,
    prompt: Vec<u32>,
    params: *const lmx_generate_params,
    cb: lmx_token_callback,
    user_data: *mut c_void,
) -> Result<()> {
    let p = generate_params(params)?;
    let session = s.session.clone();
    let mut caller_stopped = false;
    let on_token = |ev: &Event| -> bool {
        let Some(f) = cb else { return true };
        // Generated text holds no NUL bytes; drop any so the C string is the whole piece.
        let text = CString::new(ev.text.replace('\0', "")).unwrap_or_default();
        let id = ev.id.map(|i| i as i32).unwrap_or(-1);
        let go_on = f(id, text.as_ptr(), text.as_bytes().len(), user_data) == 0;
        caller_stopped |= !go_on;
        go_on
    };
    let result = session.generate(&prompt, &p, on_token);
    let mut last = s.last.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(o) => {
            let message = super::message::message_json(&o);
            *last = Some(Last { finish: o.finish, metrics: o.metrics.clone(), message });
            if o.finish == FinishReason::Cancelled && !caller_stopped {
                return Err(Error::cancelled());
            }
            Ok(())
        }
        Err(e) => {
            if e.kind != ErrorKind::Busy {
                *last = Some(Last {
                    finish: FinishReason::Error,
                    metrics: Metrics::default(),
                    message: String::new(),
                });
            }
            Err(e)
        }
    }
}

/// Generates after the text `prompt` (NUL-terminated UTF-8, tokenized with the model's special
/// tokens), reusing the session's cache where the prompt extends what it holds. Each piece goes
/// to `callback` (may be NULL). `params` may be NULL (defaults). Blocks until done. Afterwards
/// lmx_session_last_result() gives the finish reason and metrics. Returns LMX_OK (finished:
/// stop, length, or the callback stopped it); LMX_STATUS_CANCELLED (lmx_session_cancel());
/// LMX_STATUS_INVALID_ARGUMENT (NULL, invalid UTF-8, bad params, a prompt that does not fit the
/// context); LMX_STATUS_BUSY (the session is generating); LMX_STATUS_FORMAT (the model's
/// output is NaN or infinite: corrupt or overflowing weights; no token is chosen from it);
/// LMX_STATUS_MLX / LMX_STATUS_OUT_OF_MEMORY. After a FORMAT, MLX or OUT_OF_MEMORY error the
/// session's cache is reset.
#[no_mangle]
pub extern "C" fn lmx_session_generate(
    session: *mut lmx_session,
    prompt: *const c_char,
    params: *const lmx_generate_params,
    callback: lmx_token_callback,
    user_data: *mut c_void,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let text = str_arg(prompt, "prompt")?;
        let ids = s.session.text_tokens(text)?;
        run(&s, ids, params, callback, user_data)
    })
}

/// As lmx_session_generate() with the prompt given as `n` token ids.
#[no_mangle]
pub extern "C" fn lmx_session_generate_tokens(
    session: *mut lmx_session,
    tokens: *const i32,
    n: usize,
    params: *const lmx_generate_params,
    callback: lmx_token_callback,
    user_data: *mut c_void,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let ids = token_ids(tokens, n, "tokens")?;
        run(&s, ids, params, callback, user_data)
    })
}

/// As lmx_session_generate() with the prompt made from `n` chat messages by the model's chat
/// template, with the generation prompt added; `extra_json` (may be NULL) holds extra template
/// variables as a JSON object. For a multi-turn chat pass the whole conversation each time:
/// only the tokens the cache does not hold are computed. lmx_session_cancel() and
/// params->cancel also stop the template while it renders (checked every few milliseconds).
/// Returns as lmx_session_generate(), and LMX_STATUS_INVALID_ARGUMENT for an unknown role or
/// bad JSON.
#[no_mangle]
pub extern "C" fn lmx_session_chat(
    session: *mut lmx_session,
    messages_in: *const lmx_message,
    n: usize,
    extra_json: *const c_char,
    params: *const lmx_generate_params,
    callback: lmx_token_callback,
    user_data: *mut c_void,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let msgs = messages(messages_in, n)?;
        let p = generate_params(params)?;
        let ids =
            s.session.chat_tokens(&msgs, p.tools.as_deref(), &extra_vars(extra_json)?, p.cancel.as_ref())?;
        run(&s, ids, params, callback, user_data)
    })
}
