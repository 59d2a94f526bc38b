//! Inputs that fuzzing (`make fuzz`) found crashing, replayed the way their fuzz target runs
//! them: each must now give a result or an error. Files: tests/fuzz_regressions/<target>/.

mod common;

use common::TempDir;
use lmx::model::config::Config;
use lmx::model::Tokenizer;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn tokenizer_files() {
    // As fuzz/fuzz_targets/tokenizer_files.rs: tokenizer.json, 0xFF, tokenizer_config.json.
    let found = inputs("tokenizer_files");
    assert!(!found.is_empty());
    for (name, data) in found {
        let (tok, cfg) = match data.iter().position(|&b| b == 0xff) {
            Some(i) => (&data[..i], Some(&data[i + 1..])),
            None => (&data[..], None),
        };
        let d = TempDir::new("fuzz-tokenizer");
        let model_cfg = serde_json::json!({"model_type": "llama", "eos_token_id": 2});
        let model_cfg = Config::from_value(&d.0.join("config.json"), &model_cfg).unwrap();
        let tok_cfg = cfg.and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok());
        let tok_cfg =
            tok_cfg.as_ref().and_then(|v| Config::from_value(&d.0.join("tokenizer_config.json"), v));
        match Tokenizer::from_json(&d.0.join("tokenizer.json"), tok, &model_cfg, tok_cfg.as_ref(), None, None)
        {
            Ok(t) => {
                if let Ok(ids) = t.encode("Hello, world! café ☕", true) {
                    let _ = t.decode(&ids, true);
                }
            }
            Err(e) => assert_eq!(e.kind, lmx::ErrorKind::Format, "{name}: {e}"),
        }
    }
}
