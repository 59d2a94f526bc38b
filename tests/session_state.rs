//! Session state beyond one call: save and restore, fork, and mlx-lm's prompt-cache files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use lmx::engine::{GenerateParams, Session, SessionOptions};
use lmx::mlx::{memory, Dtype};
use lmx::model::{KvQuant, LoadParams, Model};
use lmx::ErrorKind;

fn model(case: &str) -> Arc<Model> {
    Arc::new(Model::load(&fixtures().join(case), &LoadParams::default()).unwrap())
}

fn prompt(case: &str) -> Vec<u32> {
    ids(&json(&fixtures().join(case).join("reference.json"))["prompt_ids"])
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { max_tokens: n, ignore_eos: true, ..Default::default() }
}

fn run(s: &Session, prompt: &[u32], n: usize) -> (Vec<u32>, usize) {
    let out = s.generate(prompt, &greedy(n), |_| true).unwrap();
    (out.tokens, out.metrics.prefill_tokens)
}

/// Tokens a fresh session makes after `steps[0]`, then after each further prompt (one token
/// after each but the last).
fn stepwise(m: &Arc<Model>, opts: &SessionOptions, steps: &[&[u32]], n: usize) -> Vec<u32> {
    let s = Session::with_options(m.clone(), opts).unwrap();
    for p in &steps[..steps.len() - 1] {
        run(&s, p, 1);
    }
    run(&s, steps[steps.len() - 1], n).0
}

/// Tokens a fresh session makes after `prompt`.
fn fresh(m: &Arc<Model>, opts: &SessionOptions, prompt: &[u32], n: usize) -> Vec<u32> {
    run(&Session::with_options(m.clone(), opts).unwrap(), prompt, n).0
}

fn q8(start: i32) -> SessionOptions {
    SessionOptions { kv_quant: Some(KvQuant { bits: 8, group_size: 32, start }) }
}

/// Global and sliding-window models, dense and 4-bit weights, float and quantized caches.
fn cases() -> Vec<(&'static str, SessionOptions)> {
    vec![
        ("qwen3", SessionOptions::default()),
        ("gemma3", SessionOptions::default()),
        ("qwen3_q4", SessionOptions::default()),
        ("llama_tied_q4", SessionOptions::default()),
        ("llama_rope3", q8(0)),
        ("qwen3_q4", q8(30)),
        // LongRoPE with partial rotation, NoPE layers, post-norms with full-width q/k norms.
        ("phi3", SessionOptions::default()),
        ("smollm3", SessionOptions::default()),
        ("olmo2_q4", SessionOptions::default()),
        // Multi-head latent attention: the cache holds the compressed latent and rope key.
        ("deepseek_v2", SessionOptions::default()),
        ("deepseek_v3_q4", SessionOptions::default()),
    ]
}

#[test]
fn a_restored_session_continues_exactly_as_the_saved_one() {
    let dir = TempDir::new("session-save");
    for (case, opts) in cases() {
        let m = model(case);
        let p = prompt(case);
        let a = Session::with_options(m.clone(), &opts).unwrap();
        let (first, _) = run(&a, &p, 12);
        let file = dir.0.join(format!("{case}.session"));
        a.save(&file, &BTreeMap::from([("note".to_string(), "hello".to_string())])).unwrap();
        let (b, r) = Session::load(m.clone(), &file, &opts).unwrap();
        assert_eq!(r.made_by, "liblmx");
        assert_eq!(r.metadata["note"], "hello");
        assert_eq!(b.cached_tokens().unwrap(), a.cached_tokens().unwrap(), "{case}");
        assert_eq!(b.kv_quant().unwrap().map(|q| q.bits), opts.kv_quant.map(|q| q.bits), "{case}");
        // The next turn: the whole text so far plus a few tokens.
        let mut next = p.clone();
        next.extend(&first);
        next.extend(&p[1..4]);
        let (want, pa) = run(&a, &next, 16);
        let (got, pb) = run(&b, &next, 16);
        assert_eq!(got, want, "{case}: restored vs original");
        assert_eq!(pb, pa, "{case}: the restored session reuses its cache as the original does");
        assert_eq!(pb, 4, "{case}: only the new tokens are prefilled");
        if opts.kv_quant.is_none() {
            assert_eq!(fresh(&m, &opts, &next, 16), want, "{case}: vs a fresh session");
        }
    }
}

