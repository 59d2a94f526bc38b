//! LoRA adapters and training against mlx-lm 0.32.2 (tests/fixtures/lora, made by
//! scripts/make_lora_refs.py): the data pipeline gives mlx-lm's batch, the loss and adapter
//! gradients of a batch equal mlx-lm's, 20 Adam steps follow mlx-lm's loss curve, and the
//! adapter mlx-lm trained gives mlx-lm's logits here. Dense, 4-bit and Gemma 3 bases.

mod common;

use std::sync::Arc;

use common::*;
use lmx::engine::train::{TrainParams, Trainer};
use lmx::engine::train_data::{load_jsonl, make_batch, Batch, Example};
use lmx::engine::{GenerateParams, Session};
use lmx::mlx::{ops, Array, Dtype};
use lmx::model::nn::lora::{Lora, LoraWeights};
use lmx::model::{KvCache, LoadParams, Model};

const CASES: [&str; 4] = ["qwen3_all", "qwen3_chat", "llama_q4_last", "gemma3_all"];

struct Case {
    dir: std::path::PathBuf,
    r: serde_json::Value,
    model: Arc<Model>,
}

fn case(name: &str) -> Case {
    let dir = fixtures().join("lora").join(name);
    let r = json(&dir.join("reference.json"));
    let model =
        Model::load(&fixtures().join(r["fixture"].as_str().unwrap()), &LoadParams::default()).unwrap();
    Case { dir, r, model: Arc::new(model) }
}

fn params(c: &Case, init: &LoraWeights) -> TrainParams {
    TrainParams {
        lora: init.config().clone(),
        learning_rate: c.r["learning_rate"].as_f64().unwrap() as f32,
        batch_size: c.r["batch_size"].as_u64().unwrap() as u32,
        max_seq_length: c.r["max_seq_length"].as_u64().unwrap() as u32,
        ..TrainParams::default()
    }
}

/// The reference runs' max_seq_length.
fn max_len(c: &Case) -> usize {
    c.r["max_seq_length"].as_u64().unwrap() as usize
}

/// The case's training rows, read as its reference run read them.
fn rows(c: &Case) -> Vec<Example> {
    load_jsonl(&c.dir.join("train.jsonl"), &c.model, c.r["mask_prompt"].as_bool().unwrap(), max_len(c))
        .unwrap()
}

fn floats(a: &Array) -> Vec<f32> {
    ops::astype(a, Dtype::F32).unwrap().to_f32_vec().unwrap()
}

/// Largest difference relative to the largest magnitude of `want`.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    max_abs_diff(got, want) / scale
}

#[test]
fn the_data_pipeline_makes_mlx_lms_batch() {
    for name in CASES {
        let c = case(name);
        let data = rows(&c);
        let b = make_batch(data.iter(), 128);
        let want: Vec<Vec<i32>> = serde_json::from_value(c.r["batch_tokens"].clone()).unwrap();
        let spans: Vec<(i32, i32)> = serde_json::from_value::<Vec<[i32; 2]>>(c.r["batch_lengths"].clone())
            .unwrap()
            .into_iter()
            .map(|[a, b]| (a, b))
            .collect();
        // mlx-lm sorts rows by length; the batch is the same set of rows.
        let mut ours: Vec<(Vec<i32>, (i32, i32))> =
            b.tokens.chunks(b.width).map(|r| r.to_vec()).zip(b.spans.clone()).collect();
        let mut theirs: Vec<(Vec<i32>, (i32, i32))> = want.into_iter().zip(spans).collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}: rows, padding, loss spans");
    }
}

fn reference_batch(c: &Case) -> Batch {
    let rows: Vec<Vec<i32>> = serde_json::from_value(c.r["batch_tokens"].clone()).unwrap();
    let spans: Vec<[i32; 2]> = serde_json::from_value(c.r["batch_lengths"].clone()).unwrap();
    Batch {
        rows: rows.len(),
        width: rows[0].len(),
        tokens: rows.concat(),
        spans: spans.into_iter().map(|[a, b]| (a, b)).collect(),
    }
}

