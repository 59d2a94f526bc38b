//! The generation engine over the fixture models.

mod common;

use std::sync::Arc;

use common::*;
use lmx::engine::{batch_generate, classify, FinishReason, GenerateParams, Session};
use lmx::model::{LoadParams, Message, Model};
use lmx::ErrorKind;

fn model(case: &str) -> Arc<Model> {
    Arc::new(Model::load(&fixtures().join(case), &LoadParams::default()).unwrap())
}

fn reference(case: &str) -> (Vec<u32>, Vec<u32>) {
    let r = json(&fixtures().join(case).join("reference.json"));
    let src = if r["hf"].is_null() { "mlx_lm" } else { "hf" };
    (ids(&r["prompt_ids"]), ids(&r[src]["greedy_ids"]))
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { max_tokens: n, ignore_eos: true, ..Default::default() }
}

#[test]
fn greedy_generation_equals_the_reference_continuation() {
    for case in ["llama_tied", "qwen3_q4", "gemma3", "mistral", "phi3_q4", "smollm3", "olmo2"] {
        let m = model(case);
        let (prompt, want) = reference(case);
        let s = Session::new(m).unwrap();
        let mut streamed = Vec::new();
        let out = s.generate(&prompt, &greedy(want.len()), |ev| {
            streamed.extend(ev.id);
            true
        });
        let out = out.unwrap();
        assert_eq!(out.tokens, want, "{case}");
        assert_eq!(streamed, want, "{case}: streamed ids");
        assert_eq!(out.finish, FinishReason::Length);
        assert_eq!(out.metrics.generated_tokens, want.len());
        assert_eq!(out.metrics.prompt_tokens, prompt.len());
        assert!(out.metrics.decode_tokens_per_second > 0.0 && out.metrics.time_to_first_token > 0.0);
    }
}

#[test]
fn a_session_prefills_only_new_tokens() {
    for case in ["qwen3", "gemma3"] {
        let s = Session::new(model(case)).unwrap();
        let (prompt, _) = reference(case);
        let first = s.generate(&prompt, &greedy(5), |_| true).unwrap();
        assert_eq!(first.metrics.prefill_tokens, prompt.len());
        // The next turn: what the cache holds plus three new tokens.
        let mut next = s.cached_tokens().unwrap();
        let held = next.len();
        assert_eq!(held, prompt.len() + 4, "{case}: the last sampled token is not fed");
        next.extend_from_slice(&prompt[..3]);
        let second = s.generate(&next, &greedy(3), |_| true).unwrap();
        assert_eq!(second.metrics.prompt_tokens, held + 3);
        assert_eq!(second.metrics.prefill_tokens, 3, "{case}");
        // A different prompt starts over (ring caches) or trims to the common prefix.
        let third = s.generate(&prompt[..5], &greedy(2), |_| true).unwrap();
        let fresh = Session::new(model(case)).unwrap().generate(&prompt[..5], &greedy(2), |_| true).unwrap();
        assert!(
            third.metrics.prefill_tokens == 1 || third.metrics.prefill_tokens == 5,
            "{case}: prefilled {} of 5 (1 after a trim, 5 after a restart)",
            third.metrics.prefill_tokens
        );
        assert_eq!(third.tokens, fresh.tokens, "{case}: a trimmed cache gives what a fresh one does");
        // A reset forgets everything.
        s.reset().unwrap();
        let again = s.generate(&prompt, &greedy(5), |_| true).unwrap();
        assert_eq!(again.metrics.prefill_tokens, prompt.len());
        assert_eq!(again.tokens, first.tokens, "{case}: the same prompt gives the same tokens");
    }
}

#[test]
fn chat_turns_reuse_the_cache() {
    let m = model("qwen3");
    let s = Session::new(m.clone()).unwrap();
    let mut msgs = vec![Message::new("user", "The keeper counted grey ships.")];
    let p1 = s.chat_tokens(&msgs, None, &Default::default(), None).unwrap();
    let o1 = s.generate(&p1, &GenerateParams { max_tokens: 6, ..Default::default() }, |_| true).unwrap();
    msgs.push(Message::new("assistant", &o1.text));
    msgs.push(Message::new("user", "And then?"));
    let p2 = s.chat_tokens(&msgs, None, &Default::default(), None).unwrap();
    let o2 = s.generate(&p2, &GenerateParams { max_tokens: 6, ..Default::default() }, |_| true).unwrap();
    assert!(o2.metrics.prefill_tokens < p2.len(), "prefilled {} of {}", o2.metrics.prefill_tokens, p2.len());
}

