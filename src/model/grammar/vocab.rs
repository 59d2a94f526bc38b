//! The vocabulary as the grammar engine sees it: the bytes each token id stands for (special
//! tokens marked, as llguidance expects), and a tokenizer for text a grammar forces.
//!
//! Token bytes come from the token strings themselves, by the scheme the tokenizer's decoder
//! names: byte-level BPE (GPT-2's byte-to-character table: Llama 3, Qwen, SmolLM) or
//! SentencePiece pieces (`▁` for a space, `<0xNN>` byte-fallback tokens: Gemma, Mistral,
//! Llama 2). Other schemes (WordPiece...) cannot be constrained and are refused.

use std::collections::HashMap;
use std::sync::Arc;

use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::model::text::tokenizer::Tokenizer;
use crate::{Error, Result};

/// How token strings spell bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scheme {
    /// GPT-2's table: every byte is one printable character.
    ByteLevel,
    /// SentencePiece: `space` stands for ' ', `<0xNN>` is byte NN.
    Pieces { space: char },
}

/// The scheme a tokenizer's decoder (as JSON) applies, if any this module knows.
fn scheme(decoder: &serde_json::Value) -> Option<Scheme> {
    let kind = decoder.get("type").and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "ByteLevel" => Some(Scheme::ByteLevel),
        "Metaspace" => {
            let space = decoder.get("replacement").and_then(|r| r.as_str()).and_then(single_char);
            Some(Scheme::Pieces { space: space.unwrap_or('▁') })
        }
        "ByteFallback" => Some(Scheme::Pieces { space: '▁' }),
        "Sequence" => {
            let parts = decoder.get("decoders").and_then(|d| d.as_array())?;
            let mut found = None;
            let mut space = None;
            for d in parts {
                match d.get("type").and_then(|t| t.as_str()) {
                    Some("Replace") if d.get("content").and_then(|c| c.as_str()) == Some(" ") => {
                        space = d.pointer("/pattern/String").and_then(|s| s.as_str()).and_then(single_char);
                    }
                    _ => {
                        if let Some(s) = scheme(d) {
                            found.get_or_insert(s);
                        }
                    }
                }
            }
            match (found, space) {
                (Some(Scheme::Pieces { .. }), Some(sp)) | (None, Some(sp)) => {
                    Some(Scheme::Pieces { space: sp })
                }
                (f, _) => f,
            }
        }
        _ => None,
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// GPT-2's character-to-byte table: the printable bytes stand for themselves, the others are
/// numbered from U+0100 upwards in byte order.
fn byte_level_table() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    let mut table = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            b as char
        } else {
            let c = char::from_u32(next).expect("U+0100.. are characters");
            next += 1;
            c
        };
        table.insert(c, b);
    }
    table
}

/// `<0xNN>` as the byte NN.
fn fallback_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Each id's bytes (`n_vocab` of them: ids past the tokenizer's vocabulary, rows the model
/// pads its embedding with, get none and so can never be chosen). Special tokens start with
/// llguidance's marker byte 0xFF, so that grammars match them only by name.
pub fn token_bytes(tok: &Tokenizer, n_vocab: usize) -> Result<Vec<Vec<u8>>> {
    let hf = tok.inner();
    let decoder =
        hf.get_decoder().and_then(|d| serde_json::to_value(d).ok()).unwrap_or(serde_json::Value::Null);
    let scheme = scheme(&decoder).ok_or_else(|| {
        Error::unsupported(format!(
            "constrained decoding needs a byte-level BPE or SentencePiece vocabulary; this tokenizer's decoder is {}",
            decoder.get("type").and_then(|t| t.as_str()).unwrap_or("absent")
        ))
    })?;
    let added = hf.get_added_tokens_decoder();
    let table = byte_level_table();
    let mut out = vec![Vec::new(); n_vocab];
    for (id, slot) in out.iter_mut().enumerate().take(tok.vocab_size()) {
        let id = id as u32;
        if let Some(a) = added.get(&id) {
            let mut b = Vec::with_capacity(a.content.len() + 1);
            if a.special {
                b.push(TokTrie::SPECIAL_TOKEN_MARKER);
            }
            b.extend_from_slice(a.content.as_bytes());
            *slot = b;
            continue;
        }
        let Some(piece) = hf.id_to_token(id) else { continue };
        *slot = match scheme {
            Scheme::ByteLevel => {
                // A piece with a character outside the table is no byte sequence: unreachable.
                match piece.chars().map(|c| table.get(&c).copied()).collect::<Option<Vec<u8>>>() {
                    Some(b) => b,
                    None => continue,
                }
            }
            Scheme::Pieces { space } => match fallback_byte(&piece) {
                Some(b) => vec![b],
                None => piece.replace(space, " ").into_bytes(),
            },
        };
    }
    // The grammar engine stores a token's length in a byte; a longer token is unreachable.
    for b in out.iter_mut() {
        if b.len() > 255 {
            b.clear();
        }
    }
    Ok(out)
}

