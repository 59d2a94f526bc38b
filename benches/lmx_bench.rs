//! `lmx-bench`: liblmx's half of the side-by-side benchmark (benches/compare.py runs it and
//! mlx-lm's half, benches/mlxlm_bench.py, in turns on the same folder and prompt ids).
//!
//! One process: load the model (timed), then for each prompt in the prompts file one cold
//! generation (the first in this process with that prompt length: kernels are compiled and
//! buffers allocated here), `--warmup` untimed ones and `--reps` timed ones, each from an
//! empty cache, greedy, exactly `--gen` tokens (EOS ignored). Prints one JSON line per prompt.
//! Field names and meanings match benches/mlxlm_bench.py.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lmx::engine::{GenerateParams, Metrics, Session};
use lmx::mlx::{memory, Device, Dtype};
use lmx::model::{LoadParams, Model};
use lmx::{Error, Result};

const USAGE: &str = "usage: lmx-bench --model DIR --prompts FILE.json [--gen N] [--reps N] [--warmup N]
                 [--dtype float32|bfloat16|float16] [--chunk N] [--classify B1,B2,...]
                 [--kv-bits 4|8] [--kv-group-size G]
FILE.json is a JSON list of prompts, each a list of token ids. With --classify, every prompt is
classified (one forward pass, greedy next token) in calls of B prompts, for each batch size B,
and the lines give sentences per second.";

struct Args {
    model: PathBuf,
    prompts: PathBuf,
    gen: usize,
    reps: usize,
    warmup: usize,
    dtype: Option<Dtype>,
    chunk: Option<usize>,
    classify: Vec<usize>,
    /// Quantized KV cache: bits (0 = off) and group size.
    kv_bits: usize,
    kv_group_size: usize,
}

