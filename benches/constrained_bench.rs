//! `lmx-constrained-bench`: what a constraint costs per token. For each case (a schema with
//! fixed keys, a schema of free text fields, a regex), interleaved `--reps` times: the
//! constrained generation, then an unconstrained one of exactly as many tokens (EOS ignored)
//! from the same prompt; median seconds per generated token of each, and their ratio. Then
//! the matcher alone, replaying each constrained output: mask time per token (p50, p99), and
//! grammar compile time for the schema corpus, cold (a fresh compiler) and cached.
//! Prints one JSON line per measurement (benches/README.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lmx::engine::{FinishReason, GenerateParams, Session};
use lmx::mlx::Device;
use lmx::model::{Constraint, Grammars, LoadParams, Message, Model};
use lmx::{Error, Result};

const USAGE: &str = "usage: lmx-constrained-bench --model DIR [--reps N] [--max-tokens N] [--corpus DIR]";

/// A schema whose keys are all fixed (forced), values short.
const FIXED_KEYS: &str = r#"{"type":"object","properties":{
 "temperature_celsius":{"type":"integer","minimum":-60,"maximum":60},
 "condition":{"enum":["sunny","cloudy","overcast","rain","snow","fog"]},
 "humidity_percent":{"type":"integer","minimum":0,"maximum":100},
 "wind_direction":{"enum":["north","north-east","east","south-east","south","south-west","west","north-west"]},
 "wind_speed_kmh":{"type":"integer","minimum":0,"maximum":300},
 "uv_index":{"type":"integer","minimum":0,"maximum":12},
 "precipitation_probability_percent":{"type":"integer","minimum":0,"maximum":100}},
 "required":["temperature_celsius","condition","humidity_percent","wind_direction","wind_speed_kmh","uv_index","precipitation_probability_percent"],
 "additionalProperties":false}"#;

/// A schema that is mostly free text.
const FREE_TEXT: &str = r#"{"type":"object","properties":{
 "title":{"type":"string","maxLength":80},
 "summary":{"type":"string","maxLength":600},
 "tags":{"type":"array","items":{"type":"string","maxLength":20},"maxItems":5}},
 "required":["title","summary","tags"],"additionalProperties":false}"#;

struct Args {
    model: PathBuf,
    reps: usize,
    max_tokens: usize,
    corpus: Option<PathBuf>,
}

fn parse() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let mut a = Args { model: PathBuf::new(), reps: 3, max_tokens: 200, corpus: None };
    let mut model = None;
    let num = |v: Option<&String>, f: &str| -> Result<usize> {
        v.and_then(|s| s.parse().ok()).ok_or_else(|| Error::invalid(format!("{f} needs a number\n{USAGE}")))
    };
    while let Some(f) = it.next() {
        match f.as_str() {
            "--model" => model = it.next().map(PathBuf::from),
            "--reps" => a.reps = num(it.next(), f)?,
            "--max-tokens" => a.max_tokens = num(it.next(), f)?,
            "--corpus" => a.corpus = it.next().map(PathBuf::from),
            _ => return Err(Error::invalid(format!("unknown option {f}\n{USAGE}"))),
        }
    }
    a.model = model.ok_or_else(|| Error::invalid(format!("--model is required\n{USAGE}")))?;
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmx-constrained-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Seconds per generated token of a whole call after its prefill (decode and forced tokens).
fn per_token(o: &lmx::engine::generate::Output) -> f64 {
    o.metrics.decode_seconds / (o.tokens.len().saturating_sub(1).max(1)) as f64
}

