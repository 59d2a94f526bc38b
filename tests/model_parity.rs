//! Reference parity: for every fixture checkpoint (tests/fixtures, made by
//! scripts/make_fixtures.py), our logits and greedy tokens against Hugging Face transformers
//! and mlx-lm 0.32.2 on the same weights.
//!
//! Tolerance: the fixtures are float32 (or 4-bit weights with float32 scales, computed in
//! float32). Both sides compute in float32 and differ only in summation order and kernel
//! choice, which gives errors around 1e-6 relative per op; through a few layers that is at
//! most ~1e-5 on logits of magnitude ~10. We allow 2e-4 absolute: loose enough for that noise
//! (and for torch's kernels against MLX's), yet ~250x below the smallest top-1/top-2 margin
//! the fixtures guarantee (0.05), so a real bug cannot hide under it. Greedy tokens must be
//! identical.

mod common;

use common::*;
use lmx::mlx::{ops, Array, Dtype};
use lmx::model::{KvCache, LoadParams, Model};

const TOL: f32 = 2e-4;

struct Case {
    name: String,
    model: Model,
    reference: serde_json::Value,
    tensors: std::collections::HashMap<String, Array>,
    prompt: Vec<u32>,
}

fn load(name: &str) -> Case {
    let dir = fixtures().join(name);
    let model = Model::load(&dir, &LoadParams::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let reference = json(&dir.join("reference.json"));
    let tensors = tensors(&dir.join("reference.safetensors"));
    let prompt = ids(&reference["prompt_ids"]);
    Case { name: name.into(), model, reference, tensors, prompt }
}

fn tokens(ids: &[u32]) -> Array {
    let v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    Array::from_slice(&v, &[1, v.len() as i32]).unwrap()
}

/// Logits of the whole prompt in one forward pass, [L * V].
fn prompt_logits(c: &Case) -> Vec<f32> {
    let mut cache = KvCache::new(c.model.spec());
    c.model.transformer().forward(&tokens(&c.prompt), &mut cache).unwrap().to_f32_vec().unwrap()
}

/// Logits of each prompt position fed one token at a time through the cache, [L * V].
fn decode_logits(c: &Case) -> Vec<f32> {
    let mut cache = KvCache::new(c.model.spec());
    let mut out = Vec::new();
    for &t in &c.prompt {
        let l = c.model.transformer().forward(&tokens(&[t]), &mut cache).unwrap();
        out.extend(l.to_f32_vec().unwrap());
    }
    out
}

fn greedy(c: &Case, n: usize) -> Vec<u32> {
    let mut cache = KvCache::new(c.model.spec());
    let mut logits = c.model.transformer().forward(&tokens(&c.prompt), &mut cache).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let last = ops::slice_axis(&logits, 1, logits.dim(1).unwrap() - 1, logits.dim(1).unwrap()).unwrap();
        let next = ops::argmax(&ops::astype(&last, Dtype::F32).unwrap(), -1, false).unwrap();
        let id = next.to_vec::<u32>().unwrap()[0];
        out.push(id);
        logits = c.model.transformer().forward(&tokens(&[id]), &mut cache).unwrap();
    }
    out
}

fn sources(c: &Case) -> Vec<&'static str> {
    ["hf", "mlx_lm"].into_iter().filter(|s| !c.reference[*s].is_null()).collect()
}

