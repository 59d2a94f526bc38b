//! Tokens and text: tokenize, detokenize, and the chat template. Variable-length results use
//! size-then-fill: the needed size is always written; the data only when it fits.

use std::ffi::c_char;

use super::boundary::{out, status, str_arg};
use super::lmx_status;
use super::model::{lmx_model, model_ref};
use super::params::{slice, token_ids};
use super::sized::{c_struct, read_array, AnyBits};
use crate::model::Message;
use crate::{Error, Result};

/// A chat message: role ("system", "user", "assistant" or "tool") and content, both
/// NUL-terminated UTF-8, borrowed for the call. Set struct_size to sizeof(lmx_message) in
/// every element of an array (liblmx steps through the array by it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_message {
    pub struct_size: usize,
    pub role: *const c_char,
    pub content: *const c_char,
    /// An assistant message's tool calls: a JSON array as OpenAI writes them
    /// ([{"id": ..., "type": "function", "function": {"name": ..., "arguments": {...} or
    /// "<JSON text>"}}]); NULL: none.
    pub tool_calls_json: *const c_char,
    /// A tool message: the id of the call it answers; NULL: none.
    pub tool_call_id: *const c_char,
    /// A tool message: the tool's name; NULL: none.
    pub name: *const c_char,
}

c_struct!(lmx_message { struct_size, role, content, tool_calls_json, tool_call_id, name });
// SAFETY: only integers, floats and raw pointers (the layout test lists every field).
unsafe impl AnyBits for lmx_message {}

/// UTF-8 text given as a pointer and a length (no NUL needed).
pub(crate) fn text_arg<'a>(p: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    let bytes = slice(p as *const u8, len, name)?;
    std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("{name} is not valid UTF-8 (byte {})", e.valid_up_to())))
}

pub(crate) fn messages(p: *const lmx_message, n: usize) -> Result<Vec<Message>> {
    let none = lmx_message {
        struct_size: std::mem::size_of::<lmx_message>(),
        role: std::ptr::null(),
        content: std::ptr::null(),
        tool_calls_json: std::ptr::null(),
        tool_call_id: std::ptr::null(),
        name: std::ptr::null(),
    };
    let opt = |p: *const c_char, name: String| -> Result<Option<String>> {
        if p.is_null() {
            Ok(None)
        } else {
            str_arg(p, &name).map(|s| Some(s.to_string()))
        }
    };
    read_array(p, n, "messages", none)?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let tool_calls = match opt(m.tool_calls_json, format!("messages[{i}].tool_calls_json"))? {
                None => Vec::new(),
                Some(text) => {
                    tool_calls(&text).map_err(|e| e.context(format!("messages[{i}].tool_calls_json")))?
                }
            };
            Ok(Message {
                role: str_arg(m.role, &format!("messages[{i}].role"))?.to_string(),
                content: str_arg(m.content, &format!("messages[{i}].content"))?.to_string(),
                tool_calls,
                tool_call_id: opt(m.tool_call_id, format!("messages[{i}].tool_call_id"))?,
                name: opt(m.name, format!("messages[{i}].name"))?,
            })
        })
        .collect()
}

/// Tool calls from a JSON array (OpenAI's or Hugging Face's shapes).
fn tool_calls(text: &str) -> Result<Vec<crate::model::ToolCall>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("not valid JSON: {e}")))?;
    let arr = v.as_array().ok_or_else(|| Error::invalid("not a JSON array of calls"))?;
    arr.iter()
        .enumerate()
        .map(|(j, c)| {
            crate::model::ToolCall::from_json(c).map_err(|e| Error::invalid(format!("call {j}: {e}")))
        })
        .collect()
}

/// Template variables given as a JSON object (NULL: none).
pub(crate) fn extra_vars(p: *const c_char) -> Result<serde_json::Map<String, serde_json::Value>> {
    if p.is_null() {
        return Ok(Default::default());
    }
    let s = str_arg(p, "extra_json")?;
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid("extra_json must be a JSON object")),
        Err(e) => Err(Error::invalid(format!("extra_json is not valid JSON: {e}"))),
    }
}

/// Writes `s` and a NUL to `buf` when `capacity` > its length; always writes the length.
pub(crate) fn fill_text(s: &str, buf: *mut c_char, capacity: usize, len_out: *mut usize) -> Result<()> {
    let len = out(len_out, "len_out")?;
    if capacity > 0 && buf.is_null() {
        return Err(Error::invalid(format!("buf is NULL but capacity is {capacity}")));
    }
    len.set(s.len());
    if capacity > s.len() {
        // SAFETY: the caller promises `capacity` writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf as *mut u8, s.len());
            *buf.add(s.len()) = 0;
        }
    }
    Ok(())
}

/// Tokenizes `text` (`len` bytes of UTF-8; not NUL-terminated necessarily). With
/// `add_special`, special tokens are added as the model's tokenizer says (BOS where it uses
/// one). Writes the token count to `*n_out` (not NULL) and, when `capacity` >= that count, the
/// ids to `tokens`. Call with capacity 0 to size the buffer. Thread-safe. Returns LMX_OK or
/// LMX_STATUS_INVALID_ARGUMENT (NULL, invalid UTF-8).
#[no_mangle]
pub extern "C" fn lmx_tokenize(
    model: *const lmx_model,
    text: *const c_char,
    len: usize,
    add_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_out: *mut usize,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let text = text_arg(text, len, "text")?;
        let n = out(n_out, "n_out")?;
        if capacity > 0 && tokens.is_null() {
            return Err(Error::invalid(format!("tokens is NULL but capacity is {capacity}")));
        }
        let ids = m.encode(text, add_special)?;
        n.set(ids.len());
        if capacity >= ids.len() {
            for (i, &id) in ids.iter().enumerate() {
                // SAFETY: the caller promises `capacity` writable ids.
                unsafe { std::ptr::write_unaligned(tokens.add(i), id as i32) };
            }
        }
        Ok(())
    })
}

/// Turns `n` token ids into UTF-8 text. Writes the text's length (without NUL) to `*len_out`
/// (not NULL) and, when `capacity` > that length, the text and a NUL to `buf`. Thread-safe.
/// Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT (NULL, an id outside the vocabulary).
#[no_mangle]
pub extern "C" fn lmx_detokenize(
    model: *const lmx_model,
    tokens: *const i32,
    n: usize,
    skip_special: bool,
    buf: *mut c_char,
    capacity: usize,
    len_out: *mut usize,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let ids = token_ids(tokens, n, "tokens")?;
        let text = m.decode(&ids, skip_special)?;
        fill_text(&text, buf, capacity, len_out)
    })
}

/// Renders `n` messages with the model's chat template (its own, or a built-in one; see
/// lmx_model_desc.chat_template). `extra_json` (may be NULL) is a JSON object of extra template
/// variables, for example {"enable_thinking": false}. Size-then-fill like lmx_detokenize().
/// Thread-safe. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT (NULL, invalid UTF-8, unknown
/// role, bad JSON, or an error the template raises).
#[no_mangle]
pub extern "C" fn lmx_chat_apply_template(
    model: *const lmx_model,
    messages_in: *const lmx_message,
    n: usize,
    add_generation_prompt: bool,
    extra_json: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    len_out: *mut usize,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let msgs = messages(messages_in, n)?;
        let extra = extra_vars(extra_json)?;
        let text = m.render_chat(&msgs, add_generation_prompt, None, &extra, None)?;
        fill_text(&text, buf, capacity, len_out)
    })
}
