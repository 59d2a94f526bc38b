//! Devices and streams.
//!
//! Every op runs on a stream. Each thread has a current stream, by default the default
//! stream of MLX's default device (the GPU where MLX has one, else the CPU); [`with_stream`]
//! runs a closure with another one, so the engine can give generation a stream of its own.

use std::cell::Cell;
use std::ffi::CStr;

use super::{check, init, sys};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

/// An MLX device (kind and index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub kind: DeviceKind,
    pub index: i32,
}

/// Owned mlx-c device handle, freed on drop.
struct RawDevice(sys::mlx_device);

impl Drop for RawDevice {
    fn drop(&mut self) {
        // SAFETY: the handle came from mlx_device_new*/get_default_device and is freed once.
        unsafe { sys::mlx_device_free(self.0) };
    }
}

impl Device {
    pub const CPU: Device = Device { kind: DeviceKind::Cpu, index: 0 };
    pub const GPU: Device = Device { kind: DeviceKind::Gpu, index: 0 };

    fn raw(self) -> RawDevice {
        init();
        let t = match self.kind {
            DeviceKind::Cpu => sys::mlx_device_type__MLX_CPU,
            DeviceKind::Gpu => sys::mlx_device_type__MLX_GPU,
        };
        // SAFETY: plain constructor.
        RawDevice(unsafe { sys::mlx_device_new_type(t, self.index) })
    }

    fn from_raw(dev: &RawDevice) -> Result<Device> {
        let mut t = sys::mlx_device_type__MLX_CPU;
        let mut index = 0;
        // SAFETY: dev is a live handle; outputs are valid pointers.
        check(unsafe { sys::mlx_device_get_type(&mut t, dev.0) }, "reading the device type")?;
        check(unsafe { sys::mlx_device_get_index(&mut index, dev.0) }, "reading the device index")?;
        let kind = if t == sys::mlx_device_type__MLX_GPU { DeviceKind::Gpu } else { DeviceKind::Cpu };
        Ok(Device { kind, index })
    }

    /// MLX's default device: the GPU where MLX was built with one and it is present.
    pub fn default_device() -> Result<Device> {
        init();
        // SAFETY: the out handle starts empty and is freed by RawDevice.
        let dev = RawDevice(unsafe { sys::mlx_device_new() });
        let mut dev = dev;
        check(unsafe { sys::mlx_get_default_device(&mut dev.0) }, "reading the default device")?;
        Device::from_raw(&dev)
    }

    /// Whether MLX can run on this device.
    pub fn is_available(self) -> bool {
        let dev = self.raw();
        let mut ok = false;
        // SAFETY: live handle, valid out pointer.
        let rc = unsafe { sys::mlx_device_is_available(&mut ok, dev.0) };
        check(rc, "checking the device").map(|_| ok).unwrap_or(false)
    }

    /// How many devices of a kind MLX sees (0 GPUs on a CPU-only build).
    pub fn count(kind: DeviceKind) -> usize {
        init();
        let t = match kind {
            DeviceKind::Cpu => sys::mlx_device_type__MLX_CPU,
            DeviceKind::Gpu => sys::mlx_device_type__MLX_GPU,
        };
        let mut n = 0;
        // SAFETY: valid out pointer.
        let rc = unsafe { sys::mlx_device_count(&mut n, t) };
        if check(rc, "counting devices").is_ok() && n > 0 {
            n as usize
        } else {
            0
        }
    }

    /// Device properties MLX reports (for example `device_name`, `memory_size`), as strings
    /// and sizes. Keys differ per backend.
    pub fn info(self) -> Result<DeviceProperties> {
        let dev = self.raw();
        // SAFETY: the info handle is freed below on every path.
        let mut info = unsafe { sys::mlx_device_info_new() };
        let result = (|| {
            check(unsafe { sys::mlx_device_info_get(&mut info, dev.0) }, "reading device info")?;
            let mut keys = unsafe { sys::mlx_vector_string_new() };
            let r = (|| {
                check(unsafe { sys::mlx_device_info_get_keys(&mut keys, info) }, "listing device info")?;
                let n = unsafe { sys::mlx_vector_string_size(keys) };
                let mut props = DeviceProperties::default();
                for i in 0..n {
                    let mut key: *mut std::ffi::c_char = std::ptr::null_mut();
                    check(
                        unsafe { sys::mlx_vector_string_get(&mut key, keys, i) },
                        "reading a device info key",
                    )?;
                    if key.is_null() {
                        continue;
                    }
                    let name = unsafe { CStr::from_ptr(key) }.to_string_lossy().into_owned();
                    let mut is_string = false;
                    check(
                        unsafe { sys::mlx_device_info_is_string(&mut is_string, info, key) },
                        "reading device info",
                    )?;
                    if is_string {
                        let mut v: *const std::ffi::c_char = std::ptr::null();
                        check(
                            unsafe { sys::mlx_device_info_get_string(&mut v, info, key) },
                            "reading device info",
                        )?;
                        if !v.is_null() {
                            let v = unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned();
                            props.strings.push((name, v));
                        }
                    } else {
                        let mut v = 0usize;
                        check(
                            unsafe { sys::mlx_device_info_get_size(&mut v, info, key) },
                            "reading device info",
                        )?;
                        props.sizes.push((name, v as u64));
                    }
                }
                Ok(props)
            })();
            unsafe { sys::mlx_vector_string_free(keys) };
            r
        })();
        unsafe { sys::mlx_device_info_free(info) };
        result
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu:{}", self.index),
            DeviceKind::Gpu => write!(f, "gpu:{}", self.index),
        }
    }
}

