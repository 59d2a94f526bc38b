//! Checkpoint tensors: finding the files, validating every tensor before use, and building
//! dense or quantized layers from them.
//!
//! Every error names the file and the tensor. Tensors are read lazily by MLX and evaluated one
//! at a time as layers are built, so loading never holds a second copy of the checkpoint.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::quant::{QuantConfig, QuantParams};
use super::spec::NormStyle;
use crate::mlx::{io, ops, Array, Dtype};
use crate::{Error, Result};

/// The checkpoint's tensors, by name, with the file each came from.
pub struct WeightStore {
    tensors: HashMap<String, (Array, usize)>,
    files: Vec<PathBuf>,
    used: HashSet<String>,
    quant: Option<QuantConfig>,
    /// Floating-point tensors are converted to this dtype when given.
    dtype: Option<Dtype>,
    /// Parameters counted as built (quantized layers count their logical size).
    pub params: u64,
    /// Bytes of the tensors handed out (what the model keeps).
    pub bytes: u64,
}

/// The safetensors files of a model folder: those named by `model.safetensors.index.json`,
/// else `model*.safetensors`, else every `*.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let cfg = super::config::Config::read(&index)?;
        let map = cfg
            .object("weight_map")?
            .ok_or_else(|| Error::format(format!("{}: weight_map: missing", index.display())))?;
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in &map.obj {
            let f = file.as_str().ok_or_else(|| {
                Error::format(format!("{}: weight_map: {tensor}: expected a file name", index.display()))
            })?;
            if f.contains('/') || f.contains("..") {
                return Err(Error::format(format!(
                    "{}: weight_map: {tensor}: bad file name {f:?}",
                    index.display()
                )));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for p in &paths {
            if !p.exists() {
                return Err(Error::not_found(format!(
                    "{}: shard {} named by {} does not exist",
                    p.display(),
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    index.display()
                )));
            }
        }
        return Ok(paths);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    let named: Vec<PathBuf> = all
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model")))
        .cloned()
        .collect();
    let files = if named.is_empty() { all } else { named };
    if files.is_empty() {
        return Err(Error::not_found(format!("{}: no *.safetensors files", dir.display())));
    }
    Ok(files)
}

impl WeightStore {
    /// Opens every weight file of `dir`, validating each header.
    pub fn open(dir: &Path, quant: Option<QuantConfig>, dtype: Option<Dtype>) -> Result<WeightStore> {
        let files = weight_files(dir)?;
        let mut tensors: HashMap<String, (Array, usize)> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let loaded = io::load_safetensors(f)?;
            for (name, a) in loaded.tensors {
                if let Some((_, j)) = tensors.get(&name) {
                    return Err(Error::format(format!(
                        "tensor {name} is in both {} and {}",
                        files[*j].display(),
                        f.display()
                    )));
                }
                tensors.insert(name, (a, i));
            }
        }
        Ok(WeightStore { tensors, files, used: HashSet::new(), quant, dtype, params: 0, bytes: 0 })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn file(&self, name: &str) -> String {
        self.tensors
            .get(name)
            .map(|(_, i)| self.files[*i].display().to_string())
            .unwrap_or_else(|| "<no file>".into())
    }

    fn missing(&self, name: &str) -> Error {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        Error::format(format!("missing tensor {name} (looked in {})", files.join(", ")))
    }

    /// A raw tensor with the expected shape and a dtype from `allowed`; evaluated.
    fn raw(&mut self, name: &str, shape: &[i32], allowed: &[Dtype]) -> Result<Array> {
        let (a, _) = self.tensors.get(name).ok_or_else(|| self.missing(name))?;
        let a = a.clone();
        let dtype = a.dtype()?;
        if !allowed.contains(&dtype) {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            return Err(Error::unsupported(format!(
                "{}: tensor {name}: dtype {dtype} is not supported here (expected {})",
                self.file(name),
                names.join(" or ")
            )));
        }
        if a.shape() != shape {
            return Err(Error::format(format!(
                "{}: tensor {name}: shape {:?}, expected {:?}",
                self.file(name),
                a.shape(),
                shape
            )));
        }
        a.eval().map_err(|e| e.context(format!("{}: reading tensor {name}", self.file(name))))?;
        self.used.insert(name.to_string());
        Ok(a)
    }

    /// A floating-point tensor, converted to the load dtype when one is set.
    pub fn float(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let a = self.raw(name, shape, &[Dtype::F32, Dtype::F16, Dtype::BF16])?;
        let a = match self.dtype {
            Some(d) if a.dtype()? != d => {
                let c = ops::astype(&a, d)?;
                c.eval()?;
                c
            }
            _ => a,
        };
        self.bytes += a.nbytes() as u64;
        Ok(a)
    }

    fn quant_for(&self, module: &str) -> Result<QuantParams> {
        let q = self.quant.as_ref().ok_or_else(|| {
            Error::format(format!(
                "{}: tensor {module}.scales: the layer is quantized but config.json has no quantization block",
                self.file(&format!("{module}.scales"))
            ))
        })?;
        q.for_module(module).ok_or_else(|| {
            Error::format(format!(
                "{}: tensor {module}.scales: config.json says {module} is not quantized",
                self.file(&format!("{module}.scales"))
            ))
        })
    }

    /// Packed weights, scales and biases of a quantized [rows, cols] matrix.
    fn quantized(
        &mut self,
        module: &str,
        rows: i32,
        cols: i32,
    ) -> Result<(Array, Array, Array, QuantParams)> {
        let p = self.quant_for(module)?;
        if cols % p.group_size != 0 || (cols * p.bits) % 32 != 0 {
            return Err(Error::format(format!(
                "{}: {module}: {cols} columns do not fit group size {} at {} bits",
                self.file(&format!("{module}.weight")),
                p.group_size,
                p.bits
            )));
        }
        let w = self.raw(&format!("{module}.weight"), &[rows, cols * p.bits / 32], &[Dtype::U32])?;
        self.bytes += w.nbytes() as u64;
        let groups = cols / p.group_size;
        let scales = self.float(&format!("{module}.scales"), &[rows, groups])?;
        let biases = self.float(&format!("{module}.biases"), &[rows, groups])?;
        self.params += rows as u64 * cols as u64;
        Ok((w, scales, biases, p))
    }

    /// A linear layer `module` mapping `input` features to `output`, dense or quantized.
    pub fn linear(&mut self, module: &str, input: i32, output: i32, bias: bool) -> Result<Linear> {
        let b = if bias {
            let b = self.float(&format!("{module}.bias"), &[output])?;
            self.params += output as u64;
            Some(b)
        } else {
            None
        };
        if self.contains(&format!("{module}.scales")) {
            let (w, scales, biases, p) = self.quantized(module, output, input)?;
            return Ok(Linear::Quantized { w, scales, biases, bias: b, p });
        }
        let w = self.float(&format!("{module}.weight"), &[output, input])?;
        self.params += output as u64 * input as u64;
        // Evaluated now: a view of the weight, no copy, and no lazy work left in the model.
        let wt = ops::transpose(&w, &[1, 0])?;
        wt.eval()?;
        Ok(Linear::Dense { wt, bias: b })
    }

    /// The token embedding table `module` ([vocab, hidden]), dense or quantized.
    pub fn embedding(&mut self, module: &str, vocab: i32, hidden: i32) -> Result<Embedding> {
        if self.contains(&format!("{module}.scales")) {
            let (w, scales, biases, p) = self.quantized(module, vocab, hidden)?;
            return Ok(Embedding::Quantized { w, scales, biases, p });
        }
        let w = self.float(&format!("{module}.weight"), &[vocab, hidden])?;
        self.params += vocab as u64 * hidden as u64;
        Ok(Embedding::Dense { w })
    }

    /// An RMSNorm weight, returned as the factor to multiply by (`1 + w` for Gemma).
    pub fn norm(&mut self, name: &str, dim: i32, style: NormStyle) -> Result<Array> {
        let w = self.float(name, &[dim])?;
        self.params += dim as u64;
        match style {
            NormStyle::Weight => Ok(w),
            NormStyle::OnePlusWeight => {
                let one = ops::astype(&Array::scalar_f32(1.0), w.dtype()?)?;
                let f = ops::add(&w, &one)?;
                f.eval()?;
                Ok(f)
            }
        }
    }

    /// Names of tensors the model did not use, sorted.
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().filter(|k| !self.used.contains(*k)).cloned().collect();
        v.sort();
        v
    }

    /// The dtype of a floating tensor (the checkpoint's compute dtype).
    pub fn dtype_of(&self, name: &str) -> Option<Dtype> {
        self.tensors.get(name).and_then(|(a, _)| a.dtype().ok())
    }
}

