//! Constrained decoding's model half: what an output must match ([`Constraint`]), compiled by
//! llguidance against the model's vocabulary ([`Grammars`], built once per model on first
//! use, with a bounded cache of compiled grammars since the same schema comes again and
//! again). The engine drives the resulting [`Matcher`]s token by token.

pub mod vocab;

use std::collections::HashMap;
use std::sync::Mutex;

use llguidance::api::TopLevelGrammar;
use llguidance::{JsonCompileOptions, ParserFactory, TokenParser};
use toktrie::TokEnv;

pub use llguidance::Matcher;

use crate::model::text::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Largest constraint text (a schema, regex or grammar) and the most choices, so that a
/// hostile request cannot make compilation the server's whole afternoon. llguidance bounds
/// the work of each compilation and mask on top of these.
pub const MAX_CONSTRAINT_BYTES: usize = 1 << 20;
pub const MAX_CHOICES: usize = 4096;

/// Compiled grammars kept per model (least recently used dropped first).
pub const CACHE_ENTRIES: usize = 64;

/// What an output must match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// A JSON value valid against this JSON Schema (text; the draft 2020-12 subset llguidance
    /// supports). Unsupported keywords are refused when it is compiled, named in the error.
    /// Output is compact JSON with `", "` and `": "` separators unless the schema's own
    /// `x-guidance` options say otherwise.
    JsonSchema(String),
    /// Any JSON object.
    JsonObject,
    /// Text that the regular expression matches whole (Rust `regex` syntax).
    Regex(String),
    /// Text in the language of a grammar in llguidance's Lark format.
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

impl Constraint {
    /// The constraint kind's name, as errors and the C ABI spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::JsonObject => "json_object",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "grammar",
            Constraint::Choice(_) => "choice",
        }
    }

    /// Checks sizes and shapes (not yet whether it compiles).
    pub fn validate(&self) -> Result<()> {
        let text_len = match self {
            Constraint::JsonSchema(t) | Constraint::Regex(t) | Constraint::Lark(t) => t.len(),
            Constraint::JsonObject => 0,
            Constraint::Choice(c) => {
                if c.is_empty() {
                    return Err(Error::invalid("choice: the list of choices is empty"));
                }
                if c.len() > MAX_CHOICES {
                    return Err(Error::invalid(format!(
                        "choice: {} choices; at most {MAX_CHOICES}",
                        c.len()
                    )));
                }
                if let Some(i) = c.iter().position(|s| s.is_empty()) {
                    return Err(Error::invalid(format!("choice {i} is empty")));
                }
                c.iter().map(String::len).sum()
            }
        };
        if text_len > MAX_CONSTRAINT_BYTES {
            return Err(Error::invalid(format!(
                "{}: {text_len} bytes; at most {MAX_CONSTRAINT_BYTES}",
                self.kind()
            )));
        }
        if matches!(self, Constraint::Regex(t) | Constraint::Lark(t) if t.trim().is_empty()) {
            return Err(Error::invalid(format!("{}: empty", self.kind())));
        }
        Ok(())
    }

    /// The grammar llguidance compiles.
    fn grammar(&self) -> Result<TopLevelGrammar> {
        self.validate()?;
        Ok(match self {
            Constraint::JsonSchema(text) => {
                let mut schema: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| Error::invalid(format!("json_schema: not valid JSON: {e}")))?;
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(Error::invalid("json_schema: a schema is a JSON object or a boolean"));
                }
                if let Some(obj) = schema.as_object_mut() {
                    if !obj.contains_key("x-guidance") {
                        obj.insert("x-guidance".into(), json_options());
                    }
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::JsonObject => {
                let mut schema = serde_json::json!({"type": "object"});
                schema["x-guidance"] = json_options();
                TopLevelGrammar::from_json_schema(schema)
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Constraint::Choice(choices) => {
                let alts: Vec<String> = choices.iter().map(|c| regex_syntax::escape(c)).collect();
                TopLevelGrammar::from_regex(&format!("(?:{})", alts.join("|")))
            }
        })
    }
}

/// How JSON is written under a schema: compact, with Python's `json.dumps` separators (what
/// models saw most), so that fixed keys are forced text.
fn json_options() -> serde_json::Value {
    let opts = JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        ..JsonCompileOptions::default()
    };
    serde_json::to_value(&opts).unwrap_or_default()
}

/// A model's grammar compiler and its cache of compiled grammars.
pub struct Grammars {
    factory: ParserFactory,
    cache: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    entries: HashMap<Constraint, (TokenParser, u64)>,
    hits: u64,
    misses: u64,
}

/// Cache use since the model was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

impl Grammars {
    /// The compiler for `tok` with `n_vocab` ids (the logits' width); `eos` may end output.
    pub fn new(tok: &Tokenizer, n_vocab: usize, eos: &[u32]) -> Result<Grammars> {
        let env: TokEnv = vocab::environment(tok, n_vocab, eos)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::internal(format!("preparing the grammar compiler: {e}")))?;
        factory.quiet();
        Ok(Grammars { factory, cache: Mutex::new(Lru::default()) })
    }

    /// The token environment (vocabulary bytes, tokenizer) grammars compile against.
    pub fn env(&self) -> &TokEnv {
        self.factory.tok_env()
    }

    /// A fresh matcher for `c`, compiled or taken from the cache. A constraint that does not
    /// compile is an `InvalidArgument` error whose message names the kind and what failed.
    pub fn matcher(&self, c: &Constraint) -> Result<Matcher> {
        let parser = self.parser(c)?;
        let m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(Error::invalid(format!("{}: {e}", c.kind())));
        }
        Ok(m)
    }

    fn parser(&self, c: &Constraint) -> Result<TokenParser> {
        {
            let mut lru = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((p, used)) = lru.entries.get_mut(c) {
                *used = tick;
                // A clone shares the compiled grammar and its warm lexer caches.
                let p = p.clone();
                lru.hits += 1;
                return Ok(p);
            }
            lru.misses += 1;
        }
        let grammar = c.grammar()?;
        let factory = &self.factory;
        let compiled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory.create_parser(grammar)))
                .map_err(|_| Error::invalid(format!("{}: the grammar compiler failed on it", c.kind())))?
                .map_err(|e| Error::invalid(format!("{}: {e}", c.kind())))?;
        let mut lru = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if lru.entries.len() >= CACHE_ENTRIES {
            if let Some(oldest) = lru.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                lru.entries.remove(&oldest);
            }
        }
        let tick = lru.tick;
        lru.entries.insert(c.clone(), (compiled.clone(), tick));
        Ok(compiled)
    }

    pub fn cache_stats(&self) -> CacheStats {
        let lru = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        CacheStats { hits: lru.hits, misses: lru.misses, entries: lru.entries.len() }
    }
}
