//! Array operations. Each runs on the calling thread's current stream (see
//! [`device::with_stream`](super::device::with_stream)) and returns a lazy array; nothing is
//! computed until an eval. Shape and dtype errors come back as `Err` with MLX's message.

use std::ffi::CString;
use std::os::raw::c_int;

use super::device::current_raw;
use super::{check, sys, Array, Dtype};
use crate::{Error, Result};

/// Runs an mlx-c op that writes one array.
pub(crate) fn op(what: &str, f: impl FnOnce(&mut sys::mlx_array, sys::mlx_stream) -> c_int) -> Result<Array> {
    let s = current_raw()?;
    // SAFETY: an empty handle for mlx-c to fill; owned by the Array whatever happens.
    let mut res = Array::from_raw(unsafe { sys::mlx_array_new() });
    let mut raw = res.raw();
    let rc = f(&mut raw, s);
    // mlx-c may have replaced the handle's contents in place; keep whatever it holds.
    res = Array::from_raw(raw);
    check(rc, what)?;
    Ok(res)
}

/// A temporary mlx-c vector of arrays, freed on drop.
pub(crate) struct VecArray(pub(crate) sys::mlx_vector_array);

impl VecArray {
    pub(crate) fn new(arrays: &[&Array]) -> VecArray {
        let raws: Vec<sys::mlx_array> = arrays.iter().map(|a| a.raw()).collect();
        // SAFETY: mlx-c copies (references) each array into the vector.
        VecArray(unsafe { sys::mlx_vector_array_new_data(raws.as_ptr(), raws.len()) })
    }
    pub(crate) fn empty() -> VecArray {
        // SAFETY: plain constructor.
        VecArray(unsafe { sys::mlx_vector_array_new() })
    }
    pub(crate) fn to_arrays(&self) -> Result<Vec<Array>> {
        // SAFETY: live vector.
        let n = unsafe { sys::mlx_vector_array_size(self.0) };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut a = Array::from_raw(unsafe { sys::mlx_array_new() });
            let mut raw = a.raw();
            let rc = unsafe { sys::mlx_vector_array_get(&mut raw, self.0, i) };
            a = Array::from_raw(raw);
            check(rc, "reading an array vector")?;
            out.push(a);
        }
        Ok(out)
    }
}

impl Drop for VecArray {
    fn drop(&mut self) {
        // SAFETY: owned vector, freed once.
        unsafe { sys::mlx_vector_array_free(self.0) };
    }
}

fn opt_int(v: Option<i32>) -> sys::mlx_optional_int {
    sys::mlx_optional_int { value: v.unwrap_or(0), has_value: v.is_some() }
}

fn opt_dtype(v: Option<Dtype>) -> sys::mlx_optional_dtype {
    sys::mlx_optional_dtype {
        value: v.map(|d| d.to_sys()).unwrap_or(sys::mlx_dtype__MLX_FLOAT32),
        has_value: v.is_some(),
    }
}

