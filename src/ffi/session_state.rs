//! A session's state beyond one call: options (a quantized KV cache), save and restore, fork.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::boundary::{out, status, str_arg};
use super::handle::into_handle;
use super::lmx_status;
use super::model::{lmx_model, model_ref};
use super::session::{lmx_session, session_ref};
use super::sized::{c_struct, init, read_in, write_out, AnyBits};
use crate::engine::{Session, SessionOptions};
use crate::model::KvQuant;
use crate::{Error, Result};

/// How a session keeps its KV cache. Initialize with lmx_session_params_init() (or
/// LMX_SESSION_PARAMS_INIT).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lmx_session_params {
    /// sizeof(lmx_session_params) as the caller's header declares it.
    pub struct_size: usize,
    /// Bits per cached key and value in the global-attention layers: 0 (default) keeps the
    /// model's dtype; 4 or 8 quantize them (MLX affine, as mlx-lm's `kv_bits`). Sliding-window
    /// layers always stay in the model's dtype.
    pub kv_bits: u32,
    /// Values per scale and bias along the head dimension: 32, 64 (default) or 128; must
    /// divide the model's head dimension.
    pub kv_group_size: u32,
    /// Quantize once the session holds this many positions (default 0: from the first step;
    /// mlx-lm's command line uses 5000).
    pub kv_quant_start: u32,
}

c_struct!(lmx_session_params { struct_size, kv_bits, kv_group_size, kv_quant_start });
// SAFETY: only integers, floats and raw pointers (the layout test lists every field).
unsafe impl AnyBits for lmx_session_params {}

fn session_defaults() -> lmx_session_params {
    lmx_session_params {
        struct_size: std::mem::size_of::<lmx_session_params>(),
        kv_bits: 0,
        kv_group_size: 64,
        kv_quant_start: 0,
    }
}

/// Writes the default session parameters into `*params` (not NULL), a struct of `size` bytes
/// (pass sizeof(lmx_session_params)), and sets its struct_size to `size`. Returns LMX_OK or
/// LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_session_params_init(params: *mut lmx_session_params, size: usize) -> lmx_status {
    status(|| init(params, size, "params", &session_defaults()))
}

fn options(p: *const lmx_session_params) -> Result<SessionOptions> {
    let p = if p.is_null() { session_defaults() } else { read_in(p, "params", session_defaults())? };
    let kv_quant = match p.kv_bits {
        0 => None,
        bits => Some(KvQuant {
            bits: i32::try_from(bits).unwrap_or(i32::MAX),
            group_size: i32::try_from(p.kv_group_size).unwrap_or(i32::MAX),
            start: i32::try_from(p.kv_quant_start)
                .map_err(|_| Error::invalid(format!("kv_quant_start {} is too large", p.kv_quant_start)))?,
        }),
    };
    Ok(SessionOptions { kv_quant })
}

fn wrap(session: Session) -> *mut lmx_session {
    into_handle(lmx_session { session: Arc::new(session), last: Arc::new(Mutex::new(None)) })
}

/// Creates a session on `model` with `params` (NULL: the defaults, as lmx_session_create())
/// and writes it to `*session_out` (not NULL); free it with lmx_session_free(). Thread-safe.
/// Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (bad handle, struct_size, kv_bits other than
/// 0, 4 or 8, a group size MLX does not support or that does not divide the head dimension)
/// or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_session_create_with(
    model: *const lmx_model,
    params: *const lmx_session_params,
    session_out: *mut *mut lmx_session,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(session_out, "session_out")?;
        let opts = options(params)?;
        o.set(wrap(Session::with_options(m, &opts)?));
        Ok(())
    })
}

/// Writes the session's KV cache and the token ids it holds to the file `path` (UTF-8, not
/// NULL; replaced only once the new file is complete). An existing `path` must be a regular
/// file: a symbolic link, FIFO, socket, device or folder there is refused
/// (LMX_STATUS_INVALID_ARGUMENT), never replaced. Errors name `path`. The file is safetensors in mlx-lm's
/// prompt-cache layout (mlx_lm.load_prompt_cache reads it) with liblmx's metadata: format and
/// liblmx version, the model's architecture and fingerprint, the dtype and the tokens.
/// Returns LMX_OK; LMX_STATUS_INVALID_ARGUMENT (bad handle or path, an empty session);
/// LMX_STATUS_UNSUPPORTED (the session has an adapter: fuse it with lmx_adapter_fuse() and
/// save a session of the fused model); LMX_STATUS_BUSY while it generates; LMX_STATUS_IO or
/// LMX_STATUS_MLX when writing fails (the old file, if any, is left as it was).
#[no_mangle]
pub extern "C" fn lmx_session_save(session: *const lmx_session, path: *const c_char) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let path = str_arg(path, "path")?;
        s.session.save(Path::new(path), &BTreeMap::new())
    })
}

