//! LoRA through the C ABI: adapters (load, apply per session, fuse) and training (a trainer
//! stepped by the caller, so cancelling between steps is the caller's loop stopping).

use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::model::{lmx_model, model_ref};
use super::session::{lmx_session, session_ref};
use super::sized::{c_struct, flag, init, read_in, write_out, AnyBits};
use crate::engine::train::{StepReport, TrainParams, Trainer};
use crate::engine::train_data::{load_jsonl, Example};
use crate::model::nn::lora::{LoraConfig, LoraWeights, Target};
use crate::{Error, ErrorKind, Result};

/// LoRA adapter weights for one model (opaque), loaded from a folder in mlx-lm's format or
/// taken from a trainer. Immutable and thread-safe; sessions using it keep it alive.
pub struct lmx_adapter {
    pub(crate) weights: Arc<LoraWeights>,
}
handle_type!(lmx_adapter);

fn adapter_ref(p: *const lmx_adapter) -> Result<Arc<lmx_adapter>> {
    handle_ref(p, "adapter")
}

/// Loads the adapter in folder `path` (adapters.safetensors and adapter_config.json as
/// mlx_lm.lora writes them; LoRA only) for `model` and writes it to `*adapter_out` (not NULL);
/// free it with lmx_adapter_free(). Returns LMX_OK; LMX_STATUS_NOT_FOUND (no such file);
/// LMX_STATUS_FORMAT (a tensor the model has no projection for, a missing half of a pair, a
/// shape that does not fit, NaN or infinite values, a bad config; the message names the
/// tensor);
/// LMX_STATUS_UNSUPPORTED (DoRA or full fine-tunes); LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_adapter_load(
    model: *const lmx_model,
    path: *const c_char,
    adapter_out: *mut *mut lmx_adapter,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(adapter_out, "adapter_out")?;
        let path = str_arg(path, "path")?;
        let w = m.load_adapter(Path::new(path))?;
        o.set(into_handle(lmx_adapter { weights: Arc::new(w) }));
        Ok(())
    })
}

/// Frees an adapter (NULL accepted); sessions using it keep it until they switch or are
/// freed. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_adapter_free(adapter: *mut lmx_adapter) -> lmx_status {
    status(|| {
        drop(take_handle(adapter, "adapter")?);
        Ok(())
    })
}

/// Writes the scale the adapter was trained with (adapter_config.json's `scale`) to
/// `*scale_out` (not NULL). Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_adapter_scale(adapter: *const lmx_adapter, scale_out: *mut f32) -> lmx_status {
    status(|| {
        let a = adapter_ref(adapter)?;
        out(scale_out, "scale_out")?.set(a.weights.config().scale);
        Ok(())
    })
}

/// Applies `adapter` (NULL: none, the base model) with `scale` (finite; 0 = off; usually
/// lmx_adapter_scale()'s value) to the session's generations from now on. Switching empties
/// the session's cache. The adapter must have been loaded for the session's model (or a model
/// of the same shapes). Returns LMX_OK; LMX_STATUS_BUSY while the session generates;
/// LMX_STATUS_INVALID_ARGUMENT (bad handles, a scale that is not finite, an adapter of other
/// shapes).
#[no_mangle]
pub extern "C" fn lmx_session_set_adapter(
    session: *const lmx_session,
    adapter: *const lmx_adapter,
    scale: f32,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let a = if adapter.is_null() { None } else { Some((adapter_ref(adapter)?.weights.clone(), scale)) };
        s.session.set_adapter(a)
    })
}

/// Makes a new model: `model` with `adapter` at `scale` added into its weights (quantized
/// layers are dequantized, updated and quantized again with the same bits and group size, so
/// the result is within a quantization step of the unfused adapter's output). Writes it to
/// `*model_out` (not NULL); `model` is unchanged. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT,
/// LMX_STATUS_FORMAT (the adapter holds NaN or infinite values) or LMX_STATUS_MLX /
/// LMX_STATUS_OUT_OF_MEMORY.
#[no_mangle]
pub extern "C" fn lmx_adapter_fuse(
    model: *const lmx_model,
    adapter: *const lmx_adapter,
    scale: f32,
    model_out: *mut *mut lmx_model,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let a = adapter_ref(adapter)?;
        let o = out(model_out, "model_out")?;
        let fused = m.fused(&a.weights, scale)?;
        o.set(into_handle(lmx_model { model: Arc::new(fused) }));
        Ok(())
    })
}