#[test]
fn seeded_sampling_is_reproducible() {
    let m = model("llama_tied");
    let (prompt, _) = reference("llama_tied");
    let mut p = GenerateParams { max_tokens: 16, ignore_eos: true, ..Default::default() };
    p.sampler.temperature = 3.0;
    p.sampler.top_p = 0.95;
    p.sampler.top_k = 50;
    p.sampler.seed = Some(7);
    let run =
        |p: &GenerateParams| Session::new(m.clone()).unwrap().generate(&prompt, p, |_| true).unwrap().tokens;
    let a = run(&p);
    assert_eq!(a, run(&p));
    let others: Vec<Vec<u32>> = (8..12)
        .map(|seed| {
            let mut q = p.clone();
            q.sampler.seed = Some(seed);
            run(&q)
        })
        .collect();
    assert!(others.iter().any(|o| *o != a), "different seeds all gave the same tokens");
}

#[test]
fn sampling_options_shape_the_distribution() {
    let m = model("llama_tied");
    let (prompt, want) = reference("llama_tied");
    // top_k 1 and a tiny top_p are greedy whatever the temperature.
    for (k, p) in [(1, 1.0), (0, 1e-6)] {
        let mut g = greedy(8);
        g.sampler.temperature = 2.0;
        g.sampler.top_k = k;
        g.sampler.top_p = p;
        g.sampler.seed = Some(1);
        let out = Session::new(m.clone()).unwrap().generate(&prompt, &g, |_| true).unwrap();
        assert_eq!(out.tokens, want[..8], "top_k {k} top_p {p}");
    }
    // A strong negative bias on the greedy token changes the first token.
    let mut g = greedy(1);
    g.sampler.logit_bias = vec![(want[0], -1000.0)];
    let out = Session::new(m.clone()).unwrap().generate(&prompt, &g, |_| true).unwrap();
    assert_ne!(out.tokens[0], want[0]);
    // A huge repetition penalty forbids repeating any recent token.
    let mut g = greedy(12);
    g.sampler.repetition_penalty = 1e6;
    g.sampler.penalty_window = 64;
    let out = Session::new(m.clone()).unwrap().generate(&prompt, &g, |_| true).unwrap();
    let mut seen: Vec<u32> = prompt.clone();
    for t in &out.tokens {
        assert!(!seen[seen.len().saturating_sub(64)..].contains(t), "token {t} repeated despite the penalty");
        seen.push(*t);
    }
}

#[test]
fn stop_strings_never_leak() {
    let m = model("qwen2");
    let (prompt, _) = reference("qwen2");
    let full = Session::new(m.clone()).unwrap().generate(&prompt, &greedy(32), |_| true).unwrap();
    let text = full.text.clone();
    assert!(text.chars().count() > 12, "{text:?}");
    // A stop string starting in the middle of the text, spanning several tokens.
    let start = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop: String = text[start..].chars().take(5).collect();
    let expected = &text[..text.find(&stop).unwrap()];
    let mut p = greedy(32);
    p.stop_strings = vec![stop.clone()];
    let mut streamed = String::new();
    let out = Session::new(m.clone())
        .unwrap()
        .generate(&prompt, &p, |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, expected);
    assert_eq!(streamed, expected);
    assert!(!streamed.contains(&stop));
}

#[test]
fn eos_and_stop_tokens_end_with_stop() {
    let m = model("llama_tied");
    let (prompt, want) = reference("llama_tied");
    let mut p = greedy(32);
    p.stop_tokens = vec![want[3]];
    let out = Session::new(m.clone()).unwrap().generate(&prompt, &p, |_| true).unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    let first = want.iter().position(|&t| t == want[3]).unwrap();
    assert_eq!(out.tokens, want[..first]);
}