fn check_case(name: &str) {
    let c = load(name);
    let srcs = sources(&c);
    assert!(!srcs.is_empty(), "{name}: no reference");
    // The tokenizer reproduces the reference prompt ids.
    let text = c.reference["prompt_text"].as_str().unwrap();
    assert_eq!(c.model.tokenizer().encode(text, true).unwrap(), c.prompt, "{name}: prompt ids");

    let whole = prompt_logits(&c);
    let stepped = decode_logits(&c);
    for src in &srcs {
        if let Some(r) = c.tensors.get(&format!("{src}.prompt_logits")) {
            let d = max_abs_diff(&whole, &r.to_f32_vec().unwrap());
            eprintln!("{name}: prompt logits vs {src}: max abs diff {d:.2e}");
            assert!(d <= TOL, "{name}: prompt logits differ from {src} by {d}");
        }
        if let Some(r) = c.tensors.get(&format!("{src}.decode_logits")) {
            let d = max_abs_diff(&stepped, &r.to_f32_vec().unwrap());
            assert!(d <= TOL, "{name}: cached decode logits differ from {src} by {d}");
        }
    }
    if !c.reference["router"].is_null() {
        check_routing(&c);
    }
    let n = c.reference["n_greedy"].as_u64().unwrap() as usize;
    let ours = greedy(&c, n);
    for src in &srcs {
        let theirs = ids(&c.reference[*src]["greedy_ids"]);
        assert_eq!(ours, theirs, "{name}: greedy continuation differs from {src}");
    }
    eprintln!("{}: ok against {:?}", c.name, srcs);
}

