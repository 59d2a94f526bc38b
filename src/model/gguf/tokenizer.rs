//! A `tokenizers` tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata, the way
//! llama.cpp reads those keys: the vocabulary, its merges or scores, the token types and the
//! special token ids. The result is assembled from the `tokenizers` crate's own parts (a BPE
//! model, pre-tokenizers, normalizers, decoders and a template post-processor), so encoding
//! and decoding run in that crate exactly as they would from a `tokenizer.json`.
//!
//! Two vocabulary kinds are understood:
//!
//! - `gpt2`: byte-level BPE with the file's merges. The text is split by the regular
//!   expressions llama.cpp uses for the file's `tokenizer.ggml.pre` (a name we do not know is
//!   refused, never guessed), then mapped to GPT-2's byte alphabet.
//! - `llama`: SentencePiece. It becomes a BPE with byte fallback whose merges are derived from
//!   the vocabulary: every split of a piece into two pieces of the vocabulary is a merge,
//!   ranked by the merged piece's score. Spaces become "▁", with one prepended to each run of
//!   text when `tokenizer.ggml.add_space_prefix` says so (the default). Gemma files keep
//!   whitespace-only tokens as real spaces and rank merges by position, not score; they are
//!   read as Hugging Face's converter reads them.
//!
//! The metadata is untrusted (a file may be corrupt or hostile): every type, length and id is
//! checked and a problem is an error naming the key, never a panic.

use std::collections::BTreeMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::model::gguf::{Header, Value};
use crate::{Error, Result};

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const MERGES: &str = "tokenizer.ggml.merges";
const SCORES: &str = "tokenizer.ggml.scores";
const TYPES: &str = "tokenizer.ggml.token_type";

/// The vocabulary kinds [`build`] understands (`tokenizer.ggml.model`).
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama"];

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const MAX_TYPE: i64 = 6; // BYTE

/// GPT-2's split, as tokenizers' ByteLevel pre-tokenizer applies it (`use_regex`).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split: contractions in any case, numbers in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with every digit on its own.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a byte-level vocabulary splits text before BPE, by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pre {
    /// GPT-2's regular expression.
    Gpt2,
    /// llama.cpp's fallback for a BPE file without a known pre-tokenizer: punctuation runs,
    /// then GPT-2's expression, then runs of digits, then groups of three ASCII digits.
    Default,
    /// Llama 3 (merges are skipped for a piece that is itself a token).
    Llama3,
    Qwen2,
    /// SmolLM and StarCoder: every digit alone, then GPT-2's expression.
    Digits,
}

/// `tokenizer.ggml.pre` names understood for byte-level vocabularies (llama.cpp's spellings).
const PRE_NAMES: &[(&str, Pre)] = &[
    ("default", Pre::Default),
    ("gpt-2", Pre::Gpt2),
    ("llama-bpe", Pre::Llama3),
    ("llama3", Pre::Llama3),
    ("llama-v3", Pre::Llama3),
    ("qwen2", Pre::Qwen2),
    ("smollm", Pre::Digits),
    ("starcoder", Pre::Digits),
];

/// A tokenizer and the facts about it a GGUF file states.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`, when present.
    pub eot_id: Option<u32>,
    /// Whether encoding with special tokens adds BOS (`tokenizer.ggml.add_bos_token`, by
    /// default what llama.cpp does for the vocabulary: yes for SentencePiece and Llama 3).
    /// The tokenizer's post-processor already does it.
    pub add_bos: bool,
    /// Whether encoding with special tokens appends EOS (`tokenizer.ggml.add_eos_token`).
    pub add_eos: bool,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// What was built, for reports: "gpt2/smollm", "llama (SentencePiece)", ...
    pub kind: String,
}

type Metadata = BTreeMap<String, Value>;

fn string<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| Error::format(format!("{key}: expected a string"))),
    }
}