#[test]
fn the_callback_can_stop_generation() {
    let m = model("llama_tied");
    let (prompt, _) = reference("llama_tied");
    let mut n = 0;
    let s = Session::new(m).unwrap();
    let out = s
        .generate(&prompt, &greedy(30), |_| {
            n += 1;
            n < 4
        })
        .unwrap();
    assert_eq!(out.tokens.len(), 4);
    assert_eq!(out.finish, FinishReason::Cancelled);
    // The session is usable afterwards.
    assert_eq!(s.generate(&prompt, &greedy(2), |_| true).unwrap().tokens.len(), 2);
}

#[test]
fn sessions_on_one_model_run_from_several_threads_without_mixing() {
    let m = model("gemma3");
    let (prompt, want) = reference("gemma3");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let m = m.clone();
            let prompt = prompt.clone();
            std::thread::spawn(move || {
                let s = Session::new(m).unwrap();
                let n = 8 + 4 * i;
                (n, s.generate(&prompt, &greedy(n), |_| true).unwrap().tokens)
            })
        })
        .collect();
    for t in threads {
        let (n, tokens) = t.join().unwrap();
        assert_eq!(tokens, want[..n]);
    }
}

#[test]
fn a_busy_session_refuses_a_second_call() {
    let m = model("qwen3");
    let (prompt, _) = reference("qwen3");
    let s = Session::new(m).unwrap();
    let g = s.start(&prompt, &greedy(4)).unwrap();
    let e = s.start(&prompt, &greedy(4)).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Busy);
    assert_eq!(s.reset().unwrap_err().kind, ErrorKind::Busy);
    drop(g);
    assert!(s.reset().is_ok());
}

#[test]
fn bad_parameters_are_invalid_arguments() {
    let m = model("qwen3");
    let s = Session::new(m).unwrap();
    let (prompt, _) = reference("qwen3");
    let cases: Vec<(&str, GenerateParams)> = vec![
        ("max_tokens", GenerateParams { max_tokens: 0, ..Default::default() }),
        ("temperature", {
            let mut p = GenerateParams::default();
            p.sampler.temperature = -1.0;
            p
        }),
        ("temperature", {
            let mut p = GenerateParams::default();
            p.sampler.temperature = f32::NAN;
            p
        }),
        ("top_p", {
            let mut p = GenerateParams::default();
            p.sampler.top_p = 0.0;
            p
        }),
        ("top_p", {
            let mut p = GenerateParams::default();
            p.sampler.top_p = 1.5;
            p
        }),
        ("top_k", {
            let mut p = GenerateParams::default();
            p.sampler.top_k = -2;
            p
        }),
        ("min_p", {
            let mut p = GenerateParams::default();
            p.sampler.min_p = 1.0;
            p
        }),
        ("repetition_penalty", {
            let mut p = GenerateParams::default();
            p.sampler.repetition_penalty = 0.0;
            p
        }),
        ("logit_bias", {
            let mut p = GenerateParams::default();
            p.sampler.logit_bias = vec![(999_999, 1.0)];
            p
        }),
        ("stop token", GenerateParams { stop_tokens: vec![1 << 30], ..Default::default() }),
        ("stop strings", GenerateParams { stop_strings: vec![String::new()], ..Default::default() }),
    ];
    for (what, p) in cases {
        let e = s.start(&prompt, &p).err().unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}");
        assert!(e.message.contains(what), "{what}: {e}");
    }
    assert_eq!(s.start(&[], &greedy(1)).err().unwrap().kind, ErrorKind::InvalidArgument);
    assert!(s.start(&[1 << 30], &greedy(1)).err().unwrap().message.contains("outside the vocabulary"));
    let long: Vec<u32> = vec![5; 300];
    assert!(s.start(&long, &greedy(1)).err().unwrap().message.contains("context length"));
    // Still usable.
    assert_eq!(s.generate(&prompt, &greedy(2), |_| true).unwrap().tokens.len(), 2);
}

