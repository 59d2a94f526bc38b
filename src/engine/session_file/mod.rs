//! Session files: a session's KV cache and tokens in one safetensors file, laid out as mlx-lm's
//! prompt caches (`save_prompt_cache` / `load_prompt_cache`), so each side reads the other's.
//!
//! Layout: tensor `"{layer}.{field}"` for each field of the layer's cache class, in the
//! class's state order (`KVCache`: keys, values, offset; `RotatingKVCache`: keys, values,
//! offset, keep, max_size, _idx; `QuantizedKVCache`: (keys w, scales, biases), (values ...),
//! offset, group_size, bits — a tuple flattened to `"{layer}.{field}.{part}"`), integers as
//! 0-d int32 arrays. Metadata: `"0.{key}"` the user metadata, `"1.{layer}"` the class names,
//! `"2.0" = ""` and `"2.{n}.0"`/`"2.{n}.1"` the tensor names that hold scalars ("scalar").
//!
//! liblmx adds its own user metadata (`lmx_*` keys): the format version, the liblmx version,
//! the architecture and fingerprint of the model, the compute dtype, and the token ids the
//! cache holds. mlx-lm's files have no token ids: a session restored from one continues after
//! the cached positions without knowing their tokens (as `mlx_lm.generate
//! --prompt-cache-file` does).

use std::collections::BTreeMap;
use std::path::Path;

mod codec;

use crate::mlx::{io, Array, Dtype};
use crate::model::{KvCache, KvQuant, LayerState, Model};
use crate::{Error, Result};

/// The version of liblmx's additions to the layout. Version 2 names the model by its SHA-256
/// fingerprint; files of version 1 (an FNV-1a fingerprint) are still read, their fingerprint
/// recomputed the old way from the model's files.
pub const FORMAT: &str = "liblmx-session-2";
const FORMAT_1: &str = "liblmx-session-1";

/// Metadata keys liblmx writes; other `0.*` keys are the caller's.
const KEY_FORMAT: &str = "lmx_format";
const KEY_VERSION: &str = "lmx_version";
const KEY_ARCH: &str = "lmx_architecture";
const KEY_FINGERPRINT: &str = "lmx_fingerprint";
const KEY_DTYPE: &str = "lmx_dtype";
const KEY_TOKENS: &str = "lmx_tokens";
const KEY_OPAQUE: &str = "lmx_opaque";

/// What a session file restores.
pub struct Restored {
    pub cache: KvCache,
    /// The token ids of positions `opaque..` of the cache.
    pub tokens: Vec<u32>,
    /// Leading cached positions whose token ids the file does not hold (a file made by mlx-lm).
    pub opaque: i32,
    /// The user metadata (`0.*` keys, without the prefix), liblmx's `lmx_*` keys included.
    pub metadata: BTreeMap<String, String>,
    /// Who made the file: "liblmx" or "mlx-lm".
    pub made_by: &'static str,
}

/// Writes `cache` with its `tokens` (positions `opaque..`) to `path`, replacing the file only
/// once the new one is complete (see [`crate::files::write_replacing`]: an existing `path`
/// that is not a regular file is refused). `extra` adds user metadata (keys must not start
/// with `lmx_`). Evaluates the cache (under the compute lock, taken by the evaluation) but
/// holds no lock while the file is written.
pub fn save(
    model: &Model,
    cache: &KvCache,
    tokens: &[u32],
    opaque: i32,
    extra: &BTreeMap<String, String>,
    path: &Path,
) -> Result<()> {
    if cache.offset() == 0 {
        return Err(Error::invalid("the session holds no tokens: there is nothing to save"));
    }
    if let Some(k) = extra.keys().find(|k| k.starts_with("lmx_") || k.contains('.') || k.is_empty()) {
        return Err(Error::invalid(format!(
            "metadata key {k:?} is reserved or malformed (keys starting with lmx_, empty or with a '.')"
        )));
    }
    let mut w = codec::Writer::default();
    for (i, st) in cache.export()?.into_iter().enumerate() {
        w.layer(i, st, cache.offset(), cache.quant())?;
    }
    let meta = metadata(model, &w, tokens, opaque, extra)?;
    // Computed before the file is opened: writing then copies finished buffers only.
    crate::mlx::eval(&w.tensors.iter().map(|(_, a)| a).collect::<Vec<_>>())?;
    let t: Vec<(&str, &Array)> = w.tensors.iter().map(|(k, a)| (k.as_str(), a)).collect();
    let m: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::files::write_replacing(path, "safetensors", |tmp| io::save_safetensors(tmp, &t, &m))
}