#[test]
fn forks_diverge_as_fresh_sessions_over_the_same_text() {
    for (case, opts) in cases() {
        let m = model(case);
        let p = prompt(case);
        let s = Session::with_options(m.clone(), &opts).unwrap();
        run(&s, &p, 1);
        let f = s.fork().unwrap();
        assert_eq!(f.cached_tokens().unwrap(), s.cached_tokens().unwrap());
        let (mut x, mut y) = (p.clone(), p.clone());
        x.extend([5, 6, 7]);
        y.extend([9, 8]);
        let (xs, px) = run(&s, &x, 10);
        let (ys, py) = run(&f, &y, 10);
        assert_eq!((px, py), (3, 2), "{case}: each branch prefills only its own tokens");
        assert_eq!(xs, stepwise(&m, &opts, &[&p, &x], 10), "{case}: the original");
        assert_eq!(ys, stepwise(&m, &opts, &[&p, &y], 10), "{case}: the fork");
        if opts.kv_quant.is_none() {
            assert_eq!(ys, fresh(&m, &opts, &y, 10), "{case}: the fork vs the whole text at once");
        }
        // A fork of a fork, and the original again after the fork wrote.
        let g = f.fork().unwrap();
        let (gs, _) = run(&g, &x, 10);
        assert_eq!(gs, xs, "{case}: a fork of the fork");
    }
}

#[test]
fn a_fork_shares_the_cache_memory() {
    let m = Arc::new(
        Model::load(
            &fixtures().join("qwen3"),
            &LoadParams { context_length: Some(8192), ..Default::default() },
        )
        .unwrap(),
    );
    let p: Vec<u32> = (0..3000).map(|i| (i * 7 % 300 + 3) as u32).collect();
    let base = memory::active_memory().unwrap();
    let s = Session::new(m.clone()).unwrap();
    run(&s, &p, 1);
    let one = memory::active_memory().unwrap() - base;
    let bytes = s.cache_size().unwrap().1 as u64;
    let forks: Vec<Session> = (0..3).map(|_| s.fork().unwrap()).collect();
    let four = memory::active_memory().unwrap() - base;
    eprintln!("one session {one} B (cache {bytes} B); with 3 forks {four} B");
    assert!(bytes > 1 << 20, "a cache of {bytes} B is too small to measure");
    assert!(four < one + bytes / 10, "3 forks added {} B to {one} B", four - one);
    // Each fork that writes copies its buffers once: about one cache more per writer.
    let mut x = p.clone();
    x.push(11);
    run(&forks[0], &x, 2);
    let written = memory::active_memory().unwrap() - base;
    eprintln!("after one fork wrote: {written} B");
    assert!(written < one + bytes + bytes / 4, "{written} B after one fork wrote");
}

