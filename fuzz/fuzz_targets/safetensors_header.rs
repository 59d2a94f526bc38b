//! The safetensors header: 8 bytes giving the data section's size, then the header's JSON.
//! Any input gives a header or an error, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    let _ = lmx::mlx::io::parse_header(&data[8..], size);
});
