//! Low-rank adapters (LoRA): `y = W x + scale * B A x` on chosen projections of the last
//! layers, in mlx-lm's file format (`adapters.safetensors` with `model.layers.N.<key>.lora_a`
//! `[in, rank]` and `.lora_b` `[rank, out]`, and `adapter_config.json` with `fine_tune_type`,
//! `num_layers` and `lora_parameters {rank, scale, dropout, keys}`), so adapters move between
//! liblmx and `mlx_lm.lora` both ways. The transformer applies them in its forward pass (one
//! implementation for inference and training).

use std::path::Path;

use crate::mlx::{io, ops, random, Array, Dtype};
use crate::model::arch::spec::ModelSpec;
use crate::model::config::Config;
use crate::{Error, Result};

/// A projection an adapter can target, by its module path inside a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] =
        [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The module path inside a layer ("self_attn.q_proj").
    pub fn key(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// A module path ("self_attn.q_proj"), or its last part ("q_proj").
    pub fn parse(key: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.key() == key || t.key().rsplit('.').next() == Some(key))
    }

    fn index(self) -> usize {
        self as usize
    }

    /// A comma-separated list of projections ("q_proj,v_proj" or module paths); an empty
    /// list means every projection. Duplicates count once.
    pub fn parse_list(list: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let t = Target::parse(k).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown LoRA target {k:?} (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(if out.is_empty() { Target::ALL.to_vec() } else { out })
    }

    /// (input, output) features of this projection in a layer of `spec`.
    pub fn dims(self, spec: &ModelSpec, layer: usize) -> (i32, i32) {
        let l = &spec.layers[layer];
        let (q, kv) = (l.attn.n_heads * l.attn.head_dim, l.attn.n_kv_heads * l.attn.head_dim);
        match self {
            Target::Q => (spec.hidden, q),
            Target::K | Target::V => (spec.hidden, kv),
            Target::O => (q, spec.hidden),
            Target::Gate | Target::Up => (spec.hidden, l.intermediate),
            Target::Down => (l.intermediate, spec.hidden),
        }
    }
}

/// What an adapter is: rank, scale, dropout, which projections of how many last layers.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: i32,
    /// Multiplies the low-rank product (mlx-lm's `scale`; alpha / rank in other tools).
    pub scale: f32,
    /// Dropout on the adapter's input while training (0 = none).
    pub dropout: f32,
    /// The adapter covers the last `num_layers` layers.
    pub num_layers: i32,
    pub targets: Vec<Target>,
}

/// Layers an adapter covers when the caller does not say: the last 16 (mlx-lm's default),
/// or all of a smaller model's.
pub const DEFAULT_LAYERS: usize = 16;

impl LoraConfig {
    /// The scale of an adapter given as `alpha` (other tools' convention): alpha / rank.
    pub fn scale_from_alpha(alpha: f32, rank: i32) -> f32 {
        if rank == 0 {
            0.0
        } else {
            alpha / rank as f32
        }
    }

    /// The layers an adapter covers on a model of `layers` layers when the caller does not
    /// say: [`DEFAULT_LAYERS`], at most the model's.
    pub fn default_layers(layers: usize) -> usize {
        layers.min(DEFAULT_LAYERS)
    }

    /// Weights an adapter of this config has on a model of `spec`.
    pub fn param_count(&self, spec: &ModelSpec) -> u64 {
        let n = spec.layers.len();
        let first = n.saturating_sub(self.num_layers.max(0) as usize);
        let mut total = 0u64;
        for layer in first..n {
            for t in &self.targets {
                let (i, o) = t.dims(spec, layer);
                total += self.rank.max(0) as u64 * (i as u64 + o as u64);
            }
        }
        total
    }

