//! MLX's compiler for the small elementwise pieces of a forward pass (activations): traced
//! once, replayed as one fused kernel instead of one kernel per op.
//!
//! A compiled function replays the primitives it was traced with, streams included, so one
//! is traced per stream (the stream's index is a constant of the compilation, which keys
//! MLX's compile cache). MLX's compile cache is per thread: each thread that calls a
//! compiled function traces it into its own cache, and an entry can only be erased through a
//! handle to the cache that holds it. So every entry remembers the caches of the threads that
//! ran it, and releasing a stream erases the stream's functions from all of them (a Go
//! program drops models on its cleanup goroutine, whatever OS thread ran them).
//!
//! On the CPU, MLX builds fused kernels with the system's C++ compiler at run time (and
//! caches them on disk); a machine may have none, so the first compiled call
//! on a CPU stream is a probe on tiny inputs, and if it fails the functions run as plain ops
//! for the rest of the process.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use super::device::current_raw;
use super::ops::VecArray;
use super::{check, sys, Array};
use crate::{Error, Result};

/// A function of arrays that can be compiled.
pub type ArrayFn = fn(&[Array]) -> Result<Vec<Array>>;

/// An mlx-c closure, freed on drop.
struct Closure(sys::mlx_closure);

// SAFETY: a closure is an immutable std::function; liblmx calls it under the compute lock.
unsafe impl Send for Closure {}
unsafe impl Sync for Closure {}

impl Drop for Closure {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::mlx_closure_free(self.0) };
    }
}

extern "C" fn trampoline(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    // Called from C++ while MLX traces: must not unwind.
    let run = || -> Result<()> {
        // SAFETY: the payload is the boxed ArrayFn made in `compile`, alive with the closure.
        let f: ArrayFn = unsafe { *(payload as *const ArrayFn) };
        let borrowed = std::mem::ManuallyDrop::new(VecArray(input));
        let inputs = borrowed.to_arrays()?;
        let outputs = f(&inputs)?;
        let v = VecArray::new(&outputs.iter().collect::<Vec<_>>());
        // SAFETY: res is the vector mlx-c passed; v is copied into it.
        check(unsafe { sys::mlx_vector_array_set(res, v.0) }, "returning compiled outputs")
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => 0,
        _ => 1,
    }
}

extern "C" fn free_payload(payload: *mut c_void) {
    // SAFETY: made by Box::into_raw in `compile`, freed once by mlx-c's closure.
    drop(unsafe { Box::from_raw(payload as *mut ArrayFn) });
}

fn compile(f: ArrayFn, id: usize, stream_index: i32) -> Result<Closure> {
    let payload = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: mlx-c takes the payload and frees it with free_payload.
    let fun =
        Closure(unsafe { sys::mlx_closure_new_func_payload(Some(trampoline), payload, Some(free_payload)) });
    if fun.0.ctx.is_null() {
        return Err(Error::internal("MLX could not make a closure"));
    }
    // SAFETY: an empty handle for mlx-c to fill.
    let mut out = Closure(unsafe { sys::mlx_closure_new() });
    let constants = [stream_index as u64];
    // SAFETY: live handles; constants outlive the call.
    check(
        unsafe { sys::mlx_detail_compile(&mut out.0, fun.0, id, true, constants.as_ptr(), constants.len()) },
        "compiling",
    )?;
    Ok(out)
}

/// A handle to one thread's compile cache (a weak reference: erasing through it after the
/// thread ended does nothing).
struct Cache(sys::mlx_compile_cache);

// SAFETY: a weak pointer to a cache whose erase takes MLX's own lock; used under ENTRIES' lock.
unsafe impl Send for Cache {}

impl Cache {
    /// The calling thread's compile cache.
    fn current() -> Result<Cache> {
        // SAFETY: an empty handle for mlx-c to fill, owned by the returned Cache.
        let mut c = Cache(unsafe { sys::mlx_compile_cache_new() });
        check(unsafe { sys::mlx_detail_compile_cache(&mut c.0) }, "reading the compile cache")?;
        Ok(c)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::mlx_compile_cache_free(self.0) };
    }
}

/// A function compiled for one stream, with the key of its entries in MLX's compile caches
/// and the caches (by thread) that may hold one.
struct Entry {
    f: usize,
    stream: i32,
    id: usize,
    closure: Arc<Closure>,
    caches: Vec<(std::thread::ThreadId, Cache)>,
}

impl Drop for Entry {
    /// Erases the entry's traced graphs (and their constants) from every cache that may hold
    /// one.
    fn drop(&mut self) {
        for (_, cache) in &self.caches {
            // SAFETY: a live handle; erasing from a cache whose thread ended, or an id the
            // cache does not hold, does nothing.
            unsafe { sys::mlx_detail_compile_erase(cache.0, self.id) };
        }
    }
}

