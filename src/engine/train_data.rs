//! Training data: JSONL rows in mlx-lm's formats, tokenized with the model's tokenizer and
//! chat template, and batched as `mlx_lm.lora` batches them.
//!
//! Row formats: `{"text": ...}` (the text, EOS appended when the tokenizer does not end with
//! it); `{"prompt": ..., "completion": ...}` (a user turn and an assistant turn through the chat
//! template); `{"messages": [{"role", "content"}, ...]}` (the conversation through the chat
//! template). With prompt masking, the loss covers only the last (assistant) turn.
//!
//! Rows are cut to `max_seq_length` tokens as they are read, as mlx-lm cuts them when it
//! batches (the first `max_seq_length` tokens stay; a cut text row has no EOS). Reading must
//! never cost more than the cut row is worth: a file is read a row at a time under
//! [`DATA_FILE_MAX`] and [`ROW_MAX`], and only as much of a long row's text is tokenized (and
//! of a long chat row's messages rendered) as the kept tokens need, so a row of 50 MB of text
//! takes milliseconds and memory of the order of the row, not of its tokens.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::{Message, Model};
use crate::{Error, Result};

/// One tokenized row: its tokens (at most `max_seq_length`) and where the loss starts (0 =
/// everywhere).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub offset: usize,
}

/// Largest training or validation file, in bytes. The file is read a row at a time, so no
/// buffer of this size is made; the cap bounds the time reading and tokenizing takes and the
/// token ids the run keeps (4 bytes an id, about one id per 4 bytes of text: about the file's
/// size again). 1 GiB of JSONL is some 250 million tokens, tens of epochs of a long LoRA run
/// on one machine (1000 updates of 4 rows of 2048 tokens see 8 million); larger sets are
/// better split.
pub const DATA_FILE_MAX: u64 = 1 << 30;

/// Longest row (one line of the file), in bytes. A row is held whole while its JSON is parsed
/// (the line and the parsed value, and for a chat row the rendered text: about three times the
/// row), so this bounds the memory reading takes before the row is cut to `max_seq_length`
/// tokens. 64 MiB holds the longest document any model trains on whole (a million tokens is
/// about 4 MB of English, or 9 MB of Chinese written with JSON's `\u` escapes).
pub const ROW_MAX: u64 = 64 << 20;

/// Reads and tokenizes `path`, each row cut to `max_len` tokens (see the module doc). Errors
/// name the file and the row (its 1-based line number) and what is wrong: invalid JSON or
/// UTF-8, a missing field, a row longer than [`ROW_MAX`], a file longer than
/// [`DATA_FILE_MAX`], a path that is not a regular file (a FIFO or device is refused without
/// waiting on it).
pub fn load_jsonl(path: &Path, model: &Model, mask_prompt: bool, max_len: usize) -> Result<Vec<Example>> {
    if max_len < 2 {
        return Err(Error::invalid(format!("max sequence length {max_len} must be at least 2")));
    }
    let (f, _) = crate::files::open_capped(path, DATA_FILE_MAX)?;
    // One byte past the cap, to notice a file that grew after the size check.
    let mut reader = BufReader::new(f.take(DATA_FILE_MAX + 1));
    let mut line = Vec::new();
    let mut read = 0u64;
    let mut out = Vec::new();
    for n in 1u64.. {
        line.clear();
        // One byte past the row cap, so that a row of exactly ROW_MAX bytes and its newline
        // fit and a longer one is seen without reading the rest of it.
        let got =
            (&mut reader).take(ROW_MAX + 1).read_until(b'\n', &mut line).map_err(|e| Error::io(path, &e))?;
        if got == 0 {
            break;
        }
        read += got as u64;
        if read > DATA_FILE_MAX {
            return Err(crate::files::too_long(path, DATA_FILE_MAX));
        }
        let row = |why: String| Error::format(format!("{}: row {n}: {why}", path.display()));
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.len() as u64 > ROW_MAX {
            return Err(row(format!("longer than the {} MiB a row may have", ROW_MAX >> 20)));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = std::str::from_utf8(&line)
            .map_err(|e| row(format!("not valid UTF-8 (byte {} of the row)", e.valid_up_to())))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| row(format!("invalid JSON: {e}")))?;
        out.push(example(v, model, mask_prompt, max_len).map_err(|e| row(e.message))?);
    }
    if out.is_empty() {
        return Err(Error::format(format!("{}: no rows", path.display())));
    }
    Ok(out)
}

