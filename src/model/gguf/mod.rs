//! The GGUF container (llama.cpp's model files): the header, the metadata key-value pairs
//! and the tensor directory, read and validated against the file's size before anything is
//! sized from them. The format is public: a magic "GGUF", a version (2 or 3), counts, typed
//! key-value pairs, then per tensor a name, dimensions, a ggml type and an offset into the
//! data section, which starts at the next multiple of `general.alignment` (default 32).
//!
//! Every count and length is checked against what is left of the input, so a hostile file
//! gives an error naming what is wrong, never a large allocation or a read past the end.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Error, Result};

mod deepseek;
mod gpt_oss;
mod moe;
pub mod quants;
pub mod tokenizer;
pub mod types;
pub mod weights;

const MAGIC: &[u8; 4] = b"GGUF";
/// Most metadata pairs, tensors, and array elements a file may declare (each also has to fit
/// in what is left of the input).
const MAX_COUNT: u64 = 1 << 24;
/// Deepest nesting of arrays in metadata.
const MAX_DEPTH: usize = 4;
/// Most dimensions of a tensor (ggml has 4).
const MAX_DIMS: u32 = 4;
/// The GGUF architectures liblmx loads (`llama` with or without Mixtral's experts).
pub const SUPPORTED: &[&str] =
    &["llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma3", "deepseek2", "gpt-oss"];
/// Largest header (metadata and tensor directory) read into memory; vocabularies of 256k
/// tokens with scores and types take about 10 MiB.
pub const HEADER_MAX: u64 = 256 << 20;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// An unsigned integer value of any width (a negative signed one is None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor of the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's order: the first dimension varies fastest (the reverse of row-major shapes).
    pub dims: Vec<u64>,
    /// The ggml type number (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K,
    /// 13 Q5_K, 14 Q6_K, 30 BF16, ...).
    pub ggml_type: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of the tensor's data, from its type's block size.
    pub bytes: u64,
}

/// A GGUF file's header.
#[derive(Clone, Debug)]
pub struct Header {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    /// Where the data section starts in the file.
    data_start: u64,
}

