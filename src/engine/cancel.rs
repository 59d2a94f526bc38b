//! Cancellation tokens: a request to stop, shared by whoever may ask and the work that
//! checks it (between prefill chunks and decode steps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A request to stop. Clones share the request; equal when they are the same token.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the work holding this token to stop. Any thread, any time; idempotent.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
