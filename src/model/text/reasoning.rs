//! Reasoning in generated text: the part between a model's think tags (`<think>` ...
//! `</think>` for Qwen 3 and DeepSeek-R1, `[THINK]` ... `[/THINK]` for Magistral) split
//! from the answer as the text streams.
//!
//! The opening tag counts only at the very start of the output (after whitespace), or is
//! taken as already given when the rendered prompt ends with it (DeepSeek-R1 and others put
//! `<think>\n` in the generation prompt). Whitespace at both ends of the reasoning, and right
//! after the closing tag, is dropped, as Qwen's templates do when they read a reply back.
//! A tag is recognised only as text: decode with special tokens kept when it is one.

/// A model's opening and closing think tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasoningTags {
    pub open: String,
    pub close: String,
}

impl ReasoningTags {
    pub fn new(open: &str, close: &str) -> ReasoningTags {
        ReasoningTags { open: open.into(), close: close.into() }
    }

    /// The tags of a model, from its chat template's text and its vocabulary; None when it
    /// has none.
    pub fn detect(template: &str, has_token: impl Fn(&str) -> bool) -> Option<ReasoningTags> {
        [("<think>", "</think>"), ("[THINK]", "[/THINK]")]
            .into_iter()
            .find(|(o, c)| (has_token(o) && has_token(c)) || (template.contains(o) && template.contains(c)))
            .map(|(o, c)| ReasoningTags::new(o, c))
    }

    /// Whether a rendered prompt leaves the model inside its reasoning: it ends (but for
    /// whitespace) with the opening tag.
    pub fn prompt_opens(&self, prompt: &str) -> bool {
        prompt.trim_end().ends_with(&self.open)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before anything but whitespace: the opening tag may still come.
    Start,
    /// Inside the reasoning; `fresh`: nothing of it delivered yet (leading whitespace goes).
    Reasoning { fresh: bool },
    /// The answer; `fresh`: nothing of it delivered yet after a closing tag.
    Answer { fresh: bool },
}

/// Splits a generation's text into reasoning and answer as it streams.
#[derive(Clone, Debug)]
pub struct ReasoningSplit {
    tags: ReasoningTags,
    phase: Phase,
    pending: String,
    reasoning: String,
    visible: String,
}

impl ReasoningSplit {
    /// A split for an output that may open with the tag.
    pub fn new(tags: ReasoningTags) -> ReasoningSplit {
        ReasoningSplit {
            tags,
            phase: Phase::Start,
            pending: String::new(),
            reasoning: String::new(),
            visible: String::new(),
        }
    }

    /// A split for the output of `prompt`: inside the reasoning from the start when the
    /// prompt ends with the opening tag.
    pub fn after_prompt(tags: ReasoningTags, prompt: &str) -> ReasoningSplit {
        let inside = tags.prompt_opens(prompt);
        let mut s = ReasoningSplit::new(tags);
        if inside {
            s.phase = Phase::Reasoning { fresh: true };
        }
        s
    }

    /// Whether the text so far is inside the reasoning.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.phase, Phase::Reasoning { .. })
    }

    /// Adds generated text; returns the reasoning and the answer text to deliver now.
    pub fn push(&mut self, piece: &str) -> (String, String) {
        self.pending.push_str(piece);
        let (mut r, mut v) = (String::new(), String::new());
        loop {
            match self.phase {
                Phase::Start => {
                    let t = self.pending.trim_start();
                    if t.starts_with(self.tags.open.as_str()) {
                        let skip = self.pending.len() - t.len() + self.tags.open.len();
                        self.pending.drain(..skip);
                        self.phase = Phase::Reasoning { fresh: true };
                    } else if t.is_empty() || self.tags.open.starts_with(t) {
                        break;
                    } else {
                        self.phase = Phase::Answer { fresh: false };
                    }
                }
                Phase::Reasoning { fresh } => {
                    if fresh {
                        let t = self.pending.trim_start().len();
                        self.pending.drain(..self.pending.len() - t);
                        if self.pending.is_empty() {
                            break;
                        }
                        self.phase = Phase::Reasoning { fresh: false };
                    }
                    if let Some(at) = self.pending.find(self.tags.close.as_str()) {
                        r.push_str(self.pending[..at].trim_end());
                        self.pending.drain(..at + self.tags.close.len());
                        self.phase = Phase::Answer { fresh: true };
                        continue;
                    }
                    // All but a tail that may begin the closing tag, or is whitespace.
                    let keep = held_from(&self.pending, &self.tags.close);
                    r.extend(self.pending.drain(..keep));
                    break;
                }
                Phase::Answer { fresh } => {
                    if fresh {
                        let t = self.pending.trim_start().len();
                        self.pending.drain(..self.pending.len() - t);
                        if self.pending.is_empty() {
                            break;
                        }
                        self.phase = Phase::Answer { fresh: false };
                    }
                    v.push_str(&std::mem::take(&mut self.pending));
                    break;
                }
            }
        }
        self.reasoning.push_str(&r);
        self.visible.push_str(&v);
        (r, v)
    }