pub(crate) fn opt_float(v: Option<f32>) -> sys::mlx_optional_float {
    sys::mlx_optional_float { value: v.unwrap_or(0.0), has_value: v.is_some() }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

fn opt_raw(a: Option<&Array>) -> sys::mlx_array {
    a.map(|a| a.raw()).unwrap_or_else(Array::null_raw)
}

macro_rules! unary {
    ($($(#[$m:meta])* $name:ident => $f:ident;)*) => {$(
        $(#[$m])*
        pub fn $name(a: &Array) -> Result<Array> {
            // SAFETY: live input handle; op() owns the output.
            op(stringify!($name), |r, s| unsafe { sys::$f(r, a.raw(), s) })
        }
    )*};
}

macro_rules! binary {
    ($($(#[$m:meta])* $name:ident => $f:ident;)*) => {$(
        $(#[$m])*
        pub fn $name(a: &Array, b: &Array) -> Result<Array> {
            // SAFETY: live input handles; op() owns the output.
            op(stringify!($name), |r, s| unsafe { sys::$f(r, a.raw(), b.raw(), s) })
        }
    )*};
}

macro_rules! reduce {
    ($($(#[$m:meta])* $name:ident => $f:ident;)*) => {$(
        $(#[$m])*
        pub fn $name(a: &Array, axes: &[i32], keepdims: bool) -> Result<Array> {
            // SAFETY: live input handle; axes outlives the call.
            op(stringify!($name), |r, s| unsafe {
                sys::$f(r, a.raw(), axes.as_ptr(), axes.len(), keepdims, s)
            })
        }
    )*};
}

unary! {
    abs => mlx_abs;
    negative => mlx_negative;
    exp => mlx_exp;
    sqrt => mlx_sqrt;
    square => mlx_square;
    sigmoid => mlx_sigmoid;
    tanh => mlx_tanh;
    isnan => mlx_isnan;
    stop_gradient => mlx_stop_gradient;
}

binary! {
    add => mlx_add;
    subtract => mlx_subtract;
    multiply => mlx_multiply;
    divide => mlx_divide;
    /// Division rounded down (an integer result for integer inputs).
    floor_divide => mlx_floor_divide;
    minimum => mlx_minimum;
    maximum => mlx_maximum;
    less => mlx_less;
    less_equal => mlx_less_equal;
    greater => mlx_greater;
    greater_equal => mlx_greater_equal;
    logical_and => mlx_logical_and;
    bitwise_and => mlx_bitwise_and;
    right_shift => mlx_right_shift;
    /// Matrix product with NumPy broadcasting of the batch dimensions.
    matmul => mlx_matmul;
}

reduce! {
    sum => mlx_sum_axes;
    mean => mlx_mean_axes;
    max => mlx_max_axes;
    logsumexp => mlx_logsumexp_axes;
}

pub fn reshape(a: &Array, shape: &[i32]) -> Result<Array> {
    // SAFETY: live handle; shape outlives the call.
    op("reshape", |r, s| unsafe { sys::mlx_reshape(r, a.raw(), shape.as_ptr(), shape.len(), s) })
}

pub fn transpose(a: &Array, axes: &[i32]) -> Result<Array> {
    // SAFETY: as above.
    op("transpose", |r, s| unsafe { sys::mlx_transpose_axes(r, a.raw(), axes.as_ptr(), axes.len(), s) })
}

pub fn broadcast_to(a: &Array, shape: &[i32]) -> Result<Array> {
    // SAFETY: as above.
    op("broadcast_to", |r, s| unsafe { sys::mlx_broadcast_to(r, a.raw(), shape.as_ptr(), shape.len(), s) })
}

pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    let v = VecArray::new(arrays);
    // SAFETY: live vector.
    op("concatenate", |r, s| unsafe { sys::mlx_concatenate_axis(r, v.0, axis, s) })
}

/// `a[start:stop:strides]` over every axis.
pub fn slice(a: &Array, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
    // SAFETY: live handle; slices outlive the call.
    op("slice", |r, s| unsafe {
        sys::mlx_slice(
            r,
            a.raw(),
            start.as_ptr(),
            start.len(),
            stop.as_ptr(),
            stop.len(),
            strides.as_ptr(),
            strides.len(),
            s,
        )
    })
}

/// `a[..., start:stop]` on one axis, every other axis whole.
pub fn slice_axis(a: &Array, axis: i32, start: i32, stop: i32) -> Result<Array> {
    let shape = a.shape();
    let n = shape.len() as i32;
    let ax = if axis < 0 { axis + n } else { axis };
    if ax < 0 || ax >= n {
        return Err(Error::invalid(format!("slice axis {axis} out of range for shape {shape:?}")));
    }
    let mut lo = vec![0; shape.len()];
    let mut hi = shape.clone();
    lo[ax as usize] = start;
    hi[ax as usize] = stop;
    slice(a, &lo, &hi, &vec![1; shape.len()])
}

/// A copy of `src` with `src[start:stop:strides] = update`.
pub fn slice_update(
    src: &Array,
    update: &Array,
    start: &[i32],
    stop: &[i32],
    strides: &[i32],
) -> Result<Array> {
    // SAFETY: live handles; slices outlive the call.
    op("slice_update", |r, s| unsafe {
        sys::mlx_slice_update(
            r,
            src.raw(),
            update.raw(),
            start.as_ptr(),
            start.len(),
            stop.as_ptr(),
            stop.len(),
            strides.as_ptr(),
            strides.len(),
            s,
        )
    })
}

/// Gathers along `axis` (an embedding lookup is `take(table, ids, 0)`).
pub fn take(a: &Array, indices: &Array, axis: i32) -> Result<Array> {
    // SAFETY: live handles.
    op("take", |r, s| unsafe { sys::mlx_take_axis(r, a.raw(), indices.raw(), axis, s) })
}

pub fn take_along_axis(a: &Array, indices: &Array, axis: i32) -> Result<Array> {
    // SAFETY: live handles.
    op("take_along_axis", |r, s| unsafe { sys::mlx_take_along_axis(r, a.raw(), indices.raw(), axis, s) })
}

pub fn put_along_axis(a: &Array, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
    // SAFETY: live handles.
    op("put_along_axis", |r, s| unsafe {
        sys::mlx_put_along_axis(r, a.raw(), indices.raw(), values.raw(), axis, s)
    })
}

/// `a` with `values` added at `indices` along `axis` (repeated indices accumulate).
pub fn scatter_add(a: &Array, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
    // SAFETY: live handles.
    op("scatter_add", |r, s| unsafe {
        sys::mlx_scatter_add_axis(r, a.raw(), indices.raw(), values.raw(), axis, s)
    })
}

/// Elementwise `cond ? x : y`.
pub fn where_(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    // SAFETY: live handles.
    op("where", |r, s| unsafe { sys::mlx_where(r, cond.raw(), x.raw(), y.raw(), s) })
}

pub fn argmax(a: &Array, axis: i32, keepdims: bool) -> Result<Array> {
    // SAFETY: live handle.
    op("argmax", |r, s| unsafe { sys::mlx_argmax_axis(r, a.raw(), axis, keepdims, s) })
}

pub fn softmax(a: &Array, axis: i32, precise: bool) -> Result<Array> {
    // SAFETY: live handle.
    op("softmax", |r, s| unsafe { sys::mlx_softmax_axis(r, a.raw(), axis, precise, s) })
}

pub fn argsort(a: &Array, axis: i32) -> Result<Array> {
    // SAFETY: live handle.
    op("argsort", |r, s| unsafe { sys::mlx_argsort_axis(r, a.raw(), axis, s) })
}

/// Indices that partition `a` along `axis` so that the element at `kth` is in sorted place.
pub fn argpartition(a: &Array, kth: i32, axis: i32) -> Result<Array> {
    // SAFETY: live handle.
    op("argpartition", |r, s| unsafe { sys::mlx_argpartition_axis(r, a.raw(), kth, axis, s) })
}

pub fn cumsum(a: &Array, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
    // SAFETY: live handle.
    op("cumsum", |r, s| unsafe {
        sys::mlx_cumsum_axis(r, a.raw(), axis, reverse, inclusive, opt_dtype(None), s)
    })
}

pub fn astype(a: &Array, dtype: Dtype) -> Result<Array> {
    // SAFETY: live handle.
    op("astype", |r, s| unsafe { sys::mlx_astype(r, a.raw(), dtype.to_sys(), s) })
}

/// Reinterprets the bytes as another dtype of the same size (for example bf16 as uint16).
pub fn view(a: &Array, dtype: Dtype) -> Result<Array> {
    // SAFETY: live handle.
    op("view", |r, s| unsafe { sys::mlx_view(r, a.raw(), dtype.to_sys(), s) })
}

/// A row-contiguous copy where `a` is a strided view; `a` itself where it is not.
pub fn contiguous(a: &Array) -> Result<Array> {
    // SAFETY: live handle.
    op("contiguous", |r, s| unsafe { sys::mlx_contiguous(r, a.raw(), false, s) })
}

pub fn zeros(shape: &[i32], dtype: Dtype) -> Result<Array> {
    // SAFETY: shape outlives the call.
    op("zeros", |r, s| unsafe { sys::mlx_zeros(r, shape.as_ptr(), shape.len(), dtype.to_sys(), s) })
}

pub fn ones(shape: &[i32], dtype: Dtype) -> Result<Array> {
    // SAFETY: shape outlives the call.
    op("ones", |r, s| unsafe { sys::mlx_ones(r, shape.as_ptr(), shape.len(), dtype.to_sys(), s) })
}

pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    // SAFETY: plain op.
    op("arange", |r, s| unsafe { sys::mlx_arange(r, start, stop, step, dtype.to_sys(), s) })
}

/// Quantizes `w` ([out, in]) in groups along its last axis: returns (packed weights, scales,
/// biases). `mode` is MLX's quantization mode ("affine").
pub fn quantize(w: &Array, group_size: i32, bits: i32, mode: &str) -> Result<(Array, Array, Array)> {
    let s = current_raw()?;
    let mode = cstring(mode)?;
    let mut v = VecArray::empty();
    // SAFETY: live handles; the vector is freed by VecArray.
    let rc = unsafe {
        sys::mlx_quantize(
            &mut v.0,
            w.raw(),
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            Array::null_raw(),
            s,
        )
    };
    check(rc, "quantize")?;
    let mut parts = v.to_arrays()?.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(q), Some(sc), Some(b)) => Ok((q, sc, b)),
        _ => Err(Error::internal(format!("quantize({mode:?}) returned fewer than three arrays"))),
    }
}

pub fn dequantize(
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    group_size: i32,
    bits: i32,
    mode: &str,
    dtype: Option<Dtype>,
) -> Result<Array> {
    let mode = cstring(mode)?;
    // SAFETY: live handles or null where optional.
    op("dequantize", |r, s| unsafe {
        sys::mlx_dequantize(
            r,
            w.raw(),
            scales.raw(),
            opt_raw(biases),
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            Array::null_raw(),
            opt_dtype(dtype),
            s,
        )
    })
}

/// `x @ dequantize(w).T` (with `transpose`) without materialising the dense weight.
#[allow(clippy::too_many_arguments)]
pub fn quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    group_size: i32,
    bits: i32,
    mode: &str,
) -> Result<Array> {
    let mode = cstring(mode)?;
    // SAFETY: live handles or null where optional.
    op("quantized_matmul", |r, s| unsafe {
        sys::mlx_quantized_matmul(
            r,
            x.raw(),
            w.raw(),
            scales.raw(),
            opt_raw(biases),
            transpose,
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            s,
        )
    })
}

/// RMS normalisation over the last axis, times `weight` when given.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    // SAFETY: live handles or null.
    op("rms_norm", |r, s| unsafe { sys::mlx_fast_rms_norm(r, x.raw(), opt_raw(weight), eps, s) })
}

/// Rotary position embedding over the last axis of `x` ([..., seq, dims]), positions
/// starting at `offset`. Either `base` or `freqs` (the per-pair inverse frequencies) is given.
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: i32,
    freqs: Option<&Array>,
) -> Result<Array> {
    // SAFETY: live handles or null.
    op("rope", |r, s| unsafe {
        sys::mlx_fast_rope(r, x.raw(), dims, traditional, opt_float(base), scale, offset, opt_raw(freqs), s)
    })
}

