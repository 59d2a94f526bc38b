//! `lmx train` and `lmx generate --adapter`, run as a user would.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use common::*;

fn lmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmx")).args(args).output().expect("lmx runs")
}

/// `lmx generate --json` on `prompt` (greedy), as parsed JSON.
fn generate(model: &str, prompt: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["generate", "--model", model, "--prompt", prompt, "--json"];
    args.extend_from_slice(extra);
    let o = lmx(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The JSON lines of `lmx train --json`: the steps, then the validations.
fn json_lines(stdout: &[u8]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let all: Vec<serde_json::Value> =
        String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    all.into_iter().partition(|j| j.get("val_loss").is_none())
}

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";

#[test]
fn train_then_generate_with_the_adapter() {
    let model = fixtures().join("qwen3");
    let model = model.to_str().unwrap();
    let data = fixtures().join("lora/qwen3_all/train.jsonl");
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&data).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["text"], SENTENCE, "the fixture's first row");
    let out = TempDir::new("cli-train");
    let dir = out.0.join("adapter");
    let dir = dir.to_str().unwrap();
    let o = lmx(&[
        "train",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--adapter-out",
        dir,
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
    let (steps, vals) = json_lines(&o.stdout);
    assert_eq!(steps.len(), 30);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"], i as u64 + 1);
        assert_eq!(s["updated"], true);
        assert!(s["tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(s["peak_memory_bytes"].as_u64().unwrap() > 0);
    }
    let loss = |i: usize| steps[i]["loss"].as_f64().unwrap();
    assert!(loss(29) < loss(0) / 2.0, "{} -> {}", loss(0), loss(29));
    let val_steps: Vec<u64> = vals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(val_steps, [10, 20, 30], "validation every 10 updates");
    let val = |i: usize| vals[i]["val_loss"].as_f64().unwrap();
    assert!(val(0) < loss(0) && val(2) < val(0), "{} {} {}", loss(0), val(0), val(2));
    let dirp = std::path::Path::new(dir);
    assert!(dirp.join("adapters.safetensors").exists() && dirp.join("adapter_config.json").exists());
    let cfg = json(&dirp.join("adapter_config.json"));
    assert_eq!(cfg["num_layers"], 2);
    assert_eq!(cfg["lora_parameters"]["rank"], 4);

    // The adapter completes the training sentence, token for token, and then stops (the
    // training rows end with the end-of-sequence token).
    let prompt = "The quick brown";
    let whole = ids(&generate(model, SENTENCE, &["--max-tokens", "1"])["prompt_tokens"]);
    let head = ids(&generate(model, prompt, &["--max-tokens", "1"])["prompt_tokens"]);
    assert_eq!(whole[..head.len()], head[..], "the prompt's tokens begin the sentence's");
    let rest = &whole[head.len()..];
    let tuned = generate(model, prompt, &["--adapter", dir, "--max-tokens", "40"]);
    assert_eq!(ids(&tuned["tokens"]), rest);
    assert_eq!(tuned["text"], " fox jumps over the lazy dog.");
    assert_eq!(tuned["finish_reason"], "stop");

    // Scale 0 is the base model; another scale changes the output.
    let n = ["--max-tokens", "8", "--ignore-eos"];
    let base = ids(&generate(model, prompt, &n)["tokens"]);
    assert_ne!(base, rest[..8]);
    let off =
        ids(&generate(model, prompt, &[&n[..], &["--adapter", dir, "--adapter-scale", "0"]].concat())
            ["tokens"]);
    assert_eq!(off, base);

    // The streamed (non-JSON) output is the same text.
    let o = lmx(&["generate", "--model", model, "--adapter", dir, "--prompt", prompt, "--max-tokens", "40"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim_end(), " fox jumps over the lazy dog.");

    // Training resumes from the saved adapter: its first loss is the trained one, not the
    // base model's.
    let again = out.0.join("again");
    let o = lmx(&[
        "train",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--adapter-out",
        again.to_str().unwrap(),
        "--resume-adapter",
        dir,
        "--iters",
        "1",
        "--rank",
        "4",
        "--num-layers",
        "2",
        "--learning-rate",
        "1e-3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (steps, _) = json_lines(&o.stdout);
    let resumed = steps[0]["loss"].as_f64().unwrap();
    assert!(resumed < loss(0) / 10.0, "{resumed} vs {}", loss(0));
}

#[test]
fn progress_goes_to_stderr() {
    let model = fixtures().join("qwen3");
    let data = fixtures().join("lora/qwen3_all/train.jsonl");
    let t = TempDir::new("cli-train-progress");
    let dir = t.0.join("adapter");
    let o = lmx(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--valid",
        data.to_str().unwrap(),
        "--adapter-out",
        dir.to_str().unwrap(),
        "--iters",
        "4",
        "--steps-per-eval",
        "2",
        "--save-every",
        "2",
        "--num-layers",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in
        ["4/4 loss", "tok/s", "step 2: validation loss", "step 4: validation loss", "saved the adapter"]
    {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert!(dir.join("adapters.safetensors").exists());
}

#[test]
fn ctrl_c_stops_after_a_step_and_saves() {
    let model = fixtures().join("qwen3");
    let data = fixtures().join("lora/qwen3_all/train.jsonl");
    let t = TempDir::new("cli-train-sigint");
    let dir = t.0.join("adapter");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(["--adapter-out", dir.to_str().unwrap(), "--iters", "1000000", "--save-every", "0"])
        .args(["--num-layers", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lmx runs");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a step").unwrap();
    assert!(first.contains("\"step\":1"), "{first}");
    // SAFETY: kill() on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let last = lines.map(|l| l.unwrap()).last().unwrap_or(first);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("interrupted after"), "{err}");
    let step: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(step["step"].as_u64().unwrap() < 1000000);
    assert!(dir.join("adapters.safetensors").exists() && dir.join("adapter_config.json").exists());
    let j =
        generate(model.to_str().unwrap(), "The", &["--adapter", dir.to_str().unwrap(), "--max-tokens", "2"]);
    assert!(j["tokens"].is_array(), "the saved adapter loads");
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
    let a_file = t.0.join("a-file");
    std::fs::write(&a_file, "").unwrap();
    let out = t.0.join("out");
    let out = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--data", bad.to_str().unwrap(), "--batch-size", "1"], "row 3"),
        (vec!["--data", data, "--valid", bad.to_str().unwrap()], "--valid: "),
        (vec!["--data", data, "--rank", "0"], "invalid value '0' for '--rank <R>': must be at least 1"),
        (
            vec!["--data", data, "--learning-rate", "nan"],
            "invalid value 'nan' for '--learning-rate <RATE>': must be a positive number",
        ),
        (vec!["--data", data, "--learning-rate", "-1"], "invalid value '-1' for '--learning-rate <RATE>'"),
        (
            vec!["--data", data, "--learning-rate", "fast"],
            "invalid value 'fast' for '--learning-rate <RATE>': not a number",
        ),
        (
            vec!["--data", data, "--targets", "foo"],
            "invalid value 'foo' for '--targets <LIST>': unknown LoRA target \"foo\"",
        ),
        (
            vec!["--data", data, "--targets", ""],
            "invalid value '' for '--targets <LIST>': names no projection",
        ),
        (vec!["--data", data, "--dropout", "1.5"], "invalid value '1.5' for '--dropout <P>'"),
        (vec!["--data", data, "--iters", "0"], "invalid value '0' for '--iters <N>'"),
        (vec!["--data", data, "--dtype", "int8"], "invalid value 'int8' for '--dtype <DTYPE>'"),
        (vec!["--data", data, "--batch-size", "9"], "fewer than the batch size"),
        (vec!["--data", "/no/such.jsonl"], "--data /no/such.jsonl: no such file"),
        (vec!["--data", data, "--valid", "/no/such.jsonl"], "--valid /no/such.jsonl: no such file"),
        (vec!["--data", data, "--resume-adapter", "/no/such"], "--resume-adapter /no/such"),
        (vec!["--data", data, "--prompt", "hi"], "unexpected argument '--prompt' found"),
        (vec!["--data", data, "--adapter", out], "--resume-adapter DIR"),
        (vec!["--data", data, "--iters"], "a value is required for '--iters <N>'"),
        (vec!["--data", data], "required arguments were not provided:\n  --adapter-out <DIR>"),
    ] {
        let mut all = vec!["train", "--model", model];
        if !needle.contains("--adapter-out") {
            all.extend(["--adapter-out", out]);
        }
        all.extend(args);
        let o = lmx(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    assert!(!std::path::Path::new(out).exists(), "nothing saved after an error");
    let o = lmx(&["train", "--model", model, "--data", data, "--adapter-out", a_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a folder"));
    let o = lmx(&["generate", "--model", model, "--prompt", "x", "--adapter-scale", "2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--adapter-scale needs --adapter"));
    let o = lmx(&["generate", "--model", model, "--prompt", "x", "--rank", "2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("'--rank' is an option of 'lmx train'"));
    for cmd in [&["generate", "--prompt", "x"][..], &["chat"]] {
        let o = lmx(&[cmd, &["--model", model, "--adapter", "/no/such"]].concat());
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such"), "{cmd:?}");
    }
}
