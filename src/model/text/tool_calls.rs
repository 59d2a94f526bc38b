//! Tool calls in generated text: the formats models write them in, a parser that splits an
//! output into visible text and calls, the streaming filter that withholds calls (and what
//! may begin one) from the visible text, and the llguidance grammars that constrain a call.
//!
//! Formats:
//! - [`ToolFormat::Hermes`] (Qwen 2.5 / 3, Hermes, SmolLM3 and the generic default):
//!   `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, any number, text around.
//! - [`ToolFormat::QwenXml`] (Qwen3-Coder): `<tool_call>\n<function=NAME>\n<parameter=KEY>\n
//!   VALUE\n</parameter>\n...</function>\n</tool_call>`; a value that reads as JSON other
//!   than a string (a number, an object...) is taken as that, any other as a string. No
//!   grammar for it yet.
//! - [`ToolFormat::Llama3`]: `<|python_tag|>` then JSON, or a bare JSON object at the very
//!   start of the output: `{"name": ..., "parameters": {...}}` (or `"arguments"`, or with
//!   `"type": "function"`), several separated by `;`. Everything from the trigger to the end
//!   is the calls. `<|python_tag|>` is a special token: the text must be decoded with
//!   special tokens kept for it to be seen.
//! - [`ToolFormat::Mistral`]: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`;
//!   [`ToolFormat::MistralArgs`]: `[TOOL_CALLS]name[ARGS]{...}` (repeated for several);
//!   both parse either form. Everything after the first trigger is the calls.
//!
//! What is kept of the text: whitespace next to a call (before or after it) is dropped; a
//! call whose JSON does not parse, or lacks a name, is kept in the visible text verbatim
//! (trigger included) and reported in [`ParsedOutput::errors`]. Calls without an id get
//! `call_<n>` (n from 0 in output order); Mistral's templates insist on 9 alphanumerics, so
//! its formats get `call<nnnnn>` instead.

use serde_json::{Map, Value};

use super::tools::{valid_tool_name, ToolCall, ToolChoice, Tools};
use crate::{Error, Result};

/// A way of writing tool calls in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    QwenXml,
    Llama3,
    Mistral,
    MistralArgs,
}

/// An output split into visible text and tool calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedOutput {
    pub content: String,
    pub calls: Vec<ToolCall>,
    /// Calls that could not be read (their text stays in `content`), one line each.
    pub errors: Vec<String>,
}

impl ToolFormat {
    /// The format of a model, from its chat template's text and its vocabulary: a template
    /// that writes `<tool_call>` is Hermes; `[TOOL_CALLS]` Mistral (`[ARGS]` in the template
    /// or the vocabulary: the newer form); `<|python_tag|>` in the template or the
    /// vocabulary, or Llama 3's header token (in either) with a template that handles
    /// tools, Llama 3.
    /// Anything else gets Hermes, the generic form.
    pub fn detect(template: &str, has_token: impl Fn(&str) -> bool) -> ToolFormat {
        if template.contains("<tool_call>") && template.contains("<function=") {
            ToolFormat::QwenXml
        } else if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("[TOOL_CALLS]") || has_token("[TOOL_CALLS]") {
            if template.contains("[ARGS]") || has_token("[ARGS]") {
                ToolFormat::MistralArgs
            } else {
                ToolFormat::Mistral
            }
        } else if template.contains("<|python_tag|>")
            || ((has_token("<|start_header_id|>") || template.contains("<|start_header_id|>"))
                && template.contains("tools"))
        {
            ToolFormat::Llama3
        } else {
            ToolFormat::Hermes
        }
    }