/// As [`rope`] with the offset as an array (one per batch row, or a scalar).
pub fn rope_dynamic(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: &Array,
    freqs: Option<&Array>,
) -> Result<Array> {
    // SAFETY: live handles or null.
    op("rope", |r, s| unsafe {
        sys::mlx_fast_rope_dynamic(
            r,
            x.raw(),
            dims,
            traditional,
            opt_float(base),
            scale,
            offset.raw(),
            opt_raw(freqs),
            s,
        )
    })
}

/// How attention is masked.
pub enum AttentionMask<'a> {
    None,
    /// Causal, aligned to the end: query i sees keys up to `i + (kv_len - q_len)`.
    Causal,
    /// An explicit mask: boolean (true = attend) or additive, broadcastable to the scores.
    Array(&'a Array),
}

/// Fused scaled dot-product attention. q: [B, Hq, L, D]; k, v: [B, Hkv, S, D] with Hq a
/// multiple of Hkv (grouped-query attention needs no repeat). `sinks` ([Hq], optional) are
/// per-head logits that join each query's softmax as one more key with no value: they take
/// probability mass from the real keys without adding to the output (GPT-OSS).
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask,
    sinks: Option<&Array>,
) -> Result<Array> {
    let (mode, arr) = match mask {
        AttentionMask::None => ("", None),
        AttentionMask::Causal => ("causal", None),
        AttentionMask::Array(a) => ("array", Some(a)),
    };
    let mode = cstring(mode)?;
    // SAFETY: live handles or null.
    op("scaled_dot_product_attention", |r, s| unsafe {
        sys::mlx_fast_scaled_dot_product_attention(
            r,
            q.raw(),
            k.raw(),
            v.raw(),
            scale,
            mode.as_ptr(),
            opt_raw(arr),
            opt_raw(sinks),
            false,
            s,
        )
    })
}