fn parse() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let (mut model, mut prompts) = (None, None);
    let mut a = Args {
        model: PathBuf::new(),
        prompts: PathBuf::new(),
        gen: 128,
        reps: 3,
        warmup: 1,
        dtype: None,
        chunk: None,
        classify: Vec::new(),
        kv_bits: 0,
        kv_group_size: 64,
    };
    let num = |v: Option<&String>, f: &str| -> Result<usize> {
        v.and_then(|s| s.parse().ok()).ok_or_else(|| Error::invalid(format!("{f} needs a number\n{USAGE}")))
    };
    while let Some(f) = it.next() {
        match f.as_str() {
            "--model" => model = it.next().map(PathBuf::from),
            "--prompts" => prompts = it.next().map(PathBuf::from),
            "--gen" => a.gen = num(it.next(), f)?,
            "--reps" => a.reps = num(it.next(), f)?,
            "--warmup" => a.warmup = num(it.next(), f)?,
            "--chunk" => a.chunk = Some(num(it.next(), f)?),
            "--kv-bits" => a.kv_bits = num(it.next(), f)?,
            "--kv-group-size" => a.kv_group_size = num(it.next(), f)?,
            "--classify" => {
                a.classify = it
                    .next()
                    .and_then(|v| v.split(',').map(|x| x.parse::<usize>().ok().filter(|&b| b > 0)).collect())
                    .ok_or_else(|| Error::invalid(format!("--classify needs batch sizes\n{USAGE}")))?;
            }
            "--dtype" => {
                let d = it.next().map(String::as_str).unwrap_or("");
                a.dtype = Some(match d {
                    "float32" => Dtype::F32,
                    "bfloat16" => Dtype::BF16,
                    "float16" => Dtype::F16,
                    _ => return Err(Error::invalid(format!("--dtype {d:?}\n{USAGE}"))),
                });
            }
            _ => return Err(Error::invalid(format!("unknown option {f:?}\n{USAGE}"))),
        }
    }
    a.model = model.ok_or_else(|| Error::invalid(format!("--model is required\n{USAGE}")))?;
    a.prompts = prompts.ok_or_else(|| Error::invalid(format!("--prompts is required\n{USAGE}")))?;
    if a.reps == 0 || a.gen < 2 {
        return Err(Error::invalid("--reps must be at least 1 and --gen at least 2"));
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Largest resident set of this process so far, in bytes (VmHWM; 0 where /proc has none).
fn max_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn run_once(session: &Session, prompt: &[u32], p: &GenerateParams) -> Result<Metrics> {
    session.reset()?;
    let out = session.generate(prompt, p, |_| true)?;
    if out.tokens.len() != p.max_tokens {
        return Err(Error::internal(format!(
            "generated {} tokens, expected {}",
            out.tokens.len(),
            p.max_tokens
        )));
    }
    Ok(out.metrics)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmx-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let a = parse()?;
    let text = std::fs::read_to_string(&a.prompts).map_err(|e| Error::io(&a.prompts, &e))?;
    let prompts: Vec<Vec<u32>> =
        serde_json::from_str(&text).map_err(|e| Error::format(format!("{}: {e}", a.prompts.display())))?;
    let t0 = Instant::now();
    let lp = LoadParams { dtype: a.dtype, ..Default::default() };
    let model = Arc::new(Model::load(&a.model, &lp)?);
    let load_s = t0.elapsed().as_secs_f64();
    if !a.classify.is_empty() {
        return classify(&a, &model, &prompts, load_s);
    }
    let kv_quant = (a.kv_bits > 0).then_some(lmx::model::KvQuant {
        bits: a.kv_bits as i32,
        group_size: a.kv_group_size as i32,
        start: 0,
    });
    let session =
        lmx::engine::Session::with_options(model.clone(), &lmx::engine::SessionOptions { kv_quant })?;
    let mut p = GenerateParams { max_tokens: a.gen, ignore_eos: true, ..Default::default() };
    if let Some(c) = a.chunk {
        p.prefill_chunk = c;
    }
    let device = Device::default_device()?;
    for prompt in &prompts {
        let cold = run_once(&session, prompt, &p)?;
        for _ in 0..a.warmup {
            run_once(&session, prompt, &p)?;
        }
        let mut runs = Vec::new();
        for _ in 0..a.reps {
            runs.push(run_once(&session, prompt, &p)?);
        }
        let med = |f: fn(&Metrics) -> f64| median(runs.iter().map(f).collect());
        let host_ms = med(|m| {
            (m.decode_seconds - m.decode_wait_seconds) * 1e3
                / (m.generated_tokens.saturating_sub(1).max(1)) as f64
        });
        let line = serde_json::json!({
            "impl": "liblmx",
            "device": device.to_string(),
            "model": a.model.display().to_string(),
            "dtype": model.info().dtype,
            "bits": model.info().quant_bits,
            "kv_bits": a.kv_bits,
            "prompt_len": prompt.len(),
            "gen": a.gen,
            "reps": a.reps,
            "load_s": load_s,
            "cold_ttft_s": cold.time_to_first_token,
            "ttft_s": med(|m| m.time_to_first_token),
            "prefill_tps": med(|m| m.prefill_tokens_per_second),
            "decode_tps": med(|m| m.decode_tokens_per_second),
            "host_ms_per_token": host_ms,
            "wait_ms_per_token": med(|m| m.decode_wait_seconds * 1e3 / (m.generated_tokens.saturating_sub(1).max(1)) as f64),
            "peak_bytes": memory::peak_memory()?,
            "cache_bytes": session.cache_size()?.1,
            "active_bytes": memory::active_memory()?,
            "max_rss_bytes": max_rss(),
        });
        println!("{line}");
    }
    Ok(())
}

/// Sentences per second of `classify` at each batch size: a warm-up call, then `reps` passes
/// over every prompt in calls of B prompts; the median pass.
fn classify(a: &Args, model: &Model, prompts: &[Vec<u32>], load_s: f64) -> Result<()> {
    let p = GenerateParams::default();
    for &b in &a.classify {
        let b = b.min(prompts.len());
        lmx::engine::classify(model, &prompts[..b], &p, false)?;
        let mut secs = Vec::new();
        for _ in 0..a.reps {
            let t = Instant::now();
            for chunk in prompts.chunks(b) {
                lmx::engine::classify(model, chunk, &p, false)?;
            }
            secs.push(t.elapsed().as_secs_f64());
        }
        let line = serde_json::json!({
            "impl": "liblmx",
            "device": Device::default_device()?.to_string(),
            "model": a.model.display().to_string(),
            "batch": b,
            "prompts": prompts.len(),
            "mean_prompt_len": prompts.iter().map(Vec::len).sum::<usize>() as f64 / prompts.len() as f64,
            "sentences_per_s": prompts.len() as f64 / median(secs),
            "load_s": load_s,
            "peak_bytes": memory::peak_memory()?,
        });
        println!("{line}");
    }
    Ok(())
}
