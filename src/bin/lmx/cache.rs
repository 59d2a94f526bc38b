//! Session files (`--load-cache`, `--save-cache`) and the quantized KV cache (`--kv-bits`,
//! `--kv-group-size`, `--quantized-kv-start`) of `lmx generate` and `lmx chat`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use lmx::engine::{Session, SessionOptions};
use lmx::model::{KvQuant, Message, Model};
use lmx::{Error, Result};

use crate::options::{at_least, AdapterArgs};

/// The session-file and KV-cache options of `generate` and `chat`.
#[derive(Args, Debug)]
#[command(next_help_heading = "Session cache")]
pub(crate) struct CacheArgs {
    /// Restore the KV cache from FILE first (saved by --save-cache or mlx_lm.cache_prompt).
    ///
    /// A prompt that extends the saved tokens computes only its new part (the metrics line
    /// says how many were cached). `chat` resumes only a conversation saved by `lmx chat
    /// --save-cache`. A file from mlx_lm.cache_prompt has no token ids: the prompt (with
    /// --chat, the rendered chat from the user's message on, as mlx_lm.generate does) is
    /// appended after its cached positions.
    #[arg(long, value_name = "FILE")]
    pub load_cache: Option<PathBuf>,
    /// Save the KV cache and its token ids to FILE at the end (mlx-lm's prompt-cache layout).
    ///
    /// `generate` saves the prompt and the generated tokens (with --max-tokens 0 the prompt
    /// alone); `chat` saves the conversation when it ends.
    #[arg(long, value_name = "FILE")]
    pub save_cache: Option<PathBuf>,
    /// Quantize the KV cache of the global-attention layers to BITS bits.
    #[arg(long, value_name = "BITS")]
    pub kv_bits: Option<KvBits>,
    /// Values per quantization group of the KV cache (needs --kv-bits) [default: 64].
    #[arg(long, value_name = "SIZE")]
    pub kv_group_size: Option<KvGroupSize>,
    /// Quantize the KV cache once it holds N positions (needs --kv-bits; mlx_lm.generate's
    /// default is 5000) [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<i32>(0))]
    pub quantized_kv_start: Option<i32>,
}

/// Bits per value of a quantized KV cache.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum KvBits {
    #[value(name = "4")]
    Four,
    #[value(name = "8")]
    Eight,
}

/// Values per scale and bias of a quantized KV cache.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum KvGroupSize {
    #[value(name = "32")]
    G32,
    #[value(name = "64")]
    G64,
    #[value(name = "128")]
    G128,
}

/// The user-metadata key under which `lmx chat` saves its conversation (a JSON array of
/// `{role, content}`).
pub(crate) const CHAT_KEY: &str = "chat";

/// What a restored session file said about itself.
pub(crate) struct Loaded {
    pub path: PathBuf,
    /// The file's user metadata (liblmx's `lmx_*` keys included).
    pub metadata: BTreeMap<String, String>,
    /// Cached positions whose token ids are unknown (a file made by mlx-lm): a prompt is
    /// appended after them.
    pub opaque: bool,
}

/// The session options the KV-cache flags ask for, checked against `model`; errors name the
/// flags.
pub(crate) fn options(a: &CacheArgs, model: &Model) -> Result<SessionOptions> {
    // Checked here rather than with clap's `requires`, whose message names only the missing
    // option, not the one that needs it.
    let Some(bits) = a.kv_bits else {
        if a.kv_group_size.is_some() {
            return Err(Error::invalid("--kv-group-size needs --kv-bits"));
        }
        if a.quantized_kv_start.is_some() {
            return Err(Error::invalid("--quantized-kv-start needs --kv-bits"));
        }
        return Ok(SessionOptions::default());
    };
    let bits = match bits {
        KvBits::Four => 4,
        KvBits::Eight => 8,
    };
    let group_size = match a.kv_group_size.unwrap_or(KvGroupSize::G64) {
        KvGroupSize::G32 => 32,
        KvGroupSize::G64 => 64,
        KvGroupSize::G128 => 128,
    };
    let q = KvQuant { bits, group_size, start: a.quantized_kv_start.unwrap_or(0) };
    q.check(model.spec()).map_err(|e| {
        let msg = e
            .message
            .replace("kv_group_size", "--kv-group-size")
            .replace("kv_bits", "--kv-bits")
            .replace("kv_quant_start", "--quantized-kv-start");
        Error::new(e.kind, msg)
    })?;
    Ok(SessionOptions { kv_quant: Some(q) })
}

