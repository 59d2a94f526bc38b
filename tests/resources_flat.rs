//! A server makes a session per request and runs batches all day: the process's OS threads
//! and resident memory must not grow with the number of sessions and calls (MLX keeps a
//! thread for every stream ever made, so liblmx reuses a small pool of streams).
//! One test in its own binary: it reads the whole process's counters.

mod common;

use std::sync::Arc;

use common::{fixtures, skip};
use lmx::engine::{batch_generate, classify, GenerateParams, Session};
use lmx::model::{LoadParams, Model};

/// (threads, resident bytes) of this process, from /proc.
fn threads_and_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

fn round(model: &Arc<Model>, params: &GenerateParams, prompt: &[u32]) {
    let s = Session::new(model.clone()).unwrap();
    let out = s.generate(prompt, params, |_| true).unwrap();
    assert_eq!(out.tokens.len(), params.max_tokens);
    let c = classify(model, &[prompt.to_vec(), prompt[..2].to_vec()], params, false).unwrap();
    assert_eq!(c.len(), 2);
    let (b, _) = batch_generate(model, &[prompt.to_vec()], params).unwrap();
    assert_eq!(b[0].as_ref().unwrap().tokens.len(), params.max_tokens);
}

#[test]
fn threads_and_memory_stay_flat_over_a_thousand_sessions_and_calls() {
    if !cfg!(target_os = "linux") {
        skip("the counters come from Linux's /proc");
        return;
    }
    let model = Arc::new(Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap());
    let params = GenerateParams { max_tokens: 2, ignore_eos: true, ..Default::default() };
    let prompt = model.tokenizer().encode("The threads of a server", true).unwrap();
    for _ in 0..100 {
        round(&model, &params, &prompt);
    }
    let (threads0, rss0) = threads_and_rss();
    for _ in 0..1000 {
        round(&model, &params, &prompt);
    }
    let (threads1, rss1) = threads_and_rss();
    assert!(threads1 <= threads0, "threads grew from {threads0} to {threads1} over 1000 sessions and calls");
    let grew = rss1.saturating_sub(rss0);
    assert!(
        grew < 16 << 20,
        "resident memory grew by {} KiB over 1000 sessions and calls ({rss0} -> {rss1} bytes)",
        grew >> 10
    );
}
