//! Cancelling a long prefill: the cancel comes once the prefill is under way, and the
//! generation stops at its next check between two prompt chunks, with the chunks computed so
//! far kept in the session's cache.
//!
//! The engine calls nothing of the caller's during a prefill, so the test sees it under way
//! by MLX's active memory: nothing before the prefill's first chunk allocates any (the sampler
//! is greedy, the session's cache starts empty), and the chunk's arrays do. One test in its
//! own binary: the memory counter is the whole process's, and no other test may allocate
//! meanwhile.

mod common;

use std::sync::Arc;

use common::fixtures;
use lmx::engine::{FinishReason, GenerateParams, Session};
use lmx::mlx::{compute_lock, memory};
use lmx::model::{LoadParams, Model};

fn greedy(n: usize, chunk: usize) -> GenerateParams {
    GenerateParams { max_tokens: n, ignore_eos: true, prefill_chunk: chunk, ..Default::default() }
}

#[test]
fn cancelling_a_long_prefill_stops_it_between_chunks_and_leaves_the_session_usable() {
    let p = LoadParams { context_length: Some(16384), ..Default::default() };
    let m = Arc::new(Model::load(&fixtures().join("qwen3"), &p).unwrap());
    let s = Arc::new(Session::new(m.clone()).unwrap());
    let prompt: Vec<u32> = (0..12000).map(|i| (i * 7 % 300) as u32 + 10).collect();
    let chunk = 64;
    let idle = memory::active_memory().unwrap();
    let run = {
        let (s, prompt) = (s.clone(), prompt.clone());
        std::thread::spawn(move || s.generate(&prompt, &greedy(4, chunk), |_| true))
    };
    // A chunk is computed under the compute lock, so with the lock held the memory read is
    // between two chunks and no chunk starts before the cancel is requested: the generation
    // sees it after at most one more chunk.
    loop {
        {
            let _lock = compute_lock();
            if memory::active_memory().unwrap() > idle {
                s.cancel();
                break;
            }
        }
        if run.is_finished() {
            panic!("the generation ended before its prefill was seen: {:?}", run.join());
        }
        std::thread::yield_now();
    }
    let out = run.join().unwrap().unwrap();
    assert_eq!(out.finish, FinishReason::Cancelled);
    assert!(out.tokens.is_empty() && out.metrics.generated_tokens == 0, "{:?}", out.tokens);
    // The prefill stopped part-way, after whole chunks, which the cache keeps.
    let cached = s.cached_tokens().unwrap();
    assert!(
        !cached.is_empty() && cached.len() < prompt.len(),
        "{} of {} tokens cached",
        cached.len(),
        prompt.len()
    );
    assert_eq!(cached.len() % chunk, 0, "{} tokens cached", cached.len());
    assert_eq!(cached, prompt[..cached.len()]);
    // The metrics count what was computed, not the whole prompt.
    assert_eq!(out.metrics.prefill_tokens, cached.len(), "prefill_tokens of a cancelled prefill");
    eprintln!("cancelled after {} of {} prompt tokens", cached.len(), prompt.len());
    // The session is usable: the next call computes only what the cache lacks and continues
    // as a fresh session does.
    let n = cached.len() + 8;
    let again = s.generate(&prompt[..n], &greedy(3, 2048), |_| true).unwrap();
    assert_eq!(again.finish, FinishReason::Length);
    assert_eq!(again.metrics.prefill_tokens, 8);
    let fresh = Session::new(m).unwrap().generate(&prompt[..n], &greedy(3, 2048), |_| true).unwrap();
    assert_eq!(again.tokens, fresh.tokens);
    assert_eq!(again.tokens.len(), 3);
}
