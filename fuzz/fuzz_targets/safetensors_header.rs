//! The safetensors header: 8 bytes giving the data section's size, then the header's JSON.
//! Any input gives a header or an error, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one the library catches and reports as an
        // error (the tokenizers crate panics on some malformed files); the default hook lets
        // caught panics be errors, and an uncaught one still aborts at the C boundary.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    let _ = lmx::mlx::io::parse_header(&data[8..], size);
}
);