fn flag(md: &Metadata, key: &str) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::format(format!("{key}: expected a boolean"))),
    }
}

/// A token id key, which must name a token of the vocabulary.
fn token_id(md: &Metadata, key: &str, n: usize) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else { return Ok(None) };
    let id = v.as_u64().ok_or_else(|| Error::format(format!("{key}: expected a token id")))?;
    if id >= n as u64 {
        return Err(Error::format(format!("{key}: token id {id} is outside the vocabulary of {n} tokens")));
    }
    Ok(Some(id as u32))
}

/// An array key; `Ok(None)` when absent.
fn array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [Value]>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_array().map(Some).ok_or_else(|| Error::format(format!("{key}: expected an array"))),
    }
}

fn strings(md: &Metadata, key: &str) -> Result<Option<Vec<String>>> {
    let Some(a) = array(md, key)? else { return Ok(None) };
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::format(format!("{key}[{i}]: expected a string")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A per-token array (scores, types), which must have one entry per token.
fn per_token<T>(
    md: &Metadata,
    key: &str,
    n: usize,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some(a) = array(md, key)? else { return Ok(None) };
    if a.len() != n {
        return Err(Error::format(format!("{key}: {} entries for {n} tokens", a.len())));
    }
    a.iter()
        .enumerate()
        .map(|(i, v)| get(v).ok_or_else(|| Error::format(format!("{key}[{i}]: expected a number"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A signed integer value of any width.
fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x as i64),
        Value::I16(x) => Some(x as i64),
        Value::I32(x) => Some(x as i64),
        Value::I64(x) => Some(x),
        _ => v.as_u64().and_then(|x| i64::try_from(x).ok()),
    }
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes stand for
/// themselves, the others for the characters from U+0100 on, in byte order.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in map.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    map
}

/// Builds the tokenizer a GGUF header describes. Errors name the offending key: a missing or
/// malformed vocabulary is `Format`, a vocabulary kind or pre-tokenizer we do not implement
/// is `Unsupported`.
pub fn build(h: &Header) -> Result<GgufTokenizer> {
    let md = &h.metadata();
    let model = string(md, MODEL)?.ok_or_else(|| Error::format(format!("{MODEL}: missing")))?;
    if !SUPPORTED_MODELS.contains(&model) {
        return Err(Error::unsupported(format!(
            "{MODEL} = {model:?}: unsupported vocabulary kind (supported: {})",
            SUPPORTED_MODELS.join(", ")
        )));
    }
    let tokens = strings(md, TOKENS)?.ok_or_else(|| Error::format(format!("{TOKENS}: missing")))?;
    let n = tokens.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(Error::format(format!("{TOKENS}: {n} tokens")));
    }
    let types = per_token(md, TYPES, n, as_i64)?.unwrap_or_else(|| vec![NORMAL; n]);
    if let Some((i, t)) = types.iter().enumerate().find(|(_, &t)| !(0..=MAX_TYPE).contains(&t)) {
        return Err(Error::format(format!("{TYPES}[{i}]: {t} is not a token type (0-{MAX_TYPE})")));
    }
    let scores = per_token(md, SCORES, n, Value::as_f64)?;
    let spm = model == "llama";

    let bos_key = "tokenizer.ggml.bos_token_id";
    let eos_key = "tokenizer.ggml.eos_token_id";
    // llama.cpp's defaults for SentencePiece files that do not name them.
    let spm_default = |id: u32| (spm && (id as usize) < n).then_some(id);
    let bos_id = token_id(md, bos_key, n)?.or_else(|| spm_default(1));
    let eos_id = token_id(md, eos_key, n)?.or_else(|| spm_default(2));
    let eot_id = token_id(md, "tokenizer.ggml.eot_token_id", n)?;
    let unk_id = token_id(md, "tokenizer.ggml.unknown_token_id", n)?;

    let (mut tok, vocab_text, kind, default_bos) = if spm {
        let arch = string(md, "general.architecture")?.unwrap_or("");
        let gemma = matches!(arch, "gemma" | "gemma2" | "gemma3");
        let prefix = flag(md, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let (tok, text) = sentencepiece(tokens, &types, scores.as_deref(), unk_id, gemma, prefix)?;
        let kind = if gemma { "llama (SentencePiece, Gemma)" } else { "llama (SentencePiece)" };
        (tok, text, kind.to_string(), true)
    } else {
        let pre_name = string(md, PRE)?.unwrap_or("default");
        let pre = PRE_NAMES.iter().find(|(name, _)| *name == pre_name).map(|&(_, p)| p).ok_or_else(|| {
            let known: Vec<&str> = PRE_NAMES.iter().map(|(name, _)| *name).collect();
            Error::unsupported(format!(
                "{PRE} = {pre_name:?}: unsupported pre-tokenizer for a gpt2 vocabulary (supported: {})",
                known.join(", ")
            ))
        })?;
        let merges = strings(md, MERGES)?.ok_or_else(|| Error::format(format!("{MERGES}: missing")))?;
        let (tok, text) = byte_level(tokens, &types, &merges, pre)?;
        (tok, text, format!("gpt2/{pre_name}"), pre == Pre::Llama3)
    };

    // Control and unknown tokens are matched whole in the text and are special (skipped when
    // decoding without special tokens); user-defined ones are matched whole but are text.
    // Neither is normalized. A token whose vocabulary spelling differs from its text (a
    // respelled one) is left to the model, as Hugging Face's converter does.
    let added = |want: &dyn Fn(i64) -> bool, special: bool| -> Vec<AddedToken> {
        vocab_text
            .iter()
            .zip(&types)
            .filter(|(t, &ty)| want(ty) && t.1)
            .map(|(t, _)| AddedToken::from(t.0.clone(), special).normalized(false))
            .collect()
    };
    tok.add_special_tokens(&added(&|t| t == CONTROL || t == UNKNOWN, true));
    tok.add_tokens(&added(&|t| t == USER_DEFINED, false));

    let add_bos = flag(md, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_bos);
    let add_eos = flag(md, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let text_of = |id: Option<u32>, key: &str| -> Result<(u32, String)> {
        let id =
            id.ok_or_else(|| Error::format(format!("{key}: missing, but the file asks to add the token")))?;
        Ok((id, vocab_text[id as usize].0.clone()))
    };
    let bos = if add_bos { Some(text_of(bos_id, bos_key)?) } else { None };
    let eos = if add_eos { Some(text_of(eos_id, eos_key)?) } else { None };
    tok.with_post_processor(Some(template(bos, eos)?));

    let chat_template = string(md, "tokenizer.chat_template")?.map(str::to_string);
    Ok(GgufTokenizer { tokenizer: tok, bos_id, eos_id, eot_id, add_bos, add_eos, chat_template, kind })
}

/// A post-processor that puts BOS before and EOS after each sequence when given.
fn template(bos: Option<(u32, String)>, eos: Option<(u32, String)>) -> Result<TemplateProcessing> {
    // Template pieces are keys into the special-token table, so fixed names keep token text
    // (which may hold spaces or colons) out of the template syntax.
    let mut specials = Vec::new();
    let (mut single, mut pair) = (vec![], vec![]);
    let has_bos = bos.is_some();
    if let Some((id, text)) = bos {
        specials.push(SpecialToken::new("BOS".into(), vec![id], vec![text]));
        single.push("BOS");
        pair.push("BOS");
    }
    single.push("$A:0");
    pair.push("$A:0");
    if eos.is_some() {
        single.push("EOS");
        pair.push("EOS");
    }
    if has_bos {
        pair.push("BOS:1");
    }
    pair.push("$B:1");
    if let Some((id, text)) = eos {
        specials.push(SpecialToken::new("EOS".into(), vec![id], vec![text]));
        pair.push("EOS:1");
    }
    let specials = specials.into_iter().collect::<tokenizers::Result<Vec<_>>>();
    let err = |e: String| Error::internal(format!("building the BOS/EOS template: {e}"));
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(err)?
        .try_pair(pair)
        .map_err(err)?
        .special_tokens(specials.map_err(|e| err(e.to_string()))?)
        .build()
        .map_err(|e| err(e.to_string()))
}

/// The model's spelling of each token, with whether that is also its text (so it can be an
/// added token with the model's id).
type VocabText = Vec<(String, bool)>;

/// Maps each spelling to its id; two tokens spelled alike would leave one unreachable.
fn index(spellings: &[(String, bool)], key: &str) -> Result<Vocab> {
    let mut map = Vocab::with_capacity(spellings.len());
    for (i, (s, _)) in spellings.iter().enumerate() {
        if let Some(first) = map.insert(s.clone(), i as u32) {
            return Err(Error::format(format!("{key}[{i}]: {s:?} repeats token {first}")));
        }
    }
    Ok(map)
}

fn split(pattern: &str) -> Result<PreTokenizerWrapper> {
    Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
        .map(Into::into)
        .map_err(|e| Error::internal(format!("pre-tokenizer {pattern:?}: {e}")))
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
fn byte_level(
    tokens: Vec<String>,
    types: &[i64],
    merges: &[String],
    pre: Pre,
) -> Result<(Tokenizer, VocabText)> {
    // Ordinary tokens are spelled in GPT-2's byte alphabet. One that is not (a few files hold
    // raw text) is respelled from its UTF-8 bytes; control and user-defined tokens keep their
    // text, since they are matched as text before the byte mapping.
    let chars = byte_chars();
    let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
    let spellings: VocabText = tokens
        .into_iter()
        .zip(types)
        .map(|(t, &ty)| {
            if ty == CONTROL
                || ty == USER_DEFINED
                || ty == UNKNOWN
                || t.chars().all(|c| alphabet.contains(&c))
            {
                (t, true)
            } else {
                (t.bytes().map(|b| chars[b as usize]).collect(), false)
            }
        })
        .collect();
    let vocab = index(&spellings, TOKENS)?;
    let pairs = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // llama.cpp splits at the first space after the first byte.
            let at = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
            match at.map(|p| (&m[..p], &m[p + 1..])) {
                Some((a, b)) if !b.is_empty() && !b.contains(' ') => Ok((a.to_string(), b.to_string())),
                _ => Err(Error::format(format!("{MERGES}[{i}]: {m:?} is not of the form \"a b\""))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(pre == Pre::Llama3)
        .build()
        .map_err(|e| Error::format(format!("{MERGES}: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let bytes = |regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, true, regex));
    let pre_tok: PreTokenizerWrapper = match pre {
        Pre::Gpt2 => bytes(true),
        Pre::Default => PreSequence::new(vec![
            split(r"[\p{P}\$\+<=>\^~\|]+")?,
            split(GPT2_SPLIT)?,
            split(r"\p{N}+")?,
            split(r"[0-9][0-9][0-9]")?,
            bytes(false),
        ])
        .into(),
        Pre::Llama3 => PreSequence::new(vec![split(LLAMA3_SPLIT)?, bytes(false)]).into(),
        Pre::Qwen2 => PreSequence::new(vec![split(QWEN2_SPLIT)?, bytes(false)]).into(),
        Pre::Digits => PreSequence::new(vec![split(r"\p{N}")?, bytes(true)]).into(),
    };
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    Ok((tok, spellings))
}

/// Gemma files store each whitespace-only token that holds a space (two or more spaces) as
/// real spaces, where the text it stands for reaches the model as "▁"s; Hugging Face's
/// converter respells them, and we follow it so the two agree.
fn gemma_respell(t: String) -> (String, bool) {
    if t.contains(' ') && t.chars().all(char::is_whitespace) {
        ("\u{2581}".repeat(t.chars().count()), false)
    } else {
        (t, true)
    }
}

/// SentencePiece (`tokenizer.ggml.model = "llama"`) as a byte-fallback BPE.
fn sentencepiece(
    tokens: Vec<String>,
    types: &[i64],
    scores: Option<&[f64]>,
    unk_id: Option<u32>,
    gemma: bool,
    add_prefix: bool,
) -> Result<(Tokenizer, VocabText)> {
    let spellings: VocabText =
        tokens.into_iter().map(|t| if gemma { gemma_respell(t) } else { (t, true) }).collect();
    let vocab = index(&spellings, TOKENS)?;
    // The rank of a merge is its product's: by score, except in Gemma files, whose scores
    // do not follow the merge order for their non-ordinary tokens while their order does.
    let rank: Vec<f64> = match (gemma, scores) {
        (true, _) => (0..spellings.len()).map(|i| -(i as f64)).collect(),
        (false, Some(s)) => s.to_vec(),
        (false, None) => {
            return Err(Error::format(format!("{SCORES}: missing (needed for a llama vocabulary)")))
        }
    };
    let merges = derive_merges(&spellings, &vocab, &rank);
    let unk = unk_id.or_else(|| types.iter().position(|&t| t == UNKNOWN).map(|i| i as u32));
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(spellings[u as usize].0.clone());
    }
    let bpe = builder.build().map_err(|e| Error::format(format!("{TOKENS}: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let space = Replace::new(" ", "\u{2581}").map_err(|e| Error::internal(e.to_string()))?;
    if add_prefix {
        tok.with_normalizer(Some(NormalizerSequence::new(vec![
            Prepend::new("\u{2581}".into()).into(),
            space.into(),
        ])));
    } else {
        tok.with_normalizer(Some(space));
    }
    let unspace = Replace::new("\u{2581}", " ").map_err(|e| Error::internal(e.to_string()))?;
    let mut decoders: Vec<DecoderWrapper> =
        vec![unspace.into(), ByteFallback::new().into(), Fuse::new().into()];
    if add_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok((tok, spellings))
}

/// Longest piece, in bytes, whose splits are looked up. SentencePiece caps pieces at 16
/// characters by default (the longest in Gemma 3 and Llama 2 are 48 bytes); the cap keeps a
/// hostile vocabulary of long tokens from costing time quadratic in their length.
const MAX_PIECE: usize = 256;

/// Merges implied by a vocabulary: each split of a piece into two pieces of the vocabulary,
/// best rank first; ties go to the longer left part, then the longer right part, then the
/// vocabulary's order (Hugging Face's order for SentencePiece models, so both agree).
fn derive_merges(spellings: &[(String, bool)], vocab: &Vocab, rank: &[f64]) -> Vec<(String, String)> {
    struct Cand {
        rank: f64,
        left_chars: usize,
        right_chars: usize,
        left: u32,
        right: u32,
    }
    let mut cands = Vec::new();
    for (i, (piece, _)) in spellings.iter().enumerate() {
        if piece.len() > MAX_PIECE {
            continue;
        }
        let start = cands.len();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&left), Some(&right)) = (vocab.get(l), vocab.get(r)) {
                let left_chars = l.chars().count();
                let right_chars = piece.chars().count() - left_chars;
                cands.push(Cand { rank: rank[i], left_chars, right_chars, left, right });
            }
        }
        cands[start..].sort_by_key(|c| (c.left, c.right));
    }
    // A stable sort keeps the vocabulary's order among equals.
    cands.sort_by(|a, b| {
        b.rank
            .total_cmp(&a.rank)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    cands
        .into_iter()
        .map(|c| (spellings[c.left as usize].0.clone(), spellings[c.right as usize].0.clone()))
        .collect()
}
