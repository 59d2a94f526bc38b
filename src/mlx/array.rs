//! The owned MLX array.

use std::ffi::CStr;

use super::{check, init, ops, sys, Dtype};
use crate::{Error, Result};

/// An owned reference to an MLX array. `Drop` releases it; `Clone` adds a reference to the
/// same array (MLX arrays are reference counted and immutable once evaluated).
pub struct Array {
    raw: sys::mlx_array,
}

// SAFETY: an mlx_array is a reference-counted pointer (std::shared_ptr) to an immutable
// value once evaluated; reference counting is atomic. Graph building on shared inputs from
// several threads only reads them.
unsafe impl Send for Array {}
unsafe impl Sync for Array {}

impl Drop for Array {
    fn drop(&mut self) {
        if !self.raw.ctx.is_null() {
            // SAFETY: we own this reference and release it once.
            unsafe { sys::mlx_array_free(self.raw) };
        }
    }
}

impl Clone for Array {
    fn clone(&self) -> Self {
        // SAFETY: mlx_array_new makes an empty handle; set shares self's array with it.
        let mut raw = unsafe { sys::mlx_array_new() };
        unsafe { sys::mlx_array_set(&mut raw, self.raw) };
        Array { raw }
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Array({:?}, {})", self.shape(), self.dtype().map(|d| d.name()).unwrap_or("?"))
    }
}

/// Host element types that can be copied into and out of arrays.
pub trait Element: Copy + Default + 'static {
    const DTYPE: Dtype;
    /// # Safety
    /// `a` must be an evaluated, row-contiguous array of dtype `DTYPE`.
    unsafe fn data(a: sys::mlx_array) -> *const Self;
}

macro_rules! element {
    ($t:ty, $d:expr, $f:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            unsafe fn data(a: sys::mlx_array) -> *const Self {
                sys::$f(a)
            }
        }
    };
}
element!(u8, Dtype::U8, mlx_array_data_uint8);
element!(u16, Dtype::U16, mlx_array_data_uint16);
element!(u32, Dtype::U32, mlx_array_data_uint32);
element!(u64, Dtype::U64, mlx_array_data_uint64);
element!(i8, Dtype::I8, mlx_array_data_int8);
element!(i16, Dtype::I16, mlx_array_data_int16);
element!(i32, Dtype::I32, mlx_array_data_int32);
element!(i64, Dtype::I64, mlx_array_data_int64);
element!(f32, Dtype::F32, mlx_array_data_float32);
element!(f64, Dtype::F64, mlx_array_data_float64);

/// Checks a shape against an element count and converts it for mlx-c.
pub(crate) fn checked_shape(shape: &[i32], len: usize) -> Result<()> {
    let mut n: usize = 1;
    for &d in shape {
        if d < 0 {
            return Err(Error::invalid(format!("negative dimension in shape {shape:?}")));
        }
        n = n
            .checked_mul(d as usize)
            .ok_or_else(|| Error::invalid(format!("shape {shape:?} is too large")))?;
    }
    if n != len {
        return Err(Error::invalid(format!("shape {shape:?} holds {n} elements, data has {len}")));
    }
    Ok(())
}

impl Array {
    /// Wraps a handle that mlx-c returned; takes ownership.
    pub(crate) fn from_raw(raw: sys::mlx_array) -> Array {
        Array { raw }
    }

    pub(crate) fn raw(&self) -> sys::mlx_array {
        self.raw
    }

    /// A null handle, which mlx-c reads as "argument not given" where a parameter is optional.
    pub(crate) fn null_raw() -> sys::mlx_array {
        sys::mlx_array { ctx: std::ptr::null_mut() }
    }