/// Restores a session saved by lmx_session_save() (or by mlx-lm's save_prompt_cache, e.g.
/// `mlx_lm.cache_prompt`) for `model`, with `params` (NULL: defaults; a quantization applies
/// from now on to a float cache; a quantized cache keeps its bits and group size, and params
/// asking for others are LMX_STATUS_INVALID_ARGUMENT), and writes it to `*session_out` (not
/// NULL). The session continues exactly as the
/// saved one would have: the next prompt's tokens that extend the saved ones are not
/// recomputed. A file from mlx-lm holds no token ids: the next prompt is taken to follow the
/// cached positions. Returns LMX_OK; LMX_STATUS_NOT_FOUND / LMX_STATUS_IO for the file;
/// LMX_STATUS_FORMAT for a corrupt or truncated file; LMX_STATUS_INVALID_ARGUMENT for a file
/// saved from another model (architecture, fingerprint of weights and tokenizer), another
/// dtype, layer layout or shape, or bad params; LMX_STATUS_UNSUPPORTED for a newer format.
#[no_mangle]
pub extern "C" fn lmx_session_load(
    model: *const lmx_model,
    path: *const c_char,
    params: *const lmx_session_params,
    session_out: *mut *mut lmx_session,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let path = str_arg(path, "path")?;
        let o = out(session_out, "session_out")?;
        let opts = options(params)?;
        let (s, _) = Session::load(m, Path::new(path), &opts)?;
        o.set(wrap(s));
        Ok(())
    })
}

/// Creates a session with `session`'s state (cached tokens, cache quantization, adapter) and
/// writes it to `*session_out` (not NULL). Nothing is copied: the two share the cache's
/// memory, and a buffer is copied only when one of them first writes to it, so N forks of a
/// session over a long prompt cost one prefill. Returns LMX_OK, LMX_STATUS_BUSY while
/// `session` generates, LMX_STATUS_INVALID_ARGUMENT or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_session_fork(
    session: *const lmx_session,
    session_out: *mut *mut lmx_session,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let o = out(session_out, "session_out")?;
        o.set(wrap(s.session.fork()?));
        Ok(())
    })
}

/// What a session's cache holds (lmx_session_cache_info()).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct lmx_session_cache {
    /// sizeof(lmx_session_cache) as the caller's header declares it.
    pub struct_size: usize,
    /// Positions cached.
    pub positions: u64,
    /// Of them, those whose token ids are known (all, unless restored from an mlx-lm file).
    pub known_tokens: u64,
    /// Bytes of the cache's buffers (shared buffers of forked sessions count in each).
    pub bytes: u64,
    /// 0, or the bits and group size chosen for the global layers (they are quantized once
    /// the session reaches its kv_quant_start).
    pub kv_bits: u32,
    pub kv_group_size: u32,
}

c_struct!(lmx_session_cache { struct_size, positions, known_tokens, bytes, kv_bits, kv_group_size });

/// Writes what `session`'s cache holds to `*cache_out` (not NULL; struct_size set by the
/// caller). Returns LMX_OK, LMX_STATUS_BUSY while it generates, or
/// LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_session_cache_info(
    session: *const lmx_session,
    cache_out: *mut lmx_session_cache,
) -> lmx_status {
    status(|| {
        let s = session_ref(session)?;
        let (positions, bytes) = s.session.cache_size()?;
        let known = s.session.cached_tokens()?.len();
        let q = s.session.kv_quant()?;
        let v = lmx_session_cache {
            struct_size: std::mem::size_of::<lmx_session_cache>(),
            positions: positions as u64,
            known_tokens: known as u64,
            bytes: bytes as u64,
            kv_bits: q.map_or(0, |q| q.bits as u32),
            kv_group_size: q.map_or(0, |q| q.group_size as u32),
        };
        write_out(cache_out, "cache_out", &v)
    })
}
