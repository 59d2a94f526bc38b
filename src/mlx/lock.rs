//! A process-wide reentrant lock (see [`super::compute_lock`]).

use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

struct State {
    owner: Option<ThreadId>,
    depth: usize,
}

static STATE: Mutex<State> = Mutex::new(State { owner: None, depth: 0 });
static FREED: Condvar = Condvar::new();

/// Held while alive; the lock is released when the outermost guard of a thread drops.
pub struct ComputeGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

pub(super) fn acquire() -> ComputeGuard {
    let me = std::thread::current().id();
    // A panic while holding the state mutex cannot leave it inconsistent (two plain fields).
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match st.owner {
            None => {
                st.owner = Some(me);
                st.depth = 1;
                break;
            }
            Some(o) if o == me => {
                st.depth += 1;
                break;
            }
            Some(_) => st = FREED.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
    ComputeGuard { _not_send: std::marker::PhantomData }
}

impl Drop for ComputeGuard {
    fn drop(&mut self) {
        let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
        st.depth -= 1;
        if st.depth == 0 {
            st.owner = None;
            drop(st);
            FREED.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::acquire;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn reentrant_and_exclusive() {
        let g1 = acquire();
        let g2 = acquire(); // same thread: no deadlock
        let inside = Arc::new(AtomicUsize::new(0));
        let i2 = inside.clone();
        let t = std::thread::spawn(move || {
            let _g = acquire();
            i2.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "another thread got in");
        drop(g2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "released too early");
        drop(g1);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
    }
}