/// The file's metadata: the user's (`0.*`, liblmx's `lmx_*` keys first), the layer classes
/// (`1.*`) and which tensors are scalars (`2.*`).
fn metadata(
    model: &Model,
    w: &codec::Writer,
    tokens: &[u32],
    opaque: i32,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let dtype = model.transformer().dtype()?;
    let mut meta: Vec<(String, String)> = vec![
        ("0.model".into(), model.path().display().to_string()),
        ("0.tokenizer_config".into(), "{}".into()),
        (format!("0.{KEY_FORMAT}"), FORMAT.into()),
        (format!("0.{KEY_VERSION}"), env!("CARGO_PKG_VERSION").into()),
        (format!("0.{KEY_ARCH}"), model.spec().arch.clone()),
        (format!("0.{KEY_FINGERPRINT}"), model.fingerprint().to_string()),
        (format!("0.{KEY_DTYPE}"), dtype.name().into()),
        (
            format!("0.{KEY_TOKENS}"),
            serde_json::to_string(tokens).map_err(|e| Error::internal(e.to_string()))?,
        ),
        (format!("0.{KEY_OPAQUE}"), opaque.to_string()),
    ];
    for (k, v) in extra {
        if k == "model" || k == "tokenizer_config" {
            meta.retain(|(m, _)| m != &format!("0.{k}"));
        }
        meta.push((format!("0.{k}"), v.clone()));
    }
    for (i, c) in w.classes.iter().enumerate() {
        meta.push((format!("1.{i}"), (*c).into()));
    }
    meta.push(("2.0".into(), String::new()));
    for (n, name) in w.scalars.iter().enumerate() {
        meta.push((format!("2.{}.0", n + 1), name.clone()));
        meta.push((format!("2.{}.1", n + 1), "scalar".into()));
    }
    Ok(meta)
}

pub(super) fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::format(format!("{}: {msg}", path.display()))
}

/// The tensors and metadata of a file, with accessors that name what is missing or wrong.
pub(super) struct File<'a> {
    pub path: &'a Path,
    tensors: std::collections::HashMap<String, Array>,
    meta: std::collections::HashMap<String, String>,
}

impl File<'_> {
    fn array(&self, name: &str) -> Result<Array> {
        self.tensors.get(name).cloned().ok_or_else(|| bad(self.path, format!("tensor {name} is missing")))
    }

    fn int(&self, name: &str) -> Result<i32> {
        let a = self.array(name)?;
        if a.size() != 1 || !matches!(a.dtype()?, Dtype::I32 | Dtype::I64 | Dtype::U32) {
            return Err(bad(self.path, format!("tensor {name} is not an integer scalar")));
        }
        let v = crate::mlx::ops::astype(&a, Dtype::I32)?.item::<i32>()?;
        Ok(v)
    }

    /// A [1, heads, n, dim] tensor of `dtype`.
    fn kv(&self, name: &str, heads: i32, dim: i32, dtype: Dtype) -> Result<Array> {
        let a = self.array(name)?;
        let s = a.shape();
        if s.len() != 4 || s[0] != 1 || s[1] != heads || s[3] != dim {
            return Err(bad(
                self.path,
                format!("tensor {name} has shape {s:?}; this model's layer needs [1, {heads}, n, {dim}]"),
            ));
        }
        let dt = a.dtype()?;
        if dt != dtype {
            return Err(bad(self.path, format!("tensor {name} is {dt}; this model's cache holds {dtype}")));
        }
        Ok(a)
    }
}

