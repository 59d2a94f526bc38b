//! A generation's text as it is delivered, shared by sessions and batch rows: each token's
//! piece decoded without splitting a character, held back while it might begin a stop
//! string, and cut where one appears.

use super::params::GenerateParams;
use super::stop::{StopCheck, StopMatcher};
use crate::model::{ParsedOutput, ReasoningSplit, StreamDecoder, Tokenizer, ToolStream};
use crate::Result;

/// What becomes of the text past the stop check: reasoning split off, tool calls withheld.
#[derive(Default)]
pub(crate) struct Post {
    pub split: Option<ReasoningSplit>,
    pub tools: Option<ToolStream>,
    reasoning: String,
}

impl Post {
    fn active(&self) -> bool {
        self.split.is_some() || self.tools.is_some()
    }

    /// The answer text of `piece` that may be delivered now.
    fn push(&mut self, piece: &str) -> String {
        let visible = match self.split.as_mut() {
            Some(s) => {
                let (r, v) = s.push(piece);
                self.reasoning.push_str(&r);
                v
            }
            None => piece.to_string(),
        };
        match self.tools.as_mut() {
            Some(t) => t.push(&visible),
            None => visible,
        }
    }

    /// At the end: what was held back that may be delivered.
    fn flush(&mut self) -> String {
        let visible = match self.split.as_mut() {
            Some(s) => {
                let (r, v) = s.flush();
                self.reasoning.push_str(&r);
                v
            }
            None => String::new(),
        };
        match self.tools.as_mut() {
            Some(t) => {
                let mut out = t.push(&visible);
                out.push_str(&t.flush());
                out
            }
            None => visible,
        }
    }
}

pub(crate) struct TextStream {
    decoder: StreamDecoder,
    stop: StopMatcher,
    post: Post,
    text: String,
    /// Tokens pushed so far, and how many come before stop strings are looked for
    /// (`GenerateParams::min_tokens`).
    pushed: usize,
    min_tokens: usize,
}

impl TextStream {
    pub fn new(params: &GenerateParams) -> TextStream {
        TextStream {
            decoder: StreamDecoder::new(params.skip_special_tokens),
            stop: StopMatcher::new(&params.stop_strings),
            post: Post::default(),
            text: String::new(),
            pushed: 0,
            min_tokens: params.min_tokens,
        }
    }

    /// As [`TextStream::new`], with the text past the stop check put through `post`, and
    /// special tokens kept in the text when `keep_special` (tool-call markers that are
    /// special tokens must reach the parser).
    pub fn with_post(params: &GenerateParams, post: Post, keep_special: bool) -> TextStream {
        let mut t = TextStream::new(params);
        if keep_special {
            t.decoder = StreamDecoder::new(false);
        }
        t.post = post;
        t
    }

    /// Whether the text delivered so far ends exactly with a tool call's trigger: a call has
    /// begun and nothing of it is written yet (where a lazy call constraint can start).
    pub fn call_just_began(&self) -> bool {
        self.post.tools.as_ref().and_then(|t| t.call_text()) == Some("")
    }

    /// Whether the text is inside reasoning (an open think tag not yet closed).
    pub fn in_reasoning(&self) -> bool {
        self.post.split.as_ref().is_some_and(|s| s.in_reasoning())
    }

    /// The text token `id` delivers (possibly empty: held back), and whether a stop string
    /// ended the text with it.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<(String, bool)> {
        let piece = self.decoder.push(tok, id)?.unwrap_or_default();
        self.pushed += 1;
        let (mut t, stopped) = match self.check(&piece) {
            StopCheck::Emit(t) => (t, false),
            StopCheck::Stopped(t) => (t, true),
        };
        if self.post.active() {
            t = self.post.push(&t);
            if stopped {
                t.push_str(&self.post.flush());
            }
        }
        self.text.push_str(&t);
        Ok((t, stopped))
    }

    /// The reasoning split off, and the answer parsed for tool calls (None without tools).
    pub fn message(&mut self) -> (String, Option<ParsedOutput>) {
        let parsed = self.post.tools.take().map(|t| t.finish());
        (std::mem::take(&mut self.post.reasoning), parsed)
    }

    /// At an end other than a stop string: what was held back, released (a stop string that
    /// completes in it still cuts it).
    pub fn release(&mut self, tok: &Tokenizer) -> String {
        let mut rest = String::new();
        if let Ok(Some(tail)) = self.decoder.flush(tok) {
            match self.check(&tail) {
                StopCheck::Emit(t) => rest.push_str(&t),
                StopCheck::Stopped(t) => {
                    let t = self.after_check(t);
                    self.text.push_str(&t);
                    return t;
                }
            }
        }
        rest.push_str(&self.stop.flush());
        let rest = self.after_check(rest);
        self.text.push_str(&rest);
        rest
    }

    /// The last of the text through `post`, which then gives up what it held back.
    fn after_check(&mut self, t: String) -> String {
        if !self.post.active() {
            return t;
        }
        let mut v = self.post.push(&t);
        v.push_str(&self.post.flush());
        v
    }

    /// Passes text to the stop matcher: text of the first `min_tokens` tokens is emitted
    /// unchecked, so no stop string can begin in it.
    fn check(&mut self, piece: &str) -> StopCheck {
        if self.pushed <= self.min_tokens {
            StopCheck::Emit(self.stop.push_unchecked(piece))
        } else {
            self.stop.push(piece)
        }
    }

    /// All the text delivered so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }
}
