//! Loading models and describing them.

use std::ffi::c_char;
use std::sync::Arc;

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::params::{lmx_device_kind, lmx_dtype, lmx_model_params, lmx_model_params_default, read_struct};
use crate::mlx::{Device, Dtype};
use crate::model::{LoadParams, Model};
use crate::{Error, Result};

/// A loaded model (opaque). Thread-safe: any number of threads may use one model at once.
pub struct lmx_model {
    magic: u64,
    pub(crate) model: Arc<Model>,
}
handle_type!(lmx_model, 0x6c6d_785f_6d6f_6431, "lmx_model");

pub(crate) fn model_ref<'a>(p: *const lmx_model) -> Result<&'a Arc<Model>> {
    Ok(&handle_ref(p, "model")?.model)
}

/// Loads the model in folder `path` (NUL-terminated UTF-8): config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json. `params` may be NULL (defaults). On success writes a
/// new handle to `*model_out` (not NULL), to be freed with lmx_model_free(). Thread-safe.
/// Returns LMX_OK; LMX_STATUS_INVALID_ARGUMENT (NULL, bad UTF-8, bad params);
/// LMX_STATUS_NOT_FOUND (missing folder or file); LMX_STATUS_FORMAT (corrupt or inconsistent
/// files, missing tensors, wrong shapes); LMX_STATUS_UNSUPPORTED (architecture, dtype,
/// quantization); LMX_STATUS_IO; LMX_STATUS_OUT_OF_MEMORY; LMX_STATUS_MLX. The message names
/// the file and the tensor. Loading resets MLX's peak memory counter.
#[no_mangle]
pub extern "C" fn lmx_model_load(
    path: *const c_char,
    params: *const lmx_model_params,
    model_out: *mut *mut lmx_model,
) -> lmx_status {
    status(|| {
        let o = out(model_out, "model_out")?;
        let path = str_arg(path, "path")?;
        let p = read_struct(params, "params", lmx_model_params_default())?;
        let device = match p.device {
            lmx_device_kind::LMX_DEVICE_DEFAULT => None,
            lmx_device_kind::LMX_DEVICE_CPU => Some(Device::CPU),
            lmx_device_kind::LMX_DEVICE_GPU => Some(Device::GPU),
        };
        let dtype = match p.dtype {
            lmx_dtype::LMX_DTYPE_DEFAULT => None,
            lmx_dtype::LMX_DTYPE_FLOAT32 => Some(Dtype::F32),
            lmx_dtype::LMX_DTYPE_FLOAT16 => Some(Dtype::F16),
            lmx_dtype::LMX_DTYPE_BFLOAT16 => Some(Dtype::BF16),
        };
        let lp = LoadParams {
            context_length: (p.context_length > 0).then_some(p.context_length as i32),
            dtype,
            device,
        };
        let model = Model::load(std::path::Path::new(path), &lp)?;
        *o = into_handle(lmx_model {
            magic: <lmx_model as super::handle::Handle>::MAGIC,
            model: Arc::new(model),
        });
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
pub struct lmx_model_desc {
    pub struct_size: usize,
    /// The family that runs it: "llama", "mistral", "qwen2", "qwen3" or "gemma3".
    pub architecture: [c_char; LMX_NAME_MAX],
    /// config.json's model_type.
    pub model_type: [c_char; LMX_NAME_MAX],
    pub param_count: u64,
    pub num_layers: i32,
    pub hidden_size: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub vocab_size: i32,
    pub context_length: i32,
    /// 0 for a dense model.
    pub quant_bits: i32,
    pub quant_group_size: i32,
    /// "float32", "bfloat16" or "float16".
    pub dtype: [c_char; LMX_NAME_MAX],
    /// Where the chat template came from: "tokenizer_config.json", "chat_template.jinja" or
    /// "builtin:<name>".
    pub chat_template: [c_char; LMX_NAME_MAX],
    pub weight_bytes: u64,
    pub load_seconds: f64,
    pub load_peak_bytes: u64,
    /// The backend computing: "cpu", "metal" or "cuda".
    pub backend: [c_char; LMX_NAME_MAX],
}

pub(crate) fn copy_name(dst: &mut [c_char; LMX_NAME_MAX], s: &str) {
    *dst = [0; LMX_NAME_MAX];
    for (d, b) in dst.iter_mut().zip(s.bytes().take(LMX_NAME_MAX - 1)) {
        *d = b as c_char;
    }
}

/// Fills `*desc_out` (not NULL, struct_size set) with what `model` is. Thread-safe. Returns
/// LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_model_info(model: *const lmx_model, desc_out: *mut lmx_model_desc) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(desc_out, "desc_out")?;
        if o.struct_size < std::mem::size_of::<lmx_model_desc>() {
            return Err(Error::invalid(format!(
                "desc_out->struct_size is {}; set it to sizeof(lmx_model_desc) ({})",
                o.struct_size,
                std::mem::size_of::<lmx_model_desc>()
            )));
        }
        let i = &m.info;
        copy_name(&mut o.architecture, &i.architecture);
        copy_name(&mut o.model_type, &i.model_type);
        o.param_count = i.param_count;
        o.num_layers = i.num_layers;
        o.hidden_size = i.hidden_size;
        o.num_heads = i.num_heads;
        o.num_kv_heads = i.num_kv_heads;
        o.head_dim = i.head_dim;
        o.vocab_size = i.vocab_size;
        o.context_length = i.context_length;
        o.quant_bits = i.quant_bits;
        o.quant_group_size = i.quant_group_size;
        copy_name(&mut o.dtype, &i.dtype);
        copy_name(&mut o.chat_template, &i.chat_template);
        o.weight_bytes = i.weight_bytes;
        o.load_seconds = i.load_seconds;
        o.load_peak_bytes = i.load_peak_bytes;
        copy_name(&mut o.backend, crate::mlx::Backend::current()?.name());
        Ok(())
    })
}
