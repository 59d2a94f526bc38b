//! The pull API: generation one token per call.

use std::ffi::{c_char, CString};
use std::sync::Mutex;

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::params::{generate_params, lmx_generate_params};
use super::session::{lmx_session, session_ref, LastResult};
use super::text::{extra_vars, lmx_message, messages};
use crate::engine::{FinishReason, Generation};
use crate::{Error, ErrorKind, Result};

/// A generation in progress, pulled one token at a time with lmx_stream_next() (opaque).
/// While it exists its session is busy. Use it from one thread at a time (it may move between
/// threads); lmx_session_cancel() on its session may come from any thread.
pub struct lmx_stream {
    inner: Mutex<Pull>,
}
handle_type!(lmx_stream);

struct Pull {
    gen: Generation,
    last: LastResult,
    text: CString,
    recorded: bool,
}

impl lmx_stream {
    /// The stream's state; BUSY while another thread is inside a call on it.
    fn pull(&self) -> Result<std::sync::MutexGuard<'_, Pull>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                Err(Error::new(ErrorKind::Busy, "another thread is calling lmx_stream_next on this stream"))
            }
        }
    }
}

impl Pull {
    fn record(&mut self) {
        if !self.recorded {
            if let Some(f) = self.gen.finish_reason() {
                let o = self.gen.output();
                let message = super::message::message_json(&o);
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(super::session::Last { finish: f, metrics: o.metrics, message });
                self.recorded = true;
            }
        }
    }
}

fn start(
    s: &lmx_session,
    prompt: Vec<u32>,
    params: *const lmx_generate_params,
    stream_out: *mut *mut lmx_stream,
) -> Result<()> {
    let o = out(stream_out, "stream_out")?;
    let p = generate_params(params)?;
    let gen = s.session.start(&prompt, &p)?;
    o.set(into_handle(lmx_stream {
        inner: Mutex::new(Pull { gen, last: s.last.clone(), text: CString::default(), recorded: false }),
    }));
    Ok(())
}

/// Starts generating after the text `prompt` and writes a stream to `*stream_out` (not NULL);
/// pull tokens with lmx_stream_next(), then free it with lmx_stream_free(). `params` may be
/// NULL. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT, LMX_STATUS_BUSY (the session is
/// generating) or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_session_stream(
    session: *mut lmx_session,
    prompt: *const c_char,
    params: *const lmx_generate_params,
    stream_out: *mut *mut lmx_stream,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let ids = s.session.text_tokens(str_arg(prompt, "prompt")?)?;
        start(&s, ids, params, stream_out)
    })
}

/// As lmx_session_stream() with the prompt given as `n` token ids.
#[no_mangle]
pub extern "C" fn lmx_session_stream_tokens(
    session: *mut lmx_session,
    tokens: *const i32,
    n: usize,
    params: *const lmx_generate_params,
    stream_out: *mut *mut lmx_stream,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let ids = super::params::token_ids(tokens, n, "tokens")?;
        start(&s, ids, params, stream_out)
    })
}

/// As lmx_session_stream() for a chat (see lmx_session_chat()).
#[no_mangle]
pub extern "C" fn lmx_session_stream_chat(
    session: *mut lmx_session,
    messages_in: *const lmx_message,
    n: usize,
    extra_json: *const c_char,
    params: *const lmx_generate_params,
    stream_out: *mut *mut lmx_stream,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let p = generate_params(params)?;
        let ids = s.session.chat_tokens(
            &messages(messages_in, n)?,
            p.tools.as_deref(),
            &extra_vars(extra_json)?,
            p.cancel.as_ref(),
        )?;
        start(&s, ids, params, stream_out)
    })
}

/// Computes the next piece. On LMX_OK with `*done_out` false, `*token_out` is the token id (-1
/// for a last piece of text released at the end), `*text_out`/`*len_out` its text (UTF-8,
/// NUL-terminated, owned by the stream, valid until the next call on it; may be empty). With
/// `*done_out` true the generation has ended and nothing else is written; the session's
/// lmx_session_last_result() tells how. All out pointers must be non-NULL. Returns LMX_OK;
/// LMX_STATUS_CANCELLED (done: lmx_session_cancel() stopped it); LMX_STATUS_FORMAT (done:
/// the model's output is NaN or infinite, corrupt or overflowing weights); LMX_STATUS_MLX or
/// another error (done).
#[no_mangle]
pub extern "C" fn lmx_stream_next(
    stream: *mut lmx_stream,
    token_out: *mut i32,
    text_out: *mut *const c_char,
    len_out: *mut usize,
    done_out: *mut bool,
) -> lmx_status {
    status(|| {
        let handle = handle_ref(stream, "stream")?;
        let mut st = handle.pull()?;
        let (tok, txt, len, done) = (
            out(token_out, "token_out")?,
            out(text_out, "text_out")?,
            out(len_out, "len_out")?,
            out(done_out, "done_out")?,
        );
        let r = st.gen.next();
        st.record();
        match r {
            Ok(Some(ev)) => {
                st.text = CString::new(ev.text.replace('\0', "")).unwrap_or_default();
                tok.set(ev.id.map(|i| i as i32).unwrap_or(-1));
                txt.set(st.text.as_ptr());
                len.set(st.text.as_bytes().len());
                done.set(false);
                Ok(())
            }
            Ok(None) => {
                done.set(true);
                if st.gen.finish_reason() == Some(FinishReason::Cancelled) {
                    return Err(Error::cancelled());
                }
                Ok(())
            }
            Err(e) => {
                done.set(true);
                Err(e)
            }
        }
    })
}

/// Ends the stream (NULL accepted): a generation still running stops (finish reason
/// LMX_FINISH_CANCELLED) and the session can generate again, its cache holding what was
/// computed. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_stream_free(stream: *mut lmx_stream) -> lmx_status {
    status(|| {
        if let Some(h) = take_handle(stream, "stream")? {
            // Waits for a call still inside lmx_stream_next on another thread, then ends the
            // generation.
            let mut st = h.inner.lock().unwrap_or_else(|p| p.into_inner());
            st.gen.stop();
            st.record();
        }
        Ok(())
    })
}
