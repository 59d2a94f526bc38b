//! Per-token host work of generation: nothing whose cost grows with the vocabulary or the
//! sequence runs per token, and only the chosen token ids come back from the device.
//!
//! Counted, not timed: the tokenizer counts its vocabulary-sized calls and the MLX layer counts
//! the elements it copies to the host. A test binary of its own, so no other test's work lands
//! in the process-wide counters.

mod common;

use std::sync::Arc;

use common::folder;
use lmx::engine::{GenerateParams, Session};
use lmx::mlx::host_reads;
use lmx::model::text::tokenizer::vocabulary_scans;
use lmx::model::{LoadParams, Model};

const TOKENS: usize = 500;

#[test]
fn a_long_generation_does_no_vocabulary_sized_work_per_token() {
    // Gemma 3's tokenizer has 262,144 entries.
    let Some(dir) = folder("gemma3-270m") else { return };
    let model = Arc::new(Model::load(&dir, &LoadParams::default()).unwrap());
    assert!(model.tokenizer().vocab_size() >= 150_000, "vocabulary {}", model.tokenizer().vocab_size());
    let session = Session::new(model.clone()).unwrap();
    let prompt = session.text_tokens("Write a long story about a lighthouse keeper.").unwrap();
    let params = GenerateParams { max_tokens: TOKENS, ignore_eos: true, ..Default::default() };

    let scans = vocabulary_scans();
    let reads = host_reads();
    let mut events = 0;
    let out = session
        .generate(&prompt, &params, |_| {
            events += 1;
            true
        })
        .unwrap();
    assert_eq!(out.tokens.len(), TOKENS);
    assert!(events >= TOKENS);
    assert_eq!(vocabulary_scans() - scans, 0, "vocabulary-sized tokenizer calls during generation");
    let per_token = (host_reads() - reads) as f64 / TOKENS as f64;
    assert!(per_token <= 1.0, "{per_token} elements read back per token (the token id is 1)");
}