/// How to train a LoRA adapter. Initialize with lmx_train_params_init() (or
/// LMX_TRAIN_PARAMS_INIT), then set data_path and what you need. Defaults are mlx-lm's:
/// rank 8, scale 20, the last 16 layers, every projection, batch 4, learning rate 1e-5,
/// sequences up to 2048 tokens, Adam (weight decay 0). Strings are borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_train_params {
    /// sizeof(lmx_train_params) as the caller's header declares it.
    pub struct_size: usize,
    /// The training data: a JSONL file of {"text"}, {"prompt", "completion"} or {"messages"}
    /// rows (required), a regular file of at most LMX_TRAIN_FILE_MAX_BYTES, each row (line) at
    /// most LMX_TRAIN_ROW_MAX_BYTES.
    pub data_path: *const c_char,
    /// Validation data for lmx_trainer_evaluate() (NULL: the training data), under the same
    /// limits and cut to max_seq_length the same way.
    pub valid_path: *const c_char,
    /// An adapter folder to continue training from (NULL: fresh weights from `seed`).
    pub resume_adapter: *const c_char,
    /// Low-rank dimension (>= 1). Default 8.
    pub rank: u32,
    /// Multiplies the low-rank product. 0 = alpha / rank. Default 20.
    pub scale: f32,
    /// Used when scale is 0. Default 0.
    pub alpha: f32,
    /// In [0, 1). Default 0.
    pub dropout: f32,
    /// Adapt the last num_layers layers; 0 = min(16, the model's). Default 0.
    pub num_layers: u32,
    /// Comma-separated projections ("q_proj,v_proj"; from q_proj, k_proj, v_proj, o_proj,
    /// gate_proj, up_proj, down_proj). NULL or "" = all. Default NULL.
    pub targets: *const c_char,
    /// Peak learning rate (> 0, finite). Default 1e-5.
    pub learning_rate: f32,
    /// Linear warm-up steps from 0. Default 0.
    pub warmup_steps: u32,
    /// Cosine decay to min_learning_rate over this many steps after warm-up; 0 = constant.
    pub cosine_steps: u32,
    pub min_learning_rate: f32,
    /// AdamW decoupled weight decay. Default 0.
    pub weight_decay: f32,
    /// Clip the gradient's global norm (0 = off). Default 0.
    pub grad_clip: f32,
    /// Batches per update (>= 1). Default 1.
    pub grad_accumulation: u32,
    /// 0 or 1: recompute each layer's activations in the backward pass. Default 0.
    pub grad_checkpoint: u8,
    /// 0 or 1: chat rows learn only the last assistant turn. Default 0.
    pub mask_prompt: u8,
    /// Rows per batch (>= 1, at most the rows of the data). Default 4.
    pub batch_size: u32,
    /// Rows are cut to their first max_seq_length tokens as they are read (>= 2), as mlx-lm
    /// cuts them: the loss start of a masked prompt stays where it was, and a cut text row has
    /// no EOS. Only about as much of a long row is tokenized (and of a long chat row's
    /// messages rendered) as the kept tokens need, so a row longer than this costs little more
    /// than reading it. Default 2048.
    pub max_seq_length: u32,
    /// Seeds the adapter's initial weights, the batch order and dropout. Default 0.
    pub seed: u64,
}

/// Longest training or validation file lmx_trainer_create() reads, in bytes (1 GiB). The
/// file is read a row at a time; the cap bounds the time spent reading and the token ids kept.
pub const LMX_TRAIN_FILE_MAX_BYTES: u64 = 1 << 30;
/// Longest row (line) of a training or validation file, in bytes (64 MiB). A row is held
/// whole while it is parsed, before it is cut to max_seq_length tokens.
pub const LMX_TRAIN_ROW_MAX_BYTES: u64 = 64 << 20;
const _: () = assert!(
    LMX_TRAIN_FILE_MAX_BYTES == crate::engine::train_data::DATA_FILE_MAX
        && LMX_TRAIN_ROW_MAX_BYTES == crate::engine::train_data::ROW_MAX
);

/// What lmx_trainer_step() did. Set struct_size to sizeof(lmx_train_report).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_train_report {
    pub struct_size: usize,
    /// Updates applied so far.
    pub step: u64,
    /// Batches seen so far.
    pub batches: u64,
    /// Mean loss over the batch's trained tokens.
    pub loss: f32,
    pub learning_rate: f32,
    /// Tokens the loss covered.
    pub tokens: u64,
    pub tokens_per_second: f64,
    /// Global gradient norm before clipping (0 when the step only accumulated).
    pub grad_norm: f32,
    /// 1 when this step applied an update (every grad_accumulation batches).
    pub updated: u8,
    /// MLX's peak memory so far, bytes.
    pub peak_memory_bytes: u64,
}

