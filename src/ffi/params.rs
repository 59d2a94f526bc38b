//! Parameter structs of the C API and their conversion to the engine's.

use std::ffi::c_char;

use super::boundary::{status, str_arg};
use super::cancel::lmx_cancel;
use super::lmx_status;
use super::sized::{c_struct, flag, init, read_in, AnyBits};
use crate::engine::{GenerateParams, SamplerParams};
use crate::mlx::{Device, Dtype};
use crate::model::{Constraint, LoadParams, ToolChoice, Tools};
use crate::{Error, Result};

/// Floating-point type to keep and compute weights in: one of the LMX_DTYPE_* values.
pub type lmx_dtype = i32;
/// The checkpoint's own (on the CPU, a half-precision checkpoint computes in float32).
pub const LMX_DTYPE_DEFAULT: lmx_dtype = 0;
pub const LMX_DTYPE_FLOAT32: lmx_dtype = 1;
pub const LMX_DTYPE_FLOAT16: lmx_dtype = 2;
pub const LMX_DTYPE_BFLOAT16: lmx_dtype = 3;

/// Which device computes: one of the LMX_DEVICE_* values.
pub type lmx_device_kind = i32;
/// MLX's default: the GPU where MLX has one, else the CPU.
pub const LMX_DEVICE_DEFAULT: lmx_device_kind = 0;
pub const LMX_DEVICE_CPU: lmx_device_kind = 1;
pub const LMX_DEVICE_GPU: lmx_device_kind = 2;

/// What a generation's output must match: one of the LMX_CONSTRAINT_* values.
pub type lmx_constraint_kind = i32;
/// No constraint.
pub const LMX_CONSTRAINT_NONE: lmx_constraint_kind = 0;
/// A JSON value valid against the JSON Schema in constraint_text.
pub const LMX_CONSTRAINT_JSON_SCHEMA: lmx_constraint_kind = 1;
/// Any JSON object (constraint_text unused).
pub const LMX_CONSTRAINT_JSON_OBJECT: lmx_constraint_kind = 2;
/// Text the regular expression in constraint_text matches whole.
pub const LMX_CONSTRAINT_REGEX: lmx_constraint_kind = 3;
/// Text in the language of the Lark grammar (llguidance's format) in constraint_text.
pub const LMX_CONSTRAINT_GRAMMAR: lmx_constraint_kind = 4;
/// Exactly one of the strings in choices.
pub const LMX_CONSTRAINT_CHOICE: lmx_constraint_kind = 5;

/// Most stop strings in lmx_generate_params.
pub const LMX_MAX_STOP_STRINGS: usize = 64;
/// Longest stop string, in bytes (each must have at least 1).
pub const LMX_MAX_STOP_STRING_BYTES: usize = 1024;
const _: () = assert!(
    LMX_MAX_STOP_STRINGS == crate::engine::params::MAX_STOP_STRINGS
        && LMX_MAX_STOP_STRING_BYTES == crate::engine::params::MAX_STOP_STRING_BYTES
);

/// Options for lmx_model_load(). Initialize with lmx_model_params_init() (or
/// LMX_MODEL_PARAMS_INIT), then set what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_model_params {
    /// sizeof(lmx_model_params) as the caller's header declares it.
    pub struct_size: usize,
    /// Longest sequence in tokens (prompt + generated); 0 = the model's
    /// max_position_embeddings. At most 2^31 - 1.
    pub context_length: u32,
    /// An LMX_DTYPE_* value. Default LMX_DTYPE_DEFAULT.
    pub dtype: lmx_dtype,
    /// An LMX_DEVICE_* value: where this model's weights live and its sessions compute.
    /// Nothing process-wide changes. Default LMX_DEVICE_DEFAULT.
    pub device: lmx_device_kind,
}