#[test]
fn loss_and_gradients_equal_mlx_lms() {
    for name in CASES {
        let c = case(name);
        let init = LoraWeights::load(&c.dir.join("init"), c.model.spec()).unwrap();
        let data = rows(&c);
        let batch = reference_batch(&c);
        let want = tensors(&c.dir.join("grads.safetensors"));
        for checkpoint in [false, true] {
            let p = TrainParams { grad_checkpoint: checkpoint, ..params(&c, &init) };
            let t = Trainer::new(c.model.clone(), p, data.clone(), Some(init.clone())).unwrap();
            let (loss, ntoks, grads) = t.gradients(&batch).unwrap();
            let want_loss = c.r["first_loss"].as_f64().unwrap() as f32;
            assert!(
                (loss - want_loss).abs() <= 1e-4 * want_loss.abs(),
                "{name}: loss {loss} vs mlx-lm {want_loss}"
            );
            assert_eq!(ntoks, c.r["first_ntoks"].as_u64().unwrap(), "{name}: tokens in the loss");
            let named = t.weights().named();
            assert_eq!(named.len(), want.len(), "{name}: adapter arrays");
            let mut worst = 0f32;
            for ((n, _), g) in named.iter().zip(&grads) {
                let w = want.get(n).unwrap_or_else(|| panic!("{name}: mlx-lm has no gradient for {n}"));
                let d = rel(&floats(g), &floats(w));
                worst = worst.max(d);
                assert!(
                    d < 1e-3,
                    "{name} {n} (checkpoint {checkpoint}): gradient differs by {d:.2e} of its largest value"
                );
            }
            eprintln!("{name} (checkpoint {checkpoint}): loss {loss:.5} vs {want_loss:.5}, {} gradients within {worst:.1e}", grads.len());
        }
    }
}

#[test]
fn twenty_steps_follow_mlx_lms_loss_curve() {
    for name in CASES {
        let c = case(name);
        let init = LoraWeights::load(&c.dir.join("init"), c.model.spec()).unwrap();
        let data = rows(&c);
        let mut t = Trainer::new(c.model.clone(), params(&c, &init), data, Some(init)).unwrap();
        let want: Vec<f32> = serde_json::from_value(c.r["losses"].clone()).unwrap();
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(t.step().unwrap().loss);
        }
        let worst =
            got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0f32, f32::max);
        eprintln!(
            "{name}: losses {:.4} -> {:.4} (mlx-lm {:.4} -> {:.4}), worst relative difference {worst:.1e}",
            got[0], got[19], want[0], want[19]
        );
        assert!(worst < 1e-3, "{name}: loss curve {got:?}\nmlx-lm {want:?}");
        assert!(got[19] < got[0] * 0.5, "{name}: the loss did not fall");
    }
}

#[test]
fn an_adapter_mlx_lm_trained_gives_mlx_lms_logits() {
    for name in CASES {
        let c = case(name);
        let w = LoraWeights::load(&c.dir.join("trained"), c.model.spec()).unwrap();
        let ids: Vec<i32> = serde_json::from_value(c.r["prompt_ids"].clone()).unwrap();
        let lora = Lora { weights: &w, scale: w.config().scale, dropout: 0.0, seed: 0 };
        let mut cache = KvCache::new(c.model.spec());
        let x = Array::from_slice(&ids, &[1, ids.len() as i32]).unwrap();
        let got = floats(&c.model.transformer().forward_last_with(&x, &mut cache, Some(&lora)).unwrap());
        let want = floats(&tensors(&c.dir.join("logits.safetensors"))["last_logits"]);
        let d = max_abs_diff(&got, &want);
        eprintln!("{name}: logits with mlx-lm's trained adapter within {d:.1e}");
        assert!(d < 1e-3, "{name}: {d}");
        // Scale 0 is the base model.
        let off = Lora { scale: 0.0, ..lora };
        let mut cache = KvCache::new(c.model.spec());
        let base = floats(&c.model.transformer().forward_last(&x, &mut cache, None).unwrap());
        let mut cache = KvCache::new(c.model.spec());
        let zero = floats(&c.model.transformer().forward_last_with(&x, &mut cache, Some(&off)).unwrap());
        assert!(max_abs_diff(&base, &zero) < 1e-5, "{name}: scale 0");
    }
}

#[test]
fn an_adapter_liblmx_trained_gives_its_logits_in_mlx_lm() {
    let Some(python) = reference_python() else { return };
    for name in ["qwen3_all", "llama_q4_last", "gemma3_all"] {
        let c = case(name);
        let init = LoraWeights::load(&c.dir.join("init"), c.model.spec()).unwrap();
        let data = load_jsonl(&c.dir.join("train.jsonl"), &c.model, false, max_len(&c)).unwrap();
        let mut t = Trainer::new(c.model.clone(), params(&c, &init), data, Some(init)).unwrap();
        for _ in 0..5 {
            t.step().unwrap();
        }
        let out = TempDir::new("lora-interop");
        t.save(&out.0).unwrap();
        // Saved and loaded back here: the same weights.
        let back = LoraWeights::load(&out.0, c.model.spec()).unwrap();
        let ids: Vec<i32> = serde_json::from_value(c.r["prompt_ids"].clone()).unwrap();
        let x = Array::from_slice(&ids, &[1, ids.len() as i32]).unwrap();
        let logits = |w: &LoraWeights| {
            let lora = Lora { weights: w, scale: w.config().scale, dropout: 0.0, seed: 0 };
            let mut cache = KvCache::new(c.model.spec());
            floats(&c.model.transformer().forward_last_with(&x, &mut cache, Some(&lora)).unwrap())
        };
        let ours = logits(t.weights());
        assert_eq!(ours, logits(&back), "{name}: saved and reloaded adapter");
        let o = std::process::Command::new(&python)
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lora_logits.py"))
            .arg(fixtures().join(c.r["fixture"].as_str().unwrap()))
            .arg(&out.0)
            .arg(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","))
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let theirs: Vec<f32> = serde_json::from_slice(&o.stdout).unwrap();
        let d = max_abs_diff(&ours, &theirs);
        eprintln!("{name}: mlx-lm with liblmx's adapter: logits within {d:.1e}");
        assert!(d < 1e-3, "{name}: {d}");
    }
}

