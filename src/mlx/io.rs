//! Safetensors files: header validation, loading and saving.
//!
//! The header is validated in Rust before MLX sees the file, so that a corrupt, truncated or
//! unsupported file gives an error that names the file and the tensor instead of whatever
//! MLX's reader says. Loading is lazy: MLX reads each tensor's bytes when it is first
//! evaluated, so a checkpoint is never held twice in memory.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::path::Path;

use super::device::{shared_stream, with_stream, Device};
use super::{check, init, sys, Array, Dtype};
use crate::{Error, Result};

/// Largest header we accept (the safetensors format's own limit).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One tensor's entry in a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<i32>,
}

/// A validated safetensors header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub tensors: HashMap<String, TensorInfo>,
    pub metadata: HashMap<String, String>,
}

fn dtype_of(d: safetensors::Dtype) -> Option<Dtype> {
    use safetensors::Dtype as S;
    Some(match d {
        S::BOOL => Dtype::Bool,
        S::U8 => Dtype::U8,
        S::I8 => Dtype::I8,
        S::U16 => Dtype::U16,
        S::I16 => Dtype::I16,
        S::U32 => Dtype::U32,
        S::I32 => Dtype::I32,
        S::U64 => Dtype::U64,
        S::I64 => Dtype::I64,
        S::F16 => Dtype::F16,
        S::BF16 => Dtype::BF16,
        S::F32 => Dtype::F32,
        S::F64 => Dtype::F64,
        _ => return None,
    })
}

