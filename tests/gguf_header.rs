//! The GGUF container reader: a file written here is read back exactly; damaged ones give a
//! clear error (never a panic or a read past the end); a real llama.cpp vocabulary file from the
//! real-model cache parses (skipped when it is not prepared; under LMX_REAL_MODELS=1, as in
//! `make test`, a missing file is a failure).

mod common;

use lmx::model::gguf::{parse_header, read_header, Value};

/// A minimal GGUF writer for the tests.
#[derive(Default)]
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Writer {
    fn kv(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        string(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    fn bytes(&self, version: u32) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        // Each tensor's data at the next multiple of 32 (the default alignment).
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }
}

fn sample() -> Writer {
    let mut w = Writer::default();
    let mut tokens = Vec::new();
    tokens.extend(8u32.to_le_bytes()); // array of strings
    tokens.extend(3u64.to_le_bytes());
    for t in ["<s>", "hello", "wörld"] {
        string(&mut tokens, t);
    }
    let mut ids = Vec::new();
    ids.extend(5u32.to_le_bytes()); // array of i32
    ids.extend(2u64.to_le_bytes());
    ids.extend(7i32.to_le_bytes());
    ids.extend((-1i32).to_le_bytes());
    let mut arch = Vec::new();
    string(&mut arch, "llama");
    w.kv("general.architecture", 8, &arch)
        .kv("llama.block_count", 4, &2u32.to_le_bytes())
        .kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv("tokenizer.ggml.add_bos_token", 7, &[1])
        .kv("tokenizer.ggml.tokens", 9, &tokens)
        .kv("test.ids", 9, &ids)
        .tensor("token_embd.weight", &[4, 2], 0, vec![0u8; 32])
        .tensor("blk.0.attn_q.weight", &[32, 2], 8, vec![1u8; 68]);
    w
}

#[test]
fn a_written_file_reads_back_exactly() {
    let bytes = sample().bytes(3);
    let h = parse_header(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(h.version(), 3);
    assert_eq!(h.metadata()["general.architecture"], Value::Str("llama".into()));
    assert_eq!(h.metadata()["llama.block_count"].as_u64(), Some(2));
    assert_eq!(h.metadata()["llama.rope.freq_base"].as_f64(), Some(10000.0));
    assert_eq!(h.metadata()["tokenizer.ggml.add_bos_token"], Value::Bool(true));
    let tokens: Vec<&str> = h.metadata()["tokenizer.ggml.tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["<s>", "hello", "wörld"]);
    assert_eq!(h.metadata()["test.ids"], Value::Array(vec![Value::I32(7), Value::I32(-1)]));
    assert_eq!(h.tensors().len(), 2);
    assert_eq!(h.tensors()[0].name, "token_embd.weight");
    assert_eq!(
        (h.tensors()[0].dims.clone(), h.tensors()[0].ggml_type, h.tensors()[0].bytes),
        (vec![4, 2], 0, 32)
    );
    assert_eq!(
        (h.tensors()[1].dims.clone(), h.tensors()[1].ggml_type, h.tensors()[1].bytes),
        (vec![32, 2], 8, 68)
    );
    assert_eq!(h.data_start() % 32, 0);
    assert_eq!(h.tensors()[1].offset, 32);
    // Not a whole model: the config names what is missing.
    let e = h.config_json().unwrap_err();
    assert!(e.message.contains("llama.embedding_length: missing"), "{e}");
}

#[test]
fn an_unsupported_architecture_is_named() {
    let mut w = Writer::default();
    let mut arch = Vec::new();
    string(&mut arch, "mamba");
    w.kv("general.architecture", 8, &arch);
    let bytes = w.bytes(3);
    let e = parse_header(&bytes, bytes.len() as u64).unwrap().config_json().unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::Unsupported);
    assert!(e.message.contains("\"mamba\""), "{e}");
}

fn err(bytes: &[u8]) -> String {
    match parse_header(bytes, bytes.len() as u64) {
        Ok(_) => panic!("parsed"),
        Err(e) => e.message,
    }
}

#[test]
fn damaged_files_are_clear_errors() {
    let good = sample().bytes(3);
    assert!(err(b"GGML\x03\0\0\0").contains("not a GGUF"));
    assert!(err(&sample().bytes(1)).contains("version 1"));
    // Every truncation before the last tensor's last byte is an error, never a panic; past
    // it only alignment padding is missing.
    let h = parse_header(&good, good.len() as u64).unwrap();
    let data_end = h.data_start() + h.tensors().iter().map(|t| t.offset + t.bytes).max().unwrap();
    for cut in 0..good.len() {
        let r = parse_header(&good[..cut], cut as u64);
        assert_eq!(r.is_ok(), cut as u64 >= data_end, "cut at {cut} of {}", good.len());
    }
    // A huge count.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&b).contains("tensor count"));
    // An unknown tensor type, a bad boolean, a tensor past the end, overlapping tensors.
    let mut w = sample();
    w.tensors[0].2 = 99;
    assert!(err(&w.bytes(3)).contains("ggml type 99"));
    let mut w = Writer::default();
    w.kv("flag", 7, &[2]);
    assert!(err(&w.bytes(3)).contains("not a boolean"));
    let mut w = sample();
    w.tensors[1].1 = vec![32, 64];
    assert!(err(&w.bytes(3)).contains("truncated"));
    // Every single-bit flip in the header: parsed or an error, never a panic.
    let header_end = good.len() - 128;
    for at in 0..header_end {
        for bit in 0..8 {
            let mut b = good.clone();
            b[at] ^= 1 << bit;
            let _ = parse_header(&b, b.len() as u64);
        }
    }
}

#[test]
fn a_llama_cpp_vocabulary_file_parses() {
    let Some(path) = common::real_file("vocab/ggml-vocab-qwen2.gguf") else { return };
    let h = read_header(&path).unwrap();
    assert_eq!(h.metadata()["general.architecture"].as_str(), Some("qwen2"));
    let tokens = h.metadata()["tokenizer.ggml.tokens"].as_array().unwrap();
    assert!(tokens.len() > 150_000, "{} tokens", tokens.len());
    assert!(tokens.iter().all(|t| t.as_str().is_some()));
    assert_eq!(h.metadata()["tokenizer.ggml.model"].as_str(), Some("gpt2"));
}

/// The real GGUF files the real-model cache converts from: they parse, their block counts
/// match their tensors, and the dequantized embedding equals what transformers made of it in
/// the converted folder.
#[test]
fn the_real_gguf_files_parse_and_dequantize_like_their_conversions() {
    use std::io::{Read, Seek, SeekFrom};
    for (file, folder, arch, embed) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", "llama", "model.embed_tokens.weight"),
        ("gemma-3-270m-q4_k_m.gguf", "gemma3-270m", "gemma3", "model.embed_tokens.weight"),
    ] {
        let Some(dir) = common::folder(folder) else { continue };
        let path = common::cache_dir().join("gguf").join(file);
        let h = read_header(&path).unwrap();
        assert_eq!(h.metadata()["general.architecture"].as_str(), Some(arch), "{file}");
        let blocks = h.metadata()[&format!("{arch}.block_count")].as_u64().unwrap();
        let mut layers: Vec<u64> = h
            .tensors()
            .iter()
            .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse().ok())
            .collect();
        layers.sort();
        layers.dedup();
        assert_eq!(layers.len() as u64, blocks, "{file}");

        let loaded = lmx::mlx::io::load_safetensors(&dir.join("model.safetensors")).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        // Tensors GGUF stores as they are (no rope permutation), by GGUF and converted name.
        let pairs = [
            ("token_embd.weight", embed.to_string()),
            ("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight".into()),
            ("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight".into()),
            ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight".into()),
            ("blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight".into()),
            ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight".into()),
            ("blk.2.attn_output.weight", "model.layers.2.self_attn.o_proj.weight".into()),
        ];
        for (gguf_name, name) in pairs {
            let t = h.tensors().iter().find(|t| t.name == gguf_name).unwrap();
            f.seek(SeekFrom::Start(h.data_start() + t.offset)).unwrap();
            let mut raw = vec![0u8; t.bytes as usize];
            f.read_exact(&mut raw).unwrap();
            let ours = lmx::model::gguf::quants::dequantize(t.ggml_type, &raw).unwrap();
            let theirs = lmx::mlx::ops::astype(&loaded.tensors[&name], lmx::mlx::Dtype::F32)
                .unwrap()
                .to_f32_vec()
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{file} {gguf_name}: ggml dims {:?}", t.dims);
            let worst =
                ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs() / b.abs().max(1e-2)).fold(0f32, f32::max);
            eprintln!("{file} {gguf_name}: ggml type {}, worst relative difference {worst:.2e}", t.ggml_type);
            // The folder keeps bfloat16 or float16 copies of the same values.
            assert!(worst < 1e-2, "{file} {gguf_name}: {worst}");
        }
    }
}

/// The configuration made from a real GGUF file's metadata has the values transformers wrote
/// into the converted folder's config.json, and both give the same model spec.
#[test]
fn the_real_gguf_files_give_their_conversions_config() {
    for (file, folder) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
        ("gemma-3-270m-q4_k_m.gguf", "gemma3-270m"),
    ] {
        let Some(dir) = common::folder(folder) else { continue };
        let h = read_header(&common::cache_dir().join("gguf").join(file)).unwrap();
        let ours = h.config_json().unwrap();
        let theirs = common::json(&dir.join("config.json"));
        for (k, v) in ours.as_object().unwrap() {
            if k == "hidden_activation" && theirs.get(k).is_none() {
                continue;
            }
            let t = &theirs[k];
            let same = match (v.as_f64(), t.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1e-12),
                _ => v == t,
            };
            assert!(same, "{file}: {k} is {v}, the conversion has {t}");
        }
        let path = std::path::Path::new("config.json");
        let a = lmx::model::arch::spec_for(&lmx::model::config::Config::from_value(path, &ours).unwrap())
            .unwrap();
        let b = lmx::model::arch::spec_for(&lmx::model::config::Config::from_value(path, &theirs).unwrap())
            .unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{file}: specs differ");
    }
}
