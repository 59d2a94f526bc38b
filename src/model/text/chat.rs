//! Chat templates: the model's own Jinja template rendered with minijinja, or a built-in
//! template for the architecture when the checkpoint has none.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind as JErr, Value};
use serde::{Deserialize, Serialize};

use super::tools::{ToolCall, Tools};
use crate::model::config::Config;
use crate::{Error, Result};

/// One chat message. In JSON (and in a template's context) it has the form Hugging Face
/// transformers gives templates, with only the keys that are set: an assistant message
/// `{"role", "content", "tool_calls": [{"id", "type": "function", "function": {"name",
/// "arguments"}}]}`, a tool's result `{"role": "tool", "content", "tool_call_id", "name"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// The calls an assistant message makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a tool's result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a tool's result: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into(), ..Default::default() }
    }

    /// An assistant message making `calls` (after `content`, which may be empty).
    pub fn assistant_calls(content: &str, calls: Vec<ToolCall>) -> Message {
        Message { tool_calls: calls, ..Message::new("assistant", content) }
    }

    /// A tool's result, answering call `id` of tool `name`.
    pub fn tool_result(content: &str, id: Option<&str>, name: Option<&str>) -> Message {
        Message {
            tool_call_id: id.map(str::to_string),
            name: name.map(str::to_string),
            ..Message::new("tool", content)
        }
    }
}

/// The roles a message may have.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// Where the template came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `chat_template` in tokenizer_config.json.
    TokenizerConfig,
    /// `chat_template.jinja` in the model folder.
    JinjaFile,
    /// `tokenizer.chat_template` in a GGUF file's metadata.
    Gguf,
    /// liblmx's own template for the architecture ("chatml", "llama3", "gemma").
    Builtin(&'static str),
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateSource::TokenizerConfig => f.write_str("tokenizer_config.json"),
            TemplateSource::JinjaFile => f.write_str("chat_template.jinja"),
            TemplateSource::Gguf => f.write_str("gguf:tokenizer.chat_template"),
            TemplateSource::Builtin(name) => write!(f, "builtin:{name}"),
        }
    }
}

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const LLAMA3: &str = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const GEMMA: &str = "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = m.content + '\n\n' %}{% else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{% if loop.index0 == 1 or (loop.first and m.role != 'system') %}{{ ns.system }}{% set ns.system = '' %}{% endif %}{{ m.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// A model's chat template.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: TemplateSource,
    text: String,
}

/// Template instructions one rendering may run (minijinja's fuel): a chat template renders a
/// conversation of thousands of messages in well under a million; a template that loops
/// without end (or for 10^10 steps) stops here, in about a second, with an error.
pub const TEMPLATE_FUEL: u64 = 50_000_000;

/// The longest rendered chat, in bytes (far beyond any context length in tokens).
pub const TEMPLATE_OUTPUT_MAX: usize = 16 << 20;

/// The longest a rendering may take.
pub const TEMPLATE_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Collects a rendering's output, refusing past [`TEMPLATE_OUTPUT_MAX`] bytes or
/// [`TEMPLATE_TIME_MAX`]. Refusing a write ends the rendering.
struct Bounded<'a> {
    out: Vec<u8>,
    deadline: std::time::Instant,
    /// Why a write was refused.
    refused: Option<String>,
    /// Set when nobody waits for the result any more (a cancelled rendering).
    abandoned: Option<&'a AtomicBool>,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.abandoned.is_some_and(|a| a.load(Ordering::Relaxed)) {
            self.refused = Some("cancelled".into());
        } else if self.out.len() + buf.len() > TEMPLATE_OUTPUT_MAX {
            self.refused = Some(format!("the rendered chat exceeds {} MiB", TEMPLATE_OUTPUT_MAX >> 20));
        } else if std::time::Instant::now() > self.deadline {
            self.refused = Some(format!("rendering took more than {} s", TEMPLATE_TIME_MAX.as_secs()));
        }
        if let Some(why) = &self.refused {
            return Err(std::io::Error::other(why.clone()));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    // As transformers renders chat templates.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // Python's: None is not iterable (minijinja's test says it is), so `tools is iterable`
    // is false when no tools are given.
    env.add_test("iterable", |v: Value| !v.is_none() && v.try_iter().is_ok());
    env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(JErr::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> std::result::Result<String, minijinja::Error> {
        Ok(strftime_now(&fmt))
    });
    // JSON as transformers' tojson writes it (Python's json.dumps: no HTML escaping, keys in
    // their order, ", " and ": " between items), with its indent, separators, sort_keys and
    // ensure_ascii options.
    env.add_filter(
        "tojson",
        |v: Value, indent: Option<Value>, kwargs: Kwargs| -> std::result::Result<String, minijinja::Error> {
            let bad = |e: String| minijinja::Error::new(JErr::InvalidOperation, e);
            let j = serde_json::to_value(&v).map_err(|e| bad(e.to_string()))?;
            let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
                None => None,
                Some(i) if i.is_none() => None,
                Some(i) => match i.as_str() {
                    Some(s) => Some(s.to_string()),
                    None => Some(" ".repeat(usize::try_from(i).map_err(|e| bad(e.to_string()))?)),
                },
            };
            let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
                Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
                Some(_) => return Err(bad("tojson: separators must be two strings".into())),
                None if indent.is_some() => (",".into(), ": ".into()),
                None => (", ".into(), ": ".into()),
            };
            let fmt = PyJson {
                indent,
                item_sep,
                key_sep,
                sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
                ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
            };
            kwargs.assert_all_used()?;
            let mut out = String::new();
            fmt.write(&j, 0, &mut out);
            Ok(out)
        },
    );
    env
}