/// How generation runs. Initialize with lmx_generate_params_init() (or
/// LMX_GENERATE_PARAMS_INIT), then set what you need; all pointers are borrowed for the
/// duration of the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_generate_params {
    /// sizeof(lmx_generate_params) as the caller's header declares it.
    pub struct_size: usize,
    /// Most tokens to generate (> 0). Default 256.
    pub max_tokens: u32,
    /// 0 = greedy. Must be >= 0 and finite. Default 0.
    pub temperature: f32,
    /// 0 = off; otherwise keep the k most likely tokens (k >= 0). Default 0.
    pub top_k: i32,
    /// In (0, 1]; 1 = off. Default 1.
    pub top_p: f32,
    /// In [0, 1); 0 = off. Default 0.
    pub min_p: f32,
    /// > 0; 1 = off. Default 1.
    pub repetition_penalty: f32,
    /// Added to the logit of every token in the penalty window once. Default 0.
    pub presence_penalty: f32,
    /// Added per occurrence in the penalty window. Default 0.
    pub frequency_penalty: f32,
    /// Recent tokens (prompt included) the penalties look at. Default 64.
    pub penalty_window: u32,
    /// Used when use_seed is 1; otherwise sampling is seeded randomly.
    pub seed: u64,
    /// 0 or 1. Default 0.
    pub use_seed: u8,
    /// Do not stop at the model's EOS tokens: 0 or 1. Default 0.
    pub ignore_eos: u8,
    /// Leave special tokens out of the text: 0 or 1. Default 1.
    pub skip_special_tokens: u8,
    /// Extra token ids that end generation (n_stop_tokens of them; may be NULL when 0).
    pub stop_tokens: *const i32,
    pub n_stop_tokens: usize,
    /// Strings that end generation (NUL-terminated UTF-8; n_stop_strings of them, at most
    /// LMX_MAX_STOP_STRINGS, each 1 to LMX_MAX_STOP_STRING_BYTES bytes). No text at or past
    /// a stop string is ever delivered.
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
    /// Logit bias: n_logit_bias token ids and the values added to their logits: finite, or
    /// -INFINITY to ban a token (banning every token is an error).
    pub logit_bias_tokens: *const i32,
    pub logit_bias_values: *const f32,
    pub n_logit_bias: usize,
    /// Prompt tokens per forward pass (> 0). Default 2048.
    pub prefill_chunk: u32,
    /// A cancellation token (may be NULL): lmx_cancel_request() on it stops this call after
    /// the current prefill chunk or step. The way to cancel lmx_batch_generate() and
    /// lmx_classify(); sessions also have lmx_session_cancel().
    pub cancel: *const lmx_cancel,
    /// No stop before this many tokens were generated: until then the EOS and stop tokens
    /// cannot be chosen (their logits are masked) and stop strings are not looked for (no
    /// stop string can begin in the text of the first min_tokens tokens). max_tokens and the
    /// context length still end generation. 0 = off. Default 0.
    pub min_tokens: u32,
    /// What the output must match: an LMX_CONSTRAINT_* value. Default LMX_CONSTRAINT_NONE.
    /// A constraint that does not compile (invalid JSON, an unsupported schema keyword, a
    /// regex or grammar error, a grammar no text satisfies) fails the call with
    /// LMX_STATUS_INVALID_ARGUMENT and a message naming the kind and what failed; nothing is
    /// generated and the session stays usable. Tokens the constraint forces are appended
    /// without a decode step each. The output ends when the constraint is satisfied and
    /// nothing more may follow, at an EOS the constraint allows, or at max_tokens (finish
    /// reason "length": then it may be incomplete).
    pub constraint: lmx_constraint_kind,
    /// The JSON Schema, regular expression or grammar (NUL-terminated UTF-8, at most 1 MiB).
    pub constraint_text: *const c_char,
    /// LMX_CONSTRAINT_CHOICE: n_choices NUL-terminated UTF-8 strings, each non-empty.
    pub choices: *const *const c_char,
    pub n_choices: usize,
    /// Tools the model may call: a JSON array of function definitions (OpenAI / Hugging Face:
    /// {"type": "function", "function": {"name", "description", "parameters"}}, or the bare
    /// function objects); NULL: none. Chat calls render them into the model's chat template;
    /// the output is parsed for calls in the model's own format (Qwen/Hermes `<tool_call>`,
    /// Llama 3, Mistral `[TOOL_CALLS]`), their text withheld from callbacks and streams, and
    /// reported by lmx_session_last_message() / lmx_stream_message().
    pub tools_json: *const c_char,
    /// "auto" (NULL: the default: the model decides; once it writes a call's trigger the rest
    /// of the call is constrained as under "required", see the README), "none" (nothing is
    /// parsed), "required" (the whole output is one or more calls, constrained so that each
    /// names a tool and its arguments validate against the tool's parameters), or a tool's
    /// name (the same, that tool only; the OpenAI object as JSON also works).
    pub tool_choice: *const c_char,
    /// 1 (default): the output may hold several calls; 0: exactly one (OpenAI's
    /// parallel_tool_calls). Constrains "required", a named tool, and "auto" once a call began.
    pub parallel_tool_calls: u8,
    /// 1: split the model's reasoning (`<think>...</think>` and the like) off the text:
    /// callbacks and streams get the answer only, lmx_session_last_message() has the
    /// reasoning apart. 0 (default): the text as generated.
    pub split_reasoning: u8,
    /// Most tokens of reasoning before its closing tag is forced (implies split_reasoning);
    /// 0 (default): no limit.
    pub thinking_budget: u32,
}