#[test]
fn bad_session_files_are_clear_errors() {
    let dir = TempDir::new("session-bad");
    let m = model("qwen3");
    let s = Session::new(m.clone()).unwrap();
    let empty = dir.0.join("empty.session");
    let e = s.save(&empty, &BTreeMap::new()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(!empty.exists());
    run(&s, &prompt("qwen3"), 4);
    let good = dir.0.join("good.session");
    s.save(&good, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let opts = SessionOptions::default();
    let err = |path: &Path, m: &Arc<Model>| match Session::load(m.clone(), path, &opts) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    };

    let truncated = dir.0.join("truncated.session");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&truncated, &m);
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert!(e.message.contains("truncated.session"), "{e}");

    let garbage = dir.0.join("garbage.session");
    std::fs::write(&garbage, b"not a safetensors file at all, just some text").unwrap();
    assert_eq!(err(&garbage, &m).kind, ErrorKind::Format);

    let e = err(&fixtures().join("qwen3/model.safetensors"), &m);
    assert!(e.message.contains("not a prompt-cache file"), "{e}");

    let e = err(&dir.0.join("missing.session"), &m);
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    // Another model: another architecture; the same architecture with other weights; the
    // same weights quantized.
    for other in ["llama_rope3", "qwen3_rope_params", "qwen3_q4"] {
        let e = err(&good, &model(other));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{other}: {e}");
        assert!(e.message.contains("another model"), "{other}: {e}");
    }
    // The same files computing in another dtype.
    let bf16 = Arc::new(
        Model::load(
            &fixtures().join("qwen3"),
            &LoadParams { dtype: Some(Dtype::BF16), ..Default::default() },
        )
        .unwrap(),
    );
    let e = err(&good, &bf16);
    assert!(e.message.contains("float32") && e.message.contains("bfloat16"), "{e}");

    // A flipped byte in the metadata's token list: still parsed, refused by its count.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("\"0.lmx_opaque\":\"0\"").expect("opaque key");
    let mut bad = bytes.clone();
    bad[at + "\"0.lmx_opaque\":\"".len()] = b'7';
    let tampered = dir.0.join("tampered.session");
    std::fs::write(&tampered, &bad).unwrap();
    let e = err(&tampered, &m);
    assert_eq!(e.kind, ErrorKind::Format, "{e}");

    // A failed save leaves the old file as it was.
    let e = s.save(&dir.0.join("no-such-dir/x.session"), &BTreeMap::new()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io | ErrorKind::Mlx | ErrorKind::NotFound), "{e}");
    let reserved = BTreeMap::from([("lmx_tokens".to_string(), "[]".to_string())]);
    assert_eq!(s.save(&good, &reserved).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
}

fn mlx_lm(python: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prompt_cache.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "prompt_cache.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn prompt_caches_cross_between_mlx_lm_and_liblmx() {
    let Some(python) = reference_python() else { return };
    let dir = TempDir::new("session-mlx-lm");
    for (case, bits) in [
        ("qwen3", None),
        ("gemma3", None),
        ("qwen3_q4", None),
        ("llama_rope3", Some(8)),
        // Latent attention: the compressed latent and rope key, in mlx-lm's layout. (Not
        // deepseek_v3_q4: mlx-lm 0.32.2 cannot run quantized experts without the patch
        // make_fixtures.py applies.)
        ("deepseek_v3", None),
    ] {
        let m = model(case);
        let p = prompt(case);
        let more: Vec<u32> = p[2..7].to_vec();
        let dir_s = fixtures().join(case).display().to_string();
        // mlx-lm's file, continued here and there.
        let theirs = dir.0.join(format!("{case}-mlx-lm.safetensors"));
        let mut args = vec!["make", &dir_s, theirs.to_str().unwrap()];
        let ids = csv(&p);
        args.push(&ids);
        if bits.is_some() {
            args.extend(["8", "32"]);
        }
        mlx_lm(&python, &args);
        let (s, r) = Session::load(m.clone(), &theirs, &SessionOptions::default()).unwrap();
        assert_eq!(r.made_by, "mlx-lm");
        assert_eq!(s.cache_size().unwrap().0, p.len(), "{case}");
        assert_eq!(s.kv_quant().unwrap().map(|q| q.bits), bits, "{case}");
        let (ours, prefilled) = run(&s, &more, 12);
        assert_eq!(prefilled, more.len(), "{case}: the prompt follows the cached positions");
        let want: Vec<u32> = serde_json::from_str(&mlx_lm(
            &python,
            &["continue", &dir_s, theirs.to_str().unwrap(), &csv(&more), "12"],
        ))
        .unwrap();
        assert_eq!(ours, want, "{case}: mlx-lm's cache continued by liblmx and by mlx-lm");
        if bits.is_none() {
            let mut full = p.clone();
            full.extend(&more);
            assert_eq!(ours, fresh(&m, &SessionOptions::default(), &full, 12), "{case}: vs the whole text");
        }
        // liblmx's file, continued by mlx-lm.
        let opts = if bits.is_some() { q8(0) } else { SessionOptions::default() };
        let a = Session::with_options(m.clone(), &opts).unwrap();
        run(&a, &p, 1);
        let mine = dir.0.join(format!("{case}-liblmx.safetensors"));
        a.save(&mine, &BTreeMap::new()).unwrap();
        let (here, _) = run(&a, &[a.cached_tokens().unwrap(), more.clone()].concat(), 12);
        let there: Vec<u32> = serde_json::from_str(&mlx_lm(
            &python,
            &["continue", &dir_s, mine.to_str().unwrap(), &csv(&more), "12"],
        ))
        .unwrap();
        assert_eq!(there, here, "{case}: liblmx's cache continued by mlx-lm");
    }
}

