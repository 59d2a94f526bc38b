//! The device MLX computes on.

use std::ffi::c_char;

use super::boundary::status;
use super::lmx_status;
use super::sized::{c_struct, write_out};
use crate::mlx::Backend;

/// Which MLX backend computes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum lmx_backend {
    /// MLX's CPU backend (Linux, or a build without a GPU).
    LMX_BACKEND_CPU = 0,
    /// Apple GPU through Metal.
    LMX_BACKEND_METAL = 1,
    /// NVIDIA GPU through CUDA.
    LMX_BACKEND_CUDA = 2,
}

/// Length of `lmx_device.name`, NUL included.
pub const LMX_DEVICE_NAME_MAX: usize = 256;

/// A description of the device MLX computes on. Set `struct_size` to
/// `sizeof(lmx_device)` before passing it to lmx_device_info().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lmx_device {
    /// Set by the caller to sizeof(lmx_device).
    pub struct_size: usize,
    /// The backend of the default device.
    pub backend: lmx_backend,
    /// The device index within its kind.
    pub index: i32,
    /// The device name as MLX reports it (for example "Apple M3 Max", or the CPU model),
    /// NUL-terminated; "" where MLX reports none.
    pub name: [c_char; LMX_DEVICE_NAME_MAX],
    /// Device memory in bytes (system memory for the CPU and Apple GPUs); 0 if unknown.
    pub memory_size: u64,
    /// MLX's recommended working set in bytes (Metal only); 0 where unknown.
    pub recommended_working_set: u64,
}

c_struct!(lmx_device { struct_size, backend, index, name, memory_size, recommended_working_set });

/// Fills `*out_info` (not NULL; struct_size set to the caller's sizeof(lmx_device)) with the
/// default device's backend, name and memory. Thread-safe. Returns LMX_OK,
/// LMX_STATUS_INVALID_ARGUMENT (NULL or struct_size too small), or LMX_STATUS_MLX.
#[no_mangle]
pub extern "C" fn lmx_device_info(out_info: *mut lmx_device) -> lmx_status {
    status(|| {
        let info = crate::mlx::device::describe()?;
        let mut o = lmx_device {
            struct_size: std::mem::size_of::<lmx_device>(),
            backend: match info.backend {
                Backend::Cpu => lmx_backend::LMX_BACKEND_CPU,
                Backend::Metal => lmx_backend::LMX_BACKEND_METAL,
                Backend::Cuda => lmx_backend::LMX_BACKEND_CUDA,
            },
            index: info.device.index,
            name: [0; LMX_DEVICE_NAME_MAX],
            memory_size: info.memory_size,
            recommended_working_set: info.recommended_working_set,
        };
        for (slot, b) in o.name.iter_mut().zip(info.name.bytes().take(LMX_DEVICE_NAME_MAX - 1)) {
            *slot = b as c_char;
        }
        write_out(out_info, "out_info", &o)
    })
}