    /// The text that starts a call. Llama 3 also starts one with a bare `{` at the very
    /// beginning of the output (see the module doc).
    pub fn trigger(&self) -> &'static str {
        match self {
            ToolFormat::Hermes | ToolFormat::QwenXml => "<tool_call>",
            ToolFormat::Llama3 => "<|python_tag|>",
            ToolFormat::Mistral | ToolFormat::MistralArgs => "[TOOL_CALLS]",
        }
    }

    /// The text that ends one call, for formats where one does.
    fn end(&self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes | ToolFormat::QwenXml => Some("</tool_call>"),
            _ => None,
        }
    }

    /// Splits a whole output (as [`ToolStream`] would, piece by piece).
    pub fn parse(&self, text: &str) -> ParsedOutput {
        let mut s = ToolStream::new(*self);
        s.push(text);
        s.finish()
    }

    fn call_id(&self, n: usize) -> String {
        match self {
            ToolFormat::Mistral | ToolFormat::MistralArgs => format!("call{n:05}"),
            _ => format!("call_{n}"),
        }
    }

    /// Reads the text of one call region (between trigger and end, or from the trigger to
    /// the end of the output); None when it is not calls of this format.
    fn read_calls(&self, body: &str) -> std::result::Result<Vec<ToolCall>, String> {
        match self {
            ToolFormat::Hermes => json_call(body.trim(), &["arguments", "parameters"]).map(|c| vec![c]),
            ToolFormat::QwenXml => xml_call(body).map(|c| vec![c]),
            ToolFormat::Llama3 => {
                let mut calls = Vec::new();
                for v in json_values(body)? {
                    calls.push(json_call_value(&v, &["parameters", "arguments"])?);
                }
                Ok(calls)
            }
            ToolFormat::Mistral | ToolFormat::MistralArgs => mistral_calls(body),
        }
    }
}

/// One JSON object `{"name", <args key>}` (or with the arguments under "function").
fn json_call(text: &str, args_keys: &[&str]) -> std::result::Result<ToolCall, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    json_call_value(&v, args_keys)
}

fn json_call_value(v: &Value, args_keys: &[&str]) -> std::result::Result<ToolCall, String> {
    let o = v.as_object().ok_or("a call is not a JSON object")?;
    let mut flat = Map::new();
    let f = o.get("function").and_then(Value::as_object).unwrap_or(o);
    if let Some(n) = f.get("name") {
        flat.insert("name".into(), n.clone());
    }
    if let Some(id) = o.get("id") {
        flat.insert("id".into(), id.clone());
    }
    if let Some(a) = args_keys.iter().find_map(|k| f.get(*k)) {
        flat.insert("arguments".into(), a.clone());
    }
    let call = ToolCall::from_json(&Value::Object(flat))?;
    if !valid_tool_name(&call.name) {
        return Err(format!("{:?} is not a tool name", call.name));
    }
    Ok(call)
}

/// Qwen3-Coder's `<function=NAME><parameter=KEY>VALUE</parameter>...</function>`.
fn xml_call(body: &str) -> std::result::Result<ToolCall, String> {
    let rest = body.trim().strip_prefix("<function=").ok_or("no <function=NAME> after the trigger")?;
    let (name, mut rest) = rest.split_once('>').ok_or("<function= without >")?;
    let mut args = Map::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("</function>") {
            if !r.trim().is_empty() {
                return Err("text after </function>".into());
            }
            break;
        }
        let r = rest.strip_prefix("<parameter=").ok_or("expected <parameter=KEY> or </function>")?;
        let (key, r) = r.split_once('>').ok_or("<parameter= without >")?;
        let (value, r) = r.split_once("</parameter>").ok_or("<parameter> without </parameter>")?;
        let value = value.strip_prefix('\n').unwrap_or(value);
        let value = value.strip_suffix('\n').unwrap_or(value);
        let v = match serde_json::from_str::<Value>(value) {
            Ok(v) if !v.is_string() => v,
            _ => Value::String(value.to_string()),
        };
        args.insert(key.to_string(), v);
        rest = r;
    }
    if !valid_tool_name(name) {
        return Err(format!("{name:?} is not a tool name"));
    }
    Ok(ToolCall::new(name, Value::Object(args)))
}

/// JSON values separated by `;` and whitespace.
fn json_values(text: &str) -> std::result::Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(format!("not JSON: {e}")),
            None => break,
        }
        rest = rest[it.byte_offset()..].trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    if out.is_empty() {
        return Err("no call after the trigger".into());
    }
    Ok(out)
}

