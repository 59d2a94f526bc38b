//! Session files of liblmx's first format (`liblmx-session-1`, whose model fingerprint was
//! FNV-1a over the folder's files) still load, checked against the model as before, now that
//! the fingerprint is SHA-256 (format 2).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use lmx::engine::{GenerateParams, Session};
use lmx::mlx::io;
use lmx::model::{LoadParams, Model};

/// The first format's fingerprint of a model folder, as liblmx 0.1's `fingerprint::of_folder`
/// defined it: FNV-1a 64 over length-prefixed fields: config.json, tokenizer.json,
/// tokenizer_config.json and chat_template.jinja whole (an empty field when absent), then for
/// each `*.safetensors` in name order its name, size, first 64 KiB and, past 64 KiB, its
/// last 64 KiB. Written out here independently of the library's implementation.
fn format1_fingerprint(dir: &Path) -> String {
    struct Fnv(u64);
    impl Fnv {
        fn field(&mut self, data: &[u8]) {
            for &b in (data.len() as u64).to_le_bytes().iter().chain(data) {
                self.0 ^= b as u64;
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        h.field(&std::fs::read(dir.join(name)).unwrap_or_default());
    }
    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    const SAMPLE: usize = 64 * 1024;
    for p in weights {
        let data = std::fs::read(&p).unwrap();
        h.field(p.file_name().unwrap().to_string_lossy().as_bytes());
        h.field(&(data.len() as u64).to_le_bytes());
        h.field(&data[..SAMPLE.min(data.len())]);
        if data.len() > SAMPLE {
            let tail = SAMPLE.min(data.len() - SAMPLE);
            h.field(&data[data.len() - tail..]);
        }
    }
    format!("{:016x}", h.0)
}

/// `file` rewritten as the first format wrote it: the format name and `fingerprint`.
fn as_format1(file: &Path, fingerprint: &str) {
    let loaded = io::load_safetensors(file).unwrap();
    let mut meta = loaded.metadata.clone();
    meta.insert("0.lmx_format".into(), "liblmx-session-1".into());
    meta.insert("0.lmx_fingerprint".into(), fingerprint.into());
    let tensors: Vec<(&str, &lmx::mlx::Array)> =
        loaded.tensors.iter().map(|(k, a)| (k.as_str(), a)).collect();
    let m: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let tmp = file.with_extension("tmp.safetensors");
    io::save_safetensors(&tmp, &tensors, &m).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[test]
fn format1_files_load_and_continue_checked_against_the_model() {
    let dir = fixtures().join("qwen3");
    let m = Arc::new(Model::load(&dir, &LoadParams::default()).unwrap());
    let p = GenerateParams { max_tokens: 6, ignore_eos: true, ..Default::default() };
    let prompt = m.encode("The keeper counted the ships", true).unwrap();
    let a = Session::new(m.clone()).unwrap();
    a.generate(&prompt[..4], &GenerateParams { max_tokens: 1, ..p.clone() }, |_| true).unwrap();
    let t = TempDir::new("format1");
    let file = t.0.join("s.session");
    a.save(&file, &BTreeMap::new()).unwrap();
    let want = a.generate(&prompt, &p, |_| true).unwrap().tokens;

    // Written as the first format, with its fingerprint of this model: loads, continues alike.
    let fp = format1_fingerprint(&dir);
    assert_eq!(m.legacy_fingerprint().unwrap(), fp);
    as_format1(&file, &fp);
    let (b, r) = Session::load(m.clone(), &file, &Default::default()).unwrap();
    assert_eq!(r.metadata["lmx_format"], "liblmx-session-1");
    assert_eq!(b.generate(&prompt, &p, |_| true).unwrap().tokens, want);

    // With another model's first-format fingerprint: refused as another model's.
    as_format1(&file, "0123456789abcdef");
    let e = Session::load(m.clone(), &file, &Default::default()).err().unwrap();
    assert!(e.message.contains("another model") && e.message.contains(&fp), "{e}");

    // A fused model cannot recompute the old fingerprint: a clear error, not a pass.
    as_format1(&file, &fp);
    let cfg = lmx::model::LoraConfig {
        rank: 2,
        scale: 1.0,
        dropout: 0.0,
        num_layers: 1,
        targets: vec![lmx::model::Target::Q],
    };
    let w = lmx::model::LoraWeights::init(cfg, m.spec(), &lmx::mlx::random::key(1).unwrap()).unwrap();
    let fused = Arc::new(m.fused(&w, 1.0).unwrap());
    let e = Session::load(fused, &file, &Default::default()).err().unwrap();
    assert!(e.message.contains("format 1") || e.message.contains("liblmx-session-1"), "{e}");
}
