//! `lmx`'s command line itself, run as a user would: help, the options each subcommand takes
//! and refuses, suggestions, the version, completion scripts, exit statuses and Ctrl-C.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn lmx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmx")).args(args).output().expect("lmx runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `lmx` and expects a usage error (status 1, nothing on stdout) whose message contains
/// each of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let o = lmx(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o.stdout));
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in\n{err}");
    }
}

fn qwen3() -> String {
    fixtures().join("qwen3").to_str().unwrap().to_string()
}

/// The options `lmx <sub> --help` lists, each with its description: a line indented by 6
/// spaces (or "  -h, ") starts an option, the more indented lines after it describe it.
fn documented_options(help: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let option = line.strip_prefix("      --").map(|l| format!("--{l}")).or_else(|| {
            line.strip_prefix("  -")
                .filter(|l| l.as_bytes().get(2) == Some(&b' '))
                .map(|l| l[3..].to_string())
        });
        match option {
            Some(o) => {
                let name = o.split([' ', '=']).next().unwrap().to_string();
                // A short help puts the description on the option's line.
                let rest = o.split_once("  ").map(|(_, d)| d.trim().to_string()).unwrap_or_default();
                out.push((name, rest));
            }
            None if line.starts_with("  ") => {
                if let Some((_, d)) = out.last_mut() {
                    d.push_str(line.trim());
                }
            }
            None => {}
        }
    }
    out
}

const SAMPLING: &[&str] =
    &["--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--seed", "--stop"];
const ADAPTER: &[&str] = &["--adapter", "--adapter-scale"];
const STRUCTURED: &[&str] = &["--json-schema", "--json-object", "--regex", "--grammar", "--choices"];
const TOOLS: &[&str] =
    &["--tools", "--tool-choice", "--parallel-tool-calls", "--think", "--no-think", "--thinking-budget"];
const CACHE: &[&str] =
    &["--load-cache", "--save-cache", "--kv-bits", "--kv-group-size", "--quantized-kv-start"];

#[test]
fn help_documents_every_option_of_every_subcommand() {
    let generate =
        [
            &[
                "--model",
                "--prompt",
                "--chat",
                "--system",
                "--max-tokens",
                "--ignore-eos",
                "--json",
                "--help",
            ][..],
            SAMPLING,
            STRUCTURED,
            TOOLS,
            ADAPTER,
            CACHE,
        ]
        .concat();
    let chat =
        [&["--model", "--system", "--max-tokens", "--help"][..], SAMPLING, STRUCTURED, TOOLS, ADAPTER, CACHE]
            .concat();
    let train = [
        "--model",
        "--data",
        "--valid",
        "--adapter-out",
        "--resume-adapter",
        "--mask-prompt",
        "--dtype",
        "--json",
        "--iters",
        "--batch-size",
        "--learning-rate",
        "--warmup",
        "--cosine",
        "--min-learning-rate",
        "--weight-decay",
        "--grad-clip",
        "--grad-accumulation",
        "--grad-checkpoint",
        "--max-seq-length",
        "--seed",
        "--steps-per-eval",
        "--save-every",
        "--rank",
        "--scale",
        "--alpha",
        "--dropout",
        "--num-layers",
        "--targets",
        "--help",
    ];
    let cases: [(&str, &[&str]); 7] = [
        ("generate", &generate),
        ("chat", &chat),
        ("train", &train),
        ("info", &["--model", "--help"]),
        ("version", &["--help"]),
        ("device", &["--help"]),
        ("completions", &["--help"]),
    ];
    for (sub, want) in cases {
        for flag in ["--help", "-h"] {
            let o = lmx(&[sub, flag]);
            let help = text(&o.stdout);
            assert_eq!(o.status.code(), Some(0), "{sub} {flag}: {}", text(&o.stderr));
            assert!(o.stderr.is_empty(), "{sub} {flag}: {}", text(&o.stderr));
            assert!(help.contains(&format!("Usage: lmx {sub}")), "{sub} {flag}:\n{help}");
            let got = documented_options(&help);
            let names: BTreeSet<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, want.iter().copied().collect(), "{sub} {flag}:\n{help}");
            for (name, desc) in &got {
                assert!(!desc.is_empty(), "{sub} {flag}: {name} has no description:\n{help}");
            }
        }
    }
    // What the old usage text explained is still said (wherever the lines wrap).
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let train = words(text(&lmx(&["train", "--help"]).stdout));
    for needle in
        ["rank 8, scale 20", "the last 16 layers", "Ctrl-C stops after the current step", "[default: 1000]"]
    {
        assert!(train.contains(needle), "{needle:?} in\n{train}");
    }
    let generate = words(text(&lmx(&["generate", "--help"]).stdout));
    for needle in
        ["--max-tokens 0", "mlx_lm.cache_prompt", "[possible values: 4, 8]", "[possible values: 32, 64, 128]"]
    {
        assert!(generate.contains(needle), "{needle:?} in\n{generate}");
    }
}