/// Mistral: `[{...}, ...]`, or `name[ARGS]{...}` with further `[TOOL_CALLS]name[ARGS]{...}`.
fn mistral_calls(body: &str) -> std::result::Result<Vec<ToolCall>, String> {
    let mut calls = Vec::new();
    for part in body.split("[TOOL_CALLS]") {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if part.starts_with('[') || part.starts_with('{') {
            for v in json_values(part)? {
                match v {
                    Value::Array(list) => {
                        for c in &list {
                            calls.push(json_call_value(c, &["arguments", "parameters"])?);
                        }
                    }
                    c => calls.push(json_call_value(&c, &["arguments", "parameters"])?),
                }
            }
        } else {
            let (name, args) = part.split_once("[ARGS]").ok_or("neither a JSON list nor name[ARGS]{...}")?;
            let (name, id) = match name.split_once("[CALL_ID]") {
                Some((n, id)) => (n.trim(), Some(id.trim())),
                None => (name.trim(), None),
            };
            let args: Value =
                serde_json::from_str(args.trim()).map_err(|e| format!("arguments not JSON: {e}"))?;
            let mut flat = Map::new();
            flat.insert("name".into(), name.into());
            if let Some(id) = id {
                flat.insert("id".into(), id.into());
            }
            flat.insert("arguments".into(), args);
            calls.push(ToolCall::from_json(&Value::Object(flat))?);
        }
    }
    if calls.is_empty() {
        return Err("no call after the trigger".into());
    }
    Ok(calls)
}

/// Where a stream is.
#[derive(Debug)]
enum State {
    /// Visible text; `pending` is held back: a possible beginning of the trigger, or
    /// whitespace that a call may yet follow.
    Text,
    /// Inside a call region; `pending` is its text after the trigger (`bare`: a Llama 3
    /// call that began with `{`, no trigger).
    Call { bare: bool },
}

/// Filters a generation's text as it comes: [`push`](Self::push) returns the visible text
/// to deliver now, withholding tool calls and anything that may still become one;
/// [`finish`](Self::finish) gives the whole split. Everything `push` and `flush` returned,
/// in order, is [`ParsedOutput::content`].
#[derive(Debug)]
pub struct ToolStream {
    format: ToolFormat,
    state: State,
    pending: String,
    /// The visible text delivered so far.
    shown: String,
    /// Whether anything (text or call) was seen past leading whitespace.
    started: bool,
    /// Right after a call: leading whitespace of the next text is dropped.
    after_call: bool,
    out: ParsedOutput,
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> ToolStream {
        ToolStream {
            format,
            state: State::Text,
            pending: String::new(),
            shown: String::new(),
            started: false,
            after_call: false,
            out: ParsedOutput::default(),
        }
    }

    pub fn format(&self) -> ToolFormat {
        self.format
    }

    /// The visible text delivered so far.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the stream is inside a call (the engine may switch to the call grammar).
    pub fn in_call(&self) -> bool {
        matches!(self.state, State::Call { .. })
    }

    /// Inside a call that its trigger began: the call's text so far (after the trigger).
    /// None outside a call, or in a bare Llama 3 call (no trigger).
    pub fn call_text(&self) -> Option<&str> {
        match self.state {
            State::Call { bare: false } => Some(&self.pending),
            _ => None,
        }
    }