/// Reads a session file for `model`. Refuses a file made for another model (architecture,
/// fingerprint), another dtype, layer layout or shape, a newer format, and corrupt files.
pub fn load(model: &Model, path: &Path) -> Result<Restored> {
    let loaded = io::load_safetensors(path)?;
    let f = File { path, tensors: loaded.tensors, meta: loaded.metadata };
    let spec = model.spec();
    let metadata: BTreeMap<String, String> =
        f.meta.iter().filter_map(|(k, v)| k.strip_prefix("0.").map(|k| (k.to_string(), v.clone()))).collect();
    let classes: Vec<&str> = (0..).map_while(|i| f.meta.get(&format!("1.{i}")).map(String::as_str)).collect();
    if classes.is_empty() {
        return Err(bad(path, "not a prompt-cache file (no cache classes in its metadata)"));
    }
    let ours = metadata.contains_key(KEY_FORMAT);
    if ours {
        check_origin(model, path, &metadata)?;
    }
    let n_layers = spec.layers.len();
    if classes.len() != n_layers {
        return Err(Error::invalid(format!(
            "{}: the cache has {} layers; this model ({}) has {n_layers}",
            path.display(),
            classes.len(),
            spec.arch
        )));
    }
    let dtype = model.transformer().dtype()?;
    if let Some(d) = metadata.get(KEY_DTYPE).filter(|d| *d != dtype.name()) {
        return Err(Error::invalid(format!(
            "{}: the cache was computed in {d}; this model computes in {} (load it with dtype {d})",
            path.display(),
            dtype.name()
        )));
    }
    let offset = f.int("0.2")?;
    let mut quant: Option<KvQuant> = None;
    let mut states = Vec::with_capacity(n_layers);
    for (i, class) in classes.iter().enumerate() {
        let off = f.int(&format!("{i}.2"))?;
        if off != offset || off <= 0 {
            return Err(bad(
                path,
                format!("layer {i}'s offset {off} differs from the others' or is not positive"),
            ));
        }
        states.push(codec::read_layer(&f, i, class, spec, offset, dtype, &mut quant)?);
    }
    if offset as usize > model.context_length() {
        return Err(Error::invalid(format!(
            "{}: the cache holds {offset} positions; the model's context is {}",
            path.display(),
            model.context_length()
        )));
    }
    if quant.is_some() && states.iter().any(|s| matches!(s, LayerState::Full { .. })) {
        return Err(bad(path, "some global layers are quantized and others not"));
    }
    let (tokens, opaque) =
        if ours { token_ids(model, path, &metadata, offset)? } else { (Vec::new(), offset) };
    let cache = crate::mlx::with_stream(crate::mlx::device::shared_stream(model.device())?, || {
        let c = KvCache::import(spec, quant, offset, states)?;
        crate::mlx::eval(&c.arrays())?;
        Ok(c)
    })?;
    Ok(Restored { cache, tokens, opaque, metadata, made_by: if ours { "liblmx" } else { "mlx-lm" } })
}

/// Checks that a file liblmx wrote is of a format this version reads and was saved from this
/// model (architecture and fingerprint; a format-1 file's fingerprint is recomputed the old
/// way).
fn check_origin(model: &Model, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    let spec = model.spec();
    let fmt = metadata.get(KEY_FORMAT).map(String::as_str).unwrap_or("");
    if fmt != FORMAT && fmt != FORMAT_1 {
        return Err(Error::unsupported(format!(
            "{}: session format {fmt:?} is not one this liblmx reads ({FORMAT_1}, {FORMAT})",
            path.display()
        )));
    }
    let arch = metadata.get(KEY_ARCH).map(String::as_str).unwrap_or("?");
    let fp = metadata.get(KEY_FINGERPRINT).map(String::as_str).unwrap_or("?");
    let other = |ours: &str| {
        Error::invalid(format!(
            "{}: the session was saved from another model ({arch}, fingerprint {fp}); this model is {} \
             (fingerprint {ours}, {})",
            path.display(),
            spec.arch,
            model.path().display()
        ))
    };
    if arch != spec.arch {
        return Err(other(model.fingerprint()));
    }
    let ours = if fmt == FORMAT_1 {
        model
            .legacy_fingerprint()
            .map_err(|e| e.context(format!("{} (session format {FORMAT_1})", path.display())))?
    } else {
        model.fingerprint().to_string()
    };
    if fp != ours {
        return Err(other(&ours));
    }
    Ok(())
}

/// The token ids a liblmx file names for its `offset` positions, and how many leading
/// positions it holds without ids.
fn token_ids(
    model: &Model,
    path: &Path,
    metadata: &BTreeMap<String, String>,
    offset: i32,
) -> Result<(Vec<u32>, i32)> {
    let tokens: Vec<u32> = metadata
        .get(KEY_TOKENS)
        .map(|t| serde_json::from_str(t))
        .transpose()
        .map_err(|e| bad(path, format!("{KEY_TOKENS} is not a list of token ids: {e}")))?
        .unwrap_or_default();
    let opaque: i32 = metadata
        .get(KEY_OPAQUE)
        .map(|o| o.parse())
        .transpose()
        .map_err(|_| bad(path, format!("{KEY_OPAQUE} is not a number")))?
        .unwrap_or(0);
    if opaque < 0 || opaque as usize + tokens.len() != offset as usize {
        return Err(bad(
            path,
            format!("it names {} token ids and {opaque} unknown positions for {offset} cached", tokens.len()),
        ));
    }
    if !tokens.is_empty() {
        model.check_prompt(&tokens, "the saved tokens").map_err(|e| e.context(path.display()))?;
    }
    Ok((tokens, opaque))
}