/// Reads and validates the header of a safetensors file: the length prefix, the JSON, each
/// tensor's dtype, shape and byte range, and that the file holds every byte the header names.
pub fn read_header(path: &Path) -> Result<Header> {
    let file_err = |msg: String| Error::format(format!("{}: {msg}", path.display()));
    let (mut f, size) = crate::files::open_regular(path)?;
    let mut len = [0u8; 8];
    if size < 8 {
        return Err(file_err(format!("{size} bytes is too short for a safetensors header")));
    }
    f.read_exact(&mut len).map_err(|e| Error::io(path, &e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > size - 8 {
        return Err(file_err(format!(
            "header length {n} does not fit the file ({size} bytes): not a safetensors file, or truncated"
        )));
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).map_err(|e| Error::io(path, &e))?;
    parse_header(&json, size - 8 - n).map_err(|e| e.context(path.display()))
}

/// Validates a safetensors header's JSON against the size of the data section that follows
/// it: each tensor's dtype, shape and byte range (contiguous, sized by shape and dtype,
/// inside the data). Errors carry no file name (the caller adds it).
pub fn parse_header(json: &[u8], data_size: u64) -> Result<Header> {
    let file_err = |msg: String| Error::format(msg);
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(json).map_err(|e| file_err(format!("corrupt safetensors header: {e}")))?;
    let mut header = Header { metadata: meta.metadata().clone().unwrap_or_default(), ..Header::default() };
    for (name, info) in meta.tensors() {
        let dtype = dtype_of(info.dtype).ok_or_else(|| {
            Error::unsupported(format!("tensor {name}: dtype {:?} is not supported", info.dtype))
        })?;
        let end = info.data_offsets.1 as u64;
        if end > data_size {
            return Err(file_err(format!(
                "truncated: tensor {name} needs bytes up to {end} of the data section, which has {data_size}"
            )));
        }
        let shape = info
            .shape
            .iter()
            .map(|&d| i32::try_from(d))
            .collect::<std::result::Result<Vec<i32>, _>>()
            .map_err(|_| file_err(format!("tensor {name}: shape {:?} is too large", info.shape)))?;
        header.tensors.insert(name, TensorInfo { dtype, shape });
    }
    Ok(header)
}

/// Tensors loaded from one file (lazily: nothing is read until evaluated).
#[derive(Debug)]
pub struct Loaded {
    pub tensors: HashMap<String, Array>,
    pub metadata: HashMap<String, String>,
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", path.display())))
}

/// Validates `path`'s header, then maps its tensors into MLX. Loading runs on the CPU stream,
/// where MLX's file reader lives; the arrays are usable from any device.
pub fn load_safetensors(path: &Path) -> Result<Loaded> {
    init();
    let header = read_header(path)?;
    let c = cpath(path)?;
    let cpu = shared_stream(Device::CPU)?;
    let _lock = super::compute_lock();
    // SAFETY: both maps are freed below on every path.
    let mut arrays = unsafe { sys::mlx_map_string_to_array_new() };
    let mut strings = unsafe { sys::mlx_map_string_to_string_new() };
    let result = with_stream(cpu, || {
        let rc = unsafe { sys::mlx_load_safetensors(&mut arrays, &mut strings, c.as_ptr(), cpu.raw()) };
        check(rc, &format!("loading {}", path.display()))?;
        let mut tensors = HashMap::new();
        let it = unsafe { sys::mlx_map_string_to_array_iterator_new(arrays) };
        let r = (|| {
            loop {
                let mut key: *const std::ffi::c_char = std::ptr::null();
                let mut value = Array::from_raw(unsafe { sys::mlx_array_new() });
                let mut raw = value.raw();
                let rc = unsafe { sys::mlx_map_string_to_array_iterator_next(&mut key, &mut raw, it) };
                value = Array::from_raw(raw);
                if rc == 2 {
                    break;
                }
                check(rc, &format!("reading {}", path.display()))?;
                if key.is_null() {
                    return Err(Error::internal("MLX returned a tensor without a name"));
                }
                let name = unsafe { CStr::from_ptr(key) }.to_string_lossy().into_owned();
                tensors.insert(name, value);
            }
            Ok(tensors)
        })();
        unsafe { sys::mlx_map_string_to_array_iterator_free(it) };
        r
    });
    unsafe {
        sys::mlx_map_string_to_array_free(arrays);
        sys::mlx_map_string_to_string_free(strings);
    }
    let tensors = result?;
    // What MLX mapped must be what the header promised, tensor by tensor.
    for (name, info) in &header.tensors {
        let a = tensors.get(name).ok_or_else(|| {
            Error::format(format!(
                "{}: tensor {name} is in the header but MLX did not load it",
                path.display()
            ))
        })?;
        if a.shape() != info.shape || a.dtype()? != info.dtype {
            return Err(Error::format(format!(
                "{}: tensor {name}: MLX read {:?} {} where the header says {:?} {}",
                path.display(),
                a.shape(),
                a.dtype()?,
                info.shape,
                info.dtype
            )));
        }
    }
    Ok(Loaded { tensors, metadata: header.metadata })
}

/// Writes tensors (evaluating them first) and string metadata to a safetensors file.
pub fn save_safetensors(path: &Path, tensors: &[(&str, &Array)], metadata: &[(&str, &str)]) -> Result<()> {
    init();
    let c = cpath(path)?;
    // Evaluate before the file is opened for writing: a tensor may still be lazily loaded
    // from the very file being replaced.
    let all: Vec<&Array> = tensors.iter().map(|(_, a)| *a).collect();
    super::eval(&all)?;
    // SAFETY: both maps are freed below on every path.
    let arrays = unsafe { sys::mlx_map_string_to_array_new() };
    let strings = unsafe { sys::mlx_map_string_to_string_new() };
    let r = (|| {
        for (name, a) in tensors {
            let k = CString::new(*name)
                .map_err(|_| Error::invalid(format!("tensor name {name:?} has a NUL byte")))?;
            check(
                unsafe { sys::mlx_map_string_to_array_insert(arrays, k.as_ptr(), a.raw()) },
                "building a tensor map",
            )?;
        }
        for (k, v) in metadata {
            let k =
                CString::new(*k).map_err(|_| Error::invalid(format!("metadata key {k:?} has a NUL byte")))?;
            let v = CString::new(*v)
                .map_err(|_| Error::invalid(format!("metadata value {v:?} has a NUL byte")))?;
            check(
                unsafe { sys::mlx_map_string_to_string_insert(strings, k.as_ptr(), v.as_ptr()) },
                "building metadata",
            )?;
        }
        check(
            unsafe { sys::mlx_save_safetensors(c.as_ptr(), arrays, strings) },
            &format!("saving {}", path.display()),
        )
    })();
    unsafe {
        sys::mlx_map_string_to_array_free(arrays);
        sys::mlx_map_string_to_string_free(strings);
    }
    r
}