#[test]
fn generation_stops_at_the_context_length() {
    let p = LoadParams { context_length: Some(30), ..Default::default() };
    let m = Arc::new(Model::load(&fixtures().join("qwen3"), &p).unwrap());
    let (prompt, _) = reference("qwen3");
    let out = Session::new(m).unwrap().generate(&prompt, &greedy(100), |_| true).unwrap();
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(prompt.len() + out.tokens.len(), 30, "the prompt plus tokens fill the context exactly");
}

#[test]
fn batch_rows_stop_at_their_own_context_length() {
    let p = LoadParams { context_length: Some(30), ..Default::default() };
    let m = Arc::new(Model::load(&fixtures().join("qwen3"), &p).unwrap());
    let (prompt, _) = reference("qwen3");
    let prompts = vec![prompt.clone(), prompt[..5].to_vec()];
    let (out, _) = batch_generate(&m, &prompts, &greedy(100)).unwrap();
    for (p, r) in prompts.iter().zip(&out) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.finish, FinishReason::Length);
        assert_eq!(p.len() + r.tokens.len(), 30, "a {}-token prompt", p.len());
        let single = Session::new(m.clone()).unwrap().generate(p, &greedy(100), |_| true).unwrap();
        assert_eq!(r.tokens, single.tokens);
    }
}

#[test]
fn batch_penalties_see_each_rows_whole_window() {
    // Rows shorter and longer than the window, with penalties: each row's tokens are the ones
    // it gets alone (the window is not cut to the shortest prompt).
    let m = model("qwen3");
    let (prompt, _) = reference("qwen3");
    let mut params = greedy(12);
    params.sampler.repetition_penalty = 1.5;
    params.sampler.frequency_penalty = 0.5;
    params.sampler.penalty_window = 10;
    let prompts = vec![prompt.clone(), prompt[..4].to_vec(), prompt[2..].to_vec()];
    let (out, _) = batch_generate(&m, &prompts, &params).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let single = Session::new(m.clone()).unwrap().generate(p, &params, |_| true).unwrap();
        assert_eq!(out[i].as_ref().unwrap().tokens, single.tokens, "row {i}");
    }
}

#[test]
fn batch_greedy_equals_one_by_one() {
    for case in [
        "qwen3",
        "gemma3",
        "llama_tied_q4",
        "phi3",
        "smollm3",
        "olmo2_q4",
        "qwen3_moe",
        "qwen2_moe_q4",
        "mixtral",
        "gpt_oss",
        "gpt_oss_q4",
        "deepseek_v2",
        "deepseek_v3_q4",
    ] {
        let m = model(case);
        let (prompt, _) = reference(case);
        let prompts = vec![prompt.clone(), prompt[..9].to_vec(), prompt[4..].to_vec(), vec![]];
        let (out, metrics) = batch_generate(&m, &prompts, &greedy(10)).unwrap();
        assert!(matches!(&out[3], Err(e) if e.kind == ErrorKind::InvalidArgument));
        for (i, p) in prompts[..3].iter().enumerate() {
            let single = Session::new(m.clone()).unwrap().generate(p, &greedy(10), |_| true).unwrap();
            let b = out[i].as_ref().unwrap();
            assert_eq!(b.tokens, single.tokens, "{case}: row {i}");
            assert_eq!(b.text, single.text);
            assert_eq!(b.finish, FinishReason::Length);
        }
        assert_eq!(metrics.generated_tokens, 30);
    }
}

/// LongRoPE picks its factors by each sequence's length (short within the original 64
/// positions, long past them), so a batch whose rows sit on both sides of that length, or
/// cross it while decoding, must give each row what it gets alone.
#[test]
fn a_longrope_batch_straddling_the_original_length_equals_one_by_one() {
    for case in ["phi3", "phi3_q4"] {
        let m = model(case);
        let r = json(&fixtures().join(case).join("reference.json"));
        let long = ids(&r["long_prompt_ids"]);
        assert!(long.len() > 64 && long.len() < 100);
        // Past the original length from the start; crossing it while decoding; within it.
        let prompts = vec![long.clone(), long[..60].to_vec(), long[..20].to_vec()];
        let (out, _) = batch_generate(&m, &prompts, &greedy(10)).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let single = Session::new(m.clone()).unwrap().generate(p, &greedy(10), |_| true).unwrap();
            assert_eq!(out[i].as_ref().unwrap().tokens, single.tokens, "{case}: row {i}");
        }
    }
}

