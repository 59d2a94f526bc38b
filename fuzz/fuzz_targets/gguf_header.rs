//! The GGUF header (metadata and tensor directory): any bytes give a header or an error,
//! never a crash or an allocation sized from a corrupt count; and a header that parses gives a
//! config and a tokenizer, or errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        if let Ok(h) = lmx::model::gguf::parse_header(data, data.len() as u64) {
            let _ = h.config_json();
            let _ = lmx::model::gguf::tokenizer::build(&h);
        }
    }
);
