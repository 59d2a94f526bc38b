//! Constrained decoding: JSON schemas (the corpus under tests/fixtures/schemas), regexes,
//! Lark grammars and choices, on the fixture and real models, in sessions, batches and
//! classification. Outputs always match their constraint (checked independently: Python's
//! jsonschema, the `regex` crate, a parser written here), and the mask never changes a choice
//! the constraint allows.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lmx::engine::{
    batch_generate_constrained, classify, FinishReason, GenerateParams, SamplerParams, Session,
};
use lmx::model::{Constraint, LoadParams, Message, Model};
use lmx::ErrorKind;

fn load(dir: &Path) -> Arc<Model> {
    Arc::new(Model::load(dir, &LoadParams::default()).unwrap())
}

fn chat_prompt(m: &Arc<Model>, text: &str) -> Vec<u32> {
    let s = Session::new(m.clone()).unwrap();
    s.chat_tokens(&[Message::new("user", text)], None, &Default::default(), None).unwrap()
}

fn params(c: Option<Constraint>, max_tokens: usize, seed: Option<u64>) -> GenerateParams {
    GenerateParams {
        max_tokens,
        constraint: c,
        sampler: SamplerParams {
            temperature: if seed.is_some() { 0.8 } else { 0.0 },
            seed,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn schema_dir() -> PathBuf {
    fixtures().join("schemas")
}

/// The corpus: (file name, schema text), in name order.
fn corpus() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Runs scripts/validate_json.py (`mode`: "" for schemas, "--regex", "--choices") over `lines`;
/// panics with its report unless every complete output is valid.
fn validate(mode: &str, lines: &[serde_json::Value]) {
    let Some(py) = reference_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outputs.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate_json.py");
    let mut cmd = std::process::Command::new(py);
    cmd.arg(&script);
    if !mode.is_empty() {
        cmd.arg(mode);
    }
    let out = cmd.arg(&file).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{report}");
    assert!(out.status.success(), "outputs that do not satisfy their constraint:\n{report}");
}

/// The corpus schemas on the real model `name`: greedy, schema i where i % greedy_every ==
/// greedy_at (the two models split the corpus between them), and sampled every
/// `sampled_every`-th (the seed varies with the schema, so the pass covers several; the
/// subsets keep `make test` within its time): every complete output validates; outputs cut
/// by max_tokens (finish reason "length") are counted as incomplete.
fn corpus_on(name: &str, (greedy_every, greedy_at): (usize, usize), sampled_every: usize, max_tokens: usize) {
    let Some(dir) = folder(name) else { return };
    let m = load(&dir);
    let schemas = corpus();
    assert!(schemas.len() >= 100, "the corpus has {} schemas", schemas.len());
    let session = Session::new(m.clone()).unwrap();
    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    let (mut complete, mut incomplete, mut tokens, mut forced) = (0, 0, 0, 0);
    for (i, (file, text)) in schemas.iter().enumerate() {
        if i % greedy_every != greedy_at && i % sampled_every != 0 {
            continue;
        }
        let topic = file.trim_end_matches(".json").splitn(2, '-').nth(1).unwrap_or(file).replace('-', " ");
        let prompt = chat_prompt(&m, &format!("Reply with one JSON value about: {topic}."));
        let mut runs = Vec::new();
        if i % greedy_every == greedy_at {
            runs.push(None);
        }
        if i % sampled_every == 0 {
            runs.push(Some(1 + (i as u64 % 5)));
        }
        for seed in runs {
            let c = Constraint::JsonSchema(text.clone());
            let out = session
                .generate(&prompt, &params(Some(c), max_tokens, seed), |_| true)
                .unwrap_or_else(|e| panic!("{name} {file}: {e}"));
            tokens += out.tokens.len();
            forced += out.metrics.forced_tokens;
            if std::env::var_os("LMX_CORPUS_TRACE").is_some() {
                eprintln!(
                    "{file} {seed:?}: {} tokens, {} forced, {:?}, {:.2}s, matcher {:.3}s (waited {:.3}s)",
                    out.tokens.len(),
                    out.metrics.forced_tokens,
                    out.finish,
                    out.metrics.total_seconds,
                    out.metrics.constraint_seconds,
                    out.metrics.constraint_wait_seconds
                );
            }
            match out.finish {
                FinishReason::Stop => {
                    complete += 1;
                    // The first check needs nothing installed: a complete output is JSON.
                    serde_json::from_str::<serde_json::Value>(&out.text).unwrap_or_else(|e| {
                        panic!("{name} {file} seed {seed:?}: not JSON ({e}): {:?}", out.text)
                    });
                }
                FinishReason::Length => incomplete += 1,
                other => panic!("{name} {file}: finished with {other:?}"),
            }
            lines.push(serde_json::json!({
                "schema": schema_dir().join(file).to_string_lossy(),
                "text": out.text,
                "finish": out.finish.name(),
            }));
        }
    }
    eprintln!(
        "{name}: {complete} complete, {incomplete} cut at {max_tokens} tokens; {tokens} tokens ({forced} forced) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(complete > incomplete, "{name}: most outputs should complete within {max_tokens} tokens");
    validate("", &lines);
}

#[test]
fn the_schema_corpus_validates_on_smollm2() {
    corpus_on("smollm2-135m-instruct", (2, 0), 6, 64);
}

#[test]
fn the_schema_corpus_validates_on_gemma3() {
    corpus_on("gemma3-270m", (2, 1), 8, 64);
}

#[test]
fn unsupported_schema_features_are_refused_by_name() {
    let m = load(&fixtures().join("qwen3"));
    let dir = schema_dir().join("unsupported");
    let expected = json(&dir.join("expected.json"));
    let s = Session::new(m.clone()).unwrap();
    let prompt: Vec<u32> = vec![1, 2, 3];
    let plain = s.generate(&prompt, &params(None, 4, None), |_| true).unwrap();
    for (file, want) in expected.as_object().unwrap() {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let e = s
            .generate(&prompt, &params(Some(Constraint::JsonSchema(text)), 4, None), |_| true)
            .expect_err(file);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{file}: {e}");
        let want = want.as_str().unwrap();
        assert!(e.message.contains(want), "{file}: {:?} does not name {want:?}", e.message);
        assert!(e.message.starts_with("json_schema: "), "{}", e.message);
    }
    // The session is as it was.
    assert_eq!(s.generate(&prompt, &params(None, 4, None), |_| true).unwrap().tokens, plain.tokens);
}

#[test]
fn bad_constraints_fail_clearly_and_the_session_goes_on() {
    let m = load(&fixtures().join("qwen3"));
    let s = Session::new(m.clone()).unwrap();
    let prompt: Vec<u32> = vec![5, 6, 7, 8];
    let plain = s.generate(&prompt, &params(None, 6, None), |_| true).unwrap();
    let cases: Vec<(Constraint, &str)> = vec![
        (Constraint::JsonSchema("{\"type\": ".into()), "json_schema: not valid JSON"),
        (Constraint::JsonSchema("[1, 2]".into()), "json_schema: a schema is a JSON object or a boolean"),
        (
            Constraint::JsonSchema(
                r##"{"type":"object","properties":{"a":{"$ref":"#/$defs/missing"}}}"##.into(),
            ),
            "json_schema: ",
        ),
        (Constraint::JsonSchema(r#"{"type":"strin"}"#.into()), "json_schema: "),
        (Constraint::Regex("(unclosed".into()), "regex: "),
        (Constraint::Regex("  ".into()), "regex: empty"),
        (Constraint::Lark("start: foo\n".into()), "grammar: "),
        (Constraint::Lark("start: A\nA: /[^\\s\\S]/\n".into()), "grammar: "),
        (Constraint::Lark("start: A B\nA: \"a\"\nB: /[^\\s\\S]/\n".into()), "grammar: "),
        (Constraint::Choice(vec![]), "choice: the list of choices is empty"),
        (Constraint::Choice(vec!["a".into(), "".into()]), "choice 1 is empty"),
        (Constraint::Regex("a".repeat(lmx::model::grammar::MAX_CONSTRAINT_BYTES + 1)), "at most"),
    ];
    for (c, want) in cases {
        let e =
            s.generate(&prompt, &params(Some(c.clone()), 6, None), |_| true).expect_err(&format!("{c:?}"));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{c:?}: {e}");
        assert!(e.message.contains(want), "{c:?}: {:?} lacks {want:?}", e.message);
        let again = s.generate(&prompt, &params(None, 6, None), |_| true).unwrap();
        assert_eq!(again.tokens, plain.tokens, "the session changed after {c:?}");
    }
}

/// Generates under `c` and under no constraint; where the free output satisfies `c` (as
/// `holds` says), the constrained one must be the same text.
fn same_when_satisfied(m: &Arc<Model>, prompt: &[u32], n: usize) -> usize {
    let s = Session::new(m.clone()).unwrap();
    let free = s.generate(prompt, &params(None, n, None), |_| true).unwrap();
    let text = free.text.clone();
    // A constraint describes text: an output with a special token or bytes that are not
    // UTF-8 (random fixture weights make both) satisfies none of these.
    let raw = m.decode(&free.tokens, false).unwrap();
    if text.is_empty() || text.contains('\u{FFFD}') || raw != text {
        return 0;
    }
    let mut checked = 0;
    // Nothing forced, nothing excluded that the model chose: the very same tokens.
    let mut candidates = vec![(Constraint::Regex("(?s:.*)".into()), true)];
    if free.finish == FinishReason::Stop {
        // The exact text, every token of it forced (in the tokenizer's own split, which may
        // not be the model's: the same text, maybe other tokens), or one of two choices.
        candidates.push((Constraint::Regex(regex_syntax_escape(&text)), false));
        candidates.push((Constraint::Choice(vec![text.clone(), format!("{text} and more")]), false));
    }
    for (c, same_tokens) in candidates {
        let budget = if same_tokens { n } else { 2 * n };
        let got = Session::new(m.clone())
            .unwrap()
            .generate(prompt, &params(Some(c.clone()), budget, None), |_| true)
            .unwrap();
        assert_eq!(got.text, text, "{c:?} changed the output");
        if same_tokens {
            assert_eq!(got.tokens, free.tokens, "{c:?} changed the tokens");
        }
        checked += 1;
    }
    checked
}

fn regex_syntax_escape(s: &str) -> String {
    regex::escape(s)
}

#[test]
fn a_constraint_the_free_output_satisfies_changes_nothing() {
    let mut checked = 0;
    for case in ["qwen3", "llama_tied", "gemma3", "mistral"] {
        let m = load(&fixtures().join(case));
        let r = json(&fixtures().join(case).join("reference.json"));
        checked += same_when_satisfied(&m, &ids(&r["prompt_ids"]), 12);
    }
    if let Some(dir) = folder("smollm2-135m-instruct") {
        let m = load(&dir);
        for q in [
            "Name three colours.",
            "What is 2 + 2? Answer briefly.",
            "Say hello.",
            "Is water wet? Yes or no.",
        ] {
            checked += same_when_satisfied(&m, &chat_prompt(&m, q), 40);
        }
    }
    assert!(checked >= 8, "only {checked} comparisons ran");
}

#[test]
fn regexes_and_choices_always_match() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let regexes = [
        r"[0-9]{3}-[0-9]{4}",
        r"(yes|no|maybe), because [a-z ]{5,40}\.",
        r"[A-Z][a-z]+ [A-Z][a-z]+",
        r"\d{4}-\d{2}-\d{2}",
        r"#[0-9a-f]{6}",
        r"(?:[a-z]+@[a-z]+\.(?:com|org))",
    ];
    let choices: Vec<Vec<String>> = vec![
        vec!["positive".into(), "negative".into(), "neutral".into()],
        vec!["Paris".into(), "London".into(), "Berlin".into(), "Rome".into()],
        vec!["A".into(), "B".into(), "C".into(), "D".into()],
        vec!["the first one".into(), "the second one".into()],
    ];
    let prompt = chat_prompt(&m, "Answer the question.");
    let (mut rx_lines, mut ch_lines) = (Vec::new(), Vec::new());
    for seed in [None, Some(7), Some(8)] {
        for rx in regexes {
            let out = Session::new(m.clone())
                .unwrap()
                .generate(&prompt, &params(Some(Constraint::Regex(rx.into())), 64, seed), |_| true)
                .unwrap();
            let whole = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
            if out.finish == FinishReason::Stop {
                assert!(whole.is_match(&out.text), "{rx}: {:?}", out.text);
            }
            rx_lines.push(serde_json::json!({"pattern": rx, "text": out.text, "finish": out.finish.name()}));
        }
        for c in &choices {
            let out = Session::new(m.clone())
                .unwrap()
                .generate(&prompt, &params(Some(Constraint::Choice(c.clone())), 16, seed), |_| true)
                .unwrap();
            assert_eq!(out.finish, FinishReason::Stop);
            assert!(c.contains(&out.text), "{c:?}: {:?}", out.text);
            ch_lines.push(serde_json::json!({"choices": c, "text": out.text, "finish": out.finish.name()}));
        }
    }
    validate("--regex", &rx_lines);
    validate("--choices", &ch_lines);
}

/// A tiny arithmetic language: sums and products of integers and parenthesised expressions.
const ARITH: &str = r#"
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,4}/
"#;

/// Parses `s` as ARITH (no spaces); true when all of it is one expression.
fn parses_arith(s: &str) -> bool {
    fn expr(b: &[u8], i: &mut usize) -> bool {
        if !term(b, i) {
            return false;
        }
        while *i < b.len() && (b[*i] == b'+' || b[*i] == b'-') {
            *i += 1;
            if !term(b, i) {
                return false;
            }
        }
        true
    }
    fn term(b: &[u8], i: &mut usize) -> bool {
        if !factor(b, i) {
            return false;
        }
        while *i < b.len() && (b[*i] == b'*' || b[*i] == b'/') {
            *i += 1;
            if !factor(b, i) {
                return false;
            }
        }
        true
    }
    fn factor(b: &[u8], i: &mut usize) -> bool {
        if *i < b.len() && b[*i] == b'(' {
            *i += 1;
            if !expr(b, i) || *i >= b.len() || b[*i] != b')' {
                return false;
            }
            *i += 1;
            return true;
        }
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        (1..=4).contains(&(*i - start))
    }
    let b = s.as_bytes();
    let mut i = 0;
    expr(b, &mut i) && i == b.len()
}

#[test]
fn a_lark_grammar_constrains_to_its_language() {
    assert!(parses_arith("(1+2)*30-4/5") && !parses_arith("1+") && !parses_arith("(1"));
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let prompt = chat_prompt(&m, "Write an arithmetic expression.");
    let mut complete = 0;
    for seed in [None, Some(1), Some(2), Some(3)] {
        let out = Session::new(m.clone())
            .unwrap()
            .generate(&prompt, &params(Some(Constraint::Lark(ARITH.into())), 48, seed), |_| true)
            .unwrap();
        if out.finish == FinishReason::Stop {
            complete += 1;
            assert!(parses_arith(&out.text), "not in the language: {:?}", out.text);
        } else {
            assert_eq!(out.finish, FinishReason::Length);
        }
    }
    assert!(complete > 0);
}

#[test]
fn batch_rows_each_keep_their_own_constraint() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let p = chat_prompt(&m, "Give me a short answer.");
    let prompts = vec![p.clone(), p.clone(), p.clone(), p.clone()];
    let schema = r#"{"type":"object","properties":{"answer":{"type":"string","maxLength":30},"score":{"type":"integer"}},"required":["answer","score"],"additionalProperties":false}"#;
    let cs = vec![
        Some(Constraint::JsonSchema(schema.into())),
        Some(Constraint::Regex("[0-9]{2,3}".into())),
        None,
        Some(Constraint::Choice(vec!["up".into(), "down".into()])),
    ];
    let (outs, _) = batch_generate_constrained(&m, &prompts, &params(None, 48, None), &cs).unwrap();
    let outs: Vec<_> = outs.into_iter().map(|o| o.unwrap()).collect();
    let v: serde_json::Value = serde_json::from_str(&outs[0].text).unwrap();
    assert!(v["score"].is_i64() && v["answer"].is_string(), "{}", outs[0].text);
    assert!(regex::Regex::new("^[0-9]{2,3}$").unwrap().is_match(&outs[1].text), "{}", outs[1].text);
    assert!(["up", "down"].contains(&outs[3].text.as_str()), "{}", outs[3].text);
    // The free row is what it is alone, and what each constrained row is alone.
    for (i, c) in cs.iter().enumerate() {
        let alone =
            Session::new(m.clone()).unwrap().generate(&p, &params(c.clone(), 48, None), |_| true).unwrap();
        assert_eq!(outs[i].text, alone.text, "row {i}");
    }
    // A constraint that does not compile is its row's error; the others run.
    let bad = vec![Some(Constraint::Regex("(".into())), None];
    let (outs, _) = batch_generate_constrained(&m, &prompts[..2], &params(None, 4, None), &bad).unwrap();
    assert_eq!(outs[0].as_ref().unwrap_err().kind, ErrorKind::InvalidArgument);
    assert!(outs[1].is_ok());
}

#[test]
fn classification_can_be_limited_to_labels() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let labels = vec![" positive".to_string(), " negative".to_string()];
    let firsts: Vec<u32> = labels.iter().map(|l| m.encode(l, false).unwrap()[0]).collect();
    let prompts: Vec<Vec<u32>> = ["I loved this film.", "Terrible, a waste of time.", "The sky is"]
        .iter()
        .map(|t| m.encode(&format!("Review: {t}\nSentiment:"), true).unwrap())
        .collect();
    // The tokens that can begin a label: each token whose text is a non-empty prefix of one.
    let allowed: Vec<u32> = (0..m.tokenizer().vocab_size() as u32)
        .filter(|&id| {
            let t = m.decode(&[id], false).unwrap();
            !t.is_empty() && !t.contains('\u{FFFD}') && labels.iter().any(|l| l.starts_with(&t))
        })
        .collect();
    assert!(firsts.iter().all(|f| allowed.contains(f)));
    let mut p = params(Some(Constraint::Choice(labels.clone())), 1, None);
    let outs = classify(&m, &prompts, &p, true).unwrap();
    for o in &outs {
        assert!(allowed.contains(&o.token), "token {} ({:?}) begins no label", o.token, o.text);
        // The token is the best of the allowed ones in the model's own logits.
        let l = o.logits.as_ref().unwrap();
        let best = *allowed.iter().max_by(|a, b| l[**a as usize].total_cmp(&l[**b as usize])).unwrap();
        assert_eq!(o.token, best);
    }
    p.constraint = Some(Constraint::Regex("(".into()));
    assert_eq!(classify(&m, &prompts, &p, false).unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn compiled_grammars_are_cached_per_model() {
    let m = load(&fixtures().join("qwen3"));
    let c = Constraint::JsonSchema(
        r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#.into(),
    );
    let s = Session::new(m.clone()).unwrap();
    let before = m.grammars().unwrap().cache_stats();
    for _ in 0..3 {
        s.generate(&[1, 2, 3], &params(Some(c.clone()), 8, None), |_| true).unwrap();
    }
    let after = m.grammars().unwrap().cache_stats();
    assert_eq!(after.misses - before.misses, 1);
    assert_eq!(after.hits - before.hits, 2);
    for i in 0..(lmx::model::grammar::CACHE_ENTRIES + 5) {
        m.matcher(&Constraint::Regex(format!("x{{{i}}}"))).unwrap();
    }
    assert_eq!(m.grammars().unwrap().cache_stats().entries, lmx::model::grammar::CACHE_ENTRIES);
}

#[test]
fn forced_tokens_skip_decode_steps() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let prompt = chat_prompt(&m, "Give the weather as JSON.");
    let schema = r#"{"type":"object","properties":{"temperature_celsius":{"type":"integer","minimum":-50,"maximum":60},"condition":{"enum":["sunny","cloudy","rain","snow"]},"humidity_percent":{"type":"integer","minimum":0,"maximum":100}},"required":["temperature_celsius","condition","humidity_percent"],"additionalProperties":false}"#;
    let out = Session::new(m.clone())
        .unwrap()
        .generate(&prompt, &params(Some(Constraint::JsonSchema(schema.into())), 80, None), |_| true)
        .unwrap();
    assert_eq!(out.finish, FinishReason::Stop, "{}", out.text);
    let v: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert!(v["condition"].is_string());
    // The keys and punctuation are forced: well over a third of the tokens.
    assert!(
        out.metrics.forced_tokens * 3 > out.tokens.len(),
        "{} of {} forced",
        out.metrics.forced_tokens,
        out.tokens.len()
    );
    // The forced tokens spell the same text as the tokenizer would.
    assert_eq!(m.decode(&out.tokens, true).unwrap(), out.text);
}