impl Entry {
    /// Notes that the calling thread is about to run this entry (and so trace it into its
    /// own cache).
    fn note_thread(&mut self) -> Result<()> {
        let me = std::thread::current().id();
        if !self.caches.iter().any(|(t, _)| *t == me) {
            self.caches.push((me, Cache::current()?));
        }
        Ok(())
    }
}

/// Every compiled function, by function and stream. An entry (and MLX's cache entry, which
/// holds the traced graph and its constants) lives as long as its stream: see [`release`].
static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Forgets what was compiled for the stream with index `stream`: called when liblmx drops a
/// stream, so that a process making sessions one after another does not keep one traced
/// graph per session that ever ran.
pub(crate) fn release(stream: i32) {
    let _lock = super::compute_lock();
    let gone: Vec<Entry> = {
        let mut entries = ENTRIES.lock().unwrap_or_else(|p| p.into_inner());
        let (gone, keep) = std::mem::take(&mut *entries).into_iter().partition(|e| e.stream == stream);
        *entries = keep;
        gone
    };
    drop(gone);
}

/// `f` compiled for the current stream (shapeless: any shapes of the traced ranks and
/// dtypes reuse it), or None where it runs as plain ops (a CPU without a working compiler).
fn compiled_for_current(f: ArrayFn) -> Result<Option<Arc<Closure>>> {
    static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let s = current_raw()?;
    let mut stream = 0;
    // SAFETY: live stream handle, valid out pointer.
    check(unsafe { sys::mlx_stream_get_index(&mut stream, s) }, "reading a stream's index")?;
    let key = f as usize;
    let mut entries = ENTRIES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = entries.iter_mut().find(|e| e.f == key && e.stream == stream) {
        e.note_thread()?;
        return Ok(Some(e.closure.clone()));
    }
    let on_cpu = stream_on_cpu(s)?;
    if on_cpu && CPU_COMPILES.get() == Some(&false) {
        return Ok(None);
    }
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let closure = Arc::new(compile(f, id, stream)?);
    let mut entry = Entry { f: key, stream, id, closure: closure.clone(), caches: Vec::new() };
    entry.note_thread()?;
    if on_cpu && !cpu_compiles(&closure) {
        return Ok(None);
    }
    entries.push(entry);
    Ok(Some(closure))
}

fn stream_on_cpu(s: sys::mlx_stream) -> Result<bool> {
    // SAFETY: the device handle is freed below.
    let mut dev = unsafe { sys::mlx_device_new() };
    let mut t = sys::mlx_device_type__MLX_CPU;
    let r = check(unsafe { sys::mlx_stream_get_device(&mut dev, s) }, "reading a stream's device")
        .and_then(|_| check(unsafe { sys::mlx_device_get_type(&mut t, dev) }, "reading a device type"));
    unsafe { sys::mlx_device_free(dev) };
    r.map(|_| t == sys::mlx_device_type__MLX_CPU)
}

static CPU_COMPILES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether MLX can build compiled kernels on the CPU here: `c` (a function of two arrays of
/// one shape) run on tiny inputs and evaluated. Asked once per process.
fn cpu_compiles(c: &Closure) -> bool {
    *CPU_COMPILES.get_or_init(|| {
        let probe = || -> Result<()> {
            let a = Array::from_slice(&[0.5f32; 8], &[1, 8])?;
            let v = VecArray::new(&[&a, &a]);
            let mut out = VecArray::empty();
            // SAFETY: live closure and vectors; mlx-c fills `out` in place.
            check(unsafe { sys::mlx_closure_apply(&mut out.0, c.0, v.0) }, "running a compiled function")?;
            let outs = out.to_arrays()?;
            super::eval(&outs.iter().collect::<Vec<_>>())
        };
        probe().is_ok()
    })
}

/// Runs `f` on `inputs`: compiled into fused kernels where MLX can build them, else as plain
/// ops.
pub fn call(f: ArrayFn, inputs: &[&Array]) -> Result<Vec<Array>> {
    let _lock = super::compute_lock();
    let Some(c) = compiled_for_current(f)? else {
        let owned: Vec<Array> = inputs.iter().map(|a| (*a).clone()).collect();
        return f(&owned);
    };
    let v = VecArray::new(inputs);
    let mut out = VecArray::empty();
    // SAFETY: live closure and vectors; mlx-c fills `out` in place (freed on drop).
    let rc = unsafe { sys::mlx_closure_apply(&mut out.0, c.0, v.0) };
    check(rc, "running a compiled function")?;
    out.to_arrays()
}