c_struct!(lmx_model_params { struct_size, context_length, dtype, device });
// SAFETY: only integers, floats and raw pointers (the layout test lists every field).
unsafe impl AnyBits for lmx_model_params {}
c_struct!(lmx_generate_params {
    struct_size,
    max_tokens,
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    penalty_window,
    seed,
    use_seed,
    ignore_eos,
    skip_special_tokens,
    stop_tokens,
    n_stop_tokens,
    stop_strings,
    n_stop_strings,
    logit_bias_tokens,
    logit_bias_values,
    n_logit_bias,
    prefill_chunk,
    cancel,
    min_tokens,
    constraint,
    constraint_text,
    choices,
    n_choices,
    tools_json,
    tool_choice,
    parallel_tool_calls,
    split_reasoning,
    thinking_budget
});
// SAFETY: only integers, floats and raw pointers (the layout test lists every field).
unsafe impl AnyBits for lmx_generate_params {}

fn model_defaults() -> lmx_model_params {
    lmx_model_params {
        struct_size: std::mem::size_of::<lmx_model_params>(),
        context_length: 0,
        dtype: LMX_DTYPE_DEFAULT,
        device: LMX_DEVICE_DEFAULT,
    }
}

fn generate_defaults() -> lmx_generate_params {
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
        use_seed: 0,
        ignore_eos: d.ignore_eos as u8,
        skip_special_tokens: d.skip_special_tokens as u8,
        stop_tokens: std::ptr::null(),
        n_stop_tokens: 0,
        stop_strings: std::ptr::null(),
        n_stop_strings: 0,
        logit_bias_tokens: std::ptr::null(),
        logit_bias_values: std::ptr::null(),
        n_logit_bias: 0,
        prefill_chunk: d.prefill_chunk as u32,
        cancel: std::ptr::null(),
        min_tokens: d.min_tokens as u32,
        constraint: LMX_CONSTRAINT_NONE,
        constraint_text: std::ptr::null(),
        choices: std::ptr::null(),
        n_choices: 0,
        tools_json: std::ptr::null(),
        tool_choice: std::ptr::null(),
        parallel_tool_calls: 1,
        split_reasoning: 0,
        thinking_budget: 0,
    }
}

/// Writes the default model parameters into `*params` (not NULL), a struct of `size` bytes
/// (pass sizeof(lmx_model_params)), and sets its struct_size to `size`. Returns LMX_OK or
/// LMX_STATUS_INVALID_ARGUMENT (NULL, a size below sizeof(size_t) or above 65536).
#[no_mangle]
pub extern "C" fn lmx_model_params_init(params: *mut lmx_model_params, size: usize) -> lmx_status {
    status(|| init(params, size, "params", &model_defaults()))
}

/// Writes the default generation parameters (greedy, 256 tokens) into `*params` (not NULL),
/// a struct of `size` bytes (pass sizeof(lmx_generate_params)), and sets its struct_size to
/// `size`. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT (NULL, a size below sizeof(size_t)
/// or above 65536).
#[no_mangle]
pub extern "C" fn lmx_generate_params_init(params: *mut lmx_generate_params, size: usize) -> lmx_status {
    status(|| init(params, size, "params", &generate_defaults()))
}