    /// At the end of the output: what is still held back, as (reasoning, answer). A
    /// reasoning never closed keeps all its text; whitespace at its end goes.
    pub fn flush(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.pending);
        let (r, v) = match self.phase {
            // Only whitespace or a beginning of the opening tag: the answer.
            Phase::Start => (String::new(), rest),
            Phase::Reasoning { fresh: true } => (rest.trim().to_string(), String::new()),
            Phase::Reasoning { fresh: false } => (rest.trim_end().to_string(), String::new()),
            Phase::Answer { fresh } => {
                (String::new(), if fresh { rest.trim_start().to_string() } else { rest })
            }
        };
        self.reasoning.push_str(&r);
        self.visible.push_str(&v);
        (r, v)
    }

    /// The whole split (flushing first): (reasoning, answer).
    pub fn finish(mut self) -> (String, String) {
        self.flush();
        (self.reasoning, self.visible)
    }
}

/// Where the held tail of `text` begins: a proper prefix of `tag` at its end, and the
/// whitespace before that.
fn held_from(text: &str, tag: &str) -> usize {
    let max = tag.len().saturating_sub(1).min(text.len());
    let mut at = text.len();
    for n in (1..=max).rev() {
        let a = text.len() - n;
        if text.is_char_boundary(a) && tag.starts_with(&text[a..]) {
            at = a;
            break;
        }
    }
    text[..at].trim_end().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn think() -> ReasoningTags {
        ReasoningTags::new("<think>", "</think>")
    }

    fn split(s: ReasoningSplit, text: &str, cuts: &[usize]) -> ((String, String), (String, String)) {
        let mut s = s;
        let (mut r, mut v) = (String::new(), String::new());
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&text.len())) {
            if c < prev || !text.is_char_boundary(c) {
                continue;
            }
            let (a, b) = s.push(&text[prev..c]);
            r.push_str(&a);
            v.push_str(&b);
            prev = c;
        }
        let (a, b) = s.flush();
        r.push_str(&a);
        v.push_str(&b);
        ((r, v), s.finish())
    }

    /// The split at every cut (two and three pieces, and byte by byte) equals the whole's,
    /// and the deltas add up to it.
    fn check(inside: bool, text: &str, want_r: &str, want_v: &str) {
        let make = || {
            if inside {
                ReasoningSplit::after_prompt(think(), "<think>\n")
            } else {
                ReasoningSplit::new(think())
            }
        };
        let want = (want_r.to_string(), want_v.to_string());
        let mut cutss: Vec<Vec<usize>> = vec![(0..=text.len()).collect()];
        for a in 0..=text.len() {
            cutss.push(vec![a]);
            for b in (a..=text.len()).step_by(2) {
                cutss.push(vec![a, b]);
            }
        }
        for cuts in cutss {
            let (deltas, total) = split(make(), text, &cuts);
            assert_eq!(total, want, "{text:?} cut at {cuts:?}");
            assert_eq!(deltas, want, "{text:?} cut at {cuts:?} (deltas)");
        }
    }

    #[test]
    fn splits_at_every_cut() {
        check(false, "<think>\nLet me see.\n</think>\n\nThe answer is 4.", "Let me see.", "The answer is 4.");
        check(false, "\n<think>\n\n</think>\n\nHi", "", "Hi");
        check(
            false,
            "No reasoning here, <think> later is text.",
            "",
            "No reasoning here, <think> later is text.",
        );
        check(false, "<thin", "", "<thin");
        check(false, "<think>é ü </thin", "é ü </thin", "");
        check(true, "First, 2+2.\n</think>\n\n4", "First, 2+2.", "4");
        check(true, "cut off mid-thought <", "cut off mid-thought <", "");
        check(true, "a</think>b</think>c", "a", "b</think>c");
        check(false, "", "", "");
    }

    #[test]
    fn detect_and_prompt() {
        let t = ReasoningTags::detect("", |s| s == "<think>" || s == "</think>").unwrap();
        assert_eq!(t, think());
        assert_eq!(ReasoningTags::detect("[THINK] [/THINK]", |_| false).unwrap().open, "[THINK]");
        assert!(ReasoningTags::detect("plain", |_| false).is_none());
        assert!(t.prompt_opens("<|im_start|>assistant\n<think>\n"));
        assert!(!t.prompt_opens("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
        assert!(ReasoningSplit::after_prompt(t.clone(), "x<think>\n").in_reasoning());
        assert!(!ReasoningSplit::after_prompt(t, "x").in_reasoning());
    }
}
