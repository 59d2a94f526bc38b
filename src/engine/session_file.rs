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

use crate::mlx::{io, Array, Dtype};
use crate::model::{KvCache, KvQuant, LayerState, Model, Packed};
use crate::{Error, Result};

/// The version of liblmx's additions to the layout.
pub const FORMAT: &str = "liblmx-session-1";

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

fn scalar(v: i32) -> Array {
    Array::scalar_i32(v)
}

/// Writes `cache` with its `tokens` (positions `opaque..`) to `path`, replacing the file only
/// once the new one is complete. `extra` adds user metadata (keys must not start with `lmx_`).
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
    let states = cache.export()?;
    let mut tensors: Vec<(String, Array)> = Vec::new();
    let mut classes = Vec::new();
    let mut scalars: Vec<String> = Vec::new();
    let mut put_scalar = |tensors: &mut Vec<(String, Array)>, name: String, v: i32| {
        scalars.push(name.clone());
        tensors.push((name, scalar(v)));
    };
    let offset = cache.offset();
    for (i, st) in states.into_iter().enumerate() {
        match st {
            LayerState::Full { keys, values } => {
                classes.push("KVCache");
                tensors.push((format!("{i}.0"), keys));
                tensors.push((format!("{i}.1"), values));
                put_scalar(&mut tensors, format!("{i}.2"), offset);
            }
            LayerState::Rotating { keys, values, window } => {
                classes.push("RotatingKVCache");
                let n = keys.dim(2)?;
                tensors.push((format!("{i}.0"), keys));
                tensors.push((format!("{i}.1"), values));
                put_scalar(&mut tensors, format!("{i}.2"), offset);
                put_scalar(&mut tensors, format!("{i}.3"), 0);
                put_scalar(&mut tensors, format!("{i}.4"), window);
                // Temporal order: the next write index is the end.
                put_scalar(&mut tensors, format!("{i}.5"), n);
            }
            LayerState::Quantized { keys, values } => {
                classes.push("QuantizedKVCache");
                let q = cache.quant().ok_or_else(|| Error::internal("quantized layer without parameters"))?;
                for (f, p) in [(0, keys), (1, values)] {
                    tensors.push((format!("{i}.{f}.0"), p.w));
                    tensors.push((format!("{i}.{f}.1"), p.scales));
                    tensors.push((format!("{i}.{f}.2"), p.biases));
                }
                put_scalar(&mut tensors, format!("{i}.2"), offset);
                put_scalar(&mut tensors, format!("{i}.3"), q.group_size);
                put_scalar(&mut tensors, format!("{i}.4"), q.bits);
            }
        }
    }
    let dtype = model.transformer.dtype()?;
    let mut meta: Vec<(String, String)> = vec![
        ("0.model".into(), model.dir.display().to_string()),
        ("0.tokenizer_config".into(), "{}".into()),
        (format!("0.{KEY_FORMAT}"), FORMAT.into()),
        (format!("0.{KEY_VERSION}"), env!("CARGO_PKG_VERSION").into()),
        (format!("0.{KEY_ARCH}"), model.transformer.spec.arch.clone()),
        (format!("0.{KEY_FINGERPRINT}"), model.fingerprint.clone()),
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
    for (i, c) in classes.iter().enumerate() {
        meta.push((format!("1.{i}"), (*c).into()));
    }
    meta.push(("2.0".into(), String::new()));
    for (n, name) in scalars.iter().enumerate() {
        meta.push((format!("2.{}.0", n + 1), name.clone()));
        meta.push((format!("2.{}.1", n + 1), "scalar".into()));
    }
    // MLX names the file it writes *.safetensors; write beside the target, then rename.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base =
        path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.{}.lmx-tmp.safetensors", base.to_string_lossy(), std::process::id()));
    let t: Vec<(&str, &Array)> = tensors.iter().map(|(k, a)| (k.as_str(), a)).collect();
    let m: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = io::save_safetensors(&tmp, &t, &m)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, &e)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::format(format!("{}: {msg}", path.display()))
}

