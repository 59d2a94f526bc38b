//! MLX's memory limit holds on every backend: liblmx checks the weights at load and each KV
//! cache growth against it and refuses with OutOfMemory before allocating; afterwards the
//! process, the model and other sessions work on. One test in its own binary: the limit is
//! process-wide.

mod common;

use std::sync::Arc;

use common::fixtures;
use lmx::engine::{batch_generate, classify, GenerateParams, Session};
use lmx::mlx::memory;
use lmx::model::{LoadParams, Model};
use lmx::ErrorKind;

fn oom<T>(r: lmx::Result<T>, what: &str) {
    let Err(e) = r else { panic!("{what}: succeeded") };
    assert_eq!(e.kind, ErrorKind::OutOfMemory, "{what}: {e}");
    assert!(e.message.contains("memory limit"), "{what}: {e}");
}

#[test]
fn memory_limits_are_refused_cleanly_and_everything_works_after() {
    let dir = fixtures().join("qwen3");
    let original = memory::memory_limit().unwrap();

    // Loading: the weights do not fit.
    memory::set_memory_limit(memory::active_memory().unwrap() + 16 * 1024).unwrap();
    oom(Model::load(&dir, &LoadParams::default()), "load under a 16 KiB margin");
    memory::set_memory_limit(original).unwrap();
    let m = Arc::new(Model::load(&dir, &LoadParams::default()).unwrap());

    let prompt = m.encode("The keeper counted 37 grey ships", true).unwrap();
    let params = GenerateParams { max_tokens: 8, ignore_eos: true, ..Default::default() };
    let want = Session::new(m.clone()).unwrap().generate(&prompt, &params, |_| true).unwrap().tokens;

    // Generating: the KV cache cannot grow.
    let busy = Session::new(m.clone()).unwrap();
    memory::set_memory_limit(memory::active_memory().unwrap() + 1024).unwrap();
    let s = Session::new(m.clone()).unwrap();
    oom(s.generate(&prompt, &params, |_| true), "generate");
    oom(batch_generate(&m, std::slice::from_ref(&prompt), &params), "batch");
    oom(classify(&m, std::slice::from_ref(&prompt), &params, false), "classify");

    // Afterwards: the same session, another one and the model work, with the same tokens.
    memory::set_memory_limit(original).unwrap();
    assert_eq!(s.generate(&prompt, &params, |_| true).unwrap().tokens, want);
    assert_eq!(busy.generate(&prompt, &params, |_| true).unwrap().tokens, want);
    let (b, _) = batch_generate(&m, std::slice::from_ref(&prompt), &params).unwrap();
    assert_eq!(b[0].as_ref().unwrap().tokens, want);
}
