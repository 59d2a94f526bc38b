//! MLX element types.

use super::sys;
use crate::{Error, Result};

/// An MLX element type. The discriminants are not mlx-c's; convert with `to_sys`/`from_sys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    BF16,
    Complex64,
}

impl Dtype {
    pub(crate) fn to_sys(self) -> sys::mlx_dtype {
        match self {
            Dtype::Bool => sys::mlx_dtype__MLX_BOOL,
            Dtype::U8 => sys::mlx_dtype__MLX_UINT8,
            Dtype::U16 => sys::mlx_dtype__MLX_UINT16,
            Dtype::U32 => sys::mlx_dtype__MLX_UINT32,
            Dtype::U64 => sys::mlx_dtype__MLX_UINT64,
            Dtype::I8 => sys::mlx_dtype__MLX_INT8,
            Dtype::I16 => sys::mlx_dtype__MLX_INT16,
            Dtype::I32 => sys::mlx_dtype__MLX_INT32,
            Dtype::I64 => sys::mlx_dtype__MLX_INT64,
            Dtype::F16 => sys::mlx_dtype__MLX_FLOAT16,
            Dtype::F32 => sys::mlx_dtype__MLX_FLOAT32,
            Dtype::F64 => sys::mlx_dtype__MLX_FLOAT64,
            Dtype::BF16 => sys::mlx_dtype__MLX_BFLOAT16,
            Dtype::Complex64 => sys::mlx_dtype__MLX_COMPLEX64,
        }
    }

    pub(crate) fn from_sys(d: sys::mlx_dtype) -> Result<Dtype> {
        const ALL: [Dtype; 14] = [
            Dtype::Bool,
            Dtype::U8,
            Dtype::U16,
            Dtype::U32,
            Dtype::U64,
            Dtype::I8,
            Dtype::I16,
            Dtype::I32,
            Dtype::I64,
            Dtype::F16,
            Dtype::F32,
            Dtype::F64,
            Dtype::BF16,
            Dtype::Complex64,
        ];
        ALL.into_iter()
            .find(|t| t.to_sys() == d)
            .ok_or_else(|| Error::internal(format!("unknown MLX dtype code {d}")))
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 | Dtype::Complex64 => 8,
        }
    }

    /// The name used by safetensors headers and by `config.json` (`torch_dtype`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::BF16 => "bfloat16",
            Dtype::Complex64 => "complex64",
        }
    }

    /// Parses a dtype name as written in `config.json` or by users ("bfloat16", "f32", ...).
    pub fn parse(name: &str) -> Result<Dtype> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "bool" => Dtype::Bool,
            "uint8" | "u8" => Dtype::U8,
            "uint16" | "u16" => Dtype::U16,
            "uint32" | "u32" => Dtype::U32,
            "uint64" | "u64" => Dtype::U64,
            "int8" | "i8" => Dtype::I8,
            "int16" | "i16" => Dtype::I16,
            "int32" | "i32" => Dtype::I32,
            "int64" | "i64" => Dtype::I64,
            "float16" | "f16" | "half" => Dtype::F16,
            "float32" | "f32" | "float" => Dtype::F32,
            "float64" | "f64" | "double" => Dtype::F64,
            "bfloat16" | "bf16" => Dtype::BF16,
            "complex64" => Dtype::Complex64,
            other => return Err(Error::invalid(format!("unknown dtype {other:?}"))),
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