#[test]
fn classify_gives_the_next_token_and_logits() {
    let m = model("mistral");
    let (prompt, want) = reference("mistral");
    let out =
        classify(&m, &[prompt.clone(), prompt[..10].to_vec()], &GenerateParams::default(), true).unwrap();
    assert_eq!(out[0].token, want[0]);
    let logits = out[0].logits.as_ref().unwrap();
    assert_eq!(logits.len(), m.spec().vocab as usize);
    let argmax = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax as u32, want[0]);
    assert!(classify(&m, &[vec![]], &GenerateParams::default(), false).is_err());
}

#[test]
fn classify_batches_give_each_prompt_the_token_it_gets_alone() {
    for case in [
        "llama_tied",
        "qwen2",
        "qwen3",
        "gemma3",
        "gemma3_q4",
        "mistral_q4",
        "phi3",
        "smollm3_q4",
        "olmo2",
        "qwen2_moe",
        "mixtral_q4",
        "gpt_oss",
        "deepseek_v3",
    ] {
        let m = model(case);
        let (prompt, _) = reference(case);
        // Lengths 2..=len in one call: rows are padded, and with a prefill chunk of 4 the
        // longer ones take several passes.
        let prompts: Vec<Vec<u32>> =
            (0..12).map(|i| prompt[..2 + i * (prompt.len() - 2) / 11].to_vec()).collect();
        let params = GenerateParams { prefill_chunk: 4, ..Default::default() };
        let out = classify(&m, &prompts, &params, false).unwrap();
        assert_eq!(out.len(), prompts.len());
        for (p, o) in prompts.iter().zip(&out) {
            let single = Session::new(m.clone()).unwrap().generate(p, &greedy(1), |_| true).unwrap();
            assert_eq!(o.token, single.tokens[0], "{case}: prompt of {} tokens", p.len());
        }
    }
}

#[test]
fn classify_splits_many_prompts_into_batches_and_keeps_their_order() {
    // 700 prompts of 12-20 tokens: more positions than one forward pass takes (8192).
    let m = model("qwen3");
    let (prompt, _) = reference("qwen3");
    let prompts: Vec<Vec<u32>> = (0..700)
        .map(|i| {
            let n = 12 + i % 9;
            (0..n).map(|j| prompt[(i * 7 + j * 3) % prompt.len()]).collect()
        })
        .collect();
    let all = classify(&m, &prompts, &GenerateParams::default(), false).unwrap();
    for (i, p) in prompts.iter().enumerate().step_by(23) {
        let alone = classify(&m, std::slice::from_ref(p), &GenerateParams::default(), false).unwrap();
        assert_eq!(all[i].token, alone[0].token, "prompt {i}");
    }
}

#[test]
fn a_generation_can_move_between_threads_at_every_step() {
    // As a Go program's calls do: each step may run on another OS thread.
    let m = model("gemma3");
    let (prompt, want) = reference("gemma3");
    let s = std::thread::spawn({
        let m = m.clone();
        move || Session::new(m).unwrap()
    })
    .join()
    .unwrap();
    let mut g = s.start(&prompt, &greedy(6)).unwrap();
    let mut got = Vec::new();
    loop {
        let (g2, ev) = std::thread::spawn(move || {
            let ev = g.next().unwrap();
            (g, ev)
        })
        .join()
        .unwrap();
        g = g2;
        match ev {
            Some(e) => got.extend(e.id),
            None => break,
        }
    }
    assert_eq!(got, want[..6]);
}

/// Greedy, stopping at EOS, with the model's EOS tokens pushed to the top by a huge bias: the
/// first token would end generation.
fn eos_biased(m: &Model, n: usize) -> GenerateParams {
    let mut p = GenerateParams { max_tokens: n, ..Default::default() };
    p.sampler.logit_bias = m.stop_ids(&[], false).into_iter().map(|id| (id, 1000.0)).collect();
    p
}

