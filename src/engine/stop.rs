//! Stop strings over streamed text: text is held back while it could still be the start of a
//! stop string, so nothing past a stop string is ever emitted, even when it spans tokens.

/// Tracks generated text against stop strings.
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

pub enum StopCheck {
    /// Text that is safe to emit now (may be empty).
    Emit(String),
    /// A stop string was found: the text before it that was not yet emitted.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher { stops: stops.to_vec(), text: String::new(), emitted: 0 }
    }

    /// Adds a decoded piece.
    pub fn push(&mut self, piece: &str) -> StopCheck {
        let search_from = self.emitted;
        self.text.push_str(piece);
        if self.stops.is_empty() {
            let out = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            return StopCheck::Emit(out);
        }
        // A stop string may begin in held-back text, never in emitted text.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[search_from..].find(s.as_str()).map(|i| search_from + i))
            .min();
        if let Some(at) = hit {
            let out = self.text[self.emitted..at].to_string();
            self.emitted = at;
            self.text.truncate(at);
            return StopCheck::Stopped(out);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if k <= self.text.len() - self.emitted
                    && s.is_char_boundary(k)
                    && self.text.ends_with(&s[..k])
                {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        let end = self.text.len() - hold;
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        StopCheck::Emit(out)
    }

    /// Adds a decoded piece that no stop string may begin in (the text of the first
    /// `min_tokens` tokens): it and anything held back are emitted as they are.
    pub fn push_unchecked(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// Everything emitted or to be emitted (stop strings excluded).
    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }

    /// Text still held back (emitted when generation ends for another reason).
    pub fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopCheck::Emit(t) => out.push_str(&t),
                StopCheck::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stops_inside_one_piece() {
        assert_eq!(run(&["END"], &["abc END def"]), ("abc ".into(), true));
    }

    #[test]
    fn stops_across_pieces_without_leaking() {
        assert_eq!(run(&["\n\nUser:"], &["Hi", "\n", "\nUs", "er:", " more"]), ("Hi".into(), true));
    }

    #[test]
    fn releases_a_false_start() {
        assert_eq!(run(&["STOP"], &["ST", "OR", "Y"]), ("STORY".into(), false));
    }

    #[test]
    fn earliest_stop_wins() {
        assert_eq!(run(&["b", "abc"], &["xxabc"]), ("xx".into(), true));
    }

    #[test]
    fn unchecked_text_holds_no_stop_string() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push_unchecked("a EN"), "a EN");
        assert_eq!(m.push_unchecked("D b"), "D b");
        // Checked from here on: only text after the unchecked part can stop.
        match m.push(" END c") {
            StopCheck::Stopped(t) => assert_eq!(t, " "),
            StopCheck::Emit(t) => panic!("no stop, emitted {t:?}"),
        }
        assert_eq!(m.text(), "a END b ");
    }

    #[test]
    fn multibyte_stop_strings() {
        assert_eq!(run(&["☕"], &["tea ", "or ☕ please"]), ("tea or ".into(), true));
    }
}
