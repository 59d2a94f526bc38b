//! Loading models and describing them.

use std::ffi::c_char;
use std::sync::Arc;

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::params::{lmx_model_params, model_params};
use super::sized::{write_out, CStruct};
use crate::model::Model;
use crate::Result;

/// A loaded model (opaque). Thread-safe: any number of threads may use one model at once.
pub struct lmx_model {
    pub(crate) model: Arc<Model>,
}
handle_type!(lmx_model);

pub(crate) fn model_ref(p: *const lmx_model) -> Result<Arc<Model>> {
    Ok(handle_ref(p, "model")?.model.clone())
}

/// Loads the model in folder `path` (NUL-terminated UTF-8): config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json. `params` may be NULL (defaults). On success writes a
/// new handle to `*model_out` (not NULL), to be freed with lmx_model_free(). Thread-safe; the
/// file work runs without blocking other models' and sessions' computation. Returns LMX_OK;
/// LMX_STATUS_INVALID_ARGUMENT (NULL, bad UTF-8, bad params, a path that is not a folder);
/// LMX_STATUS_NOT_FOUND (missing folder or file); LMX_STATUS_FORMAT (corrupt or inconsistent
/// files, missing tensors, wrong shapes); LMX_STATUS_UNSUPPORTED (architecture, dtype,
/// quantization, a device this MLX build lacks); LMX_STATUS_IO; LMX_STATUS_OUT_OF_MEMORY;
/// LMX_STATUS_MLX. The message names the file and the tensor. Loading resets MLX's peak
/// memory counter.
#[no_mangle]
pub extern "C" fn lmx_model_load(
    path: *const c_char,
    params: *const lmx_model_params,
    model_out: *mut *mut lmx_model,
) -> lmx_status {
    status(|| {
        let o = out(model_out, "model_out")?;
        let path = str_arg(path, "path")?;
        let lp = model_params(params)?;
        let model = Model::load(std::path::Path::new(path), &lp)?;
        o.set(into_handle(lmx_model { model: Arc::new(model) }));
        Ok(())
    })
}

/// Frees a model handle. NULL is accepted. Sessions made from the model keep its weights
/// alive and stay usable; the memory is released when the last of them is freed. Returns
/// LMX_OK, or LMX_STATUS_INVALID_ARGUMENT for a pointer that is not a live model.
#[no_mangle]
pub extern "C" fn lmx_model_free(model: *mut lmx_model) -> lmx_status {
    status(|| {
        drop(take_handle(model, "model")?);
        Ok(())
    })
}

/// Maximum lengths (NUL included) of the strings in lmx_model_desc.
pub const LMX_NAME_MAX: usize = 64;

/// What a model is. Set struct_size to sizeof(lmx_model_desc) before lmx_model_info().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lmx_model_desc {
    pub struct_size: usize,
    /// The family that runs it: "llama", "mistral", "qwen2", "qwen3" or "gemma3".
    pub architecture: [c_char; LMX_NAME_MAX],
    /// config.json's model_type.
    pub model_type: [c_char; LMX_NAME_MAX],
    /// Parameters (weights) in the checkpoint, a quantized matrix counted at its full size.
    pub param_count: u64,
    pub num_layers: i32,
    pub hidden_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    /// Rows of the embedding and output matrices (token ids are below it).
    pub vocab_size: i32,
    /// Longest sequence in tokens, prompt and generated together (lmx_model_params's, or the
    /// model's max_position_embeddings).
    pub context_length: i32,
    /// Bits per quantized weight; 0 for a dense model.
    pub quant_bits: i32,
    /// Weights per quantization group; 0 for a dense model.
    pub quant_group_size: i32,
    /// "float32", "bfloat16" or "float16": what the model computes in.
    pub dtype: [c_char; LMX_NAME_MAX],
    /// Where the chat template came from: "tokenizer_config.json", "chat_template.jinja" or
    /// "builtin:<name>".
    pub chat_template: [c_char; LMX_NAME_MAX],
    /// Bytes of the weights as loaded.
    pub weight_bytes: u64,
    /// Seconds the load took.
    pub load_seconds: f64,
    /// Bytes: MLX's peak memory during the load above what was in use before it.
    pub load_peak_bytes: u64,
    /// The backend computing: "cpu", "metal" or "cuda".
    pub backend: [c_char; LMX_NAME_MAX],
}

// SAFETY: repr(C), struct_size first, only integers, floats and char arrays.
unsafe impl CStruct for lmx_model_desc {
    const NAME: &'static str = "lmx_model_desc";
}

pub(crate) fn copy_name(dst: &mut [c_char; LMX_NAME_MAX], s: &str) {
    *dst = [0; LMX_NAME_MAX];
    for (d, b) in dst.iter_mut().zip(s.bytes().take(LMX_NAME_MAX - 1)) {
        *d = b as c_char;
    }
}

/// Fills `*desc_out` (not NULL, struct_size set to the caller's sizeof(lmx_model_desc)) with
/// what `model` is. Thread-safe. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (NULL, a bad
/// handle or struct_size) or LMX_STATUS_MLX (MLX could not name its backend).
#[no_mangle]
pub extern "C" fn lmx_model_info(model: *const lmx_model, desc_out: *mut lmx_model_desc) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let i = &m.info;
        let mut o = lmx_model_desc {
            struct_size: std::mem::size_of::<lmx_model_desc>(),
            architecture: [0; LMX_NAME_MAX],
            model_type: [0; LMX_NAME_MAX],
            param_count: i.param_count,
            num_layers: i.num_layers,
            hidden_size: i.hidden_size,
            num_heads: i.num_heads,
            num_kv_heads: i.num_kv_heads,
            head_dim: i.head_dim,
            vocab_size: i.vocab_size,
            context_length: i.context_length,
            quant_bits: i.quant_bits,
            quant_group_size: i.quant_group_size,
            dtype: [0; LMX_NAME_MAX],
            chat_template: [0; LMX_NAME_MAX],
            weight_bytes: i.weight_bytes,
            load_seconds: i.load_seconds,
            load_peak_bytes: i.load_peak_bytes,
            backend: [0; LMX_NAME_MAX],
        };
        copy_name(&mut o.architecture, &i.architecture);
        copy_name(&mut o.model_type, &i.model_type);
        copy_name(&mut o.dtype, &i.dtype);
        copy_name(&mut o.chat_template, &i.chat_template);
        let backend = match m.device.kind {
            crate::mlx::DeviceKind::Cpu => crate::mlx::Backend::Cpu,
            crate::mlx::DeviceKind::Gpu => crate::mlx::Backend::current()?,
        };
        copy_name(&mut o.backend, backend.name());
        write_out(desc_out, "desc_out", &o)
    })
}