    /// Adds generated text; returns the visible text to deliver now.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let mut emit = String::new();
        loop {
            match self.state {
                State::Call { bare } => {
                    let Some(end) = self.format.end() else { break };
                    let Some(at) = self.pending.find(end) else { break };
                    let body: String = self.pending[..at].to_string();
                    let rest = self.pending[at + end.len()..].to_string();
                    self.close_call(&body, bare, Some(end), &mut emit);
                    self.pending = rest;
                    self.state = State::Text;
                }
                State::Text => {
                    if self.after_call {
                        let t = self.pending.trim_start().len();
                        self.pending.drain(..self.pending.len() - t);
                        if self.pending.is_empty() {
                            break;
                        }
                        self.after_call = false;
                    }
                    if self.format == ToolFormat::Llama3 && !self.started {
                        let t = self.pending.trim_start();
                        if t.is_empty() {
                            break;
                        }
                        if t.starts_with('{') {
                            self.pending = t.to_string();
                            self.started = true;
                            self.state = State::Call { bare: true };
                            continue;
                        }
                    }
                    let trig = self.format.trigger();
                    if let Some(at) = self.pending.find(trig) {
                        let before = self.pending[..at].trim_end().to_string();
                        self.show(&before, &mut emit);
                        self.pending.drain(..at + trig.len());
                        self.started = true;
                        self.state = State::Call { bare: false };
                        continue;
                    }
                    // Deliver all but a tail that may begin the trigger, or is whitespace.
                    let keep_from = partial_suffix(&self.pending, trig);
                    let keep_from = self.pending[..keep_from].trim_end().len();
                    let now: String = self.pending.drain(..keep_from).collect();
                    if !now.is_empty() {
                        self.started = true;
                    }
                    self.show(&now, &mut emit);
                    break;
                }
            }
        }
        emit
    }

    /// At the end of the output: the visible text still held back (a call left unfinished
    /// becomes a call if it reads as one, else text). Push nothing after this.
    pub fn flush(&mut self) -> String {
        let mut emit = String::new();
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Text => {
                if !self.after_call {
                    self.show(&rest, &mut emit);
                }
            }
            State::Call { bare } => {
                self.close_call(&rest, bare, None, &mut emit);
                self.state = State::Text;
            }
        }
        emit
    }

    /// The whole split (flushing first).
    pub fn finish(mut self) -> ParsedOutput {
        self.flush();
        self.out.content = self.shown;
        self.out
    }

    fn show(&mut self, text: &str, emit: &mut String) {
        emit.push_str(text);
        self.shown.push_str(text);
    }

    /// A call region's text is complete: calls, or (unreadable) visible text again.
    fn close_call(&mut self, body: &str, bare: bool, end: Option<&str>, emit: &mut String) {
        match self.format.read_calls(body) {
            Ok(calls) => {
                for mut c in calls {
                    if c.id.is_none() {
                        c.id = Some(self.format.call_id(self.out.calls.len()));
                    }
                    self.out.calls.push(c);
                }
                self.after_call = true;
            }
            Err(why) => {
                self.out
                    .errors
                    .push(format!("tool call {}: {why}", self.out.calls.len() + self.out.errors.len()));
                let mut raw = String::new();
                if !bare {
                    raw.push_str(self.format.trigger());
                }
                raw.push_str(body);
                raw.push_str(end.unwrap_or(""));
                self.show(&raw, emit);
            }
        }
    }
}

/// Where the longest suffix of `text` that is a proper prefix of `pat` begins (`text.len()`
/// when none).
fn partial_suffix(text: &str, pat: &str) -> usize {
    let max = pat.len().saturating_sub(1).min(text.len());
    for n in (1..=max).rev() {
        let at = text.len() - n;
        if text.is_char_boundary(at) && pat.starts_with(&text[at..]) {
            return at;
        }
    }
    text.len()
}

// ---------------------------------------------------------------------------------------------
// Grammars (llguidance's Lark).

