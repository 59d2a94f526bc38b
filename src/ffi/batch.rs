//! Batches over a model: classification and batch generation.

use std::ffi::{c_char, CString};

use super::boundary::{out, status, str_arg};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use super::model::{lmx_model, model_ref};
use super::params::{generate_params, lmx_generate_params, slice};
use super::result::{lmx_finish_reason, lmx_metrics, write_metrics};
use super::sized::{c_struct, write_out};
use crate::engine::{batch_generate, classify, Metrics};
use crate::{Error, Result};

fn prompts(model: &crate::model::Model, p: *const *const c_char, n: usize) -> Result<Vec<Vec<u32>>> {
    if n == 0 {
        return Err(Error::invalid("no prompts"));
    }
    slice(p, n, "prompts")?
        .iter()
        .enumerate()
        .map(|(i, &s)| model.encode(str_arg(s, &format!("prompts[{i}]"))?, true))
        .collect()
}

/// For each of `n` text prompts, one forward pass and the next token (chosen by `params`,
/// greedy by default; `params` may be NULL), written to `tokens_out[i]` (n entries, not NULL).
/// The logits of each prompt's last position are n x vocab_size float32 values, row-major
/// (vocab_size being lmx_model_desc.vocab_size): their count is written to `*n_logits_out`
/// (may be NULL), and they are written to `logits` when it is not NULL, which then must hold
/// `logits_capacity` >= that count floats (a smaller capacity is
/// LMX_STATUS_INVALID_ARGUMENT before anything runs). With `logits` NULL, pass capacity 0:
/// no logits are copied. Thread-safe. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (NULL,
/// bad UTF-8, an empty or too long prompt, a small capacity), LMX_STATUS_CANCELLED,
/// LMX_STATUS_FORMAT (the model's output is not finite) or LMX_STATUS_MLX; on error nothing
/// is written.
#[no_mangle]
pub extern "C" fn lmx_classify(
    model: *const lmx_model,
    prompts_in: *const *const c_char,
    n: usize,
    params: *const lmx_generate_params,
    tokens_out: *mut i32,
    logits: *mut f32,
    logits_capacity: usize,
    n_logits_out: *mut usize,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        if tokens_out.is_null() {
            return Err(Error::invalid("tokens_out is NULL"));
        }
        let vocab = m.vocab();
        let needed = n
            .checked_mul(vocab)
            .ok_or_else(|| Error::invalid(format!("{n} prompts x {vocab} logits is too many")))?;
        if !logits.is_null() && logits_capacity < needed {
            return Err(Error::invalid(format!(
                "logits_capacity {logits_capacity} is less than the {needed} floats {n} prompts x vocab_size {vocab} need"
            )));
        }
        let ps = prompts(&m, prompts_in, n)?;
        let p = generate_params(params)?;
        let results = classify(&m, &ps, &p, !logits.is_null())?;
        if results.len() != n {
            return Err(Error::internal(format!("{} results for {n} prompts", results.len())));
        }
        for r in &results {
            if let Some(l) = &r.logits {
                if l.len() != vocab {
                    return Err(Error::internal(format!(
                        "a row of {} logits; the vocabulary has {vocab}",
                        l.len()
                    )));
                }
            }
        }
        for (i, r) in results.iter().enumerate() {
            // SAFETY: the caller promises n entries in tokens_out and logits_capacity >= n *
            // vocab floats in logits (checked above); every row was checked to be vocab long.
            unsafe { std::ptr::write_unaligned(tokens_out.add(i), r.token as i32) };
            if let Some(l) = &r.logits {
                unsafe { std::ptr::copy_nonoverlapping(l.as_ptr(), logits.add(i * vocab), vocab) };
            }
        }
        if !n_logits_out.is_null() {
            // SAFETY: a non-NULL pointer the caller gave for one size_t.
            unsafe { std::ptr::write_unaligned(n_logits_out, needed) };
        }
        Ok(())
    })
}

fn nul_terminated(s: String) -> Vec<u8> {
    let mut v = s.into_bytes();
    v.push(0);
    v
}

struct Item {
    status: lmx_status,
    error: CString,
    tokens: Vec<i32>,
    text_ends: Vec<usize>,
    /// The text's bytes and a NUL.
    text: Vec<u8>,
    finish: lmx_finish_reason,
}

/// The results of lmx_batch_generate() (opaque). Read-only; thread-safe to read.
pub struct lmx_batch {
    items: Vec<Item>,
    metrics: Metrics,
}
handle_type!(lmx_batch);