fn run() -> Result<()> {
    let a = parse()?;
    let model = Arc::new(Model::load(&a.model, &LoadParams::default())?);
    let device = Device::default_device()?.to_string();
    let session = Session::new(model.clone())?;
    let cases = [
        ("fixed_keys", "Give today's weather in Lisbon as JSON.", Constraint::JsonSchema(FIXED_KEYS.into())),
        ("free_text", "Describe the city of Lisbon as JSON.", Constraint::JsonSchema(FREE_TEXT.into())),
        ("regex", "Give a phone number.", Constraint::Regex(r"\+[0-9]{2} [0-9]{3} [0-9]{3} [0-9]{3}".into())),
    ];
    for (name, question, c) in &cases {
        let prompt =
            session.chat_tokens(&[Message::new("user", question)], None, &Default::default(), None)?;
        let cp =
            GenerateParams { max_tokens: a.max_tokens, constraint: Some(c.clone()), ..Default::default() };
        // Warm-up: compiles the grammar (cached from then on) and the kernels.
        session.reset()?;
        let first = session.generate(&prompt, &cp, |_| true)?;
        let n = first.tokens.len();
        let free = GenerateParams { max_tokens: n, ignore_eos: true, ..Default::default() };
        session.reset()?;
        session.generate(&prompt, &free, |_| true)?;
        let (mut with, mut without, mut forced, mut waited) = (Vec::new(), Vec::new(), 0, Vec::new());
        for _ in 0..a.reps {
            session.reset()?;
            let o = session.generate(&prompt, &cp, |_| true)?;
            if o.tokens.len() != n {
                return Err(Error::internal(format!(
                    "{name}: greedy output changed length ({} vs {n})",
                    o.tokens.len()
                )));
            }
            forced = o.metrics.forced_tokens;
            waited.push(o.metrics.constraint_wait_seconds / n as f64);
            with.push(per_token(&o));
            session.reset()?;
            let f = session.generate(&prompt, &free, |_| true)?;
            without.push(per_token(&f));
        }
        // The matcher alone over the same output: mask time per token.
        let mut masks = Vec::new();
        let mut m = model.matcher(c)?;
        for &t in &first.tokens {
            let t0 = Instant::now();
            if m.compute_mask().is_err() {
                break;
            }
            masks.push(t0.elapsed().as_secs_f64());
            if m.consume_token(t).is_err() {
                break;
            }
        }
        let (w, wo) = (median(with), median(without));
        println!(
            "{}",
            serde_json::json!({
                "bench": "constrained", "device": device, "case": name, "tokens": n, "forced_tokens": forced,
                "finish": first.finish.name(), "complete": first.finish == FinishReason::Stop,
                "ms_per_token_constrained": w * 1e3, "ms_per_token_unconstrained": wo * 1e3,
                "constrained_over_unconstrained": w / wo,
                "wait_ms_per_token": median(waited) * 1e3,
                "mask_ms_p50": percentile(&mut masks.clone(), 0.5) * 1e3,
                "mask_ms_p99": percentile(&mut masks, 0.99) * 1e3,
                "text": first.text,
            })
        );
    }
    if let Some(dir) = &a.corpus {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, &e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let schemas: Vec<Constraint> = files
            .iter()
            .map(|p| std::fs::read_to_string(p).map(Constraint::JsonSchema).map_err(|e| Error::io(p, &e)))
            .collect::<Result<_>>()?;
        let mut eos: Vec<u32> = model.tokenizer().eos_ids().iter().copied().collect();
        eos.sort_unstable();
        let t0 = Instant::now();
        let g = Grammars::new(model.tokenizer(), model.vocab(), &eos)?;
        let setup = t0.elapsed().as_secs_f64();
        let mut cold = Vec::new();
        for c in &schemas {
            let t = Instant::now();
            g.matcher(c)?;
            cold.push(t.elapsed().as_secs_f64());
        }
        let mut cached = Vec::new();
        for c in &schemas {
            let t = Instant::now();
            g.matcher(c)?;
            cached.push(t.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "compile", "device": device, "schemas": schemas.len(),
                "vocabulary_setup_ms": setup * 1e3,
                "cold_ms_p50": percentile(&mut cold.clone(), 0.5) * 1e3, "cold_ms_p99": percentile(&mut cold.clone(), 0.99) * 1e3,
                "cold_ms_total": cold.iter().sum::<f64>() * 1e3,
                "cached_ms_p50": percentile(&mut cached.clone(), 0.5) * 1e3, "cached_ms_total": cached.iter().sum::<f64>() * 1e3,
            })
        );
    }
    Ok(())
}
