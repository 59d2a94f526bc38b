//! config.json to the model's spec (sizes, layers, rope): any JSON gives a spec or an error,
//! never a crash or an allocation sized from an absurd number.
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
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(cfg) = lmx::model::config::Config::from_value(std::path::Path::new("config.json"), &v) else {
        return;
    };
    if let Ok(spec) = lmx::model::arch::spec_for(&cfg) {
        assert!(spec.layers.len() <= lmx::model::arch::MAX_LAYERS as usize);
    }
    let _ = lmx::model::nn::quant::QuantConfig::read(&cfg);
}
);
