//! Structs that grow: every struct the C API passes by pointer starts with `struct_size`, the
//! caller's `sizeof`, so a program built against an older or a newer header keeps working.
//!
//! - An input struct smaller than liblmx's is read as its prefix, over liblmx's defaults for
//!   the fields the caller's header did not have. A larger one is accepted only when the bytes
//!   past liblmx's struct are all zero (the caller asked for nothing this library lacks).
//! - An output struct gets `min(caller's, liblmx's)` bytes; bytes of a larger caller struct
//!   past liblmx's are zeroed; `struct_size` keeps the caller's value.
//! - `*_init(p, size)` writes the defaults the same way and sets `struct_size` to `size`.
//!
//! - A size smaller than liblmx's must end on a field boundary: a size that ends inside a
//!   field (half a pointer, part of a string array) is refused, since no header ever declared
//!   such a struct. Structs only grow by appending fields, so the sizes of every older layout
//!   (each a prefix of this one, padding included) end on boundaries.
//!
//! Bytes are copied, never read as Rust values of caller memory: the structs hold only
//! integers, floats and pointers (enums and flags are integers, validated where used), so
//! any bytes the caller leaves are a valid value.

use crate::{Error, Result};

/// The largest struct_size taken as a size rather than as garbage.
const MAX_STRUCT: usize = 1 << 16;

/// A C struct whose first field is `struct_size: usize`.
///
/// # Safety
/// Implementors are `#[repr(C)]` and start with `struct_size: usize`.
pub(crate) unsafe trait CStruct: Copy {
    const NAME: &'static str;
    /// Every field: name, offset, size, alignment (see [`c_struct!`]).
    const FIELDS: &'static [Field];
}

/// One field of a C struct: name, offset, size, alignment.
pub(crate) type Field = (&'static str, usize, usize, usize);

/// Implements [`CStruct`] for a `#[repr(C)]` struct whose first field is `struct_size`,
/// listing its fields (all of them, in order: a unit test checks that the list covers the
/// struct byte for byte, padding aside).
macro_rules! c_struct {
    ($t:ident { $($f:ident),+ $(,)? }) => {
        // SAFETY: $t is #[repr(C)] and starts with struct_size: usize (the layout test in
        // ffi::sized checks both for every struct).
        unsafe impl $crate::ffi::sized::CStruct for $t {
            const NAME: &'static str = stringify!($t);
            const FIELDS: &'static [$crate::ffi::sized::Field] = &[$(
                (
                    stringify!($f),
                    ::std::mem::offset_of!($t, $f),
                    {
                        const fn size_of_pointee<T>(_: *const T) -> usize {
                            ::std::mem::size_of::<T>()
                        }
                        let u = ::std::mem::MaybeUninit::<$t>::uninit();
                        // SAFETY: addr_of! makes a field pointer without reading or referencing.
                        size_of_pointee(unsafe { ::std::ptr::addr_of!((*u.as_ptr()).$f) })
                    },
                    {
                        const fn align_of_pointee<T>(_: *const T) -> usize {
                            ::std::mem::align_of::<T>()
                        }
                        let u = ::std::mem::MaybeUninit::<$t>::uninit();
                        // SAFETY: as above.
                        align_of_pointee(unsafe { ::std::ptr::addr_of!((*u.as_ptr()).$f) })
                    },
                )
            ),+];
        }
    };
}
pub(crate) use c_struct;

/// A struct that liblmx reads from caller memory.
///
/// # Safety
/// Every bit pattern is a valid value: only integers, floats, raw pointers and arrays of them
/// (no Rust enums, bools or references).
pub(crate) unsafe trait AnyBits: CStruct {}

/// The caller's struct_size at `p`, checked to be a size.
fn size_at<T: CStruct>(p: *const T, name: &str) -> Result<usize> {
    // SAFETY: the caller promises a readable struct, so at least its struct_size field.
    let size = unsafe { std::ptr::read_unaligned(p as *const usize) };
    check_size::<T>(size).map_err(|why| {
        Error::invalid(format!(
            "{name}->struct_size is {size}, not the size of an {} ({why}; set it to sizeof({}), or use its _init function)",
            T::NAME,
            T::NAME
        ))
    })?;
    Ok(size)
}

/// Whether `size` can be the sizeof of some layout of `T`: at least struct_size, at most
/// [`MAX_STRUCT`], and, when smaller than liblmx's, ending on a field boundary.
fn check_size<T: CStruct>(size: usize) -> std::result::Result<(), String> {
    if size < std::mem::size_of::<usize>() || size > MAX_STRUCT {
        return Err(format!("sizes run from {} to {MAX_STRUCT}", std::mem::size_of::<usize>()));
    }
    if size < std::mem::size_of::<T>() {
        if let Some((f, o, n, _)) = T::FIELDS.iter().find(|&&(_, o, n, _)| o < size && size < o + n) {
            return Err(format!("it ends inside field {f} (bytes {o}..{})", o + n));
        }
    }
    Ok(())
}