/// The tokenizer for forced text: the model's own, without what it adds to the start of a
/// text (a `Prepend` normalizer, a Metaspace pre-tokenizer's leading `▁`), since forced text
/// continues a sequence.
fn continuation_tokenizer(tok: &Tokenizer) -> Result<tokenizers::Tokenizer> {
    let mut json: serde_json::Value = serde_json::to_value(tok.inner())
        .map_err(|e| Error::internal(format!("serializing the tokenizer: {e}")))?;
    fn strip_prepend(n: &mut serde_json::Value) -> bool {
        match n.get("type").and_then(|t| t.as_str()) {
            Some("Prepend") => false,
            Some("Sequence") => {
                if let Some(list) = n.get_mut("normalizers").and_then(|l| l.as_array_mut()) {
                    list.retain_mut(strip_prepend);
                }
                true
            }
            _ => true,
        }
    }
    fn never_prepend(p: &mut serde_json::Value) {
        match p.get("type").and_then(|t| t.as_str()) {
            Some("Metaspace") => {
                p["prepend_scheme"] = serde_json::Value::String("never".into());
                if p.get("add_prefix_space").is_some() {
                    p["add_prefix_space"] = serde_json::Value::Bool(false);
                }
            }
            Some("Sequence") => {
                if let Some(list) = p.get_mut("pretokenizers").and_then(|l| l.as_array_mut()) {
                    list.iter_mut().for_each(never_prepend);
                }
            }
            _ => {}
        }
    }
    if let Some(n) = json.get_mut("normalizer") {
        if !strip_prepend(n) {
            *n = serde_json::Value::Null;
        }
    }
    if let Some(p) = json.get_mut("pre_tokenizer") {
        never_prepend(p);
    }
    let text = serde_json::to_string(&json)
        .map_err(|e| Error::internal(format!("serializing the tokenizer: {e}")))?;
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| Error::internal(format!("rebuilding the tokenizer for forced text: {e}")))
}

/// llguidance's view of a model's tokenizer.
struct Env {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            match self.tokenizer.encode_fast(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                // Text the tokenizer refuses: byte by byte through the trie.
                Err(_) => self.trie.greedy_tokenize(text.as_bytes()),
            }
        })
    }
}

/// The token environment for `tok` with `n_vocab` ids (the model's logits width); `eos` are
/// the ids that may end a constrained output (the model's EOS set).
pub fn environment(tok: &Tokenizer, n_vocab: usize, eos: &[u32]) -> Result<TokEnv> {
    let words = token_bytes(tok, n_vocab)?;
    let first_eos = eos.first().copied().ok_or_else(|| {
        Error::unsupported("constrained decoding needs an end-of-sequence token; the model names none")
    })?;
    let info = TokRxInfo::new(n_vocab as u32, first_eos);
    let trie =
        std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(eos)).map_err(|_| {
            Error::format("the tokenizer's vocabulary cannot be arranged for constrained decoding")
        })?;
    let tokenizer = continuation_tokenizer(tok)?;
    Ok(Arc::new(Env { trie, tokenizer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let t = byte_level_table();
        assert_eq!(t.len(), 256);
        let mut seen = [false; 256];
        for &b in t.values() {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }

    #[test]
    fn decoders_name_their_scheme() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(scheme(&j(r#"{"type":"ByteLevel"}"#)), Some(Scheme::ByteLevel));
        assert_eq!(
            scheme(&j(
                r#"{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"}]}"#
            )),
            Some(Scheme::Pieces { space: '▁' })
        );
        assert_eq!(
            scheme(&j(r#"{"type":"Metaspace","replacement":"_"}"#)),
            Some(Scheme::Pieces { space: '_' })
        );
        assert_eq!(scheme(&j(r#"{"type":"WordPiece"}"#)), None);
        assert_eq!(fallback_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(fallback_byte("<0x0>"), None);
        assert_eq!(fallback_byte("hello"), None);
    }
}