/// Python's `json.dumps` layout.
struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn write(&self, v: &serde_json::Value, level: usize, out: &mut String) {
        use serde_json::Value as J;
        let (open, close, items): (char, char, Vec<(Option<&String>, &J)>) = match v {
            J::Array(a) => ('[', ']', a.iter().map(|x| (None, x)).collect()),
            J::Object(o) => {
                let mut kv: Vec<(Option<&String>, &J)> = o.iter().map(|(k, x)| (Some(k), x)).collect();
                if self.sort_keys {
                    kv.sort_by(|a, b| a.0.cmp(&b.0));
                }
                ('{', '}', kv)
            }
            J::String(s) => return self.string(s, out),
            other => return out.push_str(&other.to_string()),
        };
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return;
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(ind) = &self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(ind);
                }
            }
        };
        for (i, (k, x)) in items.into_iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            newline(out, level + 1);
            if let Some(k) = k {
                self.string(k, out);
                out.push_str(&self.key_sep);
            }
            self.write(x, level + 1, out);
        }
        newline(out, level);
        out.push(close);
    }

    fn string(&self, s: &str, out: &mut String) {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        if !self.ensure_ascii {
            return out.push_str(&quoted);
        }
        for c in quoted.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
}

/// The local time formatted with C strftime, for templates that print today's date.
fn strftime_now(fmt: &str) -> String {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else { return String::new() };
    let mut buf = [0u8; 256];
    // SAFETY: time/localtime_r/strftime with valid buffers.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// The model's own template text and where it came from: `chat_template` in
/// tokenizer_config.json (a string, or from a list of named templates the one named
/// "default"), else `chat_template.jinja` in `dir`; None when the model has none. The one
/// place a model's template is read: the tokenizer takes its end-of-turn markers from it and
/// [`ChatTemplate::own_or_builtin`] renders it.
pub fn own_template(dir: &Path, tok_cfg: Option<&Config>) -> Result<Option<(TemplateSource, String)>> {
    if let Some(tc) = tok_cfg {
        let text = match tc.get("chat_template") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            Some(_) => {
                return Err(Error::format(format!(
                    "{}: chat_template: expected a string or a list of named templates",
                    tc.path.display()
                )))
            }
        };
        if let Some(t) = text {
            return Ok(Some((TemplateSource::TokenizerConfig, t)));
        }
    }
    let p = dir.join("chat_template.jinja");
    if crate::files::present(&p) {
        let text = crate::files::read_text(&p, crate::files::TEMPLATE_FILE_MAX)?;
        return Ok(Some((TemplateSource::JinjaFile, text)));
    }
    Ok(None)
}

impl ChatTemplate {
    /// The model's own template (from [`own_template`] or a GGUF file), checked; else the
    /// built-in one for `arch`, `has_token` telling which suits the vocabulary.
    pub fn own_or_builtin(
        own: Option<(TemplateSource, String)>,
        arch: &str,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<ChatTemplate> {
        match own {
            Some((source, text)) => ChatTemplate::from_text(source, text),
            None => Ok(ChatTemplate::builtin(arch, has_token)),
        }
    }

    /// liblmx's own template for a model without one: Gemma's, Llama 3's or ChatML, by the
    /// architecture and the tokens the vocabulary has.
    pub fn builtin(arch: &str, has_token: impl Fn(&str) -> bool) -> ChatTemplate {
        let (name, text) = if arch == "gemma3" || has_token("<start_of_turn>") {
            ("gemma", GEMMA)
        } else if has_token("<|start_header_id|>") {
            ("llama3", LLAMA3)
        } else {
            ("chatml", CHATML)
        };
        ChatTemplate { source: TemplateSource::Builtin(name), text: text.to_string() }
    }

    /// The template `text` from `source`, parsed once now so that a broken template fails at
    /// load, naming where it came from.
    pub fn from_text(source: TemplateSource, text: String) -> Result<ChatTemplate> {
        if text.len() as u64 > crate::files::TEMPLATE_FILE_MAX {
            return Err(Error::format(format!(
                "chat template from {source}: {} bytes is more than the {} allowed",
                text.len(),
                crate::files::TEMPLATE_FILE_MAX
            )));
        }
        environment()
            .template_from_str(&text)
            .map_err(|e| Error::format(format!("chat template from {source}: {e}")))?;
        Ok(ChatTemplate { source, text })
    }

    /// Where the template came from.
    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    /// The template's Jinja text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Renders `messages`, offering `tools` (the template's `tools` variable; none: null, as
    /// transformers passes it). `extra` adds variables (for example `enable_thinking`); it may
    /// not replace `messages` or `add_generation_prompt` (nor `tools` when `tools` is given).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&Tools>,
        extra: &serde_json::Map<String, serde_json::Value>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let ctx = context(messages, add_generation_prompt, tools, extra, bos_token, eos_token)?;
        render_ctx(&self.source, &self.text, ctx, None)
    }