fn str_field<'a>(v: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::format(format!("{key:?} must be a string"))),
    }
}

/// Tokens a cut text must give beyond the ones kept. Cutting a text can change how the
/// characters just before the cut tokenize (a merge with what followed, a word split in two),
/// never how text far before it does: the cut lies this many tokens past the last one kept.
const CUT_SLACK: usize = 64;

/// Bytes of text first tokenized per token wanted, when a text is longer than that. English
/// averages about 4 bytes a token and most text less than 8; text of longer tokens (runs of
/// spaces or symbols) takes a doubling or two more.
const FIRST_BYTES_PER_TOKEN: usize = 8;

/// A chat row whose messages hold more than this many bytes has each long message cut (see
/// [`cut_messages`]) before the chat template renders it; smaller rows render whole, token for
/// token as mlx-lm renders them. Below the template's own output cap
/// ([`crate::model::text::chat::TEMPLATE_OUTPUT_MAX`]), so that every row that fits the cap
/// renders whole.
pub const CHAT_WHOLE_MAX: usize = 4 << 20;

/// The token ids of the start of `text` (with the tokenizer's special tokens when
/// `add_special`) and how many bytes of it they cover: the whole text, or a prefix (cut at a
/// character boundary) whose ids number at least `need` + [`CUT_SLACK`], so that its first
/// `need` ids are those of the whole text. The work and the ids are of the order of `need`
/// tokens of text, whatever the text's length: a prefix of [`FIRST_BYTES_PER_TOKEN`] bytes a
/// token wanted is tokenized first, and doubled while it gives too few.
pub fn encode_head(model: &Model, text: &str, add_special: bool, need: usize) -> Result<(Vec<u32>, usize)> {
    let mut budget = need.saturating_add(CUT_SLACK).saturating_mul(FIRST_BYTES_PER_TOKEN);
    loop {
        if budget >= text.len() {
            return Ok((model.encode(text, add_special)?, text.len()));
        }
        let mut cut = budget;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let ids = model.encode(&text[..cut], add_special)?;
        if ids.len() >= need.saturating_add(CUT_SLACK) {
            return Ok((ids, cut));
        }
        budget = budget.saturating_mul(2);
    }
}

/// Cuts each message whose content alone tokenizes to more than `need` tokens (and some, see
/// [`encode_head`]) to the start that does. What the template renders before such a message's
/// cut is what it renders from the whole row, so the rendered chat's first `need` tokens are
/// the whole row's, unless the template rewrites a message from text past the cut (Qwen3's
/// keeps what follows a `</think>` in an assistant turn): only rows longer than
/// [`CHAT_WHOLE_MAX`] are cut, rows the template could otherwise not render at all.
fn cut_messages(messages: &mut [Message], model: &Model, need: usize) -> Result<()> {
    for m in messages {
        let (_, used) = encode_head(model, &m.content, false, need)?;
        if used < m.content.len() {
            m.content.truncate(used);
            m.content.shrink_to_fit();
        }
    }
    Ok(())
}