#[test]
fn min_tokens_holds_back_eos_and_stop_tokens() {
    let m = model("llama_tied");
    let (prompt, want) = reference("llama_tied");
    let eos = m.stop_ids(&[], false);
    assert!(!eos.is_empty());
    let run = |p: &GenerateParams| Session::new(m.clone()).unwrap().generate(&prompt, p, |_| true).unwrap();

    // Without min_tokens the biased EOS ends generation at once.
    let none = run(&eos_biased(&m, 20));
    assert_eq!((none.tokens.len(), none.finish), (0, FinishReason::Stop));
    // With it, exactly min_tokens tokens come first (EOS is masked until then, so the others
    // are chosen as greedy chooses them), then the EOS stops it.
    let mut p = eos_biased(&m, 20);
    p.min_tokens = 5;
    let out = run(&p);
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.tokens.len(), 5, "{:?}", out.tokens);
    assert!(out.tokens.iter().all(|t| !eos.contains(t)));
    if want[..5].iter().all(|t| !eos.contains(t)) {
        assert_eq!(out.tokens, want[..5]);
    }
    // max_tokens still wins.
    p.max_tokens = 3;
    let out = run(&p);
    assert_eq!((out.tokens.len(), out.finish), (3, FinishReason::Length));

    // A stop token: the greedy path's first token, held back for the first 4 tokens.
    let mut p = greedy(12);
    p.stop_tokens = vec![want[0]];
    assert!(run(&p).tokens.is_empty());
    p.min_tokens = 4;
    let out = run(&p);
    assert!(out.tokens.len() >= 4, "{:?}", out.tokens);
    assert!(!out.tokens[..4].contains(&want[0]));
    assert!(!out.tokens.contains(&want[0]), "a stop token is never returned");
}

#[test]
fn min_tokens_ignores_stop_strings_in_the_first_tokens() {
    let m = model("qwen2");
    let (prompt, _) = reference("qwen2");
    let run = |p: &GenerateParams| Session::new(m.clone()).unwrap().generate(&prompt, p, |_| true).unwrap();
    let full = run(&greedy(32)).text;
    let first4 = run(&greedy(4)).text;
    assert!(full.starts_with(&first4) && !first4.is_empty(), "{full:?} / {first4:?}");
    // A stop string the text begins with.
    let stop: String = full.chars().take(2).collect();
    let mut p = greedy(32);
    p.stop_strings = vec![stop.clone()];
    let out = run(&p);
    assert_eq!((out.text.as_str(), out.finish), ("", FinishReason::Stop));
    // With min_tokens 4 it is looked for only after the first 4 tokens' text.
    p.min_tokens = 4;
    let mut streamed = String::new();
    let out = Session::new(m.clone())
        .unwrap()
        .generate(&prompt, &p, |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    let expected = match full[first4.len()..].find(&stop) {
        Some(i) => &full[..first4.len() + i],
        None => full.as_str(),
    };
    assert_eq!(out.text, expected);
    assert_eq!(streamed, expected);
    assert!(out.tokens.len() >= 4);
}

#[test]
fn batch_rows_honour_min_tokens() {
    let m = model("qwen3");
    let (prompt, _) = reference("qwen3");
    let prompts = vec![prompt.clone(), prompt[..6].to_vec()];
    let mut p = eos_biased(&m, 20);
    let (out, _) = batch_generate(&m, &prompts, &p).unwrap();
    assert!(out.iter().all(|r| r.as_ref().unwrap().tokens.is_empty()));
    p.min_tokens = 6;
    let (out, metrics) = batch_generate(&m, &prompts, &p).unwrap();
    for (pr, r) in prompts.iter().zip(&out) {
        let r = r.as_ref().unwrap();
        assert_eq!((r.tokens.len(), r.finish), (6, FinishReason::Stop));
        let single = Session::new(m.clone()).unwrap().generate(pr, &p, |_| true).unwrap();
        assert_eq!(r.tokens, single.tokens);
    }
    assert_eq!(metrics.generated_tokens, 12);
}