/// A cursor over the header bytes that refuses to read past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Whether a read wanted more bytes than the buffer has.
    short: bool,
    file_size: u64,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            self.short = true;
            return Err(Error::format(format!(
                "{what} needs {n} bytes at offset {} but only {left} remain: truncated or corrupt",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.bytes(N as u64, what)?.try_into().expect("length checked"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item` bytes each: bounded by what is left of the
    /// file (the buffer may hold only its beginning).
    fn count(&mut self, min_item: u64, what: &str) -> Result<u64> {
        let n = self.u64(what)?;
        let left = self.file_size.saturating_sub(self.pos as u64);
        if n > MAX_COUNT || n.saturating_mul(min_item) > left {
            return Err(Error::format(format!("{what} {n} does not fit the {left} bytes left: corrupt")));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::format(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::format(format!("metadata {key}: {b} is not a boolean"))),
            },
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(Error::format(format!("metadata {key}: arrays nested too deep")));
                }
                let item = self.u32(key)?;
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count(min, &format!("metadata {key}: array length"))?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(Error::format(format!("metadata {key}: unknown value type {t}"))),
        })
    }
}

/// Parses a GGUF header from the first bytes of a file of `file_size` bytes. `bytes` must
/// hold the whole header (metadata and tensor directory); the data section may be absent.
pub fn parse_header(bytes: &[u8], file_size: u64) -> Result<Header> {
    let mut r = Reader { buf: bytes, pos: 0, short: false, file_size };
    parse(&mut r, file_size)
}

fn parse(r: &mut Reader, file_size: u64) -> Result<Header> {
    if r.bytes(4, "the magic")? != MAGIC {
        return Err(Error::format("not a GGUF file (no \"GGUF\" magic)"));
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::unsupported(format!("GGUF version {version} is not supported (2 and 3 are)")));
    }
    // A tensor takes at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes, a
    // metadata pair at least 8 (key length) + 4 (type) + 1.
    let n_tensors = r.count(24, "the tensor count")?;
    let n_kv = r.count(13, "the metadata count")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("a metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(Error::format(format!("metadata {key} appears twice")));
        }
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("a tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::format(format!("tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&name)?);
        }
        let ggml_type = r.u32(&name)?;
        let offset = r.u64(&name)?;
        let (per_block, block_bytes) =
            types::lookup(ggml_type).map(|t| (t.block, t.bytes)).ok_or_else(|| {
                Error::unsupported(format!("tensor {name}: ggml type {ggml_type} is not supported"))
            })?;
        let elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::format(format!("tensor {name}: dimensions {dims:?} are not a size")))?;
        if dims[0] % per_block != 0 {
            return Err(Error::format(format!(
                "tensor {name}: first dimension {} is not a multiple of its type's block of {per_block}",
                dims[0]
            )));
        }
        let bytes = elements / per_block * block_bytes;
        if tensors.iter().any(|t: &TensorInfo| t.name == name) {
            return Err(Error::format(format!("tensor {name} appears twice")));
        }
        tensors.push(TensorInfo { name, dims, ggml_type, offset, bytes });
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 16 => a,
            _ => return Err(Error::format(format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    // A file without tensors (a vocabulary) may end right after its header.
    let data_size = file_size.saturating_sub(data_start);
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(Error::format(format!(
                "tensor {}: offset {} is not aligned to {alignment}",
                t.name, t.offset
            )));
        }
        let end = t.offset.checked_add(t.bytes).filter(|&e| e <= data_size).ok_or_else(|| {
            Error::format(format!(
                "tensor {}: bytes {}..{} are past the data section's {data_size}: truncated",
                t.name,
                t.offset,
                t.offset.saturating_add(t.bytes)
            ))
        })?;
        let _ = end;
    }
    let mut spans: Vec<(u64, u64, &str)> =
        tensors.iter().map(|t| (t.offset, t.offset + t.bytes, t.name.as_str())).collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::format(format!("tensors {} and {} overlap", w[0].2, w[1].2)));
        }
    }
    Ok(Header { version, metadata, tensors, data_start })
}

/// Reads and validates the header of the GGUF file at `path` (a regular file). The header
/// is read in growing pieces, up to [`HEADER_MAX`] bytes; the data is not read.
/// Whether `path` is meant as a GGUF file: named `*.gguf` or starting with GGUF's magic.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    let mut magic = [0u8; 4];
    match crate::files::open_regular(path) {
        Ok((mut f, _)) => f.read_exact(&mut magic).is_ok() && &magic == MAGIC,
        Err(_) => false,
    }
}

pub fn read_header(path: &Path) -> Result<Header> {
    use std::io::{Read, Seek};
    let (mut f, size) = crate::files::open_regular(path)?;
    let mut want = (1u64 << 20).min(size);
    loop {
        let mut buf = Vec::with_capacity(want as usize);
        f.rewind().map_err(|e| Error::io(path, &e))?;
        (&mut f).take(want).read_to_end(&mut buf).map_err(|e| Error::io(path, &e))?;
        let mut r = Reader { buf: &buf, pos: 0, short: false, file_size: size };
        match parse(&mut r, size) {
            Ok(h) => return Ok(h),
            Err(e) if r.short && want < size.min(HEADER_MAX) => {
                let _ = e;
                want = (want * 4).min(size).min(HEADER_MAX);
            }
            Err(e) => return Err(e.context(path.display())),
        }
    }
}

impl Header {
    /// A header of metadata only (no tensors), as a file holding just a vocabulary would
    /// have: what the tokenizer is built from. The version must be 2 or 3.
    pub fn from_metadata(version: u32, metadata: BTreeMap<String, Value>) -> Result<Header> {
        if !(2..=3).contains(&version) {
            return Err(Error::unsupported(format!("GGUF version {version} is not supported (2 or 3)")));
        }
        Ok(Header { version, metadata, tensors: Vec::new(), data_start: 0 })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata key-value pairs.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// The tensor directory, each tensor checked to lie within the file.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Where the data section starts in the file.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn arch_u64(&self, arch: &str, key: &str) -> Result<Option<u64>> {
        let k = format!("{arch}.{key}");
        match self.get(&k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::format(format!("metadata {k}: {v:?} is not a count"))),
        }
    }

    fn req_u64(&self, arch: &str, key: &str) -> Result<u64> {
        self.arch_u64(arch, key)?.ok_or_else(|| Error::format(format!("metadata {arch}.{key}: missing")))
    }

    fn arch_f64(&self, arch: &str, key: &str) -> Result<Option<f64>> {
        let k = format!("{arch}.{key}");
        match self.get(&k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::format(format!("metadata {k}: {v:?} is not a number"))),
        }
    }

    /// `general.architecture`, when the file has it as a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// The model's configuration as the `config.json` a Hugging Face folder of the same model
    /// has (the keys liblmx reads), from the `<arch>.*` and `tokenizer.ggml.*` metadata.
    /// Architectures: [`SUPPORTED`]: llama (and SmolLM2, Mistral, and Mixtral: llama with
    /// experts), qwen2, qwen3, qwen2moe, qwen3moe, gemma3, deepseek2 (DeepSeek-V2 and V3), gpt-oss.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        use serde_json::json;
        let arch =
            self.architecture().ok_or_else(|| Error::format("metadata general.architecture: missing"))?;
        let own = matches!(arch, "deepseek2" | "gpt-oss");
        let experts = if own { None } else { moe::model_type(self, arch)? };
        let model_type = match (arch, experts) {
            ("deepseek2", _) => deepseek::model_type(self)?,
            ("gpt-oss", _) => "gpt_oss",
            (_, Some(moe)) => moe,
            ("llama", None) => "llama",
            ("qwen2", None) => "qwen2",
            ("qwen3", None) => "qwen3",
            ("gemma3", None) => "gemma3_text",
            (other, _) => {
                // It has a Hugging Face folder liblmx loads; its GGUF layout (MXFP4 blocks)
                // is not read.
                let folder = if other == "gpt-oss" { "; load its Hugging Face folder instead" } else { "" };
                return Err(Error::unsupported(format!(
                    "GGUF architecture {other:?} is not supported (supported: {}){folder}",
                    SUPPORTED.join(", ")
                )));
            }
        };
        let hidden = self.req_u64(arch, "embedding_length")?;
        let heads = self.req_u64(arch, "attention.head_count")?;
        let head_dim = match self.arch_u64(arch, "attention.key_length")? {
            Some(d) => d,
            None if heads > 0 && hidden % heads == 0 => hidden / heads,
            None => return Err(Error::format(format!("metadata {arch}.attention.head_count {heads} does not divide {arch}.embedding_length {hidden}"))),
        };
        let vocab = match self.arch_u64(arch, "vocab_size")? {
            Some(v) => v,
            None => match self.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
                Some(t) => t.len() as u64,
                None => self
                    .tensors
                    .iter()
                    .find(|t| t.name == "token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .ok_or_else(|| Error::format("no vocabulary size: no tokens and no token_embd.weight"))?,
            },
        };
        let layers = self.req_u64(arch, "block_count")?;
        let mut c = json!({
            "model_type": model_type,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "intermediate_size": self.req_u64(arch, "feed_forward_length")?,
            "num_attention_heads": heads,
            "num_key_value_heads": self.arch_u64(arch, "attention.head_count_kv")?.unwrap_or(heads),
            "head_dim": head_dim,
            "vocab_size": vocab,
            "tie_word_embeddings": !self.tensors.iter().any(|t| t.name == "output.weight"),
        });
        let obj = c.as_object_mut().expect("an object");
        if let Some(n) = self.arch_u64(arch, "context_length")? {
            obj.insert("max_position_embeddings".into(), n.into());
        }
        if let Some(e) = self.arch_f64(arch, "attention.layer_norm_rms_epsilon")? {
            obj.insert("rms_norm_eps".into(), e.into());
        }
        if let Some(t) = self.arch_f64(arch, "rope.freq_base")? {
            obj.insert("rope_theta".into(), t.into());
        }
        for (gguf, hf) in
            [("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")]
        {
            if let Some(id) = self.get(gguf).and_then(Value::as_u64) {
                obj.insert(hf.into(), id.into());
            }
        }
        if experts.is_some() {
            moe::add_config(self, arch, model_type, obj)?;
        }
        if arch == "deepseek2" {
            deepseek::add_config(self, model_type, obj)?;
        }
        if arch == "gpt-oss" {
            gpt_oss::add_config(self, obj)?;
        }
        if arch == "gemma3" {
            // What llama.cpp fixes for Gemma 3 rather than storing: local layers every 6th
            // global, a local rope base of 10000, and the query scale (1/sqrt(head_dim), or
            // 1/sqrt(hidden/heads) for the 62-layer 27B model).
            let window = self.arch_u64(arch, "attention.sliding_window")?.unwrap_or(4096);
            let scalar = if layers == 62 { hidden / heads } else { head_dim };
            obj.insert("sliding_window".into(), window.into());
            obj.insert("sliding_window_pattern".into(), 6.into());
            obj.insert("rope_local_base_freq".into(), 10000.0.into());
            obj.insert("query_pre_attn_scalar".into(), scalar.into());
            obj.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
        }
        Ok(c)
    }
}
