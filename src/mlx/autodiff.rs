//! MLX's automatic differentiation for Rust functions of arrays: the value and gradient of a
//! scalar function ([`value_and_grad`]) and gradient checkpointing ([`Checkpointed`]), through
//! mlx-c closures whose payload is a Rust closure.
//!
//! A Rust error inside the function cannot cross MLX's C++ frames: it is kept beside the
//! closure and returned in place of MLX's generic "closure failed" message.
//!
//! Lifetimes: MLX keeps a checkpointed function inside the lazy graph it builds (the backward
//! pass calls it again, whenever and on whichever thread the graph is evaluated), so a
//! [`Checkpointed`] function must own what it uses (`'static`) and be callable from any
//! thread (`Send + Sync`). [`value_and_grad`]'s function is only called while
//! `value_and_grad` runs (MLX traces it once and keeps the arrays it returns, not the
//! function), so it may borrow.

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use super::ops::VecArray;
use super::{check, sys, Array};
use crate::{Error, Result};

type Func<'a> = dyn Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'a;

struct Payload<'a> {
    f: Box<Func<'a>>,
    /// The first error the function returned.
    error: Arc<Mutex<Option<Error>>>,
}

extern "C" fn trampoline(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    // SAFETY: the payload is the Payload boxed in `closure`, alive while the closure is.
    let p = unsafe { &*(payload as *const Payload) };
    let run = || -> Result<()> {
        let borrowed = std::mem::ManuallyDrop::new(VecArray(input));
        let outputs = (p.f)(&borrowed.to_arrays()?)?;
        let v = VecArray::new(&outputs.iter().collect::<Vec<_>>());
        // SAFETY: res is the vector mlx-c passed; v is copied into it.
        check(unsafe { sys::mlx_vector_array_set(res, v.0) }, "returning a function's outputs")
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            p.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            1
        }
        Err(_) => {
            p.error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(Error::internal("a panic inside a differentiated function"));
            1
        }
    }
}

extern "C" fn free_payload(payload: *mut c_void) {
    // SAFETY: made by Box::into_raw in `closure`, freed once by mlx-c.
    drop(unsafe { Box::from_raw(payload as *mut Payload) });
}

/// An mlx-c closure over `f`, freed on drop, and where `f`'s errors land.
struct Closure {
    raw: sys::mlx_closure,
    error: Arc<Mutex<Option<Error>>>,
}

impl Drop for Closure {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::mlx_closure_free(self.raw) };
    }
}

impl Closure {
    /// A closure over `f`. MLX may keep (a copy of) it for as long as a graph refers to it, so
    /// the caller guarantees that `f` lives that long: `'static` for a [`Checkpointed`]
    /// function, and for [`value_and_grad`]'s the fact that MLX calls and drops it within the
    /// call.
    fn new<'a>(f: impl Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'a) -> Result<Closure> {
        let error = Arc::new(Mutex::new(None));
        let payload: Box<Payload<'a>> = Box::new(Payload { f: Box::new(f), error: error.clone() });
        let payload = Box::into_raw(payload) as *mut c_void;
        // SAFETY: mlx-c takes the payload and frees it with free_payload.
        let raw = unsafe { sys::mlx_closure_new_func_payload(Some(trampoline), payload, Some(free_payload)) };
        if raw.ctx.is_null() {
            return Err(Error::internal("MLX could not make a closure"));
        }
        Ok(Closure { raw, error })
    }

    /// `e`, or the error the function itself returned when there is one.
    fn explain(&self, e: Error) -> Error {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or(e)
    }
}

/// The value of the scalar function `f` at `params` and its gradient with respect to each of
/// them. `f` may capture other arrays (data): they are constants of the differentiation. It
/// is called during this call only (MLX traces it once), so it may borrow; a checkpoint it
/// builds inside owns what it uses (see [`Checkpointed`]).
pub fn value_and_grad<'a>(
    f: impl Fn(&[Array]) -> Result<Array> + Send + Sync + 'a,
    params: &[Array],
) -> Result<(Array, Vec<Array>)> {
    let c = Closure::new(move |x: &[Array]| Ok(vec![f(x)?]))?;
    let primals = VecArray::new(&params.iter().collect::<Vec<_>>());
    let one = Array::scalar_f32(1.0);
    let cot = VecArray::new(&[&one]);
    let mut outs = VecArray::empty();
    let mut grads = VecArray::empty();
    // SAFETY: live handles; mlx-c fills the two empty vectors.
    let rc = unsafe { sys::mlx_vjp(&mut outs.0, &mut grads.0, c.raw, primals.0, cot.0) };
    check(rc, "differentiating").map_err(|e| c.explain(e))?;
    let value = outs.to_arrays()?.into_iter().next().ok_or_else(|| Error::internal("no value"))?;
    Ok((value, grads.to_arrays()?))
}

/// A function whose intermediate arrays are not kept for the backward pass: they are
/// recomputed from its inputs when gradients flow through it (less memory, more compute).
/// MLX keeps the function in the graphs built from its outputs, beyond this value's life:
/// it owns everything it uses and may be called from any thread. A function that borrows is
/// refused at compile time:
///
/// ```compile_fail
/// use lmx::mlx::{autodiff::Checkpointed, ops, Array};
/// let w = Array::scalar_f32(2.0);
/// let f = Checkpointed::new(|x: &[Array]| Ok(vec![ops::multiply(&x[0], &w)?]));
/// ```
///
/// and one that owns what it uses is accepted:
///
/// ```
/// use lmx::mlx::{autodiff::Checkpointed, ops, Array};
/// let w = Array::scalar_f32(2.0);
/// let f = Checkpointed::new(move |x: &[Array]| Ok(vec![ops::multiply(&x[0], &w)?])).unwrap();
/// let y = f.call(&[Array::scalar_f32(3.0)]).unwrap();
/// assert_eq!(y[0].item::<f32>().unwrap(), 6.0);
/// ```
pub struct Checkpointed {
    inner: Closure,
    /// The wrapped closure (which the checkpointed one calls); MLX holds its own reference.
    _wrapped: Closure,
}

impl Checkpointed {
    pub fn new(f: impl Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'static) -> Result<Checkpointed> {
        let wrapped = Closure::new(f)?;
        // SAFETY: an empty handle for mlx-c to fill.
        let mut raw = unsafe { sys::mlx_closure_new() };
        // SAFETY: live handle in; mlx-c fills raw.
        let rc = unsafe { sys::mlx_checkpoint(&mut raw, wrapped.raw) };
        let inner = Closure { raw, error: wrapped.error.clone() };
        check(rc, "checkpointing a function")?;
        Ok(Checkpointed { inner, _wrapped: wrapped })
    }

    pub fn call(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        let input = VecArray::new(&inputs.iter().collect::<Vec<_>>());
        let mut out = VecArray::empty();
        // SAFETY: live handles; mlx-c fills out.
        let rc = unsafe { sys::mlx_closure_apply(&mut out.0, self.inner.raw, input.0) };
        check(rc, "calling a checkpointed function").map_err(|e| self.inner.explain(e))?;
        out.to_arrays()
    }
}
