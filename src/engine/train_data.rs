//! Training data: JSONL rows in mlx-lm's formats, tokenized with the model's tokenizer and
//! chat template, and batched as `mlx_lm.lora` batches them.
//!
//! Row formats: `{"text": ...}` (the text, EOS appended when the tokenizer does not end with
//! it); `{"prompt": ..., "completion": ...}` (a user turn and an assistant turn through the chat
//! template); `{"messages": [{"role", "content"}, ...]}` (the conversation through the chat
//! template). With prompt masking, the loss covers only the last (assistant) turn.

use std::path::Path;

use crate::model::{Message, Model};
use crate::{Error, Result};

/// One tokenized row: its tokens and where the loss starts (0 = everywhere).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub offset: usize,
}

/// Longest JSONL file read (the whole file is tokenized up front).
pub const DATA_FILE_MAX: u64 = 1 << 30;

/// Reads and tokenizes `path`. Errors name the row (1-based line number) and what is wrong.
pub fn load_jsonl(path: &Path, model: &Model, mask_prompt: bool) -> Result<Vec<Example>> {
    let text = crate::files::read_text(path, DATA_FILE_MAX)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = |why: String| Error::format(format!("{}: row {}: {why}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| row(format!("invalid JSON: {e}")))?;
        out.push(example(&v, model, mask_prompt).map_err(|e| row(e.message))?);
    }
    if out.is_empty() {
        return Err(Error::format(format!("{}: no rows", path.display())));
    }
    Ok(out)
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::format(format!("{key:?} must be a string"))),
    }
}

/// One row as an example.
pub fn example(v: &serde_json::Value, model: &Model, mask_prompt: bool) -> Result<Example> {
    if !v.is_object() {
        return Err(Error::format("expected a JSON object"));
    }
    let messages: Vec<Message> = if let Some(m) = v.get("messages") {
        let msgs: Vec<Message> = serde_json::from_value(m.clone())
            .map_err(|e| Error::format(format!("\"messages\" must be a list of {{role, content}}: {e}")))?;
        if msgs.is_empty() {
            return Err(Error::format("\"messages\" is empty"));
        }
        msgs
    } else if let (Some(p), Some(c)) = (str_field(v, "prompt")?, str_field(v, "completion")?) {
        vec![Message::new("user", p), Message::new("assistant", c)]
    } else if let Some(t) = str_field(v, "text")? {
        if mask_prompt {
            return Err(Error::format("a \"text\" row has no prompt to mask"));
        }
        let mut tokens = model.encode(t, true)?;
        let eos = model.tokenizer().eos_id();
        if let Some(e) = eos {
            if tokens.last() != Some(&e) {
                tokens.push(e);
            }
        }
        return checked(tokens, 0);
    } else {
        return Err(Error::format("expected \"text\", \"prompt\" and \"completion\", or \"messages\""));
    };
    let none = serde_json::Map::new();
    let full = model.render_chat(&messages, false, &none, None)?;
    let tokens = model.encode(&full, false)?;
    let offset = if mask_prompt {
        let head = model.render_chat(&messages[..messages.len() - 1], true, &none, None)?;
        model.encode(&head, false)?.len()
    } else {
        0
    };
    checked(tokens, offset)
}

fn checked(tokens: Vec<u32>, offset: usize) -> Result<Example> {
    if tokens.len() < 2 {
        return Err(Error::format(format!("{} tokens: a row needs at least 2 to predict one", tokens.len())));
    }
    if offset >= tokens.len() {
        return Err(Error::format("the masked prompt covers the whole row: nothing to learn"));
    }
    Ok(Example { tokens, offset })
}

/// A padded batch: token ids `[B, T]` (padding 0) and per row (loss start, length).
pub struct Batch {
    pub tokens: Vec<i32>,
    pub rows: usize,
    pub width: usize,
    pub spans: Vec<(i32, i32)>,
}

/// Batches as mlx-lm makes them: rows sorted by length, `batch_size` consecutive rows per
/// batch (a remainder is dropped), the batch order shuffled each pass, width one more than
/// the longest row rounded up to 32, rows cut at `max_len`.
pub struct Batches {
    order: Vec<Vec<usize>>,
    at: usize,
    rng: u64,
    max_len: usize,
}

impl Batches {
    pub fn new(data: &[Example], batch_size: usize, max_len: usize, seed: u64) -> Result<Batches> {
        if batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        if data.len() < batch_size {
            return Err(Error::invalid(format!(
                "the data has {} rows, fewer than the batch size {batch_size}",
                data.len()
            )));
        }
        if max_len < 2 {
            return Err(Error::invalid(format!("max sequence length {max_len} must be at least 2")));
        }
        let mut idx: Vec<usize> = (0..data.len()).collect();
        idx.sort_by_key(|&i| data[i].tokens.len());
        let order = idx.chunks_exact(batch_size).map(|c| c.to_vec()).collect();
        let mut b = Batches { order, at: 0, rng: seed ^ 0x9e37_79b9_7f4a_7c15, max_len };
        b.shuffle();
        Ok(b)
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle(&mut self) {
        for i in (1..self.order.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            self.order.swap(i, j);
        }
    }

    /// The next batch, looping over the data (reshuffled each pass).
    pub fn next(&mut self, data: &[Example]) -> Batch {
        if self.at == self.order.len() {
            self.at = 0;
            self.shuffle();
        }
        let rows = &self.order[self.at];
        self.at += 1;
        make_batch(rows.iter().map(|&i| &data[i]), self.max_len)
    }
}

/// `rows` as one padded batch, in mlx-lm's layout.
pub fn make_batch<'a>(rows: impl Iterator<Item = &'a Example> + Clone, max_len: usize) -> Batch {
    let longest = rows.clone().map(|e| e.tokens.len()).max().unwrap_or(0);
    let width = (1 + 32 * longest.div_ceil(32)).min(max_len);
    let n = rows.clone().count();
    let mut tokens = vec![0i32; n * width];
    let mut spans = Vec::with_capacity(n);
    for (r, e) in rows.enumerate() {
        let len = e.tokens.len().min(width);
        for (d, &t) in tokens[r * width..r * width + len].iter_mut().zip(&e.tokens) {
            *d = t as i32;
        }
        spans.push((e.offset as i32, len as i32));
    }
    Batch { tokens, rows: n, width, spans }
}