/// Matrix products of `a`'s and `b`'s matrices chosen by index: output batch element i is
/// `a[lhs_indices[i]] @ b[rhs_indices[i]]`, where an index array left out means every batch
/// element in order. The indices broadcast together and give the output's batch shape. With
/// `sorted_indices`, `rhs_indices` is sorted ascending, which lets MLX group the products by
/// matrix (a mixture of experts' prefill sorts its tokens by expert for this).
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
) -> Result<Array> {
    // SAFETY: live handles or null where optional.
    op("gather_mm", |r, s| unsafe {
        sys::mlx_gather_mm(r, a.raw(), b.raw(), opt_raw(lhs_indices), opt_raw(rhs_indices), sorted_indices, s)
    })
}

/// [`gather_mm`] against quantized matrices: `x[lhs] @ dequantize(w[rhs]).T` (with
/// `transpose`), without materialising a dense weight. `w`, `scales` and `biases` stack one
/// packed matrix per index along their first axis.
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    group_size: i32,
    bits: i32,
    mode: &str,
    sorted_indices: bool,
) -> Result<Array> {
    let mode = cstring(mode)?;
    // SAFETY: live handles or null where optional.
    op("gather_qmm", |r, s| unsafe {
        sys::mlx_gather_qmm(
            r,
            x.raw(),
            w.raw(),
            scales.raw(),
            opt_raw(biases),
            opt_raw(lhs_indices),
            opt_raw(rhs_indices),
            transpose,
            opt_int(Some(group_size)),
            opt_int(Some(bits)),
            mode.as_ptr(),
            sorted_indices,
            s,
        )
    })
}
