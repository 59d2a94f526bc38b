//! The `lmx` command-line tool, run as a user would.

mod common;

use std::process::Command;

use common::*;

fn lmx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmx")).args(args).output().expect("lmx runs")
}

#[test]
fn generate_json_equals_the_reference_continuation() {
    for case in ["llama_tied", "qwen3", "gemma3_q4"] {
        let dir = fixtures().join(case);
        let r = json(&dir.join("reference.json"));
        let src = if r["hf"].is_null() { "mlx_lm" } else { "hf" };
        let want = ids(&r[src]["greedy_ids"]);
        let n = want.len().to_string();
        let o = lmx(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            r["prompt_text"].as_str().unwrap(),
            "--max-tokens",
            &n,
            "--ignore-eos",
            "--json",
        ]);
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ids(&j["tokens"]), want, "{case}");
        assert_eq!(ids(&j["prompt_tokens"]), ids(&r["prompt_ids"]), "{case}");
        assert_eq!(j["finish_reason"], "length");
        assert!(j["metrics"]["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(j["text"].is_string());
    }
}

#[test]
fn generation_needs_no_cxx_compiler() {
    // On the CPU, MLX builds fused kernels with g++ at run time when it finds one; without it
    // (and without kernels cached by an earlier process) the same tokens come from plain ops.
    let dir = fixtures().join("gemma3");
    let r = json(&dir.join("reference.json"));
    let src = if r["hf"].is_null() { "mlx_lm" } else { "hf" };
    let want = ids(&r[src]["greedy_ids"]);
    let tmp = TempDir::new("nocxx");
    let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["generate", "--model", dir.to_str().unwrap(), "--prompt"])
        .arg(r["prompt_text"].as_str().unwrap())
        .args(["--max-tokens", &want.len().to_string(), "--ignore-eos", "--json"])
        .env("PATH", &tmp.0)
        .env("TMPDIR", &tmp.0)
        .output()
        .expect("lmx runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids(&j["tokens"]), want);
}

#[test]
fn generate_streams_text_and_prints_metrics() {
    let dir = fixtures().join("qwen3");
    let o = lmx(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--chat",
        "--max-tokens",
        "5",
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prompt tokens") && err.contains("decode") && err.contains("finish:"), "{err}");
}

#[test]
fn chat_keeps_the_conversation_and_the_cache() {
    let dir = fixtures().join("qwen3");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["chat", "--model", dir.to_str().unwrap(), "--max-tokens", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.as_mut().unwrap().write_all(b"Hello there\nAnd again\n").unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("prompt tokens")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    // The second turn computes fewer tokens than its prompt holds: the cache was reused.
    let nums = |l: &str| -> (usize, usize) {
        let a: usize = l.trim_start_matches(['[', '>', ' ']).split(' ').next().unwrap().parse().unwrap();
        let b: usize = l.split('(').nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        (a, b)
    };
    let (total, computed) = nums(lines[1]);
    assert!(computed < total, "{}", lines[1]);
}

#[test]
fn info_and_errors() {
    let dir = fixtures().join("gemma3_q4");
    let o = lmx(&["info", "--model", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["quant_bits"], 4);
    assert_eq!(j["quant_group_size"], 32);
    let o = lmx(&["generate", "--model", "/no/such/dir", "--prompt", "x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/dir"));
    let o = lmx(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "x", "--temperature", "-1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("temperature"));
    let o = lmx(&["frobnicate"]);
    assert!(!o.status.success());
}

#[test]
fn structured_output_and_tool_calls_from_the_command_line() {
    let model = fixtures().join("qwen3");
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("point.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","properties":{"x":{"type":"integer","minimum":0,"maximum":9},"y":{"type":"integer","minimum":0,"maximum":9}},"required":["x","y"],"additionalProperties":false}"#,
    )
    .unwrap();
    let o = lmx(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--prompt",
        "a point",
        "--json-schema",
        schema.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(j["text"].as_str().unwrap()).unwrap();
    assert!(v["x"].is_i64() && v["y"].is_i64(), "{v}");

    let o = lmx(&["generate", "--model", m, "--prompt", "pick", "--choices", "left,right", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(["left", "right"].contains(&j["text"].as_str().unwrap()), "{j}");

    let tools = dir.path().join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type":"function","function":{"name":"move","parameters":{"type":"object","properties":{"steps":{"type":"integer","minimum":1,"maximum":5}},"required":["steps"],"additionalProperties":false}}}]"#,
    )
    .unwrap();
    let o = lmx(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--prompt",
        "go",
        "--tools",
        tools.to_str().unwrap(),
        "--tool-choice",
        "required",
        "--max-tokens",
        "200",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let call: serde_json::Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no call in {out:?}"));
    assert_eq!(call["function"]["name"], "move");
    assert!(call["function"]["arguments"]["steps"].is_i64(), "{call}");

    // Bad input: named, and nothing generated.
    let o = lmx(&["generate", "--model", m, "--prompt", "x", "--regex", "("]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("regex: "), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lmx(&["generate", "--model", m, "--prompt", "x", "--tools", tools.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("need --chat"));
}
