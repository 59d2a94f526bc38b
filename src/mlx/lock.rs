//! A process-wide reentrant lock (see [`super::compute_lock`]).

use parking_lot::{const_reentrant_mutex, ReentrantMutex, ReentrantMutexGuard};

static LOCK: ReentrantMutex<()> = const_reentrant_mutex(());

/// Held while alive; the lock is released when the outermost guard of a thread drops. Not
/// `Send`: a guard is released by the thread that took it.
pub struct ComputeGuard {
    _guard: ReentrantMutexGuard<'static, ()>,
}

pub(super) fn acquire() -> ComputeGuard {
    ComputeGuard { _guard: LOCK.lock() }
}

/// Whether the calling thread holds the lock.
pub(super) fn held_here() -> bool {
    LOCK.is_owned_by_current_thread()
}

#[cfg(test)]
mod tests {
    use super::{acquire, held_here};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn reentrant_and_exclusive() {
        let g1 = acquire();
        let g2 = acquire(); // same thread: no deadlock
        assert!(held_here());
        let inside = Arc::new(AtomicUsize::new(0));
        let i2 = inside.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(held_here()).unwrap();
            let _g = acquire();
            i2.store(1, Ordering::SeqCst);
        });
        assert!(!rx.recv().unwrap(), "another thread sees the lock as its own");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "another thread got in");
        drop(g2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "released too early");
        drop(g1);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
        assert!(!held_here());
    }
}
