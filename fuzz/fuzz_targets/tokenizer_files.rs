//! tokenizer.json and tokenizer_config.json (split at the first 0xFF byte, which JSON text
//! never holds) loaded as a model folder's: a tokenizer or an error, never a crash. A loaded
//! tokenizer then encodes and decodes a text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("lmx-fuzz-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one the library catches and reports as an
        // error (the tokenizers crate panics on some malformed files); the default hook lets
        // caught panics be errors, and an uncaught one still aborts at the C boundary.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let (tok, cfg) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let d = dir();
    let model_cfg = serde_json::json!({"model_type": "llama", "eos_token_id": 2});
    let model_cfg = lmx::model::config::Config::from_value(&d.join("config.json"), &model_cfg).unwrap();
    let tok_cfg = cfg.and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok());
    let tok_cfg = tok_cfg.as_ref().and_then(|v| lmx::model::config::Config::from_value(&d.join("tokenizer_config.json"), v));
    if let Ok(t) = lmx::model::Tokenizer::from_json(&d.join("tokenizer.json"), tok, &model_cfg, tok_cfg.as_ref(), None, None) {
        if let Ok(ids) = t.encode("Hello, world! café ☕", true) {
            let _ = t.decode(&ids, true);
        }
    }
}
);
