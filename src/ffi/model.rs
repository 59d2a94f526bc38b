//! Loading models and describing them.

use std::ffi::c_char;
use std::sync::Arc;

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::params::{lmx_model_params, model_params};
use super::sized::{c_struct, write_out};
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

/// Loads the model at `path` (NUL-terminated UTF-8): a folder (config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json) or a GGUF file (llama.cpp's format: architectures
/// llama, qwen2, qwen3, gemma3; tensor types F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
/// Q5_K, Q6_K, converted to MLX's formats as lmx_model_desc.conversions reports; the tokenizer
/// and chat template from its metadata). `params` may be NULL (defaults). On success writes a
/// new handle to `*model_out` (not NULL), to be freed with lmx_model_free(). Thread-safe; the
/// file work runs without blocking other models' and sessions' computation. Returns LMX_OK;
/// LMX_STATUS_INVALID_ARGUMENT (NULL, bad UTF-8, bad params, a path that is neither a folder nor a GGUF file);
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
/// Maximum length (NUL included) of lmx_model_desc's conversions.
pub const LMX_CONVERSIONS_MAX: usize = 512;

/// What a model is. Set struct_size to sizeof(lmx_model_desc) before lmx_model_info().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lmx_model_desc {
    pub struct_size: usize,
    /// The family that runs it: "llama", "mistral", "qwen2", "qwen3", "gemma3", "qwen2_moe",
    /// "qwen3_moe" or "mixtral".
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
    /// Where the chat template came from: "tokenizer_config.json", "chat_template.jinja",
    /// "gguf:tokenizer.chat_template" or "builtin:<name>".
    pub chat_template: [c_char; LMX_NAME_MAX],
    /// Bytes of the weights as loaded.
    pub weight_bytes: u64,
    /// Seconds the load took.
    pub load_seconds: f64,
    /// Bytes: MLX's peak memory during the load above what was in use before it.
    pub load_peak_bytes: u64,
    /// The backend computing: "cpu", "metal" or "cuda".
    pub backend: [c_char; LMX_NAME_MAX],
    /// What was loaded: "safetensors" (a model folder) or "gguf" (a GGUF file).
    pub format: [c_char; LMX_NAME_MAX],
    /// The tokenizer: "tokenizer.json", or for a GGUF file the vocabulary it was built from
    /// ("gpt2/smollm", "llama/SentencePiece", ...).
    pub tokenizer: [c_char; LMX_NAME_MAX],
    /// For a GGUF file, what each of its tensor types became, one "; "-separated entry per
    /// type: "Q4_K x27 -> affine 4-bit, group 32 (exact)", "Q6_K x9 -> affine 8-bit, group 32
    /// (re-quantized)", "F32 x109 -> float (exact)". Empty for a model folder; cut at a whole
    /// entry when longer than the field.
    pub conversions: [c_char; LMX_CONVERSIONS_MAX],
    /// Experts per mixture-of-experts layer; 0 for a dense model.
    pub num_experts: i32,
    /// Experts each token is routed to; 0 for a dense model.
    pub experts_per_token: i32,
    /// Parameters one token's forward pass uses: param_count less the routed experts it does
    /// not use (param_count for a dense model).
    pub active_param_count: u64,
}

c_struct!(lmx_model_desc {
    struct_size,
    architecture,
    model_type,
    param_count,
    num_layers,
    hidden_size,
    num_heads,
    num_kv_heads,
    head_dim,
    vocab_size,
    context_length,
    quant_bits,
    quant_group_size,
    dtype,
    chat_template,
    weight_bytes,
    load_seconds,
    load_peak_bytes,
    backend,
    format,
    tokenizer,
    conversions,
    num_experts,
    experts_per_token,
    active_param_count
});

/// `s` into `dst`, cut to fit with its NUL, the rest zeroed.
pub(super) fn copy_str(dst: &mut [c_char], s: &str) {
    dst.fill(0);
    let n = dst.len().saturating_sub(1);
    for (d, b) in dst.iter_mut().zip(s.bytes().take(n)) {
        *d = b as c_char;
    }
}

/// The conversions as lmx_model_desc says them, whole entries only within the field.
fn conversions_text(list: &[crate::model::gguf::weights::Conversion]) -> String {
    let mut out = String::new();
    for c in list {
        let how = if c.exact { "exact" } else { "re-quantized" };
        let entry = format!("{} x{} -> {} ({how})", c.source, c.tensors, c.became);
        let sep = if out.is_empty() { "" } else { "; " };
        if out.len() + sep.len() + entry.len() >= LMX_CONVERSIONS_MAX {
            break;
        }
        out.push_str(sep);
        out.push_str(&entry);
    }
    out
}

impl lmx_model_desc {
    /// Every number zero and every string empty.
    pub(super) fn empty() -> lmx_model_desc {
        lmx_model_desc {
            struct_size: std::mem::size_of::<lmx_model_desc>(),
            architecture: [0; LMX_NAME_MAX],
            model_type: [0; LMX_NAME_MAX],
            param_count: 0,
            num_layers: 0,
            hidden_size: 0,
            num_heads: 0,
            num_kv_heads: 0,
            head_dim: 0,
            vocab_size: 0,
            context_length: 0,
            quant_bits: 0,
            quant_group_size: 0,
            dtype: [0; LMX_NAME_MAX],
            chat_template: [0; LMX_NAME_MAX],
            weight_bytes: 0,
            load_seconds: 0.0,
            load_peak_bytes: 0,
            backend: [0; LMX_NAME_MAX],
            format: [0; LMX_NAME_MAX],
            tokenizer: [0; LMX_NAME_MAX],
            conversions: [0; LMX_CONVERSIONS_MAX],
            num_experts: 0,
            experts_per_token: 0,
            active_param_count: 0,
        }
    }
}

/// Fills `*desc_out` (not NULL, struct_size set to the caller's sizeof(lmx_model_desc)) with
/// what `model` is. Thread-safe. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (NULL, a bad
/// handle or struct_size) or LMX_STATUS_MLX (MLX could not name its backend).
#[no_mangle]
pub extern "C" fn lmx_model_info(model: *const lmx_model, desc_out: *mut lmx_model_desc) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let i = m.info();
        let mut o = lmx_model_desc {
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
            weight_bytes: i.weight_bytes,
            load_seconds: i.load_seconds,
            load_peak_bytes: i.load_peak_bytes,
            num_experts: i.num_experts,
            experts_per_token: i.experts_per_token,
            active_param_count: i.active_param_count,
            ..lmx_model_desc::empty()
        };
        copy_str(&mut o.format, &i.format);
        copy_str(&mut o.tokenizer, &i.tokenizer);
        copy_str(&mut o.conversions, &conversions_text(&i.conversions));
        copy_str(&mut o.architecture, &i.architecture);
        copy_str(&mut o.model_type, &i.model_type);
        copy_str(&mut o.dtype, &i.dtype);
        copy_str(&mut o.chat_template, &i.chat_template);
        let backend = match m.device().kind {
            crate::mlx::DeviceKind::Cpu => crate::mlx::Backend::Cpu,
            crate::mlx::DeviceKind::Gpu => crate::mlx::Backend::current()?,
        };
        copy_str(&mut o.backend, backend.name());
        write_out(desc_out, "desc_out", &o)
    })
}
