//! MLX's quantization format: `quantization` (or `quantization_config`) in config.json with a
//! default `{group_size, bits, mode}` and per-layer entries keyed by module path (an object
//! with other parameters, or `false` for a layer left dense). A layer is quantized iff its
//! `.scales` tensor exists; the config only says how.

use std::collections::HashMap;

use crate::mlx::Array;
use crate::model::config::Config;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantParams {
    pub group_size: i32,
    pub bits: i32,
    pub mode: QuantMode,
}

/// MLX's quantization modes liblmx reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuantMode {
    /// A float scale and bias per group.
    #[default]
    Affine,
    /// OCP microscaling FP4: 4-bit floats, one uint8 power-of-two scale per 32 values, no
    /// biases. Read for stacked experts only (GPT-OSS); any other layer in it is refused.
    Mxfp4,
}

impl QuantMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
        }
    }
}

impl QuantParams {
    /// The mode of every layer but stacked experts, which may also be [`QuantMode::Mxfp4`].
    pub const MODE: &'static str = "affine";

    /// Affine parameters.
    pub fn affine(group_size: i32, bits: i32) -> QuantParams {
        QuantParams { group_size, bits, mode: QuantMode::Affine }
    }

    /// `x @ W.T` for the [out, in] matrix W packed as `w`, `scales` and `biases` with these
    /// parameters.
    pub fn matmul(&self, x: &Array, w: &Array, scales: &Array, biases: &Array) -> Result<Array> {
        crate::mlx::ops::quantized_matmul(
            x,
            w,
            scales,
            Some(biases),
            true,
            self.group_size,
            self.bits,
            Self::MODE,
        )
    }
}

#[derive(Clone, Debug)]
pub struct QuantConfig {
    pub default: QuantParams,
    /// Per-layer parameters; None = this layer is not quantized.
    pub overrides: HashMap<String, Option<QuantParams>>,
}

fn params(cfg: &Config, base: Option<QuantParams>) -> Result<QuantParams> {
    let group_size = cfg.int("group_size")?.or(base.map(|b| b.group_size)).unwrap_or(64);
    let bits = cfg.int("bits")?.or(base.map(|b| b.bits)).unwrap_or(4);
    let mode = match cfg.str("mode")? {
        None => base.map(|b| b.mode).unwrap_or_default(),
        Some("affine") => QuantMode::Affine,
        Some("mxfp4") => QuantMode::Mxfp4,
        Some(mode) => {
            return Err(Error::unsupported(format!(
                "{}: quantization mode {mode:?} is not supported (supported: affine, mxfp4)",
                cfg.path.display()
            )))
        }
    };
    if mode == QuantMode::Mxfp4 && (bits != 4 || group_size != 32) {
        return Err(Error::format(format!(
            "{}: quantization mode \"mxfp4\" has bits 4 and group_size 32, not {bits} and {group_size}",
            cfg.path.display()
        )));
    }
    if ![2, 3, 4, 5, 6, 8].contains(&bits) {
        return Err(Error::unsupported(format!(
            "{}: quantization bits {bits} is not supported",
            cfg.path.display()
        )));
    }
    if ![32, 64, 128].contains(&group_size) {
        return Err(Error::unsupported(format!(
            "{}: quantization group_size {group_size} is not supported (32, 64 or 128)",
            cfg.path.display()
        )));
    }
    Ok(QuantParams { group_size, bits, mode })
}

impl QuantConfig {
    /// Reads the quantization block, if any.
    pub fn read(cfg: &Config) -> Result<Option<QuantConfig>> {
        let block = match cfg.object("quantization")? {
            Some(b) => b,
            None => match cfg.object("quantization_config")? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        if let Some(method) = block.str("quant_method")? {
            return Err(Error::unsupported(format!(
                "{}: quantization method {method:?} is not supported (liblmx reads MLX-quantized checkpoints)",
                cfg.path.display()
            )));
        }
        let default = params(&block, None)?;
        let mut overrides = HashMap::new();
        for (key, v) in &block.obj {
            match v {
                serde_json::Value::Object(_) => {
                    let sub = Config::from_value(&block.path, v).expect("an object");
                    overrides.insert(key.clone(), Some(params(&sub, Some(default))?));
                }
                serde_json::Value::Bool(false) => {
                    overrides.insert(key.clone(), None);
                }
                _ => {}
            }
        }
        Ok(Some(QuantConfig { default, overrides }))
    }

    /// The parameters for the module at `path` ("model.layers.0.mlp.down_proj"); None where
    /// the config says the layer is not quantized.
    pub fn for_module(&self, path: &str) -> Option<QuantParams> {
        match self.overrides.get(path) {
            Some(p) => *p,
            None => Some(self.default),
        }
    }
}