    /// Copies host data into a new array of the given shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[i32]) -> Result<Array> {
        init();
        checked_shape(shape, data.len())?;
        // SAFETY: data holds exactly prod(shape) elements of T's dtype; mlx-c copies them.
        let raw = unsafe {
            sys::mlx_array_new_data(
                data.as_ptr().cast(),
                shape.as_ptr(),
                shape.len() as i32,
                T::DTYPE.to_sys(),
            )
        };
        if raw.ctx.is_null() {
            return Err(Error::internal("MLX could not create an array"));
        }
        Ok(Array { raw })
    }

    pub fn scalar_f32(v: f32) -> Array {
        init();
        // SAFETY: plain constructor.
        Array { raw: unsafe { sys::mlx_array_new_float32(v) } }
    }

    pub fn scalar_i32(v: i32) -> Array {
        init();
        // SAFETY: plain constructor.
        Array { raw: unsafe { sys::mlx_array_new_int(v) } }
    }

    pub fn ndim(&self) -> usize {
        // SAFETY: live handle.
        unsafe { sys::mlx_array_ndim(self.raw) }
    }

    pub fn shape(&self) -> Vec<i32> {
        let n = self.ndim();
        if n == 0 {
            return Vec::new();
        }
        // SAFETY: mlx-c returns a pointer to ndim ints owned by the array.
        unsafe { std::slice::from_raw_parts(sys::mlx_array_shape(self.raw), n) }.to_vec()
    }

    /// The size of dimension `axis`; negative counts from the end.
    pub fn dim(&self, axis: i32) -> Result<i32> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let a = if axis < 0 { axis + n } else { axis };
        if a < 0 || a >= n {
            return Err(Error::invalid(format!("axis {axis} out of range for shape {shape:?}")));
        }
        Ok(shape[a as usize])
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        // SAFETY: live handle.
        unsafe { sys::mlx_array_size(self.raw) }
    }

    pub fn nbytes(&self) -> usize {
        // SAFETY: live handle.
        unsafe { sys::mlx_array_nbytes(self.raw) }
    }

    pub fn dtype(&self) -> Result<Dtype> {
        // SAFETY: live handle.
        Dtype::from_sys(unsafe { sys::mlx_array_dtype(self.raw) })
    }

    /// Evaluates this array (and what it depends on).
    pub fn eval(&self) -> Result<()> {
        let _lock = super::compute_lock();
        // SAFETY: live handle.
        check(unsafe { sys::mlx_array_eval(self.raw) }, "evaluating an array")
    }

    /// Copies the elements to the host in row-major order. The array's dtype must be `T`'s;
    /// convert first with [`ops::astype`] otherwise.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let dtype = self.dtype()?;
        if dtype != T::DTYPE {
            return Err(Error::invalid(format!("cannot read a {dtype} array as {}", T::DTYPE)));
        }
        let _lock = super::compute_lock();
        // A view (transpose, slice, broadcast) has the strides of its source; copy it into a
        // row-contiguous array so that the data pointer reads in logical order.
        let c = ops::contiguous(self)?;
        c.eval()?;
        let n = c.size();
        // SAFETY: c is evaluated, row-contiguous, of dtype T, with n elements.
        let p = unsafe { T::data(c.raw) };
        if p.is_null() {
            return Err(Error::internal("MLX returned no data for an evaluated array"));
        }
        super::count_host_read(n);
        Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
    }

    /// Converts to float32 and copies to the host (any real dtype, bf16 and f16 included).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        ops::astype(self, Dtype::F32)?.to_vec::<f32>()
    }

    /// The single element of a size-1 array, as `T` (converting the dtype if needed).
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::invalid(format!("item() of an array of shape {:?}", self.shape())));
        }
        let a = if self.dtype()? == T::DTYPE { self.clone() } else { ops::astype(self, T::DTYPE)? };
        let _lock = super::compute_lock();
        a.eval()?;
        // SAFETY: a is evaluated, of dtype T, with one element; the data pointer (offset
        // included) points at it whatever the strides.
        let p = unsafe { T::data(a.raw) };
        if p.is_null() {
            return Err(Error::internal("MLX returned no data for an evaluated array"));
        }
        super::count_host_read(1);
        Ok(unsafe { *p })
    }

    /// MLX's text rendering of the array (evaluates it).
    pub fn to_string_lossy(&self) -> Result<String> {
        // SAFETY: the string handle is freed below.
        let _lock = super::compute_lock();
        let mut s = unsafe { sys::mlx_string_new() };
        let rc = unsafe { sys::mlx_array_tostring(&mut s, self.raw) };
        let r = check(rc, "printing an array").and_then(|_| {
            let p = unsafe { sys::mlx_string_data(s) };
            if p.is_null() {
                return Err(Error::internal("MLX returned no text"));
            }
            Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        });
        unsafe { sys::mlx_string_free(s) };
        r
    }
}

/// `[in, out]` row-major float32 matrix holding the transposes of `parts` (each `[out_i, in]`,
/// float32) side by side: column block i is part i. Written with a blocked transpose straight
/// into a new MLX buffer: MLX's own CPU copy of a transposed matrix runs at about 0.5 GB/s.
/// CPU only (the buffer is written through its host pointer). None when a part is not a
/// float32 matrix with `input` columns.
pub fn transpose_concat_f32(parts: &[&Array], input: i32) -> Result<Option<Array>> {
    const TILE: usize = 32;
    let mut rows = Vec::with_capacity(parts.len());
    for p in parts {
        let s = p.shape();
        if p.dtype()? != Dtype::F32 || s.len() != 2 || s[1] != input || input <= 0 {
            return Ok(None);
        }
        rows.push(s[0] as usize);
    }
    let cols = input as usize;
    let total: usize = rows.iter().sum();
    let _lock = super::compute_lock();
    let out = ops::zeros(&[input, total as i32], Dtype::F32)?;
    out.eval()?;
    // SAFETY: `out` is evaluated, row-contiguous float32 with cols * total elements, and not
    // shared: nothing else reads or writes its buffer while this function runs.
    let dst = unsafe { f32::data(out.raw()) } as *mut f32;
    if dst.is_null() {
        return Err(Error::internal("MLX returned no data for an evaluated array"));
    }
    let mut at = 0;
    for (p, &r) in parts.iter().zip(&rows) {
        let c = ops::contiguous(p)?;
        c.eval()?;
        // SAFETY: c is evaluated, row-contiguous float32 with r * cols elements.
        let src = unsafe { f32::data(c.raw()) };
        if src.is_null() {
            return Err(Error::internal("MLX returned no data for an evaluated array"));
        }
        for i0 in (0..r).step_by(TILE) {
            let i1 = (i0 + TILE).min(r);
            for j0 in (0..cols).step_by(TILE) {
                for j in j0..(j0 + TILE).min(cols) {
                    for i in i0..i1 {
                        // SAFETY: i < r and j < cols bound the source; j < cols and
                        // at + i < total bound the destination.
                        unsafe { *dst.add(j * total + at + i) = *src.add(i * cols + j) };
                    }
                }
            }
        }
        at += r;
    }
    Ok(Some(out))
}