/// The tensors and metadata of a file, with accessors that name what is missing or wrong.
struct File<'a> {
    path: &'a Path,
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
    let spec = &model.transformer.spec;
    let mut metadata = BTreeMap::new();
    for (k, v) in &f.meta {
        if let Some(k) = k.strip_prefix("0.") {
            metadata.insert(k.to_string(), v.clone());
        }
    }
    let n_layers = spec.layers.len();
    let classes: Vec<&str> = (0..).map_while(|i| f.meta.get(&format!("1.{i}")).map(String::as_str)).collect();
    if classes.is_empty() {
        return Err(bad(path, "not a prompt-cache file (no cache classes in its metadata)"));
    }
    let ours = metadata.get(KEY_FORMAT).cloned();
    if let Some(fmt) = &ours {
        if fmt != FORMAT {
            return Err(Error::unsupported(format!(
                "{}: session format {fmt:?} is not one this liblmx reads ({FORMAT})",
                path.display()
            )));
        }
        let arch = metadata.get(KEY_ARCH).map(String::as_str).unwrap_or("?");
        let fp = metadata.get(KEY_FINGERPRINT).map(String::as_str).unwrap_or("?");
        if arch != spec.arch || fp != model.fingerprint {
            return Err(Error::invalid(format!(
                "{}: the session was saved from another model ({arch}, fingerprint {fp}); this model is {} \
                 (fingerprint {}, {})",
                path.display(),
                spec.arch,
                model.fingerprint,
                model.dir.display()
            )));
        }
    }
    if classes.len() != n_layers {
        return Err(Error::invalid(format!(
            "{}: the cache has {} layers; this model ({}) has {n_layers}",
            path.display(),
            classes.len(),
            spec.arch
        )));
    }
    let dtype = model.transformer.dtype()?;
    if let Some(d) = metadata.get(KEY_DTYPE) {
        if d != dtype.name() {
            return Err(Error::invalid(format!(
                "{}: the cache was computed in {d}; this model computes in {} (load it with dtype {d})",
                path.display(),
                dtype.name()
            )));
        }
    }
    let mut offset: Option<i32> = None;
    let mut quant: Option<KvQuant> = None;
    let mut states = Vec::with_capacity(n_layers);
    for (i, (class, ls)) in classes.iter().zip(&spec.layers).enumerate() {
        let a = &ls.attn;
        let (h, d) = (a.n_kv_heads, a.head_dim);
        let off = f.int(&format!("{i}.2"))?;
        if offset.is_some_and(|o| o != off) || off <= 0 {
            return Err(bad(
                path,
                format!("layer {i}'s offset {off} differs from the others' or is not positive"),
            ));
        }
        offset = Some(off);
        let st = match (*class, a.window) {
            ("KVCache", None) => {
                let keys = f.kv(&format!("{i}.0"), h, d, dtype)?;
                let values = f.kv(&format!("{i}.1"), h, d, dtype)?;
                if keys.dim(2)? < off || values.dim(2)? < off {
                    return Err(bad(path, format!("layer {i} holds fewer positions than its offset {off}")));
                }
                LayerState::Full { keys, values }
            }
            ("RotatingKVCache", Some(window)) => {
                let (keep, max, idx) =
                    (f.int(&format!("{i}.3"))?, f.int(&format!("{i}.4"))?, f.int(&format!("{i}.5"))?);
                if keep != 0 {
                    return Err(Error::unsupported(format!(
                        "{}: layer {i} keeps {keep} leading positions in its window; liblmx's windows keep none",
                        path.display()
                    )));
                }
                if max != window {
                    return Err(Error::invalid(format!(
                        "{}: layer {i}'s window is {max} positions; this model's is {window}",
                        path.display()
                    )));
                }
                let keys = f.kv(&format!("{i}.0"), h, d, dtype)?;
                let values = f.kv(&format!("{i}.1"), h, d, dtype)?;
                let n = keys.dim(2)?;
                if values.dim(2)? != n || idx < 0 || idx > n || n < off.min(window) {
                    return Err(bad(
                        path,
                        format!("layer {i}'s window buffer (size {n}, index {idx}) is inconsistent"),
                    ));
                }
                LayerState::Rotating {
                    keys: temporal(&keys, idx, off)?,
                    values: temporal(&values, idx, off)?,
                    window,
                }
            }
            ("QuantizedKVCache", None) => {
                let (gs, bits) = (f.int(&format!("{i}.3"))?, f.int(&format!("{i}.4"))?);
                let q = KvQuant { bits, group_size: gs, start: 0 };
                q.check(spec).map_err(|e| e.context(path.display()))?;
                if quant.is_some_and(|p| p.bits != bits || p.group_size != gs) {
                    return Err(bad(path, "the layers are quantized with different bits or group sizes"));
                }
                quant = Some(q);
                let packed = |field: usize, dim: i32| -> Result<Packed> {
                    let w = f.array(&format!("{i}.{field}.0"))?;
                    let scales = f.kv(&format!("{i}.{field}.1"), h, dim / gs, dtype)?;
                    let biases = f.kv(&format!("{i}.{field}.2"), h, dim / gs, dtype)?;
                    let ws = w.shape();
                    let n = scales.dim(2)?;
                    if w.dtype()? != Dtype::U32
                        || ws != [1, h, n, dim * bits / 32]
                        || biases.dim(2)? != n
                        || n < off
                    {
                        return Err(bad(
                            path,
                            format!("layer {i}'s quantized tensors do not fit its shapes"),
                        ));
                    }
                    Ok(Packed { w, scales, biases })
                };
                LayerState::Quantized { keys: packed(0, d)?, values: packed(1, d)? }
            }
            (c, w) => {
                let want = if w.is_some() { "RotatingKVCache" } else { "KVCache or QuantizedKVCache" };
                return Err(Error::invalid(format!(
                    "{}: layer {i} is a {c}; this model's layer {i} needs a {want}",
                    path.display()
                )));
            }
        };
        states.push(st);
    }
    let offset = offset.unwrap_or(0);
    if offset as usize > model.context_length() {
        return Err(Error::invalid(format!(
            "{}: the cache holds {offset} positions; the model's context is {}",
            path.display(),
            model.info.context_length
        )));
    }
    if quant.is_some() && states.iter().any(|s| matches!(s, LayerState::Full { .. })) {
        return Err(bad(path, "some global layers are quantized and others not"));
    }
    let (tokens, opaque) = if ours.is_some() {
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
                format!(
                    "it names {} token ids and {opaque} unknown positions for {offset} cached",
                    tokens.len()
                ),
            ));
        }
        if !tokens.is_empty() {
            model.check_prompt(&tokens, "the saved tokens").map_err(|e| e.context(path.display()))?;
        }
        (tokens, opaque)
    } else {
        (Vec::new(), offset)
    };
    let cache = crate::mlx::with_stream(crate::mlx::device::shared_stream(model.device)?, || {
        let c = KvCache::import(spec, quant, offset, states)?;
        crate::mlx::eval(&c.arrays())?;
        Ok(c)
    })?;
    Ok(Restored {
        cache,
        tokens,
        opaque,
        metadata,
        made_by: if ours.is_some() { "liblmx" } else { "mlx-lm" },
    })
}

/// A rotating buffer's positions in temporal order (mlx-lm's `_temporal_order`, keep = 0).
fn temporal(a: &Array, idx: i32, offset: i32) -> Result<Array> {
    use crate::mlx::ops;
    let n = a.dim(2)?;
    if idx == n {
        Ok(a.clone())
    } else if idx < offset {
        ops::concatenate(&[&ops::slice_axis(a, 2, idx, n)?, &ops::slice_axis(a, 2, 0, idx)?], 2)
    } else {
        ops::slice_axis(a, 2, 0, idx)
    }
}