/// A linear layer: `x @ W.T + b`.
pub enum Linear {
    /// `wt` is the transposed view of the [out, in] weight (no copy).
    Dense {
        wt: Array,
        bias: Option<Array>,
    },
    Quantized {
        w: Array,
        scales: Array,
        biases: Array,
        bias: Option<Array>,
        p: QuantParams,
    },
}

impl Linear {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (y, bias) = match self {
            Linear::Dense { wt, bias } => (ops::matmul(x, wt)?, bias),
            Linear::Quantized { w, scales, biases, bias, p } => (
                ops::quantized_matmul(
                    x,
                    w,
                    scales,
                    Some(biases),
                    true,
                    p.group_size,
                    p.bits,
                    QuantParams::MODE,
                )?,
                bias,
            ),
        };
        match bias {
            Some(b) => ops::add(&y, b),
            None => Ok(y),
        }
    }

    pub fn quant(&self) -> Option<QuantParams> {
        match self {
            Linear::Dense { .. } => None,
            Linear::Quantized { p, .. } => Some(*p),
        }
    }
}

/// The token embedding table; also the output head when embeddings are tied.
pub enum Embedding {
    Dense { w: Array },
    Quantized { w: Array, scales: Array, biases: Array, p: QuantParams },
}

impl Embedding {
    /// Rows for `ids` (any shape): a quantized table gathers the packed rows and dequantizes
    /// only those, never the whole table.
    pub fn lookup(&self, ids: &Array) -> Result<Array> {
        match self {
            Embedding::Dense { w } => ops::take(w, ids, 0),
            Embedding::Quantized { w, scales, biases, p } => {
                let rows = ops::take(w, ids, 0)?;
                let s = ops::take(scales, ids, 0)?;
                let b = ops::take(biases, ids, 0)?;
                ops::dequantize(&rows, &s, Some(&b), p.group_size, p.bits, QuantParams::MODE, None)
            }
        }
    }

    /// `x @ table.T`: the tied output head.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Embedding::Dense { w } => ops::matmul(x, &ops::transpose(w, &[1, 0])?),
            Embedding::Quantized { w, scales, biases, p } => ops::quantized_matmul(
                x,
                w,
                scales,
                Some(biases),
                true,
                p.group_size,
                p.bits,
                QuantParams::MODE,
            ),
        }
    }

    /// The dtype rows come out in.
    pub fn dtype(&self) -> Result<Dtype> {
        match self {
            Embedding::Dense { w } => w.dtype(),
            Embedding::Quantized { scales, .. } => scales.dtype(),
        }
    }

    pub fn quant(&self) -> Option<QuantParams> {
        match self {
            Embedding::Dense { .. } => None,
            Embedding::Quantized { p, .. } => Some(*p),
        }
    }
}