    /// As [`render`](Self::render), stopping when `stop` says so: the template runs on a
    /// thread of its own while the calling thread checks `stop` every [`STOP_POLL`], so a
    /// cancellation is seen within that, not when the template's instruction budget runs out.
    /// Cancelled, the call returns a `Cancelled` error at once; the abandoned rendering ends by
    /// itself at its next output or its budget (its result is dropped).
    #[allow(clippy::too_many_arguments)] // render's, and the stop check
    pub fn render_cancellable(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&Tools>,
        extra: &serde_json::Map<String, serde_json::Value>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        stop: &dyn Fn() -> bool,
    ) -> Result<String> {
        let ctx = context(messages, add_generation_prompt, tools, extra, bos_token, eos_token)?;
        if stop() {
            return Err(cancelled());
        }
        let abandoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (source, text, flag) = (self.source.clone(), self.text.clone(), abandoned.clone());
        let spawned = std::thread::Builder::new().name("lmx-template".into()).spawn(move || {
            let _ = tx.send(render_ctx(&source, &text, ctx, Some(&flag)));
        });
        if spawned.is_err() {
            // No thread to be had: render here, cancellable only before it starts.
            return self.render(messages, add_generation_prompt, tools, extra, bos_token, eos_token);
        }
        loop {
            match rx.recv_timeout(STOP_POLL) {
                Ok(r) => return r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if stop() {
                        abandoned.store(true, Ordering::Relaxed);
                        return Err(cancelled());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::internal("the chat template's thread ended without a result"))
                }
            }
        }
    }
}

/// How often [`ChatTemplate::render_cancellable`] checks for a cancellation.
pub const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(5);

fn cancelled() -> Error {
    Error::new(crate::ErrorKind::Cancelled, "cancelled while the chat template was rendering")
}

/// The variables a chat template sees, as transformers' `apply_chat_template` gives them:
/// `tools` and `documents` are null unless set.
fn context(
    messages: &[Message],
    add_generation_prompt: bool,
    tools: Option<&Tools>,
    extra: &serde_json::Map<String, serde_json::Value>,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(Error::invalid(format!(
                "message {i}: unknown role {:?} (expected one of {})",
                m.role,
                ROLES.join(", ")
            )));
        }
        if !m.tool_calls.is_empty() && m.role != "assistant" {
            return Err(Error::invalid(format!("message {i}: only an assistant message makes tool calls")));
        }
    }
    let mut ctx = extra.clone();
    ctx.insert(
        "messages".into(),
        serde_json::to_value(messages).map_err(|e| Error::internal(e.to_string()))?,
    );
    ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
    match tools {
        Some(t) => {
            ctx.insert("tools".into(), t.to_json());
        }
        None => {
            ctx.entry("tools").or_insert(serde_json::Value::Null);
        }
    }
    ctx.entry("documents").or_insert(serde_json::Value::Null);
    ctx.entry("bos_token").or_insert_with(|| bos_token.unwrap_or("").into());
    ctx.entry("eos_token").or_insert_with(|| eos_token.unwrap_or("").into());
    Ok(ctx)
}

/// Renders template `text` (from `source`) with `ctx`; stops at the next output once
/// `abandoned` is set.
fn render_ctx(
    source: &TemplateSource,
    text: &str,
    ctx: serde_json::Map<String, serde_json::Value>,
    abandoned: Option<&AtomicBool>,
) -> Result<String> {
    let fail = |detail: String| Error::invalid(format!("chat template ({source}): {detail}"));
    let env = environment();
    let t = env.template_from_str(text).map_err(|e| fail(e.to_string()))?;
    let mut out = Bounded {
        out: Vec::new(),
        deadline: std::time::Instant::now() + TEMPLATE_TIME_MAX,
        refused: None,
        abandoned,
    };
    if let Err(e) = t.render_captured_to(Value::from_serialize(&ctx), &mut out) {
        let detail = match (&out.refused, e.kind()) {
            (Some(why), _) => why.clone(),
            (None, JErr::OutOfFuel) => {
                format!("the template ran more than {TEMPLATE_FUEL} instructions (a loop without end?)")
            }
            (None, JErr::InvalidOperation) => e.detail().unwrap_or("template error").to_string(),
            _ => e.to_string(),
        };
        return Err(fail(detail));
    }
    String::from_utf8(out.out).map_err(|_| fail("the template rendered invalid UTF-8".into()))
}
