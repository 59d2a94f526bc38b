//! ggml's tensor types: the one table of what liblmx knows about each (name, block layout,
//! and what a model tensor of the type becomes at load).

use crate::{Error, Result};

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q5_0: u32 = 6;
pub const Q5_1: u32 = 7;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q5_K: u32 = 13;
pub const Q6_K: u32 = 14;
pub const BF16: u32 = 30;
pub const MXFP4: u32 = 39;

/// What a model tensor of a ggml type becomes when loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Becomes {
    /// A float tensor of the load dtype.
    Float,
    /// MLX affine quantization at `bits`, groups of 32; `exact` when every value is kept.
    Affine { bits: i32, exact: bool },
    /// MLX's mxfp4 (the same E2M1 codes and power-of-two scale per 32 values, repacked):
    /// exact, for stacked experts.
    Mxfp4,
    /// The file may hold it (its layout is known, so the file can be read) but a model
    /// tensor of it cannot be loaded.
    Unsupported,
}

/// One ggml type.
#[derive(Clone, Copy, Debug)]
pub struct GgmlType {
    pub id: u32,
    /// ggml's name ("Q4_K").
    pub name: &'static str,
    /// Values per block.
    pub block: u64,
    /// Bytes per block.
    pub bytes: u64,
    pub becomes: Becomes,
}

const fn t(id: u32, name: &'static str, block: u64, bytes: u64, becomes: Becomes) -> GgmlType {
    GgmlType { id, name, block, bytes, becomes }
}

const FLOAT: Becomes = Becomes::Float;
const NO: Becomes = Becomes::Unsupported;
const fn affine(bits: i32, exact: bool) -> Becomes {
    Becomes::Affine { bits, exact }
}

/// Every type liblmx can read the layout of. Block types whose values are `scale * q + bias`
/// with one scale and bias per 32 values convert exactly (a 5-bit code is an 8-bit code with
/// the same scale); Q6_K has a scale per 16 values and is re-quantized to 8 bits.
const TABLE: &[GgmlType] = &[
    t(F32, "F32", 1, 4, FLOAT),
    t(F16, "F16", 1, 2, FLOAT),
    t(Q4_0, "Q4_0", 32, 18, affine(4, true)),
    t(Q4_1, "Q4_1", 32, 20, affine(4, true)),
    t(Q5_0, "Q5_0", 32, 22, affine(8, true)),
    t(Q5_1, "Q5_1", 32, 24, affine(8, true)),
    t(Q8_0, "Q8_0", 32, 34, affine(8, true)),
    t(10, "Q2_K", 256, 84, NO),
    t(11, "Q3_K", 256, 110, NO),
    t(Q4_K, "Q4_K", 256, 144, affine(4, true)),
    t(Q5_K, "Q5_K", 256, 176, affine(8, true)),
    t(Q6_K, "Q6_K", 256, 210, affine(8, false)),
    t(15, "Q8_K", 256, 292, NO),
    t(24, "I8", 1, 1, NO),
    t(25, "I16", 1, 2, NO),
    t(26, "I32", 1, 4, NO),
    t(27, "I64", 1, 8, NO),
    t(28, "F64", 1, 8, NO),
    t(BF16, "BF16", 1, 2, FLOAT),
    t(MXFP4, "MXFP4", 32, 17, Becomes::Mxfp4),
];

/// The type numbered `id`, if liblmx knows its layout.
pub fn lookup(id: u32) -> Option<&'static GgmlType> {
    TABLE.iter().find(|t| t.id == id)
}

/// ggml's name of type `id` ("type 99" for one liblmx does not know).
pub fn name(id: u32) -> String {
    lookup(id).map_or_else(|| format!("type {id}"), |t| t.name.to_string())
}

/// What a model tensor of type `id` becomes; an error naming the type and the supported ones
/// when it cannot be loaded.
pub fn becomes(id: u32) -> Result<Becomes> {
    match lookup(id).map(|t| t.becomes) {
        Some(b @ (Becomes::Float | Becomes::Affine { .. } | Becomes::Mxfp4)) => Ok(b),
        _ => {
            let supported: Vec<&str> =
                TABLE.iter().filter(|t| t.becomes != Becomes::Unsupported).map(|t| t.name).collect();
            Err(Error::unsupported(format!(
                "ggml tensor type {} is not supported (supported: {})",
                name(id),
                supported.join(", ")
            )))
        }
    }
}
