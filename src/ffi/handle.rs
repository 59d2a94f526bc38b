//! Opaque handles: how C's handle values become Rust objects, and back.
//!
//! A handle is not an address. It is a number that encodes a type tag, a slot in that type's
//! table and the slot's generation: `tag << 56 | generation << 32 | slot + 1`. Every call
//! looks its handles up in the table, so a NULL, foreign, mistyped or freed handle is an
//! LMX_STATUS_INVALID_ARGUMENT naming it, and nothing is ever read through a pointer the
//! caller made up or freed. A lookup returns an `Arc`, so an object freed by one thread while
//! another thread's call uses it lives until that call returns.

use std::sync::{Arc, Mutex};

use crate::{Error, Result};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("liblmx's handles need 64-bit pointers");

const SLOT_BITS: u32 = 32;
const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// The live objects of one handle type.
pub(crate) struct Table<T> {
    inner: Mutex<Slots<T>>,
}

struct Slots<T> {
    /// Per slot: its generation and the object, None when free.
    slots: Vec<(u32, Option<Arc<T>>)>,
    free: Vec<u32>,
}

impl<T> Table<T> {
    pub(crate) const fn new() -> Table<T> {
        Table { inner: Mutex::new(Slots { slots: Vec::new(), free: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle type: its tag, its name in messages, and its table.
pub(crate) trait Handle: Sized + 'static {
    /// 1..=255, distinct per type: see [`tag_of`].
    const TAG: u8;
    const NAME: &'static str;
    fn table() -> &'static Table<Self>;
}

/// The handle types, by tag: a type's tag is its place here (from 1), and messages about a
/// handle of the wrong type name the type its tag says.
const NAMES: &[&str] =
    &["lmx_model", "lmx_session", "lmx_stream", "lmx_batch", "lmx_cancel", "lmx_adapter", "lmx_trainer"];

/// The tag of the handle type named `name` (a compile-time error for a name not in [`NAMES`]).
pub(crate) const fn tag_of(name: &str) -> u8 {
    let mut i = 0;
    while i < NAMES.len() {
        let (a, b) = (NAMES[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i as u8 + 1;
            }
        }
        i += 1;
    }
    panic!("a handle type missing from NAMES")
}

fn encode(tag: u8, generation: u32, slot: u32) -> usize {
    ((tag as u64) << 56 | (generation as u64 & GENERATION_MASK) << SLOT_BITS | (slot as u64 + 1)) as usize
}

/// Moves a value into a new handle.
pub(crate) fn into_handle<T: Handle>(v: T) -> *mut T {
    let mut t = T::table().lock();
    let v = Some(Arc::new(v));
    let (slot, generation) = match t.free.pop() {
        Some(i) => {
            let e = &mut t.slots[i as usize];
            e.1 = v;
            (i, e.0)
        }
        None => {
            t.slots.push((0, v));
            ((t.slots.len() - 1) as u32, 0)
        }
    };
    encode(T::TAG, generation, slot) as *mut T
}

/// The slot of a live handle of type T, or an error naming what `p` is instead.
fn slot_of<T: Handle>(t: &Slots<T>, p: *const T, name: &str) -> Result<usize> {
    let v = p as usize as u64;
    if v == 0 {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    let tag = (v >> 56) as u8;
    let generation = ((v >> SLOT_BITS) & GENERATION_MASK) as u32;
    let slot = (v & 0xffff_ffff) as usize;
    if tag != T::TAG {
        let other = (tag as usize).checked_sub(1).and_then(|i| NAMES.get(i));
        return Err(match other {
            Some(other) if slot > 0 => Error::invalid(format!("{name} is an {other}, not an {}", T::NAME)),
            _ => Error::invalid(format!("{name} is not an {} (not a handle made by liblmx)", T::NAME)),
        });
    }
    match t.slots.get(slot.wrapping_sub(1)) {
        Some((g, Some(_))) if *g == generation => Ok(slot - 1),
        Some(_) => Err(Error::invalid(format!("{name} is an {} that was freed", T::NAME))),
        None => Err(Error::invalid(format!("{name} is not an {} (not a handle made by liblmx)", T::NAME))),
    }
}

/// The object behind a handle.
pub(crate) fn handle_ref<T: Handle>(p: *const T, name: &str) -> Result<Arc<T>> {
    let t = T::table().lock();
    let i = slot_of(&t, p, name)?;
    Ok(t.slots[i].1.clone().expect("a live slot"))
}

/// Frees a handle, returning its object (which lives on while other calls still use it).
/// NULL gives Ok(None).
pub(crate) fn take_handle<T: Handle>(p: *mut T, name: &str) -> Result<Option<Arc<T>>> {
    take_handle_if(p, name, |_| Ok(()))
}

/// Frees a handle unless `keep` refuses (checked under the table's lock, so no other call
/// can free it meanwhile).
pub(crate) fn take_handle_if<T: Handle>(
    p: *mut T,
    name: &str,
    keep: impl FnOnce(&T) -> Result<()>,
) -> Result<Option<Arc<T>>> {
    if p.is_null() {
        return Ok(None);
    }
    let mut t = T::table().lock();
    let i = slot_of(&t, p, name)?;
    keep(t.slots[i].1.as_ref().expect("a live slot"))?;
    let e = &mut t.slots[i];
    let v = e.1.take();
    e.0 = (e.0 + 1) & GENERATION_MASK as u32;
    // A slot whose generations have all been used is retired, so that no handle ever names
    // two objects.
    if e.0 != 0 {
        t.free.push(i as u32);
    }
    Ok(v)
}

macro_rules! handle_type {
    ($t:ident) => {
        impl $crate::ffi::handle::Handle for $t {
            const TAG: u8 = $crate::ffi::handle::tag_of(stringify!($t));
            const NAME: &'static str = stringify!($t);
            fn table() -> &'static $crate::ffi::handle::Table<Self> {
                static TABLE: $crate::ffi::handle::Table<$t> = $crate::ffi::handle::Table::new();
                &TABLE
            }
        }
    };
}
pub(crate) use handle_type;