c_struct!(lmx_train_params {
    struct_size,
    data_path,
    valid_path,
    resume_adapter,
    rank,
    scale,
    alpha,
    dropout,
    num_layers,
    targets,
    learning_rate,
    warmup_steps,
    cosine_steps,
    min_learning_rate,
    weight_decay,
    grad_clip,
    grad_accumulation,
    grad_checkpoint,
    mask_prompt,
    batch_size,
    max_seq_length,
    seed
});
// SAFETY: only integers, floats and raw pointers (the layout test lists every field).
unsafe impl AnyBits for lmx_train_params {}
c_struct!(lmx_train_report {
    struct_size,
    step,
    batches,
    loss,
    learning_rate,
    tokens,
    tokens_per_second,
    grad_norm,
    updated,
    peak_memory_bytes
});

fn train_defaults() -> lmx_train_params {
    let d = TrainParams::default();
    lmx_train_params {
        struct_size: std::mem::size_of::<lmx_train_params>(),
        data_path: std::ptr::null(),
        valid_path: std::ptr::null(),
        resume_adapter: std::ptr::null(),
        rank: d.lora.rank as u32,
        scale: d.lora.scale,
        alpha: 0.0,
        dropout: d.lora.dropout,
        num_layers: 0,
        targets: std::ptr::null(),
        learning_rate: d.learning_rate,
        warmup_steps: d.warmup_steps,
        cosine_steps: d.cosine_steps,
        min_learning_rate: d.min_learning_rate,
        weight_decay: d.weight_decay,
        grad_clip: d.grad_clip,
        grad_accumulation: d.grad_accumulation,
        grad_checkpoint: d.grad_checkpoint as u8,
        mask_prompt: 0,
        batch_size: d.batch_size,
        max_seq_length: d.max_seq_length,
        seed: d.seed,
    }
}

/// Writes the default training parameters into `*params` (not NULL), a struct of `size`
/// bytes (pass sizeof(lmx_train_params)), and sets its struct_size to `size`. Returns LMX_OK
/// or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_train_params_init(params: *mut lmx_train_params, size: usize) -> lmx_status {
    status(|| init(params, size, "params", &train_defaults()))
}

/// A trainer (opaque): one LoRA training run on a model. One call at a time (another call
/// meanwhile gets LMX_STATUS_BUSY); the model stays usable for generation meanwhile.
pub struct lmx_trainer {
    state: Mutex<(Trainer, Option<Vec<Example>>)>,
}
handle_type!(lmx_trainer);

fn trainer_ref(p: *const lmx_trainer) -> Result<Arc<lmx_trainer>> {
    handle_ref(p, "trainer")
}

impl lmx_trainer {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, (Trainer, Option<Vec<Example>>)>> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                Err(Error::new(ErrorKind::Busy, "the trainer is busy with another call"))
            }
        }
    }
}

fn opt_path<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        str_arg(p, name).map(Some)
    }
}

/// Makes a trainer for `model` from `params` (not NULL; data_path set): reads and tokenizes
/// the data, each row cut to its first params->max_seq_length tokens (only the start of a
/// long row is tokenized), makes (or loads) the adapter, and writes the trainer to
/// `*trainer_out` (not NULL); free it with lmx_trainer_free(). The trainer keeps at most
/// max_seq_length token ids a row. Returns LMX_OK; LMX_STATUS_INVALID_ARGUMENT (bad
/// parameters: a rank of 0, a learning rate that is not a positive number, an unknown target,
/// more rows per batch than the data has); LMX_STATUS_FORMAT (the message names the file and
/// the row number, 1-based as editors count lines: a malformed JSONL row, a row longer than
/// LMX_TRAIN_ROW_MAX_BYTES, a masked prompt that fills max_seq_length; a file longer than
/// LMX_TRAIN_FILE_MAX_BYTES; a path that is not a regular file, such as a FIFO or device,
/// refused without waiting on it; a bad adapter); LMX_STATUS_NOT_FOUND; LMX_STATUS_IO.
#[no_mangle]
pub extern "C" fn lmx_trainer_create(
    model: *const lmx_model,
    params: *const lmx_train_params,
    trainer_out: *mut *mut lmx_trainer,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(trainer_out, "trainer_out")?;
        if params.is_null() {
            return Err(Error::invalid("params is NULL (data_path is required)"));
        }
        let r = train_request(params, m.num_layers())?;
        let data_path = r.data_path.ok_or_else(|| Error::invalid("params->data_path is NULL"))?;
        let max_len = r.params.max_seq_length as usize;
        let data = load_jsonl(Path::new(data_path), &m, r.mask_prompt, max_len)?;
        let valid = r.valid_path.map(|v| load_jsonl(Path::new(v), &m, r.mask_prompt, max_len)).transpose()?;
        let init = r.resume_adapter.map(|dir| m.load_adapter(Path::new(dir))).transpose()?;
        let tp = r.params;
        let trainer = Trainer::new(m, tp, data, init)?;
        o.set(into_handle(lmx_trainer { state: Mutex::new((trainer, valid)) }));
        Ok(())
    })
}

