//! `lmx train` and `lmx generate --adapter`, run as a user would.

mod common;

use std::process::Command;

use common::*;

fn lmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmx")).args(args).output().expect("lmx runs")
}

fn generate(model: &str, extra: &[&str]) -> Vec<u32> {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "The quick brown",
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = lmx(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    ids(&j["tokens"])
}

#[test]
fn train_then_generate_with_the_adapter() {
    let model = fixtures().join("qwen3");
    let model = model.to_str().unwrap();
    let data = fixtures().join("lora/qwen3_all/train.jsonl");
    let out = TempDir::new("cli-train");
    let dir = out.0.join("adapter");
    let o = lmx(&[
        "train",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--adapter-out",
        dir.to_str().unwrap(),
        "--iters",
        "30",
        "--batch-size",
        "4",
        "--learning-rate",
        "1e-3",
        "--rank",
        "4",
        "--num-layers",
        "2",
        "--valid",
        data.to_str().unwrap(),
        "--steps-per-eval",
        "10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let steps: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(steps.len(), 30);
    let loss = |i: usize| steps[i]["loss"].as_f64().unwrap();
    assert!(loss(29) < loss(0) / 2.0, "{} -> {}", loss(0), loss(29));
    assert_eq!(steps[29]["step"], 30);
    assert!(steps[9]["val_loss"].as_f64().unwrap() < loss(0), "validation every 10 updates");
    assert!(dir.join("adapters.safetensors").exists() && dir.join("adapter_config.json").exists());

    // The adapter completes the training sentence; scale 0 is the base model.
    let base = generate(model, &[]);
    let tuned = generate(model, &["--adapter", dir.to_str().unwrap()]);
    let o = lmx(&[
        "generate",
        "--model",
        model,
        "--adapter",
        dir.to_str().unwrap(),
        "--prompt",
        "The quick brown",
        "--max-tokens",
        "12",
        "--ignore-eos",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with(" fox jumps over"), "{text:?}");
    assert_ne!(base, tuned);
    assert_eq!(generate(model, &["--adapter", dir.to_str().unwrap(), "--adapter-scale", "0"]), base);
}

#[test]
fn bad_training_input_is_a_clear_error() {
    let model = fixtures().join("qwen3");
    let model = model.to_str().unwrap();
    let data = fixtures().join("lora/qwen3_all/train.jsonl");
    let data = data.to_str().unwrap();
    let t = TempDir::new("cli-train-bad");
    let bad = t.0.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": [3]}\n").unwrap();
    let out = t.0.join("out");
    let out = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--data", bad.to_str().unwrap(), "--batch-size", "1"], "row 3"),
        (vec!["--data", data, "--rank", "0"], "--rank 0"),
        (vec!["--data", data, "--learning-rate", "nan"], "learning rate NaN"),
        (vec!["--data", data, "--targets", "foo"], "\"foo\""),
        (vec!["--data", data, "--batch-size", "9"], "fewer than the batch size"),
        (vec!["--data", "/no/such.jsonl"], "/no/such.jsonl"),
    ] {
        let mut all = vec!["train", "--model", model, "--adapter-out", out];
        all.extend(args);
        let o = lmx(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    assert!(!std::path::Path::new(out).exists(), "nothing saved after an error");
    let o = lmx(&["generate", "--model", model, "--prompt", "x", "--adapter-scale", "2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--adapter-scale needs --adapter"));
    let o = lmx(&["generate", "--model", model, "--prompt", "x", "--rank", "2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("option of lmx train"));
}
