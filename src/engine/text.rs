//! A generation's text as it is delivered, shared by sessions and batch rows: each token's
//! piece decoded without splitting a character, held back while it might begin a stop
//! string, and cut where one appears.

use super::params::GenerateParams;
use super::stop::{StopCheck, StopMatcher};
use crate::model::{StreamDecoder, Tokenizer};
use crate::Result;

pub(crate) struct TextStream {
    decoder: StreamDecoder,
    stop: StopMatcher,
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
            text: String::new(),
            pushed: 0,
            min_tokens: params.min_tokens,
        }
    }

    /// The text token `id` delivers (possibly empty: held back), and whether a stop string
    /// ended the text with it.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<(String, bool)> {
        let piece = self.decoder.push(tok, id)?.unwrap_or_default();
        self.pushed += 1;
        let (t, stopped) = match self.check(&piece) {
            StopCheck::Emit(t) => (t, false),
            StopCheck::Stopped(t) => (t, true),
        };
        self.text.push_str(&t);
        Ok((t, stopped))
    }

    /// At an end other than a stop string: what was held back, released (a stop string that
    /// completes in it still cuts it).
    pub fn release(&mut self, tok: &Tokenizer) -> String {
        let mut rest = String::new();
        if let Ok(Some(tail)) = self.decoder.flush(tok) {
            match self.check(&tail) {
                StopCheck::Emit(t) => rest.push_str(&t),
                StopCheck::Stopped(t) => {
                    self.text.push_str(&t);
                    return t;
                }
            }
        }
        rest.push_str(&self.stop.flush());
        self.text.push_str(&rest);
        rest
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