    /// Checks the config against a model of `layers` layers.
    pub fn validate(&self, layers: usize) -> Result<()> {
        if !(1..=4096).contains(&self.rank) {
            return Err(Error::invalid(format!("LoRA rank {} must be between 1 and 4096", self.rank)));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(format!("LoRA scale {} is not a finite number", self.scale)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(format!("LoRA dropout {} must be in [0, 1)", self.dropout)));
        }
        if self.num_layers < 1 || self.num_layers as usize > layers {
            return Err(Error::invalid(format!(
                "LoRA num_layers {} must be between 1 and the model's {layers} layers",
                self.num_layers
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::invalid("LoRA targets no projection"));
        }
        Ok(())
    }

    /// The first layer the adapter covers in a model of `layers` layers.
    pub fn first_layer(&self, layers: usize) -> usize {
        layers - self.num_layers as usize
    }
}

/// The low-rank pairs (A `[in, rank]`, B `[rank, out]`) of one layer, by target.
#[derive(Clone, Default)]
pub struct LayerPairs {
    pairs: [Option<(Array, Array)>; 7],
}

impl LayerPairs {
    pub fn get(&self, t: Target) -> Option<&(Array, Array)> {
        self.pairs[t.index()].as_ref()
    }

    pub fn any(&self, ts: &[Target]) -> bool {
        ts.iter().any(|&t| self.get(t).is_some())
    }

    /// The same pairs with their arrays replaced by `arrays` (A then B, in target order).
    pub fn with_arrays(&self, arrays: &[Array]) -> Result<LayerPairs> {
        let mut out = self.clone();
        let mut it = arrays.iter();
        out.replace(&mut it)?;
        if it.next().is_some() {
            return Err(Error::internal("too many adapter arrays for a layer"));
        }
        Ok(out)
    }

    /// Replaces each pair's arrays by the next two of `it` (A then B, in target order).
    fn replace<'a>(&mut self, it: &mut impl Iterator<Item = &'a Array>) -> Result<()> {
        for (a, b) in self.pairs.iter_mut().flatten() {
            match (it.next(), it.next()) {
                (Some(x), Some(y)) => {
                    *a = x.clone();
                    *b = y.clone();
                }
                _ => return Err(Error::internal("too few adapter arrays")),
            }
        }
        Ok(())
    }
}

/// Adapter weights over a model: pairs per layer (empty for layers it does not cover).
#[derive(Clone)]
pub struct LoraWeights {
    config: LoraConfig,
    layers: Vec<LayerPairs>,
}

impl LoraWeights {
    /// What the adapter is: rank, scale, dropout, layers and targets.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Layer `i`'s pairs (empty for a layer the adapter does not cover); None past the model.
    pub fn layer(&self, i: usize) -> Option<&LayerPairs> {
        self.layers.get(i)
    }

    /// Fresh weights as mlx-lm makes them: A uniform in ±1/sqrt(in), B zero (the adapter
    /// starts as the identity), float32.
    pub fn init(config: LoraConfig, spec: &ModelSpec, key: &Array) -> Result<LoraWeights> {
        config.validate(spec.layers.len())?;
        let n = spec.layers.len();
        let mut layers = vec![LayerPairs::default(); n];
        let keys = random::split(key, (n * 7) as i32)?;
        for (i, lp) in layers.iter_mut().enumerate().skip(config.first_layer(n)) {
            for &t in &config.targets {
                let (din, dout) = t.dims(spec, i);
                let bound = 1.0 / (din as f32).sqrt();
                let k = ops::take(&keys, &Array::scalar_i32((i * 7 + t.index()) as i32), 0)?;
                let a = random::uniform(-bound, bound, &[din, config.rank], Dtype::F32, Some(&k))?;
                let b = ops::zeros(&[config.rank, dout], Dtype::F32)?;
                lp.pairs[t.index()] = Some((a, b));
            }
        }
        let w = LoraWeights { config, layers };
        w.check(spec)?;
        crate::mlx::eval(&w.arrays().iter().collect::<Vec<_>>())?;
        Ok(w)
    }

    /// Every array in a fixed order (layer, target, A then B): the trainable parameters.
    pub fn arrays(&self) -> Vec<Array> {
        self.layers
            .iter()
            .flat_map(|l| l.pairs.iter().flatten().flat_map(|(a, b)| [a.clone(), b.clone()]))
            .collect()
    }

