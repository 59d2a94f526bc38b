//! Generation must not leak: over 500 decode steps, MLX's active memory may grow only by what
//! the KV cache itself holds. A test binary of its own, since MLX's counters are process-wide.

mod common;

use common::*;
use lmx::mlx::{memory, ops, Array, Dtype};
use lmx::model::{KvCache, LoadParams, Model};

#[test]
fn active_memory_beyond_the_cache_is_flat_over_500_decode_steps() {
    // Gemma 3 has both kinds of cache: growing (global layers) and ring (sliding layers).
    // Mixtral: MoE layers (gathered expert matmuls) over sliding-window caches.
    for case in ["gemma3", "qwen3_q4", "mixtral", "qwen2_moe_q4"] {
        let model = Model::load(&fixtures().join(case), &LoadParams::default()).unwrap();
        let t = model.transformer();
        let mut cache = KvCache::new(t.spec());
        let mut next = Array::from_slice(&[1i32, 2, 3], &[1, 3]).unwrap();
        let mut baseline = None;
        for step in 0..500 {
            let logits = t.forward(&next, &mut cache).unwrap();
            let last =
                ops::slice_axis(&logits, 1, logits.dim(1).unwrap() - 1, logits.dim(1).unwrap()).unwrap();
            let tok = ops::reshape(
                &ops::astype(&ops::argmax(&last, -1, false).unwrap(), Dtype::I32).unwrap(),
                &[1, 1],
            )
            .unwrap();
            let mut outs = vec![&tok];
            outs.extend(cache.arrays());
            lmx::mlx::eval(&outs).unwrap();
            next = tok;
            let beyond_cache = memory::active_memory().unwrap() as i64 - cache.nbytes() as i64;
            if step == 20 {
                baseline = Some(beyond_cache);
            }
            if let Some(b) = baseline {
                assert!(
                    beyond_cache <= b + 64 * 1024,
                    "{case}: step {step}: {beyond_cache} bytes beyond the cache, {b} at step 20"
                );
            }
        }
        assert_eq!(cache.offset(), 3 + 499);
    }
}