#[test]
fn a_restored_mlx_lm_cache_cannot_be_rewound_past_its_unknown_tokens() {
    let Some(python) = reference_python() else { return };
    let dir = TempDir::new("session-opaque");
    let m = model("gemma3");
    let p = prompt("gemma3");
    let file = dir.0.join("c.safetensors");
    mlx_lm(
        &python,
        &["make", &fixtures().join("gemma3").display().to_string(), file.to_str().unwrap(), &csv(&p)],
    );
    let (s, _) = Session::load(m.clone(), &file, &SessionOptions::default()).unwrap();
    run(&s, &[5, 6, 7], 2);
    // [5, 6, 7, first] are known now; a prompt that does not extend them needs the lost ones.
    let e = s.generate(&[9, 9], &greedy(2), |_| true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("cannot be rewound"), "{e}");
    // The session is intact: extending the known tokens still works.
    let known = s.cached_tokens().unwrap();
    let (_, prefilled) = run(&s, &[known, vec![4]].concat(), 2);
    assert_eq!(prefilled, 1);
    s.reset().unwrap();
    assert_eq!(s.cache_size().unwrap().0, 0);
}

#[test]
fn a_quantized_file_keeps_its_quantization() {
    let dir = TempDir::new("session-quant");
    let m = model("qwen3");
    let s = Session::with_options(m.clone(), &q8(0)).unwrap();
    run(&s, &prompt("qwen3"), 3);
    let file = dir.0.join("q8.session");
    s.save(&file, &BTreeMap::new()).unwrap();
    // No options, or the same: 8 bits in groups of 32.
    for opts in [SessionOptions::default(), q8(100)] {
        let (r, _) = Session::load(m.clone(), &file, &opts).unwrap();
        assert_eq!(r.kv_quant().unwrap().map(|q| (q.bits, q.group_size)), Some((8, 32)));
    }
    let four = SessionOptions { kv_quant: Some(KvQuant { bits: 4, group_size: 32, start: 0 }) };
    let e = Session::load(m.clone(), &file, &four).err().expect("4 bits over an 8-bit cache");
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("8 bits in groups of 32"), "{e}");
    // A float file takes a quantization from now on.
    let f = Session::new(m.clone()).unwrap();
    run(&f, &prompt("qwen3"), 3);
    let float = dir.0.join("float.session");
    f.save(&float, &BTreeMap::new()).unwrap();
    let (r, _) = Session::load(m.clone(), &float, &four).unwrap();
    let before = r.cache_size().unwrap().1;
    let next = [f.cached_tokens().unwrap(), vec![4, 5]].concat();
    run(&r, &next, 2);
    let after = r.cache_size().unwrap().1;
    assert!(after < before / 3, "a 4-bit cache of {after} B after a float one of {before} B");
}

#[test]
fn a_sliding_window_cache_rewinds_while_within_its_window() {
    // The gemma3 fixture's window is 8 positions.
    let m = model("gemma3");
    let s = Session::new(m.clone()).unwrap();
    let p: Vec<u32> = vec![2, 40, 41, 42, 43];
    run(&s, &p, 2); // caches 6 positions
    let q: Vec<u32> = vec![2, 40, 41, 50, 51];
    let (got, prefilled) = run(&s, &q, 10);
    assert_eq!(prefilled, 2, "rewound to the common prefix");
    assert_eq!(got, fresh(&m, &SessionOptions::default(), &q, 10));
    // Past the window the ring has overwritten positions: the cache starts over.
    let long: Vec<u32> = (0..12).map(|i| 40 + i).collect();
    run(&s, &long, 2);
    let other = [&long[..10], &[7, 7]].concat();
    let (got, prefilled) = run(&s, &other, 6);
    assert_eq!(prefilled, other.len());
    assert_eq!(got, fresh(&m, &SessionOptions::default(), &other, 6));
}
