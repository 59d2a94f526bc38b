//! GGUF files loaded directly, against the references of the folders that transformers
//! converted from the same files (scripts/real_models.py): SmolLM2-135M-Instruct Q4_1 (exact
//! conversion: the same logits within 2e-3 and the same greedy tokens) and Gemma 3 270M
//! Q4_K_M (Q6_K tensors re-quantized: agreement measured and bounded). Also the CLI on the
//! SmolLM2 file, and errors for damaged and unsupported files.
//!
//! The real files skip without the prepared cache unless LMX_REAL_MODELS=1 (as in `make test`).

mod common;

use std::process::Command;

use common::*;
use lmx::mlx::{ops, Array, Dtype};
use lmx::model::{KvCache, LoadParams, Message, Model};

const TOL: f32 = 2e-3;

/// Per prompt of the reference: the largest last-position logit difference, the first greedy
/// step that differs (None: all identical), and how many of the reference's greedy tokens
/// the model also ranks first when fed the reference's own continuation.
struct Agreement {
    logits: f32,
    first_divergence: Option<usize>,
    teacher_forced: usize,
    steps: usize,
}

fn gguf(file: &str) -> std::path::PathBuf {
    cache_dir().join("gguf").join(file)
}

fn argmax(logits: &Array) -> u32 {
    ops::argmax(&ops::astype(logits, Dtype::F32).unwrap(), -1, false).unwrap().to_vec::<u32>().unwrap()[0]
}

fn compare(model: &Model, reference: &std::path::Path, name: &str) -> Vec<Agreement> {
    let r = json(&reference.join("reference.json"));
    let tensors = tensors(&reference.join("reference.safetensors"));
    let t = model.transformer();
    let mut out = Vec::new();
    for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = if let Some(msgs) = p.get("messages").filter(|m| !m.is_null()) {
            let msgs: Vec<Message> = serde_json::from_value(msgs.clone()).unwrap();
            let text = model.render_chat(&msgs, true, None, &Default::default(), None).unwrap();
            assert_eq!(text, p["rendered"].as_str().unwrap(), "{name} prompt {i}: the GGUF's chat template");
            model.encode(&text, false).unwrap()
        } else {
            model.encode(p["text"].as_str().unwrap(), true).unwrap()
        };
        assert_eq!(prompt, ids(&p["prompt_ids"]), "{name} prompt {i}: token ids from the GGUF's vocabulary");
        let want = ids(&p["greedy_ids"]);

        // Greedy, free-running.
        let mut cache = KvCache::new(t.spec());
        let x: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        let logits = t.forward(&Array::from_slice(&x, &[1, x.len() as i32]).unwrap(), &mut cache).unwrap();
        let n = logits.dim(1).unwrap();
        let mut last = ops::slice_axis(&logits, 1, n - 1, n).unwrap();
        let ours = ops::astype(&last, Dtype::F32).unwrap().to_f32_vec().unwrap();
        let d = max_abs_diff(&ours, &tensors[&format!("prompt{i}.last_logits")].to_f32_vec().unwrap());
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let id = argmax(&last);
            got.push(id);
            last = t.forward(&Array::from_slice(&[id as i32], &[1, 1]).unwrap(), &mut cache).unwrap();
        }
        let first_divergence = got.iter().zip(&want).position(|(a, b)| a != b);

        // Teacher-forced: the reference's continuation fed in one pass.
        let mut cache = KvCache::new(t.spec());
        let all: Vec<i32> = prompt.iter().chain(&want[..want.len() - 1]).map(|&t| t as i32).collect();
        let logits =
            t.forward(&Array::from_slice(&all, &[1, all.len() as i32]).unwrap(), &mut cache).unwrap();
        let top = ops::argmax(&ops::astype(&logits, Dtype::F32).unwrap(), -1, false)
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        let teacher_forced = top[prompt.len() - 1..].iter().zip(&want).filter(|(a, b)| a == b).count();
        eprintln!(
            "{name} prompt {i}: last logits max abs diff {d:.2e}; greedy {}; teacher-forced top-1 agreement {teacher_forced}/{}; {:?}",
            match first_divergence {
                None => format!("all {} tokens identical", want.len()),
                Some(k) => format!("first differs at step {k}"),
            },
            want.len(),
            model.decode(&got, true).unwrap()
        );
        out.push(Agreement { logits: d, first_divergence, teacher_forced, steps: want.len() });
    }
    out
}