    /// The same adapter with its arrays replaced by `arrays` (in [`arrays`](Self::arrays)'s order).
    pub fn with_arrays(&self, arrays: &[Array]) -> Result<LoraWeights> {
        let mut it = arrays.iter();
        let mut out = self.clone();
        for l in &mut out.layers {
            l.replace(&mut it)?;
        }
        if it.next().is_some() {
            return Err(Error::internal("too many adapter arrays"));
        }
        Ok(out)
    }

    /// Checks that every pair fits a model of `spec` (an adapter loaded for another model).
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        if self.layers.len() != spec.layers.len() {
            return Err(Error::invalid(format!(
                "the adapter was made for a model of {} layers; this one has {}",
                self.layers.len(),
                spec.layers.len()
            )));
        }
        for (i, l) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some((a, b)) = l.get(t) {
                    if spec.layers[i].attn.latent.is_some()
                        && matches!(t, Target::Q | Target::K | Target::V | Target::O)
                    {
                        return Err(Error::unsupported(format!(
                            "the adapter has model.layers.{i}.{}, but model_type {:?} uses multi-head latent attention (adapters on it are not supported)",
                            t.key(),
                            spec.arch
                        )));
                    }
                    if spec.layers[i].moe.is_some() && matches!(t, Target::Gate | Target::Up | Target::Down) {
                        return Err(Error::unsupported(format!(
                            "the adapter has model.layers.{i}.{}, but layer {i} is a mixture of experts (adapters on experts are not supported)",
                            t.key()
                        )));
                    }
                    let (din, dout) = t.dims(spec, i);
                    if a.shape() != [din, self.config.rank] || b.shape() != [self.config.rank, dout] {
                        return Err(Error::invalid(format!(
                            "the adapter's model.layers.{i}.{} is {:?} x {:?}; this model needs [{din}, r] x [r, {dout}]",
                            t.key(),
                            a.shape(),
                            b.shape()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Trainable parameters.
    pub fn param_count(&self) -> u64 {
        self.arrays().iter().map(|a| a.size() as u64).sum()
    }

    /// A fingerprint of the adapter's values (every tensor, as float32) and its scale.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = crate::model::fingerprint::Fingerprint::default();
        h.field(&self.config.scale.to_le_bytes());
        for (name, a) in self.named() {
            h.field(name.as_bytes());
            let v = a.to_f32_vec()?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            h.field(&bytes);
        }
        Ok(h.finish())
    }

    /// Tensor names in mlx-lm's layout, with their arrays.
    pub fn named(&self) -> Vec<(String, Array)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some((a, b)) = l.get(t) {
                    out.push((format!("model.layers.{i}.{}.lora_a", t.key()), a.clone()));
                    out.push((format!("model.layers.{i}.{}.lora_b", t.key()), b.clone()));
                }
            }
        }
        out
    }

    /// Writes `adapters.safetensors` and `adapter_config.json` into `dir` (made if absent).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        if !dir.is_dir() {
            return Err(Error::invalid(format!("{}: not a folder", dir.display())));
        }
        // Both files are checked before either is written: a refusal leaves the folder as it was.
        crate::files::check_replaceable(&dir.join("adapters.safetensors"))?;
        crate::files::check_replaceable(&dir.join("adapter_config.json"))?;
        let named = self.named();
        let refs: Vec<(&str, &Array)> = named.iter().map(|(n, a)| (n.as_str(), a)).collect();
        crate::files::write_replacing(&dir.join("adapters.safetensors"), "safetensors", |tmp| {
            io::save_safetensors(tmp, &refs, &[("format", "mlx")])
        })?;
        let c = &self.config;
        let cfg = serde_json::json!({
            "fine_tune_type": "lora",
            "num_layers": c.num_layers,
            "lora_parameters": {
                "rank": c.rank,
                "scale": c.scale,
                "dropout": c.dropout,
                "keys": c.targets.iter().map(|t| t.key()).collect::<Vec<_>>(),
            },
        });
        let path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::internal(e.to_string()))?;
        crate::files::write_replacing(&path, "json", |tmp| {
            std::fs::write(tmp, &text).map_err(|e| Error::io(tmp, &e))
        })
    }

    /// Reads an adapter folder (mlx-lm's format) for a model of `spec`. Every tensor is
    /// checked: a name the model has no projection for, a missing half of a pair, a shape
    /// that does not fit, a non-float dtype are errors naming the tensor.
    pub fn load(dir: &Path, spec: &ModelSpec) -> Result<LoraWeights> {
        let cfg_path = dir.join("adapter_config.json");
        if !crate::files::present(&cfg_path) {
            return Err(Error::not_found(format!("{}: no such file", cfg_path.display())));
        }
        let cfg = Config::read(&cfg_path)?;
        let kind = cfg.str("fine_tune_type")?.unwrap_or("lora");
        if kind != "lora" {
            return Err(Error::unsupported(format!(
                "{}: fine_tune_type {kind:?} is not supported (supported: lora)",
                cfg_path.display()
            )));
        }
        let params = cfg
            .object("lora_parameters")?
            .ok_or_else(|| Error::format(format!("{}: lora_parameters: missing", cfg_path.display())))?;
        let bad = |what: &str| Error::format(format!("{}: {what}", cfg_path.display()));
        let rank = params.int("rank")?.ok_or_else(|| bad("lora_parameters.rank: missing"))?;
        let scale = params.f64("scale")?.ok_or_else(|| bad("lora_parameters.scale: missing"))? as f32;
        let dropout = params.f64("dropout")?.unwrap_or(0.0) as f32;
        let num_layers = cfg.f64("num_layers")?.ok_or_else(|| bad("num_layers: missing"))?;
        let n = spec.layers.len();
        // mlx-lm reads -1 (or more layers than the model has) as all of them.
        let num_layers =
            if num_layers < 0.0 || num_layers >= n as f64 { n as i32 } else { num_layers as i32 };
        let tensors = io::load_safetensors(&dir.join("adapters.safetensors"))?.tensors;
        let file = dir.join("adapters.safetensors");
        let mut layers = vec![LayerPairs::default(); n];
        let mut targets = std::collections::BTreeSet::new();
        let mut halves: std::collections::HashMap<(usize, Target), [Option<Array>; 2]> = Default::default();
        for (name, a) in tensors {
            let err = |why: String| Error::format(format!("{}: tensor {name}: {why}", file.display()));
            let rest = name.strip_prefix("model.layers.").ok_or_else(|| {
                err("not an adapter tensor of a layer (model.layers.N.<projection>.lora_a/b)".into())
            })?;
            let (layer, rest) = rest.split_once('.').ok_or_else(|| err("no layer index".into()))?;
            let layer: usize = layer.parse().map_err(|_| err(format!("layer {layer:?} is not a number")))?;
            if layer >= n {
                return Err(err(format!("layer {layer} does not exist (the model has {n})")));
            }
            let (module, half) =
                rest.rsplit_once('.').ok_or_else(|| err("no lora_a/lora_b suffix".into()))?;
            let t = Target::parse(module)
                .ok_or_else(|| err(format!("{module} is not a projection liblmx adapts")))?;
            let which = match half {
                "lora_a" => 0,
                "lora_b" => 1,
                "m" => {
                    return Err(Error::unsupported(format!(
                        "{}: tensor {name}: DoRA adapters are not supported",
                        file.display()
                    )))
                }
                other => return Err(err(format!("{other} is not lora_a or lora_b"))),
            };
            if !matches!(a.dtype()?, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(err(format!("dtype {} is not a float type", a.dtype()?)));
            }
            let (din, dout) = t.dims(spec, layer);
            let want = if which == 0 { [din, rank] } else { [rank, dout] };
            if a.shape() != want {
                return Err(err(format!("shape {:?} does not fit the model: expected {want:?}", a.shape())));
            }
            halves.entry((layer, t)).or_default()[which] = Some(a);
            targets.insert(t);
        }
        for ((layer, t), [a, b]) in halves {
            match (a, b) {
                (Some(a), Some(b)) => layers[layer].pairs[t.index()] = Some((a, b)),
                _ => {
                    return Err(Error::format(format!(
                        "{}: model.layers.{layer}.{}: lora_a or lora_b is missing",
                        file.display(),
                        t.key()
                    )))
                }
            }
        }
        if targets.is_empty() {
            return Err(Error::format(format!("{}: no adapter tensors", file.display())));
        }
        let config = LoraConfig { rank, scale, dropout, num_layers, targets: targets.into_iter().collect() };
        config.validate(n).map_err(|e| e.context(cfg_path.display()))?;
        let w = LoraWeights { config, layers };
        w.check(spec).map_err(|e| e.context(file.display()))?;
        crate::mlx::eval(&w.arrays().iter().collect::<Vec<_>>())?;
        w.check_finite().map_err(|e| e.context(file.display()))?;
        Ok(w)
    }

    /// Checks that every value is finite: an adapter of NaN or infinite values (a diverged
    /// training run, a corrupt file) would turn every output it touches into NaN. One
    /// reduction over all the arrays; the tensor is named only when one is bad.
    pub fn check_finite(&self) -> Result<()> {
        // x - x is 0 for a finite x and NaN for NaN or ±inf; the sum is NaN iff one is.
        let probe = |a: &Array| -> Result<Array> {
            let d = ops::subtract(&ops::astype(a, Dtype::F32)?, &ops::astype(a, Dtype::F32)?)?;
            ops::sum(&d, &(0..d.ndim() as i32).collect::<Vec<_>>(), false)
        };
        let named = self.named();
        let mut total = Array::scalar_f32(0.0);
        for (_, a) in &named {
            total = ops::add(&total, &probe(a)?)?;
        }
        if total.item::<f32>()?.is_finite() {
            return Ok(());
        }
        for (name, a) in &named {
            if !probe(a)?.item::<f32>()?.is_finite() {
                return Err(Error::format(format!("tensor {name} holds NaN or infinite values")));
            }
        }
        Ok(())
    }
}