/// One prompt's result. Pointers are owned by the lmx_batch and valid until lmx_batch_free().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lmx_batch_item {
    /// Set by the caller to sizeof(lmx_batch_item).
    pub struct_size: usize,
    /// LMX_OK, or why this prompt could not run (the others are unaffected).
    pub status: lmx_status,
    /// The message for a failed prompt; "" otherwise. Never NULL.
    pub error: *const c_char,
    pub tokens: *const i32,
    pub n_tokens: usize,
    /// The text, NUL-terminated UTF-8, `text_len` bytes. Never NULL.
    pub text: *const c_char,
    pub text_len: usize,
    pub finish: lmx_finish_reason,
    /// n_tokens entries: the bytes of `text` delivered once each token was generated, as a
    /// stream would deliver them (a character split over tokens, or text that may begin a
    /// stop string, is held back until it is settled). Token i's piece is
    /// text[text_ends[i-1] .. text_ends[i]]; text past text_ends[n_tokens - 1] was released
    /// when the row ended. NULL when n_tokens is 0.
    pub text_ends: *const usize,
}

c_struct!(lmx_batch_item { struct_size, status, error, tokens, n_tokens, text, text_len, finish, text_ends });

/// Generates after each of `n` text prompts at once, one forward pass per step for the whole
/// batch (left-padded; greedy results equal one-by-one generation). `params` (may be NULL)
/// applies to every prompt. Writes a result set to `*batch_out` (not NULL), to be read with
/// lmx_batch_get() and freed with lmx_batch_free(). A prompt that cannot run gets its own
/// status in its item. Thread-safe. Returns LMX_OK, LMX_STATUS_INVALID_ARGUMENT (NULL, bad
/// params), LMX_STATUS_FORMAT (the model's output is NaN or infinite: corrupt or overflowing
/// weights) or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_batch_generate(
    model: *const lmx_model,
    prompts_in: *const *const c_char,
    n: usize,
    params: *const lmx_generate_params,
    batch_out: *mut *mut lmx_batch,
) -> lmx_status {
    status(|| {
        let m = model_ref(model)?;
        let o = out(batch_out, "batch_out")?;
        let ps = prompts(&m, prompts_in, n)?;
        let p = generate_params(params)?;
        let (results, metrics) = batch_generate(&m, &ps, &p)?;
        let items = results
            .into_iter()
            .map(|r| match r {
                Ok(b) => Item {
                    status: lmx_status::LMX_OK,
                    error: CString::default(),
                    tokens: b.tokens.iter().map(|&t| t as i32).collect(),
                    text_ends: b.text_ends,
                    text: nul_terminated(b.text),
                    finish: b.finish.into(),
                },
                Err(e) => Item {
                    status: super::error::status_of(e.kind),
                    error: CString::new(e.message.replace('\0', "?")).unwrap_or_default(),
                    tokens: Vec::new(),
                    text_ends: Vec::new(),
                    text: vec![0],
                    finish: lmx_finish_reason::LMX_FINISH_ERROR,
                },
            })
            .collect();
        o.set(into_handle(lmx_batch { items, metrics }));
        Ok(())
    })
}

/// The number of items in a batch result; 0 for NULL or an invalid handle.
#[no_mangle]
pub extern "C" fn lmx_batch_count(batch: *const lmx_batch) -> usize {
    super::boundary::value(0, || handle_ref(batch, "batch").map(|b| b.items.len()).unwrap_or(0))
}

/// Fills `*item_out` (not NULL, struct_size set) with item `i`. Returns LMX_OK or
/// LMX_STATUS_INVALID_ARGUMENT (NULL, i out of range).
#[no_mangle]
pub extern "C" fn lmx_batch_get(
    batch: *const lmx_batch,
    i: usize,
    item_out: *mut lmx_batch_item,
) -> lmx_status {
    status(|| {
        let b = handle_ref(batch, "batch")?;
        let it = b.items.get(i).ok_or_else(|| {
            Error::invalid(format!("item {i} is out of range (the batch has {})", b.items.len()))
        })?;
        let v = lmx_batch_item {
            struct_size: std::mem::size_of::<lmx_batch_item>(),
            status: it.status,
            error: it.error.as_ptr(),
            tokens: it.tokens.as_ptr(),
            n_tokens: it.tokens.len(),
            text: it.text.as_ptr() as *const c_char,
            text_len: it.text.len() - 1,
            finish: it.finish,
            text_ends: if it.text_ends.is_empty() { std::ptr::null() } else { it.text_ends.as_ptr() },
        };
        write_out(item_out, "item_out", &v)
    })
}

/// Writes the whole batch's metrics to `*metrics_out` (not NULL, struct_size set). Returns
/// LMX_OK or LMX_STATUS_INVALID_ARGUMENT (NULL, a bad handle, struct_size too small).
#[no_mangle]
pub extern "C" fn lmx_batch_metrics(batch: *const lmx_batch, metrics_out: *mut lmx_metrics) -> lmx_status {
    status(|| {
        let b = handle_ref(batch, "batch")?;
        write_metrics(metrics_out, &b.metrics)
    })
}

/// Frees a batch result (NULL accepted). Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_batch_free(batch: *mut lmx_batch) -> lmx_status {
    status(|| {
        drop(take_handle(batch, "batch")?);
        Ok(())
    })
}
