//! `lmx generate` and `lmx chat` with session files (--save-cache, --load-cache) and a
//! quantized KV cache (--kv-bits, --kv-group-size, --quantized-kv-start), run as a user would.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn lmx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmx")).args(args).output().expect("lmx runs")
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Runs `lmx` and expects it to fail with a message containing each of `needles`.
fn fails(args: &[&str], needles: &[&str]) {
    let o = lmx(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
}

fn dir(case: &str) -> String {
    fixtures().join(case).to_str().unwrap().to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lmx generate --json` (greedy, EOS ignored) with `extra` options; the JSON object.
fn generate(case: &str, prompt: &str, max_tokens: &str, extra: &[&str]) -> serde_json::Value {
    let m = dir(case);
    let mut args = vec![
        "generate",
        "--model",
        &m,
        "--prompt",
        prompt,
        "--max-tokens",
        max_tokens,
        "--ignore-eos",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = lmx(&args);
    ok(&o, &format!("{case} {args:?}"));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn computed(j: &serde_json::Value) -> (u64, u64) {
    let m = &j["metrics"];
    (m["prompt_tokens"].as_u64().unwrap(), m["prefill_tokens"].as_u64().unwrap())
}

const PREFIX: &str = "The keeper counted 37 grey ships, then wrote a letter.";
const FULL: &str = "The keeper counted 37 grey ships, then wrote a letter. It said the sea was calm";

#[test]
fn a_saved_generation_continues_as_one_run() {
    for case in ["qwen3", "gemma3", "qwen3_q4"] {
        let t = TempDir::new("cli-session-gen");
        let f = t.0.join("a.safetensors");
        let a = generate(case, PREFIX, "5", &["--save-cache", path(&f)]);
        assert_eq!(ids(&a["tokens"]).len(), 5, "{case}");
        let fresh = generate(case, FULL, "12", &[]);
        let resumed = generate(case, FULL, "12", &["--load-cache", path(&f)]);
        assert_eq!(ids(&resumed["tokens"]), ids(&fresh["tokens"]), "{case}");
        assert_eq!(resumed["prompt_tokens"], fresh["prompt_tokens"], "{case}");
        let (total, done) = computed(&resumed);
        assert_eq!(computed(&fresh), (total, total), "{case}");
        if case != "gemma3" {
            // gemma3's sliding windows cannot be rewound past the generated tokens the
            // longer prompt does not share: its cache is recomputed (same tokens).
            assert!(done < total, "{case}: {done} of {total} computed");
        }
    }
}

#[test]
fn max_tokens_0_saves_the_prompt_alone() {
    for case in ["qwen3", "gemma3"] {
        let t = TempDir::new("cli-session-prefill");
        let f = t.0.join("doc.safetensors");
        let a = generate(case, PREFIX, "0", &["--save-cache", path(&f)]);
        assert_eq!(ids(&a["tokens"]).len(), 0, "{case}");
        assert_eq!(a["text"], "");
        assert_eq!(a["metrics"]["generated_tokens"], 0);
        let saved = ids(&a["prompt_tokens"]).len() as u64;
        let fresh = generate(case, FULL, "10", &[]);
        let resumed = generate(case, FULL, "10", &["--load-cache", path(&f)]);
        assert_eq!(ids(&resumed["tokens"]), ids(&fresh["tokens"]), "{case}");
        let (total, done) = computed(&resumed);
        // All of the prefix's tokens but where the longer text tokenizes differently.
        assert!(
            done < total && total - done + 2 >= saved && done <= total - saved + 2,
            "{case}: {done} of {total}"
        );
        // The same prompt again computes only its last token (gemma3's sliding windows
        // cannot be rewound by that token: it computes all of them, the same tokens come).
        let again = generate(case, PREFIX, "3", &["--load-cache", path(&f)]);
        assert_eq!(ids(&again["tokens"]), ids(&generate(case, PREFIX, "3", &[])["tokens"]), "{case}");
        let want = if case == "gemma3" { saved } else { 1 };
        assert_eq!(computed(&again), (saved, want), "{case}");
    }
    let m = dir("qwen3");
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--max-tokens", "0"],
        &["--max-tokens 0", "--save-cache"],
    );
}

#[test]
fn the_metrics_line_counts_cached_tokens() {
    let t = TempDir::new("cli-session-line");
    let f = t.0.join("a.safetensors");
    let m = dir("qwen3");
    let o =
        lmx(&["generate", "--model", &m, "--prompt", PREFIX, "--max-tokens", "0", "--save-cache", path(&f)]);
    ok(&o, "save");
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0 generated") && err.contains("saved") && err.contains(path(&f)), "{err}");
    let o =
        lmx(&["generate", "--model", &m, "--prompt", FULL, "--max-tokens", "3", "--load-cache", path(&f)]);
    ok(&o, "load");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("restored") && err.contains("cached)") && err.contains("saved by liblmx"), "{err}");
}

/// `lmx chat` on `case` fed `input`, with `extra` options: (stdout, stderr).
fn chat(case: &str, input: &str, extra: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["chat", "--model", &dir(case), "--max-tokens", "6", "--system", "Be brief."])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(input.as_bytes()).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    ok(&o, &format!("chat {case} {extra:?}"));
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// (prompt tokens, computed) of each metrics line.
fn turns(err: &str) -> Vec<(usize, usize)> {
    err.lines()
        .filter(|l| l.contains("prompt tokens"))
        .map(|l| {
            let a = l.trim_start_matches(['[', '>', ' ']).split(' ').next().unwrap().parse().unwrap();
            let b = l.split('(').nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            (a, b)
        })
        .collect()
}

#[test]
fn a_saved_chat_resumes_as_one_conversation() {
    for case in ["qwen3", "gemma3"] {
        let t = TempDir::new("cli-session-chat");
        let f = t.0.join("chat.safetensors");
        let (whole, err) = chat(case, "Hello there\nAnd again\nOnce more\n", &[]);
        let one = turns(&err);
        assert_eq!(one.len(), 3, "{err}");
        let (first, _) = chat(case, "Hello there\n", &["--save-cache", path(&f)]);
        let (second, err2) = chat(case, "And again\n", &["--load-cache", path(&f), "--save-cache", path(&f)]);
        assert!(err2.contains("resuming the conversation (3 messages)"), "{err2}");
        let (third, err3) = chat(case, "Once more\n", &["--load-cache", path(&f)]);
        assert_eq!(format!("{first}{second}{third}"), whole, "{case}");
        // Each resumed turn computes what the same turn computed in one process.
        assert_eq!(turns(&err2), vec![one[1]], "{case}: {err2}");
        assert_eq!(turns(&err3), vec![one[2]], "{case}: {err3}");
        if case == "qwen3" {
            assert!(one[1].1 < one[1].0, "{err}");
        }
        // Another system message is refused; none keeps the saved one.
        let m = dir(case);
        let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
            .args(["chat", "--model", &m, "--system", "Be long.", "--load-cache", path(&f)])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("--system"));
        // A chat that says nothing saves nothing.
        let g = t.0.join("empty.safetensors");
        let (_, err) = chat(case, "", &["--save-cache", path(&g)]);
        assert!(err.contains("nothing to save") && !g.exists(), "{err}");
    }
}

#[test]
fn a_generate_cache_is_not_a_conversation() {
    let t = TempDir::new("cli-session-nochat");
    let f = t.0.join("a.safetensors");
    generate("qwen3", PREFIX, "0", &["--save-cache", path(&f)]);
    let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["chat", "--model", &dir("qwen3"), "--load-cache", path(&f)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no conversation") && err.contains(path(&f)), "{err}");
}

#[test]
fn quantized_kv_cache() {
    let t = TempDir::new("cli-session-kv");
    let f = t.0.join("q.safetensors");
    let kv = ["--kv-bits", "8", "--kv-group-size", "32"];
    let mut save = kv.to_vec();
    save.extend(["--save-cache", path(&f)]);
    let a = generate("qwen3", PREFIX, "4", &save);
    assert_eq!(ids(&a["tokens"]).len(), 4);
    let mut load = kv.to_vec();
    load.extend(["--load-cache", path(&f)]);
    // (Not the tokens of a fresh run: that one attends to the whole prompt in float, the
    // resumed one to the quantized prefix.)
    let resumed = generate("qwen3", FULL, "8", &load);
    assert_eq!(ids(&resumed["tokens"]).len(), 8);
    let (total, done) = computed(&resumed);
    assert!(done < total);
    // A quantized file keeps its quantization with no options, and refuses others.
    let plain = generate("qwen3", FULL, "8", &["--load-cache", path(&f)]);
    assert_eq!(ids(&plain["tokens"]), ids(&resumed["tokens"]));
    let m = dir("qwen3");
    fails(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--load-cache",
            path(&f),
            "--kv-bits",
            "4",
            "--kv-group-size",
            "32",
        ],
        &["--load-cache", "8 bits", "4 bits"],
    );
    // Quantized from the 10th position on.
    let late = generate(
        "qwen3",
        FULL,
        "8",
        &["--kv-bits", "4", "--kv-group-size", "32", "--quantized-kv-start", "10"],
    );
    assert_eq!(ids(&late["tokens"]).len(), 8);
    // gemma3's head dimension is 16: no group of 32 fits.
    let g = dir("gemma3");
    fails(
        &["generate", "--model", &g, "--prompt", "x", "--kv-bits", "8", "--kv-group-size", "32"],
        &["--kv-group-size 32"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--kv-bits", "3"],
        &["invalid value '3' for '--kv-bits <BITS>'"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--kv-bits", "8", "--kv-group-size", "48"],
        &["invalid value '48' for '--kv-group-size <SIZE>'"],
    );
    fails(&["generate", "--model", &m, "--prompt", "x", "--kv-bits", "eight"], &["--kv-bits"]);
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--kv-group-size", "32"],
        &["--kv-group-size needs --kv-bits"],
    );
    fails(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--kv-bits",
            "8",
            "--kv-group-size",
            "32",
            "--quantized-kv-start",
            "-1",
        ],
        &["invalid value '-1' for '--quantized-kv-start <N>'"],
    );
    let o = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["chat", "--model", &m, "--kv-bits", "8", "--kv-group-size", "32", "--max-tokens", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"Hello\n")?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&o, "chat --kv-bits 8");
    // A quantized chat resumes exactly as it goes on in one process.
    let c = t.0.join("chat.safetensors");
    let (whole, err) = chat("qwen3", "Hello there\nAnd again\n", &kv);
    let mut save = kv.to_vec();
    save.extend(["--save-cache", path(&c)]);
    let (first, _) = chat("qwen3", "Hello there\n", &save);
    let (second, err2) = chat("qwen3", "And again\n", &["--load-cache", path(&c)]);
    assert_eq!(format!("{first}{second}"), whole);
    assert_eq!(turns(&err2), vec![turns(&err)[1]], "{err2}");
    fails(&["chat", "--model", &g, "--kv-bits", "8", "--kv-group-size", "32"], &["--kv-group-size 32"]);
}

#[test]
fn bad_cache_files_are_named() {
    let t = TempDir::new("cli-session-bad");
    let m = dir("qwen3");
    let missing = t.0.join("missing.safetensors");
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--load-cache", path(&missing)],
        &["--load-cache", path(&missing)],
    );
    let corrupt = t.0.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"this is not a safetensors file").unwrap();
    fails(&["generate", "--model", &m, "--prompt", "x", "--load-cache", path(&corrupt)], &[path(&corrupt)]);
    let f = t.0.join("a.safetensors");
    generate("qwen3", PREFIX, "2", &["--save-cache", path(&f)]);
    // Truncated.
    let cut = t.0.join("cut.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(&["generate", "--model", &m, "--prompt", "x", "--load-cache", path(&cut)], &[path(&cut)]);
    // Saved for another model.
    for other in ["llama_tied", "qwen3_q4", "gemma3"] {
        let o = dir(other);
        fails(
            &["generate", "--model", &o, "--prompt", "x", "--load-cache", path(&f)],
            &[path(&f), "another model"],
        );
    }
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--save-cache", "/no/such/dir/a.safetensors"],
        &["--save-cache", "/no/such/dir"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--adapter", path(&t.0), "--save-cache", path(&f)],
        &["--save-cache", "--adapter"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--load-cache"],
        &["a value is required for '--load-cache <FILE>'"],
    );
    fails(&["chat", "--model", &m, "--max-tokens", "0"], &["--max-tokens"]);
}

#[test]
fn an_mlx_lm_cache_is_continued_after_its_positions() {
    let Some(python) = reference_python() else { return };
    let t = TempDir::new("cli-session-mlx-lm");
    for case in ["qwen3", "gemma3"] {
        let f = t.0.join(format!("{case}.safetensors"));
        let prefix = generate(case, PREFIX, "1", &[]);
        let csv = |v: &serde_json::Value| ids(v).iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prompt_cache.py");
        let py = |args: &[&str]| {
            let o = Command::new(&python).arg(&script).args(args).output().unwrap();
            ok(&o, &format!("prompt_cache.py {args:?}"));
            String::from_utf8(o.stdout).unwrap()
        };
        py(&["make", &dir(case), path(&f), &csv(&prefix["prompt_tokens"])]);
        let ours = generate(case, " It said the sea was calm", "10", &["--load-cache", path(&f)]);
        // The prompt is appended as it is (no BOS), all of it computed.
        let (total, done) = computed(&ours);
        assert_eq!(total, done, "{case}");
        assert_ne!(ids(&ours["prompt_tokens"])[0], ids(&prefix["prompt_tokens"])[0], "{case}: no BOS");
        let want: Vec<u32> = serde_json::from_str(&py(&[
            "continue",
            &dir(case),
            path(&f),
            &csv(&ours["prompt_tokens"]),
            "10",
        ]))
        .unwrap();
        assert_eq!(ids(&ours["tokens"]), want, "{case}: liblmx and mlx-lm continue mlx-lm's cache alike");
    }
}