/// What an lmx_train_params asks for, every field checked.
struct TrainRequest<'a> {
    params: TrainParams,
    mask_prompt: bool,
    data_path: Option<&'a str>,
    valid_path: Option<&'a str>,
    resume_adapter: Option<&'a str>,
}

/// Reads and checks `*p` (NULL: the defaults) for a model of `layers` layers: the one path
/// every function taking an lmx_train_params goes through, so each field (flags, strings,
/// numbers) is refused alike wherever it is passed.
fn train_request<'a>(p: *const lmx_train_params, layers: usize) -> Result<TrainRequest<'a>> {
    let p = read_in(p, "params", train_defaults())?;
    let rank =
        i32::try_from(p.rank).map_err(|_| Error::invalid(format!("params->rank {} is too large", p.rank)))?;
    let scale = if p.scale == 0.0 { LoraConfig::scale_from_alpha(p.alpha, rank) } else { p.scale };
    let targets = Target::parse_list(opt_path(p.targets, "params->targets")?.unwrap_or(""))?;
    let num_layers =
        if p.num_layers == 0 { LoraConfig::default_layers(layers) } else { p.num_layers as usize };
    let params = TrainParams {
        lora: LoraConfig {
            rank,
            scale,
            dropout: p.dropout,
            num_layers: i32::try_from(num_layers).unwrap_or(i32::MAX),
            targets,
        },
        learning_rate: p.learning_rate,
        warmup_steps: p.warmup_steps,
        cosine_steps: p.cosine_steps,
        min_learning_rate: p.min_learning_rate,
        weight_decay: p.weight_decay,
        grad_clip: p.grad_clip,
        grad_accumulation: p.grad_accumulation,
        grad_checkpoint: flag(p.grad_checkpoint, "params->grad_checkpoint")?,
        batch_size: p.batch_size,
        max_seq_length: p.max_seq_length,
        seed: p.seed,
        ..TrainParams::default()
    };
    params.validate(layers)?;
    Ok(TrainRequest {
        params,
        mask_prompt: flag(p.mask_prompt, "params->mask_prompt")?,
        data_path: opt_path(p.data_path, "params->data_path")?,
        valid_path: opt_path(p.valid_path, "params->valid_path")?,
        resume_adapter: opt_path(p.resume_adapter, "params->resume_adapter")?,
    })
}

/// Writes how many weights an adapter of `params` (rank, targets, num_layers; the data is not
/// read, the paths need not exist) has on `model` to `*count_out` (not NULL). `params` may be
/// NULL: the defaults (lmx_train_params_init()'s). Every field is checked as
/// lmx_trainer_create() checks it. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT (bad handles
/// or parameters).
#[no_mangle]
pub extern "C" fn lmx_lora_param_count(
    model: *const lmx_model,
    params: *const lmx_train_params,
    count_out: *mut u64,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(count_out, "count_out")?;
        let r = train_request(params, m.num_layers())?;
        o.set(r.params.lora.param_count(m.spec()));
        Ok(())
    })
}

fn report_c(r: &StepReport) -> lmx_train_report {
    lmx_train_report {
        struct_size: std::mem::size_of::<lmx_train_report>(),
        step: r.step,
        batches: r.batches,
        loss: r.loss,
        learning_rate: r.learning_rate,
        tokens: r.tokens,
        tokens_per_second: r.tokens_per_second,
        grad_norm: r.grad_norm,
        updated: r.updated as u8,
        peak_memory_bytes: r.peak_memory_bytes,
    }
}