/// Checks the cache-file options before the model loads: the file to restore exists, the
/// folder to save into exists, and no adapter is asked for with either.
pub(crate) fn check_files(a: &CacheArgs, adapter: &AdapterArgs) -> Result<()> {
    if let Some(p) = &a.load_cache {
        if !p.is_file() {
            let why = match std::fs::metadata(p) {
                Err(e) => e.to_string(),
                Ok(_) => "not a file".into(),
            };
            return Err(Error::not_found(format!("--load-cache {}: {why}", p.display())));
        }
    }
    if let Some(p) = &a.save_cache {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() || p.file_name().is_none() {
            return Err(Error::not_found(format!(
                "--save-cache {}: no folder {}",
                p.display(),
                dir.display()
            )));
        }
    }
    if adapter.adapter.is_some() {
        for (flag, p) in [("--save-cache", &a.save_cache), ("--load-cache", &a.load_cache)] {
            if p.is_some() {
                return Err(Error::unsupported(format!(
                    "{flag} cannot be used with --adapter: session files hold caches of the base model \
                     (fuse the adapter into a model and use that)"
                )));
            }
        }
    }
    Ok(())
}

/// A new session with the KV-cache options, or the one `--load-cache` restores.
pub(crate) fn open(a: &CacheArgs, model: &Arc<Model>) -> Result<(Session, Option<Loaded>)> {
    let opts = options(a, model)?;
    let Some(path) = &a.load_cache else {
        return Ok((Session::with_options(model.clone(), &opts)?, None));
    };
    let (session, r) = Session::load(model.clone(), path, &opts).map_err(|e| {
        let msg = e.message.replace("the options ask for", "--kv-bits/--kv-group-size ask for");
        Error::new(e.kind, format!("--load-cache: {msg}"))
    })?;
    let (positions, bytes) = session.cache_size()?;
    eprintln!(
        "[restored {positions} cached positions ({}) from {} (saved by {})]",
        mib(bytes),
        path.display(),
        r.made_by
    );
    let opaque = r.opaque > 0;
    Ok((session, Some(Loaded { path: path.clone(), metadata: r.metadata, opaque })))
}

/// Saves `session` to `path` with `metadata`, with a note on stderr.
pub(crate) fn save(session: &Session, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    let (positions, bytes) = session.cache_size()?;
    session.save(path, metadata).map_err(|e| e.context("--save-cache"))?;
    eprintln!("[saved {positions} cached positions ({}) to {}]", mib(bytes), path.display());
    Ok(())
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The tokens of `msgs` rendered for a cache of unknown tokens (mlx-lm's): as
/// `mlx_lm.generate --prompt-cache-file` does, the rendered chat from the last message's
/// content on, the part before it being what the cache is taken to hold.
pub(crate) fn chat_suffix_tokens(model: &Model, msgs: &[Message]) -> Result<Vec<u32>> {
    const MARK: &str = "<query>";
    let extra = Default::default();
    let full = model.render_chat(msgs, true, None, &extra, None)?;
    let mut probe = msgs.to_vec();
    if let Some(last) = probe.last_mut() {
        last.content = MARK.into();
    }
    let test = model.render_chat(&probe, true, None, &extra, None)?;
    let at =
        test.find(MARK).filter(|&i| full.is_char_boundary(i) && full[..i] == test[..i]).ok_or_else(|| {
            Error::unsupported("this model's chat template cannot continue a cache without token ids")
        })?;
    model.encode(&full[at..], false)
}

/// The conversation a chat saved in `loaded`.
pub(crate) fn chat_messages(loaded: &Loaded) -> Result<Vec<Message>> {
    let s = loaded.metadata.get(CHAT_KEY).ok_or_else(|| {
        Error::invalid(format!(
            "--load-cache {}: the file holds no conversation (lmx chat --save-cache writes one); \
             use a prompt cache with lmx generate --load-cache",
            loaded.path.display()
        ))
    })?;
    serde_json::from_str(s).map_err(|e| {
        Error::format(format!("--load-cache {}: its conversation is not valid: {e}", loaded.path.display()))
    })
}

/// The user metadata that saves `msgs`.
pub(crate) fn chat_metadata(msgs: &[Message]) -> Result<BTreeMap<String, String>> {
    let j = serde_json::to_string(msgs).map_err(|e| Error::internal(e.to_string()))?;
    Ok(BTreeMap::from([(CHAT_KEY.to_string(), j)]))
}