/// Properties of a device as MLX reports them.
#[derive(Clone, Debug, Default)]
pub struct DeviceProperties {
    pub strings: Vec<(String, String)>,
    pub sizes: Vec<(String, u64)>,
}

impl DeviceProperties {
    pub fn string(&self, key: &str) -> Option<&str> {
        self.strings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn size(&self, key: &str) -> Option<u64> {
        self.sizes.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// An owned MLX stream.
pub struct Stream {
    raw: sys::mlx_stream,
}

// SAFETY: an mlx_stream is a small value (device and index) behind a heap box; MLX's
// scheduler is thread-safe for submitting work to a stream.
unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut index = 0;
        // SAFETY: live handle, valid out pointer.
        if unsafe { sys::mlx_stream_get_index(&mut index, self.raw) } == 0 {
            super::compile::release(index);
        }
        // SAFETY: owned handle, freed once.
        unsafe { sys::mlx_stream_free(self.raw) };
    }
}

impl Stream {
    /// A new stream on `device`, usable from any thread (MLX's own new streams belong to the
    /// thread that made them). Submitting to it is serialized by the compute lock.
    pub fn new(device: Device) -> Result<Stream> {
        if !device.is_available() {
            return Err(Error::unsupported(format!("{device} is not available in this MLX build")));
        }
        let dev = device.raw();
        // SAFETY: live device handle.
        let raw = unsafe { sys::mlx_stream_new_thread_unsafe(dev.0) };
        if raw.ctx.is_null() {
            return Err(Error::internal(format!("MLX could not create a stream on {device}")));
        }
        Ok(Stream { raw })
    }

    pub fn device(&self) -> Result<Device> {
        let mut dev = RawDevice(unsafe { sys::mlx_device_new() });
        // SAFETY: live handles.
        check(unsafe { sys::mlx_stream_get_device(&mut dev.0, self.raw) }, "reading a stream's device")?;
        Device::from_raw(&dev)
    }

    pub(crate) fn raw(&self) -> sys::mlx_stream {
        self.raw
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<sys::mlx_stream>> = const { Cell::new(None) };
}

/// liblmx's shared stream for `device`, made once and usable from any thread.
pub fn shared_stream(device: Device) -> Result<&'static Stream> {
    static CPU: std::sync::OnceLock<Stream> = std::sync::OnceLock::new();
    static GPU: std::sync::OnceLock<Stream> = std::sync::OnceLock::new();
    let cell = match device.kind {
        DeviceKind::Cpu => &CPU,
        DeviceKind::Gpu => &GPU,
    };
    if let Some(s) = cell.get() {
        return Ok(s);
    }
    let s = Stream::new(device)?;
    Ok(cell.get_or_init(|| s))
}

/// How many streams [`pooled_stream`] keeps per device.
pub const STREAMS_PER_DEVICE: usize = 4;

type Pool = Vec<(Device, Vec<std::sync::Arc<Stream>>)>;
static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Vec::new());

/// A stream from the pool, held by a session or a call. When the last lease of a stream
/// goes, what was compiled for it is released, so that no session's traced graphs outlive
/// every session.
pub struct StreamLease(std::sync::Arc<Stream>);

impl std::ops::Deref for StreamLease {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        &self.0
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        // Lock order: compute, then pool (pooled_stream takes only the pool's).
        let _compute = super::compute_lock();
        let _pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if std::sync::Arc::strong_count(&self.0) == 2 {
            let mut index = 0;
            // SAFETY: live handle, valid out pointer.
            if unsafe { sys::mlx_stream_get_index(&mut index, self.0.raw) } == 0 {
                super::compile::release(index);
            }
        }
    }
}