#[test]
fn lmx_alone_or_with_help_lists_the_subcommands() {
    for args in [&[][..], &["--help"], &["-h"], &["help"]] {
        let o = lmx(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = text(&o.stdout);
        for sub in ["generate", "chat", "train", "info", "version", "device", "completions"] {
            assert!(out.lines().any(|l| l.trim_start().starts_with(sub)), "{args:?}: {sub} in\n{out}");
        }
    }
    let o = lmx(&["help", "train"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("--adapter-out"));
}

#[test]
fn an_option_a_subcommand_does_not_take_is_refused_and_named() {
    let m = qwen3();
    refused(
        &["chat", "--model", &m, "--prompt", "x"],
        &["unexpected argument '--prompt'", "'--prompt' is an option of 'lmx generate'"],
    );
    refused(
        &["info", "--model", &m, "--temperature", "5"],
        &[
            "unexpected argument '--temperature'",
            "'--temperature' is an option of 'lmx generate' and 'lmx chat'",
        ],
    );
    refused(&["chat", "--model", &m, "--ignore-eos"], &["unexpected argument '--ignore-eos'"]);
    refused(&["chat", "--model", &m, "--json"], &["unexpected argument '--json'"]);
    refused(&["info", "--model", &m, "--adapter", "x"], &["unexpected argument '--adapter'"]);
    refused(&["version", "--model", &m], &["unexpected argument '--model'"]);
    refused(
        &["train", "--model", &m, "--data", "d", "--adapter-out", "o", "--adapter", "a"],
        &["unexpected argument '--adapter'", "'--resume-adapter DIR' continues training an adapter"],
    );
    // Options that need another, or exclude one.
    refused(&["generate", "--model", &m, "--prompt", "x", "--system", "s"], &["--chat"]);
    refused(
        &["train", "--model", &m, "--data", "d", "--adapter-out", "o", "--scale", "2", "--alpha", "16"],
        &["'--scale <S>' cannot be used with '--alpha <A>'"],
    );
    refused(&["generate", "--prompt", "x"], &["required", "--model <PATH>"]);
    refused(&["generate", "--model", &m], &["required", "--prompt <TEXT>"]);
    refused(&["frobnicate"], &["unrecognized subcommand 'frobnicate'"]);
}

#[test]
fn arguments_that_are_not_utf8_are_no_crash() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"/no/such/\xff\xfe");
    let s = OsStr::new;
    for args in [
        vec![s("--frobnicate"), bad],
        vec![s("generate"), s("--prompt"), s("x"), s("--model"), bad, s("--frobnicate")],
        vec![s("generate"), s("--prompt"), s("x"), s("--model"), bad],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_lmx")).args(&args).output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_misspelling_gets_a_suggestion() {
    let m = qwen3();
    refused(
        &["generate", "--model", &m, "--prompt", "x", "--temprature", "0.5"],
        &["unexpected argument '--temprature'", "a similar argument exists: '--temperature'"],
    );
    refused(&["chat", "--modle", &m], &["a similar argument exists: '--model'"]);
    refused(&["genrate", "--model", &m], &["unrecognized subcommand 'genrate'", "'generate'"]);
    refused(&["completions", "bsh"], &["invalid value 'bsh'", "bash"]);
    refused(&["train", "--model", &m, "--data", "d", "--adapter-out", "o", "--dtype", "bf16"], &["bfloat16"]);
}

#[test]
fn values_are_checked_before_the_model_loads() {
    // The model does not exist: each error is about the value, found before loading.
    let m = "/no/such/model";
    for (args, needle) in [
        (&["--temperature", "-1"][..], "invalid value '-1' for '--temperature <T>': must be a number >= 0"),
        (&["--temperature", "hot"], "invalid value 'hot' for '--temperature <T>': not a number"),
        (&["--top-p", "0"], "invalid value '0' for '--top-p <P>': must be in (0, 1]"),
        (&["--min-p", "1"], "invalid value '1' for '--min-p <P>': must be in [0, 1)"),
        (&["--top-k", "2.5"], "invalid value '2.5' for '--top-k <K>': not a whole number"),
        (&["--repetition-penalty", "0"], "invalid value '0' for '--repetition-penalty <R>'"),
        (&["--max-tokens", "-3"], "invalid value '-3' for '--max-tokens <N>': must be at least 0"),
        (&["--seed", "-1"], "invalid value '-1' for '--seed <S>'"),
        (&["--adapter-scale", "nan"], "invalid value 'nan' for '--adapter-scale <S>'"),
        (&["--kv-bits", "2"], "[possible values: 4, 8]"),
    ] {
        let all = [&["generate", "--model", m, "--prompt", "x"][..], args].concat();
        refused(&all, &[needle]);
        let err = text(&lmx(&all).stderr);
        assert!(!err.contains(m), "{all:?}: {err}");
    }
    refused(&["chat", "--model", m, "--max-tokens", "0"], &["'--max-tokens <N>': must be at least 1"]);
}

#[test]
fn text_values_may_start_with_a_dash() {
    let o = lmx(&[
        "generate",
        "--model",
        &qwen3(),
        "--prompt",
        "-5 degrees",
        "--stop",
        "-",
        "--max-tokens",
        "20",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!ids(&j["prompt_tokens"]).is_empty());
    assert!(!j["text"].as_str().unwrap().contains('-'), "{j}");
}

#[test]
fn version() {
    for flag in ["--version", "-V"] {
        let o = lmx(&[flag]);
        assert_eq!(o.status.code(), Some(0));
        let out = text(&o.stdout);
        assert!(out.starts_with(&format!("lmx {} (MLX ", env!("CARGO_PKG_VERSION"))), "{out}");
    }
    let o = lmx(&["version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).starts_with(&format!("liblmx {} (MLX ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn completion_scripts() {
    for (shell, first) in [("bash", "_lmx()"), ("zsh", "#compdef lmx"), ("fish", "complete -c lmx")] {
        let o = lmx(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        assert!(script.contains(first), "{shell}");
        for word in ["generate", "chat", "train", "info", "completions", "kv-bits", "adapter-out"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    // bash runs the script and completes a subcommand's options from it.
    let script = text(&lmx(&["completions", "bash"]).stdout);
    if let Ok(o) = Command::new("bash")
        .args(["-c", &format!("{script}\nCOMP_WORDS=(lmx chat --ma); COMP_CWORD=2; _lmx lmx --ma chat; echo \"${{COMPREPLY[@]}}\"")])
        .output()
    {
        let got = text(&o.stdout);
        assert_eq!(got.trim(), "--max-tokens", "{}", text(&o.stderr));
    }
}

#[test]
fn the_cli_does_not_use_the_c_abi() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    let mut files = vec![root.join("lmx.rs")];
    files.extend(std::fs::read_dir(root.join("lmx")).unwrap().map(|e| e.unwrap().path()));
    assert!(files.len() > 3);
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let code = src.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            let ffi = line.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "ffi");
            assert!(!ffi, "{} uses the C ABI: {line}", f.display());
        }
    }
}

/// Reads `child`'s stream until `marker` has come (or panics after a minute); what came.
fn read_until(r: &mut impl Read, marker: &str) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        assert!(start.elapsed() < Duration::from_secs(60), "no {marker:?} in {}", text(&seen));
        match r.read(&mut b) {
            Ok(1) => seen.push(b[0]),
            _ => panic!("the stream ended before {marker:?}: {}", text(&seen)),
        }
    }
    text(&seen)
}

fn sigint(child: &Child) {
    // SAFETY: kill() on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
}

/// A real model, slow enough to be interrupted mid-generation (the fixtures finish in
/// milliseconds).
fn slow_model() -> Option<String> {
    folder("smollm2-135m-instruct").map(|p| p.to_str().unwrap().to_string())
}

#[test]
fn ctrl_c_stops_a_generation_and_prints_its_metrics() {
    let Some(m) = slow_model() else { return };
    let t = TempDir::new("cli-args-ctrl-c");
    let f = t.0.join("a.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["generate", "--model", &m, "--prompt", "Count to a thousand:", "--ignore-eos"])
        .args(["--max-tokens", "5000", "--save-cache", f.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("some text");
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("finish: cancelled") && err.contains("prompt tokens"), "{err}");
    let generated: usize =
        err.split(" generated;").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(generated < 5000, "{err}");
    assert!(err.contains("saved") && f.exists(), "{err}");
}

#[test]
fn ctrl_c_in_chat_stops_the_reply_then_ends_at_the_prompt() {
    let Some(m) = slow_model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmx"))
        .args(["chat", "--model", &m, "--max-tokens", "5000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    read_until(&mut err, "> ");
    stdin.write_all(b"Write a very long story.\n").unwrap();
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("a reply");
    sigint(&child);
    // The reply stops, its metrics come, and the chat asks for the next message.
    let after = read_until(&mut err, "> ");
    assert!(after.contains("prompt tokens"), "{after}");
    // At the prompt, Ctrl-C ends at once.
    sigint(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}
