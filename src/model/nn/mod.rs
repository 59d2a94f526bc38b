//! The network: the pieces a transformer is built of and the one transformer that runs every
//! architecture's spec. A new attention kind, MLP kind, norm or position encoding goes here;
//! which layers use it is decided by the spec (see [`crate::model::arch`]).

pub mod cache;
pub mod linear;
pub mod lora;
pub mod moe;
pub mod quant;
pub mod rope;
pub mod transformer;