/// Adapter weights in use by a forward pass: with a scale (0 = off) and, while training, a
/// dropout probability and the seed its masks are drawn from.
#[derive(Clone, Copy)]
pub struct Lora<'a> {
    pub weights: &'a LoraWeights,
    pub scale: f32,
    pub dropout: f32,
    /// Dropout masks are a function of this seed, the layer and the projection, so a
    /// recomputed layer (gradient checkpointing) draws the same ones.
    pub seed: u64,
}

impl Lora<'_> {
    pub fn layer(&self, i: usize) -> Option<&LayerPairs> {
        self.weights.layers.get(i)
    }

    /// What a layer needs to apply its pairs.
    pub fn at(&self, layer: usize) -> LoraApply {
        LoraApply {
            scale: self.scale,
            dropout: self.dropout,
            seed: self.seed.wrapping_mul(0x100_0000_01b3) ^ layer as u64,
        }
    }
}

/// Scale and dropout of one layer's adapter (owned: a checkpointed layer keeps it).
#[derive(Clone, Copy, Debug)]
pub struct LoraApply {
    pub scale: f32,
    pub dropout: f32,
    pub seed: u64,
}

impl LoraApply {
    /// `y + scale * ((dropout(x) @ A) @ B)` in y's dtype, or `y` where the layer has no pair
    /// for target `t`.
    pub fn apply(&self, y: Array, x: &Array, pairs: &LayerPairs, t: Target) -> Result<Array> {
        let Some((a, b)) = pairs.get(t) else { return Ok(y) };
        let x = if self.dropout > 0.0 {
            let key = random::key(self.seed.wrapping_mul(31).wrapping_add(t as u64))?;
            let u = random::uniform(0.0, 1.0, &x.shape(), Dtype::F32, Some(&key))?;
            let keep = ops::less(&u, &Array::scalar_f32(1.0 - self.dropout))?;
            let scaled = ops::divide(x, &ops::astype(&Array::scalar_f32(1.0 - self.dropout), x.dtype()?)?)?;
            ops::where_(&keep, &scaled, &ops::zeros(&[], x.dtype()?)?)?
        } else {
            x.clone()
        };
        let z = ops::matmul(&ops::matmul(&x, a)?, b)?;
        let z = ops::multiply(&z, &Array::scalar_f32(self.scale))?;
        ops::add(&y, &ops::astype(&z, y.dtype()?)?)
    }
}
