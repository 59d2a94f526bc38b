//! Parameter structs of the C API and their conversion to the engine's.

use std::ffi::c_char;

use super::boundary::str_arg;
use crate::engine::{GenerateParams, SamplerParams};
use crate::{Error, Result};

/// Floating-point type to keep and compute weights in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lmx_dtype {
    /// The checkpoint's own.
    LMX_DTYPE_DEFAULT = 0,
    LMX_DTYPE_FLOAT32 = 1,
    LMX_DTYPE_FLOAT16 = 2,
    LMX_DTYPE_BFLOAT16 = 3,
}

/// Which device computes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lmx_device_kind {
    /// MLX's default: the GPU where MLX has one, else the CPU.
    LMX_DEVICE_DEFAULT = 0,
    LMX_DEVICE_CPU = 1,
    LMX_DEVICE_GPU = 2,
}

/// Options for lmx_model_load(). Get defaults from lmx_model_params_default().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_model_params {
    /// sizeof(lmx_model_params).
    pub struct_size: usize,
    /// Longest sequence (prompt + generated tokens); 0 = the model's max_position_embeddings.
    pub context_length: u32,
    pub dtype: lmx_dtype,
    /// Makes this device MLX's default for the whole process before loading.
    pub device: lmx_device_kind,
}

/// How generation runs. Get defaults from lmx_generate_params_default(); all pointers are
/// borrowed for the duration of the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_generate_params {
    /// sizeof(lmx_generate_params).
    pub struct_size: usize,
    /// Most tokens to generate (> 0). Default 256.
    pub max_tokens: u32,
    /// 0 = greedy. Must be >= 0. Default 0.
    pub temperature: f32,
    /// 0 = off. Default 0.
    pub top_k: i32,
    /// In (0, 1]; 1 = off. Default 1.
    pub top_p: f32,
    /// In [0, 1); 0 = off. Default 0.
    pub min_p: f32,
    /// > 0; 1 = off. Default 1.
    pub repetition_penalty: f32,
    /// Default 0.
    pub presence_penalty: f32,
    /// Default 0.
    pub frequency_penalty: f32,
    /// Recent tokens (prompt included) the penalties look at. Default 64.
    pub penalty_window: u32,
    /// Used when use_seed is true; otherwise sampling is seeded randomly.
    pub seed: u64,
    pub use_seed: bool,
    /// Extra token ids that end generation (n_stop_tokens of them; may be NULL when 0).
    pub stop_tokens: *const i32,
    pub n_stop_tokens: usize,
    /// Strings that end generation (NUL-terminated UTF-8; n_stop_strings of them). No text
    /// at or past a stop string is ever delivered.
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
    /// Logit bias: n_logit_bias token ids and the values added to their logits.
    pub logit_bias_tokens: *const i32,
    pub logit_bias_values: *const f32,
    pub n_logit_bias: usize,
    /// Prompt tokens per forward pass (> 0). Default 2048.
    pub prefill_chunk: u32,
    /// Do not stop at the model's EOS tokens. Default false.
    pub ignore_eos: bool,
    /// Leave special tokens out of the text. Default true.
    pub skip_special_tokens: bool,
}

/// The default model parameters (struct_size set).
#[no_mangle]
pub extern "C" fn lmx_model_params_default() -> lmx_model_params {
    lmx_model_params {
        struct_size: std::mem::size_of::<lmx_model_params>(),
        context_length: 0,
        dtype: lmx_dtype::LMX_DTYPE_DEFAULT,
        device: lmx_device_kind::LMX_DEVICE_DEFAULT,
    }
}

/// The default generation parameters (struct_size set): greedy, 256 tokens.
#[no_mangle]
pub extern "C" fn lmx_generate_params_default() -> lmx_generate_params {
    let d = GenerateParams::default();
    lmx_generate_params {
        struct_size: std::mem::size_of::<lmx_generate_params>(),
        max_tokens: d.max_tokens as u32,
        temperature: d.sampler.temperature,
        top_k: d.sampler.top_k,
        top_p: d.sampler.top_p,
        min_p: d.sampler.min_p,
        repetition_penalty: d.sampler.repetition_penalty,
        presence_penalty: d.sampler.presence_penalty,
        frequency_penalty: d.sampler.frequency_penalty,
        penalty_window: d.sampler.penalty_window as u32,
        seed: 0,
        use_seed: false,
        stop_tokens: std::ptr::null(),
        n_stop_tokens: 0,
        stop_strings: std::ptr::null(),
        n_stop_strings: 0,
        logit_bias_tokens: std::ptr::null(),
        logit_bias_values: std::ptr::null(),
        n_logit_bias: 0,
        prefill_chunk: d.prefill_chunk as u32,
        ignore_eos: d.ignore_eos,
        skip_special_tokens: d.skip_special_tokens,
    }
}

/// Reads a struct the caller sized: NULL gives `default`; a struct_size other than ours is
/// refused (the struct has only one version so far).
pub(crate) fn read_struct<T: Copy>(p: *const T, name: &str, default: T) -> Result<T> {
    if p.is_null() {
        return Ok(default);
    }
    // SAFETY: the caller promises a readable struct; struct_size is its first field.
    let size = unsafe { *(p as *const usize) };
    if size != std::mem::size_of::<T>() {
        return Err(Error::invalid(format!(
            "{name}->struct_size is {size}; expected {} (initialize it with the *_default() function)",
            std::mem::size_of::<T>()
        )));
    }
    // SAFETY: as above, with the size checked.
    Ok(unsafe { *p })
}

/// A C array (NULL allowed only when `n` is 0).
pub(crate) fn slice<'a, T>(p: *const T, n: usize, name: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL but its count is {n}")));
    }
    if n > (isize::MAX as usize) / std::mem::size_of::<T>().max(1) {
        return Err(Error::invalid(format!("{name}: count {n} is too large")));
    }
    // SAFETY: the caller promises n readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Token ids from C: each must be >= 0.
pub(crate) fn token_ids(p: *const i32, n: usize, name: &str) -> Result<Vec<u32>> {
    slice(p, n, name)?
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| Error::invalid(format!("{name}: token id {t} is negative"))))
        .collect()
}

impl lmx_generate_params {
    pub(crate) fn to_engine(self) -> Result<GenerateParams> {
        let stop_strings = slice(self.stop_strings, self.n_stop_strings, "stop_strings")?
            .iter()
            .enumerate()
            .map(|(i, &s)| str_arg(s, &format!("stop_strings[{i}]")).map(str::to_string))
            .collect::<Result<Vec<String>>>()?;
        let bias_ids = token_ids(self.logit_bias_tokens, self.n_logit_bias, "logit_bias_tokens")?;
        let bias_vals = slice(self.logit_bias_values, self.n_logit_bias, "logit_bias_values")?;
        Ok(GenerateParams {
            max_tokens: self.max_tokens as usize,
            sampler: SamplerParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                penalty_window: self.penalty_window as usize,
                logit_bias: bias_ids.into_iter().zip(bias_vals.iter().copied()).collect(),
                seed: self.use_seed.then_some(self.seed),
            },
            stop_tokens: token_ids(self.stop_tokens, self.n_stop_tokens, "stop_tokens")?,
            stop_strings,
            ignore_eos: self.ignore_eos,
            prefill_chunk: self.prefill_chunk as usize,
            skip_special_tokens: self.skip_special_tokens,
        })
    }
}

/// Reads optional generation parameters.
pub(crate) fn generate_params(p: *const lmx_generate_params) -> Result<GenerateParams> {
    read_struct(p, "params", lmx_generate_params_default())?.to_engine()
}