/// A stream on `device` from a pool of at most [`STREAMS_PER_DEVICE`], reused for the life
/// of the process: MLX starts an OS thread (and, on CUDA, a device stream) for every stream
/// made and keeps it until exit, so a stream per session or per call would grow the process
/// without bound. A new stream is made while the pool is not full and every stream in it is
/// leased; otherwise the least leased one is shared (all evaluation is serialized by the
/// compute lock, so separate streams only let queued device work of separate sessions
/// overlap).
pub fn pooled_stream(device: Device) -> Result<StreamLease> {
    use std::sync::Arc;
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let idx = match pool.iter().position(|(d, _)| *d == device) {
        Some(i) => i,
        None => {
            pool.push((device, Vec::new()));
            pool.len() - 1
        }
    };
    let streams = &mut pool[idx].1;
    let least = streams.iter().min_by_key(|s| Arc::strong_count(s)).cloned();
    match least {
        Some(s) if Arc::strong_count(&s) == 2 || streams.len() >= STREAMS_PER_DEVICE => Ok(StreamLease(s)),
        _ => {
            let s = Arc::new(Stream::new(device)?);
            streams.push(s.clone());
            Ok(StreamLease(s))
        }
    }
}

/// The raw handle of this thread's current stream: the one [`with_stream`] set, or liblmx's
/// shared stream on the default device.
pub(crate) fn current_raw() -> Result<sys::mlx_stream> {
    if let Some(s) = OVERRIDE.with(|o| o.get()) {
        return Ok(s);
    }
    Ok(shared_stream(Device::default_device()?)?.raw)
}

/// Runs `f` with `stream` as this thread's current stream, then restores the previous one
/// (also when `f` panics). The borrow keeps the stream alive for the whole call.
pub fn with_stream<R>(stream: &Stream, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<sys::mlx_stream>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0;
            let _ = OVERRIDE.try_with(|o| o.set(prev));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(stream.raw))));
    f()
}

/// Which MLX backend runs the GPU device, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Metal,
    Cuda,
}

impl Backend {
    /// The backend of MLX's default device.
    pub fn current() -> Result<Backend> {
        if Device::default_device()?.kind == DeviceKind::Cpu {
            return Ok(Backend::Cpu);
        }
        let mut metal = false;
        let mut cuda = false;
        // SAFETY: valid out pointers.
        check(unsafe { sys::mlx_metal_is_available(&mut metal) }, "checking for Metal")?;
        check(unsafe { sys::mlx_cuda_is_available(&mut cuda) }, "checking for CUDA")?;
        Ok(if metal {
            Backend::Metal
        } else if cuda {
            Backend::Cuda
        } else {
            Backend::Cpu
        })
    }

    /// The backend that computes on `device`.
    pub fn of(device: Device) -> Result<Backend> {
        if device.kind == DeviceKind::Cpu {
            return Ok(Backend::Cpu);
        }
        let mut metal = false;
        // SAFETY: a valid out pointer.
        check(unsafe { sys::mlx_metal_is_available(&mut metal) }, "checking for Metal")?;
        Ok(if metal { Backend::Metal } else { Backend::Cuda })
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Metal => "metal",
            Backend::Cuda => "cuda",
        }
    }
}

/// MLX's version string (for example "0.32.2").
pub fn mlx_version() -> Result<String> {
    init();
    // SAFETY: the string handle is freed below.
    let mut s = unsafe { sys::mlx_string_new() };
    let r = check(unsafe { sys::mlx_version(&mut s) }, "reading the MLX version").and_then(|_| {
        let p = unsafe { sys::mlx_string_data(s) };
        if p.is_null() {
            return Err(Error::internal("MLX returned no version"));
        }
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    });
    unsafe { sys::mlx_string_free(s) };
    r
}

/// What liblmx reports about the default device.
#[derive(Clone, Debug)]
pub struct DeviceSummary {
    pub device: Device,
    pub backend: Backend,
    pub name: String,
    pub memory_size: u64,
    pub recommended_working_set: u64,
}

/// Summarises the default device from MLX's device info.
pub fn describe() -> Result<DeviceSummary> {
    let device = Device::default_device()?;
    let backend = Backend::current()?;
    let props = device.info()?;
    let name = props.string("device_name").or_else(|| props.string("name")).unwrap_or("").trim().to_string();
    // Metal says `memory_size`, CUDA `total_memory`; MLX's CPU backend reports no memory
    // size, and the CPU's memory is the system's.
    let memory_size = match props.size("memory_size").or_else(|| props.size("total_memory")) {
        Some(m) => m,
        None if backend == Backend::Cpu => system_memory(),
        None => 0,
    };
    Ok(DeviceSummary {
        device,
        backend,
        name,
        memory_size,
        recommended_working_set: props.size("max_recommended_working_set_size").unwrap_or(0),
    })
}

/// Physical memory of the machine in bytes; 0 if the OS does not say.
fn system_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        0
    }
}