/// The experts every MoE layer's router picks for each prompt position, and their weights,
/// equal transformers' (`hf.router.N.*`, made by make_fixtures.py): same experts, weights
/// within float noise. The fixture guarantees a gap of `router.min_margin` between the k-th
/// and the (k+1)-th router logit, so the choice cannot hang on rounding.
fn check_routing(c: &Case) {
    let name = &c.name;
    let layers: Vec<u64> =
        c.reference["router"]["layers"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let margin = c.reference["router"]["min_margin"].as_f64().unwrap();
    let mut cache = KvCache::new(c.model.spec());
    let (logits, choices) =
        lmx::model::nn::moe::trace_routing(|| c.model.transformer().forward(&tokens(&c.prompt), &mut cache));
    logits.unwrap();
    assert_eq!(choices.len(), layers.len(), "{name}: one routing per MoE layer");
    let mut worst = 0f32;
    for (choice, layer) in choices.iter().zip(&layers) {
        // Each row's experts ascending, the weights in the same order (as the reference).
        let order = ops::argsort(&choice.experts, -1).unwrap();
        let experts = ops::take_along_axis(&choice.experts, &order, -1).unwrap();
        let weights = ops::take_along_axis(&choice.weights, &order, -1).unwrap();
        let ours: Vec<i32> = ops::astype(&experts, Dtype::I32).unwrap().to_vec::<i32>().unwrap();
        let theirs = c.tensors[&format!("hf.router.{layer}.experts")].to_vec::<i32>().unwrap();
        assert_eq!(ours, theirs, "{name}: layer {layer}: experts differ from transformers'");
        let w = weights.to_f32_vec().unwrap();
        let tw = c.tensors[&format!("hf.router.{layer}.weights")].to_f32_vec().unwrap();
        let d = max_abs_diff(&w, &tw);
        worst = worst.max(d);
        assert!(d <= 1e-5, "{name}: layer {layer}: router weights differ from transformers' by {d}");
    }
    eprintln!(
        "{name}: routing of {} positions in layers {layers:?} equals transformers' (weights max abs diff {worst:.2e}; smallest k-th vs (k+1)-th router logit gap {margin})",
        c.prompt.len()
    );
}

/// A prefill long enough that the MoE layers sort their (token, expert) pairs by expert
/// gives the logits that feeding the same tokens one at a time (unsorted, through the cache)
/// gives: the sort and its inverse put every row back where it belongs.
#[test]
fn moe_sorted_prefill_equals_one_token_at_a_time() {
    for name in [
        "qwen3_moe",
        "qwen2_moe_q4",
        "mixtral",
        "qwen2_moe_mlx",
        "gpt_oss",
        "gpt_oss_q4",
        "gpt_oss_mlx",
        "gpt_oss_mxfp4",
    ] {
        let c = load(name);
        let long: Vec<u32> = c.prompt.iter().chain(&c.prompt).chain(&c.prompt).copied().collect();
        let k = c.model.spec().layers.iter().find_map(|l| l.moe.as_ref()).unwrap().top_k as usize;
        assert!(long.len() * k >= lmx::model::nn::moe::SORT_FROM, "{name}: too short to sort");
        assert!(c.prompt.len() * k < lmx::model::nn::moe::SORT_FROM, "{name}: the prompt alone sorts");
        let mut cache = KvCache::new(c.model.spec());
        let whole = c.model.transformer().forward(&tokens(&long), &mut cache).unwrap().to_f32_vec().unwrap();
        let mut cache = KvCache::new(c.model.spec());
        let mut stepped = Vec::new();
        for &t in &long {
            stepped.extend(
                c.model.transformer().forward(&tokens(&[t]), &mut cache).unwrap().to_f32_vec().unwrap(),
            );
        }
        let d = max_abs_diff(&whole, &stepped);
        eprintln!("{name}: {} tokens, sorted prefill vs one at a time: max abs diff {d:.2e}", long.len());
        assert!(d <= TOL, "{name}: sorted prefill differs from one token at a time by {d}");
    }
}

macro_rules! parity {
    ($($t:ident => $case:literal,)*) => {$(
        #[test]
        fn $t() { check_case($case); }
    )*};
}

parity! {
    llama_tied => "llama_tied",
    llama_tied_q4 => "llama_tied_q4",
    llama_rope3 => "llama_rope3",
    llama_rope3_q4 => "llama_rope3_q4",
    mistral => "mistral",
    mistral_q4 => "mistral_q4",
    qwen2 => "qwen2",
    qwen2_q4 => "qwen2_q4",
    qwen3 => "qwen3",
    qwen3_q4 => "qwen3_q4",
    qwen3_rope_params => "qwen3_rope_params",
    gemma3 => "gemma3",
    gemma3_q4 => "gemma3_q4",
    gemma3_nested => "gemma3_nested",
    phi3 => "phi3",
    phi3_q4 => "phi3_q4",
    smollm3 => "smollm3",
    smollm3_q4 => "smollm3_q4",
    olmo2 => "olmo2",
    olmo2_q4 => "olmo2_q4",
    qwen3_moe => "qwen3_moe",
    qwen3_moe_q4 => "qwen3_moe_q4",
    qwen3_moe_fused => "qwen3_moe_fused",
    qwen2_moe => "qwen2_moe",
    qwen2_moe_q4 => "qwen2_moe_q4",
    qwen2_moe_mlx => "qwen2_moe_mlx",
    mixtral => "mixtral",
    mixtral_q4 => "mixtral_q4",
    gpt_oss => "gpt_oss",
    gpt_oss_q4 => "gpt_oss_q4",
    gpt_oss_mlx => "gpt_oss_mlx",
    gpt_oss_mxfp4 => "gpt_oss_mxfp4",
    deepseek_v2 => "deepseek_v2",
    deepseek_v2_q4 => "deepseek_v2_q4",
    deepseek_v3 => "deepseek_v3",
    deepseek_v3_q4 => "deepseek_v3_q4",
}

/// `kimi_k2` is DeepSeek-V3's layout under another name (transformers 5.23 has no class for
/// it): the `deepseek_v3` fixture with only its model_type changed gives transformers'
/// deepseek_v3 logits and greedy continuation.
#[test]
fn kimi_k2_loads_as_deepseek_v3() {
    let dir = copy_fixture("deepseek_v3", "kimi");
    let path = dir.0.join("config.json");
    let mut cfg = json(&path);
    cfg["model_type"] = "kimi_k2".into();
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let model = Model::load(&dir.0, &LoadParams::default()).unwrap();
    assert_eq!(model.spec().arch, "kimi_k2");
    let reference = json(&dir.0.join("reference.json"));
    let tensors = tensors(&dir.0.join("reference.safetensors"));
    let prompt = ids(&reference["prompt_ids"]);
    let c = Case { name: "kimi_k2".into(), model, reference, tensors, prompt };
    let d = max_abs_diff(&prompt_logits(&c), &c.tensors["hf.prompt_logits"].to_f32_vec().unwrap());
    assert!(d <= TOL, "kimi_k2: prompt logits differ from transformers' deepseek_v3 by {d}");
    let n = c.reference["n_greedy"].as_u64().unwrap() as usize;
    assert_eq!(greedy(&c, n), ids(&c.reference["hf"]["greedy_ids"]), "kimi_k2: greedy continuation");
}

/// Multi-head latent attention caches, per layer and position, the compressed latent and the
/// shared rotated key (kv_lora_rank + qk_rope_head_dim values), not every head's keys and
/// values: the cache's buffers hold exactly that, far less than a plain attention of the same
/// heads and head widths would.
#[test]
fn latent_attention_caches_the_compressed_latent() {
    for name in ["deepseek_v2", "deepseek_v3", "deepseek_v3_q4"] {
        let c = load(name);
        let mut cache = KvCache::new(c.model.spec());
        c.model.transformer().forward(&tokens(&c.prompt), &mut cache).unwrap();
        assert_eq!(cache.offset(), c.prompt.len() as i32);
        // Bytes per cached position: each buffer is [1, heads, capacity, width].
        let per_position: usize =
            cache.arrays().iter().map(|a| a.nbytes() / a.dim(2).unwrap() as usize).sum();
        let spec = c.model.spec();
        let (mut latent, mut plain) = (0usize, 0usize);
        for l in &spec.layers {
            let lt = l.attn.latent.expect("every deepseek layer has latent attention");
            latent += (lt.kv_lora_rank + lt.qk_rope) as usize * 4;
            plain += (l.attn.n_heads * (lt.qk_nope + lt.qk_rope + lt.v_head_dim)) as usize * 4;
        }
        eprintln!(
            "{name}: {per_position} cache bytes per position (float32, {} layers); plain attention of the same heads: {plain} ({:.2}x)",
            spec.layers.len(),
            plain as f64 / per_position as f64
        );
        assert_eq!(per_position, latent, "{name}: cache bytes per position");
        assert!(per_position * 4 < plain, "{name}: the latent cache is not smaller");
    }
}

/// LongRoPE past original_max_position_embeddings: one pass over a sequence longer than the
/// original length rotates every position with the long factors, as transformers does (and
/// mlx-lm, which always uses them). The prompt cases above stay within the original length,
/// where the short factors apply.
#[test]
fn phi3_long_sequence_uses_the_long_factors() {
    for name in ["phi3", "phi3_q4"] {
        let c = load(name);
        let long = ids(&c.reference["long_prompt_ids"]);
        assert!(long.len() > 64, "{name}: the long sequence must pass the original length");
        let mut cache = KvCache::new(c.model.spec());
        let ours = c.model.transformer().forward(&tokens(&long), &mut cache).unwrap().to_f32_vec().unwrap();
        let mut checked = 0;
        for src in sources(&c) {
            let Some(r) = c.tensors.get(&format!("{src}.long_prompt_logits")) else { continue };
            let d = max_abs_diff(&ours, &r.to_f32_vec().unwrap());
            eprintln!("{name}: long prompt logits vs {src}: max abs diff {d:.2e}");
            assert!(d <= TOL, "{name}: long prompt logits differ from {src} by {d}");
            checked += 1;
        }
        assert!(checked > 0, "{name}: no long-sequence reference");
    }
}

#[test]
fn every_fixture_case_is_tested() {
    let listed = [
        "deepseek_v2",
        "deepseek_v2_q4",
        "deepseek_v3",
        "deepseek_v3_q4",
        "gemma3",
        "gemma3_nested",
        "gemma3_q4",
        "gpt_oss",
        "gpt_oss_mlx",
        "gpt_oss_mxfp4",
        "gpt_oss_q4",
        "llama_rope3",
        "llama_rope3_q4",
        "llama_tied",
        "llama_tied_q4",
        "mistral",
        "mistral_q4",
        "mixtral",
        "mixtral_q4",
        "olmo2",
        "olmo2_q4",
        "phi3",
        "phi3_q4",
        "qwen2",
        "qwen2_moe",
        "qwen2_moe_mlx",
        "qwen2_moe_q4",
        "qwen2_q4",
        "qwen3",
        "qwen3_moe",
        "qwen3_moe_fused",
        "qwen3_moe_q4",
        "qwen3_q4",
        "qwen3_rope_params",
        "smollm3",
        "smollm3_q4",
    ];
    assert_eq!(cases(), listed);
}
