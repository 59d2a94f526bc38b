//! Cancellation tokens for calls that have no session to cancel: lmx_batch_generate(),
//! lmx_classify(), and any generation that should stop on the caller's signal.

use std::sync::Arc;

use super::boundary::{out, status};
use super::handle::{handle_ref, handle_type, into_handle, take_handle};
use super::lmx_status;
use crate::engine::Cancel;
use crate::Result;

/// A cancellation token (opaque): put it in lmx_generate_params.cancel, then
/// lmx_cancel_request() stops every call running with it. Thread-safe.
pub struct lmx_cancel {
    pub(crate) flag: Cancel,
}
handle_type!(lmx_cancel);

pub(crate) fn cancel_ref(p: *const lmx_cancel, name: &str) -> Result<Arc<lmx_cancel>> {
    handle_ref(p, name)
}

/// Makes a cancellation token and writes it to `*cancel_out` (not NULL); free it with
/// lmx_cancel_free(). Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_cancel_create(cancel_out: *mut *mut lmx_cancel) -> lmx_status {
    status(|| {
        let o = out(cancel_out, "cancel_out")?;
        o.set(into_handle(lmx_cancel { flag: Cancel::new() }));
        Ok(())
    })
}

/// Asks every call running with this token, and every later one, to stop: a generation ends
/// after its current prefill chunk or step with LMX_STATUS_CANCELLED (lmx_batch_generate():
/// the rows still running end with LMX_FINISH_CANCELLED); lmx_classify() returns
/// LMX_STATUS_CANCELLED before its next batch. A token stays requested: make a new one for new
/// work. Any thread, any time. Returns LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_cancel_request(cancel: *const lmx_cancel) -> lmx_status {
    status(|| {
        cancel_ref(cancel, "cancel")?.flag.request();
        Ok(())
    })
}

/// Frees a token (NULL accepted); calls running with it keep it until they return. Returns
/// LMX_OK or LMX_STATUS_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn lmx_cancel_free(cancel: *mut lmx_cancel) -> lmx_status {
    status(|| {
        drop(take_handle(cancel, "cancel")?);
        Ok(())
    })
}