#[test]
fn bad_adapters_and_parameters_are_clear_errors() {
    let c = case("qwen3_all");
    let spec = c.model.spec();
    // The base model's greedy continuation before the refused adapters and trainers below.
    let prompt: Vec<u32> = serde_json::from_value(c.r["prompt_ids"].clone()).unwrap();
    let greedy = || {
        let p = GenerateParams { max_tokens: 16, ignore_eos: true, ..Default::default() };
        Session::new(c.model.clone()).unwrap().generate(&prompt, &p, |_| true).unwrap().tokens
    };
    let before = greedy();
    assert_eq!(before.len(), 16);
    // An adapter for another model: the shapes do not fit.
    let llama = Model::load(&fixtures().join("llama_tied"), &LoadParams::default()).unwrap();
    let e = LoraWeights::load(&c.dir.join("init"), llama.spec()).err().unwrap();
    assert!(e.message.contains("does not fit") && e.message.contains("model.layers."), "{e}");
    let qwen_adapter = LoraWeights::load(&c.dir.join("init"), spec).unwrap();
    assert!(qwen_adapter.check(llama.spec()).is_err());
    // Missing folder, rank 0, NaN learning rate, a malformed row.
    assert_eq!(
        LoraWeights::load(std::path::Path::new("/no/such"), spec).err().unwrap().kind,
        lmx::ErrorKind::NotFound
    );
    let data = load_jsonl(&c.dir.join("train.jsonl"), &c.model, false, max_len(&c)).unwrap();
    let mut p = TrainParams { batch_size: 4, ..TrainParams::default() };
    p.lora.num_layers = 2;
    p.lora.rank = 0;
    let e = Trainer::new(c.model.clone(), p.clone(), data.clone(), None).err().unwrap();
    assert!(e.message.contains("rank 0"), "{e}");
    p.lora.rank = 4;
    p.learning_rate = f32::NAN;
    let e = Trainer::new(c.model.clone(), p.clone(), data.clone(), None).err().unwrap();
    assert!(e.message.contains("learning rate NaN"), "{e}");
    p.learning_rate = 1e-3;
    p.batch_size = 5;
    let e = Trainer::new(c.model.clone(), p.clone(), data.clone(), None).err().unwrap();
    assert!(e.message.contains("fewer than the batch size"), "{e}");
    let bad = TempDir::new("lora-bad");
    let f = bad.0.join("bad.jsonl");
    std::fs::write(&f, "{\"text\": \"ok\"}\n\n{\"messages\": [{\"role\": \"user\"}]}\n").unwrap();
    let e = load_jsonl(&f, &c.model, false, max_len(&c)).err().unwrap();
    assert!(e.message.contains("row 3") && e.message.contains("messages"), "{e}");
    std::fs::write(&f, "{\"prompt\": \"a\"}\n").unwrap();
    assert!(load_jsonl(&f, &c.model, false, max_len(&c)).err().unwrap().message.contains("row 1"));
    // The model still generates the same afterwards.
    assert_eq!(greedy(), before, "the greedy continuation changed after the refused adapters and trainers");
}

#[test]
fn bfloat16_training_stays_finite_and_learns() {
    let c = case("qwen3_all");
    let bf16 = Arc::new(
        Model::load(
            &fixtures().join("qwen3"),
            &LoadParams { dtype: Some(Dtype::BF16), ..Default::default() },
        )
        .unwrap(),
    );
    let init = LoraWeights::load(&c.dir.join("init"), bf16.spec()).unwrap();
    let data = load_jsonl(&c.dir.join("train.jsonl"), &bf16, false, max_len(&c)).unwrap();
    let mut t = Trainer::new(bf16, params(&c, &init), data, Some(init)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..20 {
        losses.push(t.step().unwrap().loss);
    }
    eprintln!("bfloat16: losses {:.3} -> {:.3}", losses[0], losses[19]);
    assert!(losses.iter().all(|l| l.is_finite()) && losses[19] < losses[0] / 2.0, "{losses:?}");
    // Adapter weights and optimizer state stay float32.
    assert!(t.weights().arrays().iter().all(|a| a.dtype().unwrap() == Dtype::F32));
}
