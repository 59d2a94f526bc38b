//! Ctrl-C. While work that can stop cleanly runs (a generation, a training run), the first
//! Ctrl-C asks it to stop through its [`Cancel`] token and the work ends as it does when
//! stopped (metrics printed, files saved); a second Ctrl-C, or one while nothing stoppable
//! runs (loading a model, waiting for input), ends the process at once, as if no handler were
//! installed (killed by SIGINT).
//!
//! The signal itself only wakes signal-hook's iterator thread; the cancelling is done there,
//! so nothing but an async-signal-safe write ever runs inside the signal handler.

use std::sync::{Mutex, OnceLock};

use lmx::engine::Cancel;
use lmx::{Error, Result};
use signal_hook::consts::SIGINT;
use signal_hook::iterator::Signals;
use signal_hook::low_level;

/// The token of the work running now, if any.
static CURRENT: Mutex<Option<Cancel>> = Mutex::new(None);

/// Runs `work` with `cancel` as what a Ctrl-C stops; the handler is installed on first use.
pub(crate) fn cancelling<R>(cancel: &Cancel, work: impl FnOnce() -> Result<R>) -> Result<R> {
    install()?;
    let _current = Current::set(cancel);
    work()
}

/// Clears [`CURRENT`] when the work ends, however it ends.
struct Current;

impl Current {
    fn set(cancel: &Cancel) -> Current {
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancel.clone());
        Current
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        let mut signals = Signals::new([SIGINT]).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("lmx-ctrl-c".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    match current {
                        Some(c) if !c.is_requested() => c.request(),
                        _ => end_at_once(),
                    }
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    r.clone().map_err(|e| Error::internal(format!("installing the Ctrl-C handler: {e}")))
}

/// Ends the process as SIGINT's default disposition does. Like `main`, it runs no exit
/// destructors (see there why).
fn end_at_once() {
    if low_level::emulate_default_handler(SIGINT).is_err() {
        low_level::exit(130);
    }
}