/// One row as an example, cut to `max_len` tokens.
pub fn example(v: serde_json::Value, model: &Model, mask_prompt: bool, max_len: usize) -> Result<Example> {
    let serde_json::Value::Object(mut obj) = v else {
        return Err(Error::format("expected a JSON object"));
    };
    let mut messages: Vec<Message> = if let Some(m) = obj.remove("messages") {
        // Every message says what it holds: its content, or (an assistant's) tool calls.
        if let Some(list) = m.as_array() {
            for (i, msg) in list.iter().enumerate() {
                if msg.get("content").is_none() && msg.get("tool_calls").is_none() {
                    return Err(Error::format(format!("\"messages\"[{i}] has no \"content\"")));
                }
            }
        }
        // Taken by value: a long message is moved, not copied.
        let msgs: Vec<Message> = serde_json::from_value(m)
            .map_err(|e| Error::format(format!("\"messages\" must be a list of {{role, content}}: {e}")))?;
        if msgs.is_empty() {
            return Err(Error::format("\"messages\" is empty"));
        }
        msgs
    } else if let (Some(p), Some(c)) = (str_field(&obj, "prompt")?, str_field(&obj, "completion")?) {
        vec![Message::new("user", p), Message::new("assistant", c)]
    } else if let Some(t) = str_field(&obj, "text")? {
        if mask_prompt {
            return Err(Error::format("a \"text\" row has no prompt to mask"));
        }
        let (mut tokens, used) = encode_head(model, t, true, max_len)?;
        // As mlx-lm: EOS ends the whole text, and the cut to max_len comes after it.
        if used == t.len() {
            if let Some(e) = model.tokenizer().eos_id() {
                if tokens.last() != Some(&e) {
                    tokens.push(e);
                }
            }
        }
        return checked(tokens, 0, max_len);
    } else {
        return Err(Error::format("expected \"text\", \"prompt\" and \"completion\", or \"messages\""));
    };
    drop(obj);
    if messages.iter().map(|m| m.content.len()).sum::<usize>() > CHAT_WHOLE_MAX {
        cut_messages(&mut messages, model, max_len)?;
    }
    let none = serde_json::Map::new();
    let full = model.render_chat(&messages, false, None, &none, None)?;
    let (tokens, _) = encode_head(model, &full, false, max_len)?;
    drop(full);
    let offset = if mask_prompt {
        let head = model.render_chat(&messages[..messages.len() - 1], true, None, &none, None)?;
        // A prompt of max_len tokens or more leaves nothing to learn: counting past that
        // changes nothing.
        encode_head(model, &head, false, max_len)?.0.len()
    } else {
        0
    };
    checked(tokens, offset, max_len)
}

/// The row's first `max_len` tokens, if they leave something to learn.
fn checked(mut tokens: Vec<u32>, offset: usize, max_len: usize) -> Result<Example> {
    tokens.truncate(max_len);
    tokens.shrink_to_fit();
    if tokens.len() < 2 {
        return Err(Error::format(format!("{} tokens: a row needs at least 2 to predict one", tokens.len())));
    }
    if offset >= max_len {
        return Err(Error::format(format!(
            "the masked prompt fills the whole max sequence length ({max_len} tokens): nothing to learn"
        )));
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
///
/// The shuffle is `rand`'s Fisher-Yates over ChaCha8 seeded from the seed
/// (`SeedableRng::seed_from_u64`): both are specified to give the same values on every
/// platform, so a seed gives the same batch order everywhere (mlx-lm's numpy permutation is
/// another order; nothing compares with it: its reference runs hold one batch).
pub struct Batches {
    order: Vec<Vec<usize>>,
    at: usize,
    rng: ChaCha8Rng,
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
        let mut order: Vec<Vec<usize>> = idx.chunks_exact(batch_size).map(|c| c.to_vec()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        order.shuffle(&mut rng);
        Ok(Batches { order, at: 0, rng, max_len })
    }

    /// The next batch, looping over the data (reshuffled each pass).
    pub fn next(&mut self, data: &[Example]) -> Batch {
        if self.at == self.order.len() {
            self.at = 0;
            self.order.shuffle(&mut self.rng);
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