/// Trains on the next batch (an update every grad_accumulation batches) and writes what
/// happened to `*report_out` (may be NULL; struct_size set). Returns LMX_OK; LMX_STATUS_BUSY;
/// LMX_STATUS_INVALID_ARGUMENT (bad handle or struct_size; a loss that is not finite: training
/// diverged, nothing was updated); LMX_STATUS_MLX / LMX_STATUS_OUT_OF_MEMORY.
#[no_mangle]
pub extern "C" fn lmx_trainer_step(
    trainer: *const lmx_trainer,
    report_out: *mut lmx_train_report,
) -> lmx_status {
    status(|| {
        let t = trainer_ref(trainer)?;
        if !report_out.is_null() {
            // Check the caller's struct before doing the work.
            write_out(report_out, "report_out", &report_c(&StepReport::default()))?;
        }
        let r = t.lock()?.0.step()?;
        if !report_out.is_null() {
            write_out(report_out, "report_out", &report_c(&r))?;
        }
        Ok(())
    })
}

/// Writes the mean loss per token over the validation data (the training data when none was
/// given) to `*loss_out` (not NULL), without dropout. Returns LMX_OK, LMX_STATUS_BUSY,
/// LMX_STATUS_INVALID_ARGUMENT or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_trainer_evaluate(trainer: *const lmx_trainer, loss_out: *mut f32) -> lmx_status {
    status(|| {
        let t = trainer_ref(trainer)?;
        let o = out(loss_out, "loss_out")?;
        let g = t.lock()?;
        let (tr, valid) = &*g;
        let loss = match valid {
            Some(v) => tr.evaluate(v)?,
            None => tr.evaluate(tr.data())?,
        };
        o.set(loss);
        Ok(())
    })
}

/// Writes the adapter as trained so far into folder `path` (made if absent):
/// adapters.safetensors and adapter_config.json in mlx-lm's format (mlx_lm's
/// `--adapter-path` and lmx_adapter_load() read it). Each file is replaced only once its new
/// version is complete; an existing adapters.safetensors or adapter_config.json that is not a
/// regular file (a symbolic link, FIFO, device, folder) is refused, never replaced. Returns
/// LMX_OK, LMX_STATUS_BUSY, LMX_STATUS_IO or LMX_STATUS_INVALID_ARGUMENT (errors name the
/// path).
#[no_mangle]
pub extern "C" fn lmx_trainer_save_adapter(trainer: *const lmx_trainer, path: *const c_char) -> lmx_status {
    status(|| {
        let t = trainer_ref(trainer)?;
        let path = str_arg(path, "path")?;
        let r = t.lock()?.0.save(Path::new(path));
        r
    })
}

/// Writes the adapter as trained so far, as an adapter handle for lmx_session_set_adapter()
/// and lmx_adapter_fuse(), to `*adapter_out` (not NULL; free it with lmx_adapter_free()).
/// Later steps do not change it. Returns LMX_OK, LMX_STATUS_BUSY,
/// LMX_STATUS_INVALID_ARGUMENT or LMX_STATUS_FORMAT (training diverged: the adapter holds NaN
/// or infinite values, named in the message).
#[no_mangle]
pub extern "C" fn lmx_trainer_adapter(
    trainer: *const lmx_trainer,
    adapter_out: *mut *mut lmx_adapter,
) -> lmx_status {
    status(|| {
        let t = trainer_ref(trainer)?;
        let o = out(adapter_out, "adapter_out")?;
        let w = t.lock()?.0.weights().clone();
        w.check_finite()?;
        o.set(into_handle(lmx_adapter { weights: Arc::new(w) }));
        Ok(())
    })
}

/// Frees a trainer (NULL accepted): its data, adapter and optimizer state, and the buffers
/// its steps left in MLX's buffer cache (the cache is emptied, as lmx_clear_cache() does).
/// Returns LMX_OK, LMX_STATUS_BUSY (nothing freed) while a call runs on it, or
/// LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_trainer_free(trainer: *mut lmx_trainer) -> lmx_status {
    status(|| {
        let freed = super::handle::take_handle_if(trainer, "trainer", |t| t.lock().map(drop))?;
        if let Some(t) = freed {
            // Dropping the trainer's arrays moves their memory (activations, gradients,
            // optimizer state: for a real model, gigabytes) into MLX's buffer cache, where
            // it would stay until MLX next wanted buffers of those sizes. A training run is
            // a one-off: the memory goes back to the system now. The trainer is freed
            // either way, so a failure to clear is no failure of this call.
            drop(t);
            let _ = crate::mlx::memory::clear_cache();
        }
        Ok(())
    })
}
