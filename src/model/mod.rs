//! Models: configuration, weights, tokenizer, chat templates and the transformer.
//!
//! Architectures are data: each supported `model_type` is a small adapter in [`arch`] that
//! maps its `config.json` onto a [`spec::ModelSpec`] (per-layer attention, norm, MLP and rope
//! choices), and one [`transformer::Transformer`] runs every spec. Nothing here generates text;
//! that is the engine's job.

pub mod arch;
pub mod cache;
pub mod chat;
pub mod config;
pub mod fingerprint;
pub mod gguf;
pub mod gguf_quants;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod info;
pub mod load;
pub mod lora;
pub mod quant;
pub mod rope;
pub mod spec;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

pub use cache::{KvCache, KvQuant, LayerState, Packed};
pub use chat::{ChatTemplate, Message, TemplateSource};
pub use info::ModelInfo;
pub use load::{LoadParams, Model};
pub use tokenizer::{StreamDecoder, Tokenizer};