/// Model parameters from C (NULL: defaults), validated.
pub(crate) fn model_params(p: *const lmx_model_params) -> Result<LoadParams> {
    let p = read_in(p, "params", model_defaults())?;
    let dtype = match p.dtype {
        LMX_DTYPE_DEFAULT => None,
        LMX_DTYPE_FLOAT32 => Some(Dtype::F32),
        LMX_DTYPE_FLOAT16 => Some(Dtype::F16),
        LMX_DTYPE_BFLOAT16 => Some(Dtype::BF16),
        v => {
            return Err(Error::invalid(format!(
                "params->dtype is {v}; it must be an LMX_DTYPE_* value (0 to 3)"
            )))
        }
    };
    let device = match p.device {
        LMX_DEVICE_DEFAULT => None,
        LMX_DEVICE_CPU => Some(Device::CPU),
        LMX_DEVICE_GPU => Some(Device::GPU),
        v => {
            return Err(Error::invalid(format!(
                "params->device is {v}; it must be an LMX_DEVICE_* value (0 to 2)"
            )))
        }
    };
    let context_length = match p.context_length {
        0 => None,
        n => Some(i32::try_from(n).map_err(|_| {
            Error::invalid(format!("params->context_length is {n}; at most {} is allowed", i32::MAX))
        })?),
    };
    Ok(LoadParams { context_length, dtype, device })
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
        let stop_strings = slice(self.stop_strings, self.n_stop_strings, "params->stop_strings")?
            .iter()
            .enumerate()
            .map(|(i, &s)| str_arg(s, &format!("params->stop_strings[{i}]")).map(str::to_string))
            .collect::<Result<Vec<String>>>()?;
        let bias_ids = token_ids(self.logit_bias_tokens, self.n_logit_bias, "params->logit_bias_tokens")?;
        let bias_vals = slice(self.logit_bias_values, self.n_logit_bias, "params->logit_bias_values")?;
        let cancel = if self.cancel.is_null() {
            None
        } else {
            Some(super::cancel::cancel_ref(self.cancel, "params->cancel")?.flag.clone())
        };
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
                seed: flag(self.use_seed, "params->use_seed")?.then_some(self.seed),
            },
            stop_tokens: token_ids(self.stop_tokens, self.n_stop_tokens, "params->stop_tokens")?,
            stop_strings,
            ignore_eos: flag(self.ignore_eos, "params->ignore_eos")?,
            min_tokens: self.min_tokens as usize,
            prefill_chunk: self.prefill_chunk as usize,
            skip_special_tokens: flag(self.skip_special_tokens, "params->skip_special_tokens")?,
            cancel,
            constraint: self.constraint()?,
            tools: if self.tools_json.is_null() {
                None
            } else {
                let text = str_arg(self.tools_json, "params->tools_json")?;
                Some(std::sync::Arc::new(Tools::parse(text).map_err(|e| e.context("params->tools_json"))?))
            },
            tool_choice: if self.tool_choice.is_null() {
                ToolChoice::Auto
            } else {
                ToolChoice::parse(str_arg(self.tool_choice, "params->tool_choice")?)
                    .map_err(|e| e.context("params->tool_choice"))?
            },
            parallel_tool_calls: flag(self.parallel_tool_calls, "params->parallel_tool_calls")?,
            split_reasoning: flag(self.split_reasoning, "params->split_reasoning")?,
            thinking_budget: (self.thinking_budget > 0).then_some(self.thinking_budget as usize),
        })
    }

    fn constraint(&self) -> Result<Option<Constraint>> {
        let text = || str_arg(self.constraint_text, "params->constraint_text").map(str::to_string);
        Ok(Some(match self.constraint {
            LMX_CONSTRAINT_NONE => return Ok(None),
            LMX_CONSTRAINT_JSON_SCHEMA => Constraint::JsonSchema(text()?),
            LMX_CONSTRAINT_JSON_OBJECT => Constraint::JsonObject,
            LMX_CONSTRAINT_REGEX => Constraint::Regex(text()?),
            LMX_CONSTRAINT_GRAMMAR => Constraint::Lark(text()?),
            LMX_CONSTRAINT_CHOICE => {
                if self.n_choices > crate::model::grammar::MAX_CHOICES {
                    return Err(Error::invalid(format!(
                        "params->n_choices is {}; at most {}",
                        self.n_choices,
                        crate::model::grammar::MAX_CHOICES
                    )));
                }
                let list = slice(self.choices, self.n_choices, "params->choices")?
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| str_arg(s, &format!("params->choices[{i}]")).map(str::to_string))
                    .collect::<Result<Vec<String>>>()?;
                Constraint::Choice(list)
            }
            v => {
                return Err(Error::invalid(format!(
                    "params->constraint is {v}; it must be an LMX_CONSTRAINT_* value (0 to 5)"
                )))
            }
        }))
    }
}

/// Generation parameters from C (NULL: defaults), converted.
pub(crate) fn generate_params(p: *const lmx_generate_params) -> Result<GenerateParams> {
    read_in(p, "params", generate_defaults())?.to_engine()
}
