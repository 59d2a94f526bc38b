//! Process exit with MLX's CUDA backend.
//!
//! At exit MLX destroys its stream encoders (a static map), and each hands the release of its
//! CUDA stream and event to a detached worker thread. If the CUDA runtime unloads before such
//! a thread has finished, the release fails with "driver shutting down" inside a destructor
//! and the process aborts (`std::terminate`), after the host program's `main` has returned:
//! seen in about 1 in 6 runs of `lmx generate` on an H200.
//!
//! Exit handlers run in the reverse order of their registration, and the CUDA runtime
//! registers its own teardown when MLX first initializes it. So [`install`] initializes MLX's
//! GPU side first and then registers [`settle`]: the hook runs after MLX's encoders (made
//! later) are destroyed and before the CUDA runtime unloads, and waits for the worker threads
//! to finish. Nothing here runs on Metal or CPU-only builds.

use std::time::{Duration, Instant};

use super::sys;

/// Most time the hook waits at exit.
const SETTLE_LIMIT: Duration = Duration::from_millis(500);
/// The thread count must stay unchanged this long to count as settled.
const SETTLE_QUIET: Duration = Duration::from_millis(5);

fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

extern "C" fn settle() {
    // Must not unwind (called from C); nothing below panics.
    let Some(mut last) = thread_count() else { return };
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    while start.elapsed() < SETTLE_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
        let Some(n) = thread_count() else { return };
        if n != last {
            last = n;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            return;
        }
    }
}

/// Called once from [`super::init`], after the error handler is installed.
pub(super) fn install() {
    if cfg!(target_os = "macos") {
        return;
    }
    let mut cuda = false;
    // SAFETY: valid out pointer; errors go to the handler already installed.
    if unsafe { sys::mlx_cuda_is_available(&mut cuda) } != 0 || !cuda {
        return;
    }
    let mut n = 0;
    // SAFETY: valid out pointer.
    if unsafe { sys::mlx_device_count(&mut n, sys::mlx_device_type__MLX_GPU) } != 0 || n < 1 {
        return;
    }
    // Asking for the GPU's default stream builds MLX's scheduler, which initializes the CUDA
    // runtime (and registers its teardown) before this hook is registered.
    // SAFETY: plain constructors; both handles freed here.
    unsafe {
        let dev = sys::mlx_device_new_type(sys::mlx_device_type__MLX_GPU, 0);
        let mut s = sys::mlx_stream_new();
        let ok = sys::mlx_get_default_stream(&mut s, dev) == 0;
        sys::mlx_stream_free(s);
        sys::mlx_device_free(dev);
        if ok {
            libc::atexit(settle);
        }
    }
}