fn load(path: &std::path::Path) -> Model {
    let m = Model::load(path, &LoadParams::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!(
        "{}: loaded in {:.2} s, {:.1} MiB of weights, {} ({}); {:?}",
        path.display(),
        m.info().load_seconds,
        m.info().weight_bytes as f64 / (1 << 20) as f64,
        m.info().tokenizer,
        m.info().chat_template,
        m.info().conversions
    );
    m
}

#[test]
fn smollm2_q4_1_gguf_matches_its_conversion_exactly() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let model = load(&gguf("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(model.info().format, "gguf");
    assert_eq!(model.info().architecture, "llama");
    assert_eq!(model.info().chat_template, "gguf:tokenizer.chat_template");
    assert!(model.info().conversions.iter().all(|c| c.exact), "{:?}", model.info().conversions);
    assert!(model
        .info()
        .conversions
        .iter()
        .any(|c| c.source == "Q4_1" && c.became == "affine 4-bit, group 32"));
    for (i, a) in compare(&model, &dir, "smollm2 gguf").iter().enumerate() {
        assert!(a.logits <= TOL, "prompt {i}: logits differ by {}", a.logits);
        assert_eq!(a.first_divergence, None, "prompt {i}: greedy tokens");
    }
}

#[test]
fn gemma3_q4_k_m_gguf_agrees_with_its_conversion() {
    let Some(dir) = folder("gemma3-270m") else { return };
    let model = load(&gguf("gemma-3-270m-q4_k_m.gguf"));
    assert_eq!(model.info().architecture, "gemma3");
    let q6 = model.info().conversions.iter().find(|c| c.source == "Q6_K").expect("the file has Q6_K tensors");
    assert!(!q6.exact && q6.became == "affine 8-bit, group 32");
    let got = compare(&model, &dir, "gemma3 gguf");
    let (agree, steps) = got.iter().fold((0, 0), |(a, s), g| (a + g.teacher_forced, s + g.steps));
    eprintln!("gemma3 gguf: teacher-forced top-1 agreement {agree}/{steps}");
    // The Q6_K tensors (the embedding and head among them) are re-quantized at 8 bits.
    for (i, a) in got.iter().enumerate() {
        assert!(
            a.first_divergence.is_none_or(|k| k >= 8),
            "prompt {i}: greedy differs at step {:?}",
            a.first_divergence
        );
    }
    assert!(agree * 100 >= steps * 95, "teacher-forced agreement {agree}/{steps} is below 95%");
}

#[test]
fn cli_chats_with_a_gguf_file() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let r = json(&dir.join("reference.json"));
    let p = &r["prompts"][0];
    let msgs = p["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    let want = ids(&p["greedy_ids"]);
    let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["generate", "--model", gguf("SmolLM2-135M-Instruct.Q4_1.gguf").to_str().unwrap()])
        .args(["--chat", "--prompt", msgs[0]["content"].as_str().unwrap(), "--max-tokens", "16", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got = ids(&j["tokens"]);
    assert_eq!(got, want[..got.len()], "the reference continuation");
    assert_eq!(ids(&j["prompt_tokens"]), ids(&p["prompt_ids"]));
    eprintln!("lmx generate on the GGUF file: {:?}", j["text"]);
    assert!(j["text"].as_str().unwrap().contains("Paris"), "{}", j["text"]);

    let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["info", "--model", gguf("SmolLM2-135M-Instruct.Q4_1.gguf").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["architecture"], "llama");
    assert!(j["conversions"].as_array().unwrap().iter().any(|c| c["source"] == "Q4_1"));
}

/// The SmolLM2 file with `edit` applied, in a temporary folder.
fn edited(tag: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (TempDir, std::path::PathBuf) {
    let mut bytes = std::fs::read(gguf("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    edit(&mut bytes);
    let dir = TempDir::new(tag);
    let path = dir.0.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Where `needle` (a GGUF string: length then bytes) ends in `bytes`.
fn after_string(bytes: &[u8], needle: &str) -> usize {
    let mut pat = (needle.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(needle.as_bytes());
    bytes.windows(pat.len()).position(|w| w == pat.as_slice()).unwrap() + pat.len()
}

#[test]
fn damaged_and_unsupported_gguf_files_are_clear_errors() {
    if folder("smollm2-135m-instruct").is_none() {
        return;
    }
    let load = |path: &std::path::Path| Model::load(path, &LoadParams::default()).err().expect("an error");

    // Cut short: the tensor data ends before the directory says.
    let (_d, path) = edited("gguf-short", |b| b.truncate(b.len() / 2));
    let e = load(&path);
    assert_eq!(e.kind, lmx::ErrorKind::Format, "{e}");
    assert!(e.message.contains(&path.display().to_string()), "{e}");

    // Not GGUF at all, though named so.
    let (_d, path) = edited("gguf-magic", |b| b[..4].copy_from_slice(b"GGML"));
    let e = load(&path);
    assert_eq!(e.kind, lmx::ErrorKind::Format, "{e}");

    // An architecture liblmx does not run.
    let (_d, path) = edited("gguf-arch", |b| {
        let at = after_string(b, "general.architecture") + 4 + 8;
        assert_eq!(&b[at..at + 5], b"llama");
        b[at..at + 5].copy_from_slice(b"mamba");
    });
    let e = load(&path);
    assert_eq!(e.kind, lmx::ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("\"mamba\""), "{e}");

    // A tensor type liblmx does not convert: a float32 norm relabelled int32 (same layout).
    let (_d, path) = edited("gguf-type", |b| {
        let at = after_string(b, "blk.0.attn_norm.weight");
        let dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let ty = at + 4 + 8 * dims;
        assert_eq!(u32::from_le_bytes(b[ty..ty + 4].try_into().unwrap()), 0, "F32");
        b[ty..ty + 4].copy_from_slice(&26u32.to_le_bytes());
    });
    let e = load(&path);
    assert_eq!(e.kind, lmx::ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("blk.0.attn_norm.weight") && e.message.contains("I32"), "{e}");

    // The model loads and runs after all that.
    let m = Model::load(&gguf("SmolLM2-135M-Instruct.Q4_1.gguf"), &LoadParams::default()).unwrap();
    assert!(!m.encode("Hello", true).unwrap().is_empty());
}