/// A Lark string literal.
fn lit(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `text` as a grammar element: the special token by name when the vocabulary has it as
/// one (llguidance matches special tokens only so), else its bytes.
fn marker(text: &str, special: &dyn Fn(&str) -> bool) -> String {
    if special(text) {
        text.to_string()
    } else {
        lit(text)
    }
}

/// The tool's arguments schema for `%json`, lenient about keywords llguidance lacks.
fn args_schema(params: Option<&Value>) -> String {
    let mut s = match params {
        Some(Value::Object(o)) => o.clone(),
        _ => {
            let mut o = Map::new();
            o.insert("type".into(), "object".into());
            o
        }
    };
    s.entry("type").or_insert("object".into());
    // models write whitespace without end); lenient: keywords the engine cannot enforce are
    // ignored rather than refused, since the tools come from the caller as they are.
    s.insert(
        "x-guidance".into(),
        serde_json::json!({"lenient": true, "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
    );
    serde_json::to_string(&Value::Object(s)).unwrap_or_default()
}

impl ToolFormat {
    /// A grammar (llguidance Lark) for the text right after the trigger: one complete call
    /// of this format (more after it when `parallel`), each naming one of the tools `choice`
    /// allows, with arguments of that tool's `parameters` schema. `special` says whether a
    /// marker text (`<tool_call>`, `[ARGS]`...) is a special token of the vocabulary.
    pub fn call_grammar(
        &self,
        tools: &Tools,
        choice: &ToolChoice,
        special: &dyn Fn(&str) -> bool,
        parallel: bool,
    ) -> Result<String> {
        self.grammar(tools, choice, special, false, parallel)
    }

    /// A grammar for a whole output that is nothing but calls, trigger included (for
    /// `tool_choice` required or a named function); one call only unless `parallel`.
    pub fn required_grammar(
        &self,
        tools: &Tools,
        choice: &ToolChoice,
        special: &dyn Fn(&str) -> bool,
        parallel: bool,
    ) -> Result<String> {
        self.grammar(tools, choice, special, true, parallel)
    }

    fn grammar(
        &self,
        tools: &Tools,
        choice: &ToolChoice,
        special: &dyn Fn(&str) -> bool,
        with_trigger: bool,
        parallel: bool,
    ) -> Result<String> {
        // More calls after the first, or none.
        let more = |rest: String| if parallel { rest } else { String::new() };
        choice.check(tools)?;
        if *self == ToolFormat::QwenXml {
            return Err(Error::unsupported("no grammar for Qwen3-Coder's XML tool calls yet"));
        }
        let allowed = choice.allowed(tools);
        if allowed.is_empty() {
            return Err(Error::invalid("no tool may be called (tool_choice none, or no tools)"));
        }
        let trig = marker(self.trigger(), special);
        let mut g = String::new();
        let mut fns = Vec::new();
        for (i, t) in allowed.iter().enumerate() {
            let args = args_schema(t.parameters.as_ref());
            let head = match self {
                ToolFormat::Hermes | ToolFormat::QwenXml | ToolFormat::Mistral => {
                    format!("\"{}\", \"arguments\": ", t.name)
                }
                ToolFormat::Llama3 => format!("\"{}\", \"parameters\": ", t.name),
                ToolFormat::MistralArgs => t.name.clone(),
            };
            let head = lit(&head);
            match self {
                ToolFormat::MistralArgs => g.push_str(&format!(
                    "fn_{i}: {head} ({} CALL_ID)? {} args_{i}\n",
                    marker("[CALL_ID]", special),
                    marker("[ARGS]", special)
                )),
                _ => g.push_str(&format!("fn_{i}: {head} args_{i}\n")),
            }
            g.push_str(&format!("args_{i}: %json {args}\n"));
            fns.push(format!("fn_{i}"));
        }
        g.push_str(&format!("fn: {}\n", fns.join(" | ")));
        let open = lit("{\"name\": ");
        let start = match self {
            ToolFormat::Hermes | ToolFormat::QwenXml => {
                let end = marker("</tool_call>", special);
                g.push_str(&format!("body: {} {open} fn {} {end}\n", lit("\n"), lit("}\n")));
                g.push_str(&format!("calls: body {}\n", more(format!("({} {trig} body)*", lit("\n")))));
                if with_trigger {
                    format!("{trig} calls")
                } else {
                    "calls".into()
                }
            }
            ToolFormat::Llama3 => {
                g.push_str(&format!("call: {open} fn {}\n", lit("}")));
                g.push_str(&format!("calls: call {}\n", more(format!("({} call)*", lit("; ")))));
                if with_trigger {
                    format!("{trig}? calls")
                } else {
                    "calls".into()
                }
            }
            ToolFormat::Mistral => {
                // The id Mistral's templates write after the arguments (9 letters or digits).
                g.push_str(&format!("call: {open} fn ({} CALL_ID)? {}\n", lit(", \"id\": "), lit("}")));
                g.push_str("CALL_ID: /\"[A-Za-z0-9]{9}\"/\n");
                g.push_str(&format!(
                    "calls: {} call {} {}\n",
                    lit("["),
                    more(format!("({} call)*", lit(", "))),
                    lit("]")
                ));
                if with_trigger {
                    format!("{trig} calls")
                } else {
                    "calls".into()
                }
            }
            ToolFormat::MistralArgs => {
                g.push_str(&format!("calls: fn {}\n", more(format!("({trig} fn)*"))));
                g.push_str("CALL_ID: /[A-Za-z0-9]{9}/\n");
                if with_trigger {
                    format!("{trig} calls")
                } else {
                    "calls".into()
                }
            }
        };
        Ok(format!("start: {start}\n{g}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: [ToolFormat; 5] = [
        ToolFormat::Hermes,
        ToolFormat::QwenXml,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::MistralArgs,
    ];

    /// The text split into pieces at `cuts`, through a stream: what was shown, and the split.
    fn streamed(f: ToolFormat, text: &str, cuts: &[usize]) -> (String, ParsedOutput) {
        let mut s = ToolStream::new(f);
        let mut shown = String::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&text.len())) {
            if c < prev || !text.is_char_boundary(c) {
                continue;
            }
            shown.push_str(&s.push(&text[prev..c]));
            prev = c;
        }
        shown.push_str(&s.flush());
        (shown, s.finish())
    }

    /// Every split into two and three pieces gives what the whole text gives.
    fn same_at_every_cut(f: ToolFormat, text: &str) -> ParsedOutput {
        let whole = f.parse(text);
        for a in 0..=text.len() {
            let (shown, p) = streamed(f, text, &[a]);
            assert_eq!(p, whole, "{f:?} cut at {a}: {text:?}");
            assert_eq!(shown, whole.content, "{f:?} cut at {a}");
            for b in (a..=text.len()).step_by(3) {
                let (shown, p) = streamed(f, text, &[a, b]);
                assert_eq!(p, whole, "{f:?} cut at {a}, {b}: {text:?}");
                assert_eq!(shown, whole.content);
            }
        }
        let bytes: Vec<usize> = (0..=text.len()).collect();
        assert_eq!(streamed(f, text, &bytes).1, whole, "{f:?} byte by byte");
        whole
    }

    fn call(id: &str, name: &str, args: Value) -> ToolCall {
        ToolCall { id: Some(id.into()), name: name.into(), arguments: args }
    }

    #[test]
    fn hermes() {
        let f = ToolFormat::Hermes;
        let p = same_at_every_cut(
            f,
            "Let me check.\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!(p.content, "Let me check.");
        assert_eq!(
            p.calls,
            vec![call("call_0", "get_weather", json!({"city": "Paris"})), call("call_1", "f", json!({}))]
        );
        assert!(p.errors.is_empty());
        // Plain text, a lone '<', and text that only looks like the trigger's beginning.
        let p = same_at_every_cut(f, "a < b and <tool_ is not <tool_call\n");
        assert_eq!(p.content, "a < b and <tool_ is not <tool_call\n");
        assert!(p.calls.is_empty());
        // Broken JSON stays visible; an unterminated call that reads is a call.
        let p = same_at_every_cut(f, "x<tool_call>{oops}</tool_call> y");
        assert_eq!(p.content, "x<tool_call>{oops}</tool_call> y");
        assert_eq!(p.errors.len(), 1);
        let p = same_at_every_cut(f, "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}");
        assert_eq!(p.calls, vec![call("call_0", "f", json!({"a": 1}))]);
        assert_eq!(p.content, "");
        let p = same_at_every_cut(f, "<tool_call>{\"name\": \"f\"");
        assert_eq!(p.content, "<tool_call>{\"name\": \"f\"");
        assert!(p.calls.is_empty());
        // Text after a call, multi-byte characters around.
        let p = same_at_every_cut(f, "é<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>\n\nthen ü");
        assert_eq!(p.content, "éthen ü");
        assert_eq!(p.calls.len(), 1);
    }

    #[test]
    fn qwen_xml() {
        let f = ToolFormat::QwenXml;
        let p = same_at_every_cut(
            f,
            "Checking.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=opts>\n{\"a\": [1]}\n</parameter>\n</function>\n</tool_call>",
        );
        assert_eq!(p.content, "Checking.");
        assert_eq!(
            p.calls,
            vec![call("call_0", "get_weather", json!({"city": "Paris", "days": 3, "opts": {"a": [1]}}))]
        );
        let p = same_at_every_cut(f, "<tool_call>\n<function=f>\n</function>\n</tool_call>");
        assert_eq!(p.calls, vec![call("call_0", "f", json!({}))]);
        let p = same_at_every_cut(f, "<tool_call><function=f><parameter=x>1</tool_call>");
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.content, "<tool_call><function=f><parameter=x>1</tool_call>");
    }

    #[test]
    fn llama3() {
        let f = ToolFormat::Llama3;
        let p = same_at_every_cut(f, "  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}");
        assert_eq!((p.content.as_str(), p.calls.len()), ("", 1));
        assert_eq!(p.calls[0], call("call_0", "get_weather", json!({"city": "Paris"})));
        let p = same_at_every_cut(
            f,
            "<|python_tag|>{\"type\": \"function\", \"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"arguments\": {\"x\": [1]}}",
        );
        assert_eq!(p.calls, vec![call("call_0", "a", json!({})), call("call_1", "b", json!({"x": [1]}))]);
        // '{' later in the text is no call; JSON that is no call stays text.
        let p = same_at_every_cut(f, "Use {\"name\": 1} here");
        assert_eq!((p.content.as_str(), p.calls.len()), ("Use {\"name\": 1} here", 0));
        let p = same_at_every_cut(f, "{\"answer\": 42}");
        assert_eq!((p.content.as_str(), p.errors.len()), ("{\"answer\": 42}", 1));
        let p = same_at_every_cut(f, "Sure.<|python_tag|>{\"name\": \"a\", \"parameters\": {}}");
        assert_eq!((p.content.as_str(), p.calls.len()), ("Sure.", 1));
    }

    #[test]
    fn mistral() {
        for f in [ToolFormat::Mistral, ToolFormat::MistralArgs] {
            let p = same_at_every_cut(
                f,
                "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}, \"id\": \"abcdefghi\"}]",
            );
            assert_eq!(
                p.calls,
                vec![call("call00000", "a", json!({"x": 1})), call("abcdefghi", "b", json!({}))]
            );
            let p = same_at_every_cut(f, "Hi [TOOL_CALLS]a[ARGS]{\"x\": 1}[TOOL_CALLS]b[ARGS]{}");
            assert_eq!(p.content, "Hi");
            assert_eq!(
                p.calls,
                vec![call("call00000", "a", json!({"x": 1})), call("call00001", "b", json!({}))]
            );
            let p =
                same_at_every_cut(f, "[TOOL_CALLS]get_weather[CALL_ID]abcdefghi[ARGS]{\"city\": \"Paris\"}");
            assert_eq!(p.calls, vec![call("abcdefghi", "get_weather", json!({"city": "Paris"}))]);
            let p = same_at_every_cut(f, "[TOOL_CALLS] nonsense");
            assert_eq!((p.content.as_str(), p.errors.len()), ("[TOOL_CALLS] nonsense", 1));
            let p = same_at_every_cut(f, "[TOOL no");
            assert_eq!(p.content, "[TOOL no");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let junk = [
            "<tool_call><tool_call></tool_call></tool_call>",
            "[TOOL_CALLS][[[",
            "{{{;;",
            "<|python_tag|>",
            "\u{0}é\u{FFFD}<",
            "[TOOL_CALLS]a[ARGS]",
        ];
        for f in ALL {
            for j in junk {
                same_at_every_cut(f, j);
            }
        }
    }

    #[test]
    fn detect() {
        let none = |_: &str| false;
        assert_eq!(ToolFormat::detect("{{ '<tool_call>' }}", none), ToolFormat::Hermes);
        assert_eq!(ToolFormat::detect("<tool_call>\n<function=", none), ToolFormat::QwenXml);
        assert_eq!(ToolFormat::detect("{{ '[TOOL_CALLS]' }}", none), ToolFormat::Mistral);
        assert_eq!(ToolFormat::detect("[TOOL_CALLS] [ARGS]", none), ToolFormat::MistralArgs);
        assert_eq!(ToolFormat::detect("<|python_tag|>", none), ToolFormat::Llama3);
        assert_eq!(ToolFormat::detect("{% if tools %}", |t| t == "<|start_header_id|>"), ToolFormat::Llama3);
        assert_eq!(ToolFormat::detect("plain", |t| t == "<|start_header_id|>"), ToolFormat::Hermes);
        assert_eq!(ToolFormat::detect("plain", none), ToolFormat::Hermes);
    }

    fn tools() -> Tools {
        Tools::parse(
            r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}}},
                {"name":"noargs"}]"#,
        )
        .unwrap()
    }

    /// Whether the grammar accepts `text` whole.
    fn accepts(grammar: &str, text: &str) -> bool {
        use llguidance::api::TopLevelGrammar;
        use llguidance::{Matcher, ParserFactory};
        let env = toktrie::ApproximateTokEnv::single_byte_env();
        let mut factory = ParserFactory::new_simple(&env).unwrap();
        factory.quiet();
        let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar.to_string()));
        let parser = parser.unwrap_or_else(|e| panic!("grammar does not compile: {e}\n{grammar}"));
        let mut m = Matcher::new(Ok(parser));
        let toks: Vec<u32> = text.bytes().map(u32::from).collect();
        for t in toks {
            if m.consume_token(t).is_err() || m.is_error() {
                return false;
            }
        }
        m.is_accepting().unwrap_or(false)
    }

    #[test]
    fn grammars_compile_and_match() {
        let none = |_: &str| false;
        let t = tools();
        let cases: [(ToolFormat, &str, &str); 4] = [
            (
                ToolFormat::Hermes,
                "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"noargs\", \"arguments\": {}}\n</tool_call>",
                "\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>",
            ),
            (
                ToolFormat::Llama3,
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"noargs\", \"parameters\": {}}",
                "{\"name\": \"nope\", \"parameters\": {}}",
            ),
            (
                ToolFormat::Mistral,
                "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
                "[{\"name\": \"get_weather\", \"arguments\": {}}]",
            ),
            (
                ToolFormat::MistralArgs,
                "get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]noargs[ARGS]{}",
                "get_weather[ARGS]{\"city\": 3}",
            ),
        ];
        for (f, good, bad) in cases {
            let g = f.call_grammar(&t, &ToolChoice::Auto, &none, true).unwrap();
            assert!(accepts(&g, good), "{f:?} rejects {good:?}\n{g}");
            assert!(!accepts(&g, bad), "{f:?} accepts {bad:?}\n{g}");
            // The parser reads what the grammar makes.
            let p = f.parse(&format!("{}{good}", f.trigger()));
            assert!(p.errors.is_empty() && !p.calls.is_empty(), "{f:?}: {p:?}");
            let r = f.required_grammar(&t, &ToolChoice::Required, &none, true).unwrap();
            assert!(accepts(&r, &format!("{}{good}", f.trigger())), "{f:?} required\n{r}");
            assert!(!accepts(&r, "Hello"), "{f:?} required accepts text");
            let named = f.required_grammar(&t, &ToolChoice::Function("noargs".into()), &none, true).unwrap();
            assert!(!accepts(&named, &format!("{}{good}", f.trigger())), "{f:?} named accepts another tool");
        }
        let ids = [
            (ToolFormat::Mistral, "[{\"name\": \"noargs\", \"arguments\": {}, \"id\": \"abc123def\"}]"),
            (ToolFormat::MistralArgs, "noargs[CALL_ID]abc123def[ARGS]{}"),
        ];
        for (f, text) in ids {
            assert!(
                accepts(&f.call_grammar(&t, &ToolChoice::Auto, &none, true).unwrap(), text),
                "{f:?} with an id"
            );
            assert_eq!(f.parse(&format!("[TOOL_CALLS]{text}")).calls[0].id.as_deref(), Some("abc123def"));
        }
        assert!(accepts(
            &ToolFormat::Llama3.required_grammar(&t, &ToolChoice::Auto, &none, true).unwrap(),
            "{\"name\": \"noargs\", \"parameters\": {}}"
        ));
        assert!(ToolFormat::Hermes.call_grammar(&t, &ToolChoice::None, &none, true).is_err());
        assert!(ToolFormat::Hermes
            .call_grammar(&t, &ToolChoice::Function("zz".into()), &none, true)
            .is_err());
        // A special trigger is referenced by name (the test vocabulary has <|tool|>).
        let g = ToolFormat::Hermes
            .required_grammar(&t, &ToolChoice::Auto, &|s| s == "<tool_call>", true)
            .unwrap();
        assert!(g.starts_with("start: <tool_call> calls"), "{g}");
    }
}