/// Reads an input struct over `defaults`; NULL gives `defaults`.
pub(crate) fn read_in<T: AnyBits>(p: *const T, name: &str, defaults: T) -> Result<T> {
    if p.is_null() {
        return Ok(defaults);
    }
    let size = size_at(p, name)?;
    let ours = std::mem::size_of::<T>();
    if size > ours {
        // SAFETY: the caller promises `size` readable bytes.
        let extra = unsafe { std::slice::from_raw_parts((p as *const u8).add(ours), size - ours) };
        if let Some(i) = extra.iter().position(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "{name} is a newer {} ({size} bytes) that sets a field this liblmx ({} bytes, version {}) does not have (byte {} is not zero)",
                T::NAME,
                ours,
                env!("CARGO_PKG_VERSION"),
                ours + i
            )));
        }
    }
    let mut v = std::mem::MaybeUninit::new(defaults);
    // SAFETY: `min(size, ours)` bytes are readable from the caller and writable in `v`; any
    // bytes are a valid T (see the trait).
    unsafe {
        std::ptr::copy_nonoverlapping(p as *const u8, v.as_mut_ptr() as *mut u8, size.min(ours));
        Ok(v.assume_init())
    }
}

/// Copies `v` into the caller's struct at `p` (not NULL), keeping the caller's struct_size.
pub(crate) fn write_out<T: CStruct>(p: *mut T, name: &str, v: &T) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    let size = size_at(p, name)?;
    write_bytes(p, size, v, false);
    Ok(())
}

/// Writes `defaults` into the caller's struct of `size` bytes at `p`, struct_size included.
pub(crate) fn init<T: CStruct>(p: *mut T, size: usize, name: &str, defaults: &T) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    check_size::<T>(size).map_err(|why| {
        Error::invalid(format!(
            "size {size} is not the size of an {} ({why}; pass sizeof({}))",
            T::NAME,
            T::NAME
        ))
    })?;
    write_bytes(p, size, defaults, true);
    // SAFETY: at least struct_size's bytes are writable (checked above).
    unsafe { std::ptr::write_unaligned(p as *mut usize, size) };
    Ok(())
}

fn write_bytes<T: CStruct>(p: *mut T, size: usize, v: &T, with_size: bool) {
    let ours = std::mem::size_of::<T>();
    let skip = if with_size { 0 } else { std::mem::size_of::<usize>() };
    let n = size.min(ours);
    // SAFETY: the caller promises `size` writable bytes; `v` has `ours` readable bytes. An
    // untyped copy, so padding bytes are copied as they are.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (v as *const T as *const u8).add(skip),
            (p as *mut u8).add(skip),
            n - skip,
        );
        if size > ours {
            std::ptr::write_bytes((p as *mut u8).add(ours), 0, size - ours);
        }
    }
}

/// Reads `n` structs laid out `struct_size` apart (the caller's sizeof, taken from the first;
/// every element must carry the same).
pub(crate) fn read_array<T: AnyBits>(p: *const T, n: usize, name: &str, defaults: T) -> Result<Vec<T>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Error::invalid(format!("{name} is NULL but its count is {n}")));
    }
    let stride = size_at(p, &format!("{name}[0]"))?;
    if n > isize::MAX as usize / stride {
        return Err(Error::invalid(format!("{name}: count {n} is too large")));
    }
    (0..n)
        .map(|i| {
            // SAFETY: the caller promises n elements of `stride` bytes.
            let e = unsafe { (p as *const u8).add(i * stride) } as *const T;
            let item = format!("{name}[{i}]");
            let size = size_at(e, &item)?;
            if size != stride {
                return Err(Error::invalid(format!(
                    "{item}->struct_size is {size} but {name}[0]'s is {stride}; every element must have the same"
                )));
            }
            read_in(e, &item, defaults)
        })
        .collect()
}

/// A flag from C: 0 or 1.
pub(crate) fn flag(v: u8, field: &str) -> Result<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::invalid(format!("{field} is {v}; a flag must be 0 or 1"))),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_size, CStruct, Field};
    use crate::ffi::batch::lmx_batch_item;
    use crate::ffi::device::lmx_device;
    use crate::ffi::lora::{lmx_train_params, lmx_train_report};
    use crate::ffi::model::lmx_model_desc;
    use crate::ffi::params::{lmx_generate_params, lmx_model_params};
    use crate::ffi::result::lmx_metrics;
    use crate::ffi::session_state::{lmx_session_cache, lmx_session_params};
    use crate::ffi::text::lmx_message;

    /// The field list covers the struct: struct_size first, then every byte is a field or the
    /// padding the next field's alignment (or the struct's) requires.
    fn covers<T: CStruct>() {
        let f: &[Field] = T::FIELDS;
        assert_eq!(f[0], ("struct_size", 0, 8, 8), "{}", T::NAME);
        let mut end: usize = 0;
        for &(name, o, n, a) in f {
            assert_eq!(o, end.next_multiple_of(a), "{}: a field is missing before {name}", T::NAME);
            end = o + n;
        }
        let size = std::mem::size_of::<T>();
        assert_eq!(
            size,
            end.next_multiple_of(std::mem::align_of::<T>()),
            "{}: fields missing at the end",
            T::NAME
        );
        // Every field end is a size an older header could declare; a cut inside is refused.
        for &(name, o, n, _) in f {
            assert!(check_size::<T>(o + n).is_ok(), "{}: {name}", T::NAME);
            if n > 1 && o + n < size {
                assert!(check_size::<T>(o + n - 1).is_err(), "{}: a cut inside {name} was accepted", T::NAME);
            }
        }
    }

    #[test]
    fn every_struct_lists_all_its_fields() {
        covers::<lmx_batch_item>();
        covers::<lmx_device>();
        covers::<lmx_train_params>();
        covers::<lmx_train_report>();
        covers::<lmx_model_desc>();
        covers::<lmx_model_params>();
        covers::<lmx_generate_params>();
        covers::<lmx_metrics>();
        covers::<lmx_session_cache>();
        covers::<lmx_session_params>();
        covers::<lmx_message>();
    }
}
