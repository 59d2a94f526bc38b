//! Tokenization through the `tokenizers` crate, with the BOS and EOS rules the checkpoint's
//! configs state, and a streaming decoder that never emits half a character.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::config::Config;
use crate::{Error, Result};

/// Calls into the `tokenizers` crate whose cost grows with the vocabulary (in 0.22,
/// `get_vocab_size(true)` builds the whole vocabulary as a map). They happen at load only;
/// the count lets tests prove that nothing per token does one.
static VOCAB_SCANS: AtomicU64 = AtomicU64::new(0);

/// How many vocabulary-sized tokenizer calls this process has made (see [`Tokenizer`]).
pub fn vocabulary_scans() -> u64 {
    VOCAB_SCANS.load(Ordering::Relaxed)
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Vocabulary size with added tokens, read once at load.
    vocab: usize,
    bos: Option<u32>,
    bos_text: Option<String>,
    eos_text: Option<String>,
    /// `add_bos_token` from tokenizer_config.json, when it says.
    add_bos: Option<bool>,
    eos: BTreeSet<u32>,
}

/// A special token given as a string or as `{"content": ...}`.
fn token_text(cfg: &Config, key: &str) -> Result<Option<String>> {
    match cfg.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Object(o)) => {
            Ok(o.get("content").and_then(|c| c.as_str()).map(str::to_string))
        }
        Some(_) => Err(Error::format(format!("{}: {key}: expected a string", cfg.path.display()))),
    }
}

/// End-of-turn markers that, when a chat template uses them, end generation.
const END_OF_TURN: &[&str] =
    &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|end_of_text|>", "</s>"];

impl Tokenizer {
    /// A tokenizer from the bytes of `tokenizer.json` at `path` (read by the loader), with
    /// `tokenizer_config.json` and `generation_config.json` (either may be absent) and the
    /// model config for BOS and EOS; `template` (the model's own chat template) adds its
    /// end-of-turn markers to the EOS set.
    pub fn from_json(
        path: &Path,
        bytes: &[u8],
        model_cfg: &Config,
        tok_cfg: Option<&Config>,
        gen_cfg: Option<&Config>,
        template: Option<&str>,
    ) -> Result<Tokenizer> {
        // The tokenizers crate panics on some malformed files (a decoder section it cannot
        // parse): a panic there is the file's fault, reported as such.
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes)).map_err(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the tokenizers crate failed".into());
            Error::format(format!("{}: malformed tokenizer: {why}", path.display()))
        })?;
        let inner = parsed.map_err(|e| Error::format(format!("{}: {e}", path.display())))?;
        let (mut bos_text, mut eos_text, mut add_bos) = (None, None, None);
        if let Some(tc) = tok_cfg {
            bos_text = token_text(tc, "bos_token")?;
            eos_text = token_text(tc, "eos_token")?;
            add_bos = tc.bool("add_bos_token")?;
        }
        let bos = match &bos_text {
            Some(s) => inner.token_to_id(s),
            None => model_cfg.ids("bos_token_id")?.first().copied(),
        };
        let mut eos: BTreeSet<u32> = model_cfg.ids("eos_token_id")?.into_iter().collect();
        if let Some(gen) = gen_cfg {
            eos.extend(gen.ids("eos_token_id")?);
        }
        Ok(Tokenizer::assemble(inner, bos, bos_text, eos_text, add_bos, eos, template))
    }

    /// A tokenizer built elsewhere (from a GGUF file's metadata), with its BOS id, whether to
    /// add it, and the ids that end generation; `template` adds its end-of-turn markers.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        add_bos: bool,
        eos: BTreeSet<u32>,
        template: Option<&str>,
    ) -> Tokenizer {
        Tokenizer::assemble(inner, bos, None, None, Some(add_bos), eos, template)
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        bos_text: Option<String>,
        eos_text: Option<String>,
        add_bos: Option<bool>,
        mut eos: BTreeSet<u32>,
        template: Option<&str>,
    ) -> Tokenizer {
        VOCAB_SCANS.fetch_add(1, Ordering::Relaxed);
        let vocab = inner.get_vocab_size(true);
        let bos_text = bos_text.or_else(|| bos.and_then(|id| inner.id_to_token(id)));
        if let Some(id) = eos_text.as_deref().and_then(|s| inner.token_to_id(s)) {
            eos.insert(id);
        }
        if let Some(tpl) = template {
            for marker in END_OF_TURN {
                if tpl.contains(marker) {
                    if let Some(id) = inner.token_to_id(marker) {
                        eos.insert(id);
                    }
                }
            }
        }
        let eos_text = eos_text.or_else(|| eos.iter().next().and_then(|&id| inner.id_to_token(id)));
        Tokenizer { inner, vocab, bos, bos_text, eos_text, add_bos, eos }
    }

    /// Token ids of `text`. With `add_special`, special tokens are added as the tokenizer and
    /// its config say (BOS where the model uses one); BOS is never doubled, even when the text
    /// itself starts with the BOS token.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode(text, add_special).map_err(|e| Error::internal(format!("tokenizing: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(bos) = self.bos {
            if add_special && self.add_bos == Some(true) && ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
            while ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                ids.remove(0);
            }
        }
        Ok(ids)
    }

    /// Text of `ids`; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.vocab as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary (size {n})")));
        }
        self.inner.decode(ids, skip_special).map_err(|e| Error::internal(format!("detokenizing: {e}")))
    }

    /// Vocabulary size, added tokens included (read at load: O(1)).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn bos_text(&self) -> Option<&str> {
        self.bos_text.as_deref()
    }

    pub fn eos_text(&self) -> Option<&str> {
        self.eos_text.as_deref()
    }

    /// The id of the EOS token the tokenizer names (what a training text ends with), else
    /// the smallest of the ids that end generation.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_text
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
            .or_else(|| self.eos.iter().next().copied())
    }

    /// Every token id that ends generation.
    pub fn eos_ids(&self) -> &BTreeSet<u32> {
        &self.eos
    }

    /// Whether `text` is one special token of the vocabulary (an added token marked special:
    /// it decodes to nothing when special tokens are skipped).
    pub fn is_special(&self, text: &str) -> bool {
        self.inner
            .token_to_id(text)
            .is_some_and(|id| self.inner.get_added_tokens_decoder().get(&id).is_some_and(|t| t.special))
    }

    /// The `tokenizers` tokenizer underneath (for the constrained-decoding vocabulary).
    pub(crate) fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
