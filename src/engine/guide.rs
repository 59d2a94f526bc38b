//! A constraint's matcher on a thread of its own: told the tokens just chosen, it computes
//! the next token mask (and, where asked, the tokens the grammar forces) while the device
//! computes the next logits. The mask comes back as a bitmask, 32 token ids per word, ready
//! to upload.

use std::sync::mpsc;
use std::time::Instant;

use crate::model::{Constraint, Matcher, Model};
use crate::{Error, Result};

/// What follows the tokens the guide was last told.
#[derive(Debug)]
pub(crate) struct Step {
    /// Tokens the grammar forces next (already taken by the matcher); empty unless the
    /// guide fast-forwards.
    pub forced: Vec<u32>,
    /// Nothing may follow (after `forced`): the output is complete.
    pub done: bool,
    /// The tokens allowed next (after `forced`), bit i of word i/32 for id i; empty when done.
    pub mask: Vec<u32>,
    /// Seconds the matcher worked on this step.
    pub seconds: f64,
}

pub(crate) struct Guide {
    to: mpsc::Sender<Vec<u32>>,
    from: mpsc::Receiver<Result<Step>>,
    /// Requests sent and not yet answered.
    asked: usize,
    kind: &'static str,
}

impl Guide {
    /// A guide for `c` on `model`, compiled (or taken from the model's cache) now, so that a
    /// constraint that does not compile fails the call before anything runs. With
    /// `fast_forward`, forced tokens are taken by the matcher and reported in [`Step::forced`]
    /// (a single sequence can feed them in one pass); without, they come one by one as masks
    /// that allow only them (a batch steps every row together). `eos` are the ids that may
    /// end the output when the grammar allows it.
    pub fn new(model: &Model, c: &Constraint, fast_forward: bool, eos: Vec<u32>) -> Result<Guide> {
        let matcher = model.matcher(c)?;
        let (to, requests) = mpsc::channel::<Vec<u32>>();
        let (answers, from) = mpsc::channel();
        let kind = c.kind();
        std::thread::Builder::new()
            .name("lmx-guide".into())
            .spawn(move || work(matcher, requests, answers, fast_forward, eos, kind))
            .map_err(|e| Error::internal(format!("starting the constraint's thread: {e}")))?;
        Ok(Guide { to, from, asked: 0, kind })
    }

    /// Tells the matcher `tokens` were chosen and starts the next step's work. The first call
    /// (the start of the output) passes no tokens.
    pub fn tell(&mut self, tokens: Vec<u32>) -> Result<()> {
        self.to.send(tokens).map_err(|_| self.gone())?;
        self.asked += 1;
        Ok(())
    }

    /// The next step, waiting for the thread to finish it.
    pub fn step(&mut self) -> Result<Step> {
        if self.asked == 0 {
            return Err(Error::internal("a constraint's step was awaited before it was asked for"));
        }
        let r = self.from.recv().map_err(|_| self.gone())?;
        self.asked -= 1;
        r
    }

    fn gone(&self) -> Error {
        Error::internal(format!("the {} constraint's thread ended", self.kind))
    }
}

/// The tokens `c` allows first (the mask of an output's first token), computed here: what
/// classification constrains its one token to.
pub(crate) fn first_mask(model: &Model, c: &Constraint, eos: &[u32]) -> Result<Vec<u32>> {
    let mut m = model.matcher(c)?;
    let step = advance(&mut m, &[], false, eos, c.kind(), true)?;
    if step.done {
        return Err(Error::invalid(format!("{}: the constraint allows only an empty output", c.kind())));
    }
    Ok(step.mask)
}

/// The first line of llguidance's error text (the rest is its parser state).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn work(
    mut m: Matcher,
    requests: mpsc::Receiver<Vec<u32>>,
    answers: mpsc::Sender<Result<Step>>,
    fast_forward: bool,
    eos: Vec<u32>,
    kind: &'static str,
) {
    let mut first = true;
    while let Ok(tokens) = requests.recv() {
        let started = Instant::now();
        let mut r = advance(&mut m, &tokens, fast_forward, &eos, kind, first);
        first = false;
        if let Ok(s) = r.as_mut() {
            s.seconds = started.elapsed().as_secs_f64();
        }
        let failed = r.is_err();
        if answers.send(r).is_err() || failed {
            return;
        }
    }
}

fn advance(
    m: &mut Matcher,
    tokens: &[u32],
    fast_forward: bool,
    eos: &[u32],
    kind: &str,
    first: bool,
) -> Result<Step> {
    let fail = |m: &Matcher, what: &str| {
        Error::internal(format!(
            "{kind} constraint: {what}: {}",
            first_line(&m.get_error().unwrap_or_default())
        ))
    };
    if !tokens.is_empty() {
        m.consume_tokens(tokens).map_err(|e| {
            Error::internal(format!("{kind} constraint: token refused: {}", first_line(&e.to_string())))
        })?;
    }
    let done = |forced| Step { forced, done: true, mask: Vec::new(), seconds: 0.0 };
    if m.is_stopped() {
        return Ok(done(Vec::new()));
    }
    let forced = if fast_forward { m.consume_ff_tokens() } else { Vec::new() };
    if m.is_error() {
        return Err(fail(m, "forcing tokens"));
    }
    if m.is_stopped() {
        return Ok(done(forced));
    }
    // A dead end (no token allowed) is the constraint's: a grammar with a part no text
    // satisfies is compiled lazily, so it shows only when the output reaches that part.
    let dead_end = || {
        Error::invalid(if first {
            format!("{kind}: no output can satisfy the constraint (it allows no first token)")
        } else {
            format!("{kind}: the constraint allows no continuation of the output so far (a part of it no text satisfies)")
        })
    };
    let mut mask = m.compute_mask().map_err(|_| dead_end())?;
    if mask.is_zero() {
        return Err(dead_end());
    }
    // Every EOS id ends output alike: where the grammar allows one, it allows them all.
    if eos.iter().any(|&t| mask.is_allowed(t)) {
        for &t in eos {
            if (t as usize) < mask.len() {
                mask.allow_token(t);
            }
        }
    }
    Ok(Step { forced, done: false, mask: mask.as_slice().to_vec(), seconds: 0.0 })
}
