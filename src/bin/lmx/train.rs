//! `lmx train`: LoRA fine-tuning from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lmx::engine::train::{StepReport, TrainParams, Trainer};
use lmx::engine::train_data::load_jsonl;
use lmx::error::Context;
use lmx::mlx::Dtype;
use lmx::model::LoadParams;
use lmx::model::{LoraConfig, Target};
use lmx::{Error, ErrorKind, Result};

use super::{load_with, number, Args, USAGE};

/// Set by SIGINT: stop after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

struct Options {
    data: PathBuf,
    valid: Option<PathBuf>,
    out: PathBuf,
    resume: Option<PathBuf>,
    iters: u64,
    steps_per_eval: u64,
    save_every: u64,
    mask_prompt: bool,
    dtype: Option<Dtype>,
    params: TrainParams,
    /// --alpha, turned into a scale once the rank is known.
    alpha: Option<f32>,
    cosine: bool,
}

/// A float option: finite and satisfying `ok` (described by `what`), or an error naming it.
fn float(v: &str, f: &str, ok: impl Fn(f32) -> bool, what: &str) -> Result<f32> {
    let x: f32 = number(v, f)?;
    if x.is_finite() && ok(x) {
        Ok(x)
    } else {
        Err(Error::invalid(format!("{f} {v}: {what}")))
    }
}

/// A count option that must be at least `min`.
fn count<T: std::str::FromStr + PartialOrd + std::fmt::Display>(v: &str, f: &str, min: T) -> Result<T> {
    let n: T = number(v, f)?;
    if n < min {
        return Err(Error::invalid(format!("{f} {v} must be at least {min}")));
    }
    Ok(n)
}

/// An input file option: it must name a file (checked before the model loads).
fn input(v: &str, f: &str) -> Result<PathBuf> {
    let p = PathBuf::from(v);
    if !p.is_file() {
        return Err(Error::not_found(format!("{f} {v}: no such file")));
    }
    Ok(p)
}

fn options(a: &Args) -> Result<Options> {
    if let Some(f) = &a.not_train {
        let hint =
            if f == "--adapter" { " (--resume-adapter DIR continues training an adapter)" } else { "" };
        return Err(Error::invalid(format!("{f} is not an option of lmx train{hint}\n\n{USAGE}")));
    }
    let mut o = Options {
        data: PathBuf::new(),
        valid: None,
        out: PathBuf::new(),
        resume: None,
        iters: 1000,
        steps_per_eval: 200,
        save_every: 100,
        mask_prompt: false,
        dtype: None,
        params: TrainParams::default(),
        alpha: None,
        cosine: false,
    };
    let (mut data, mut out) = (None, None);
    let mut num_layers = None;
    let positive = |x: f32| x > 0.0;
    let non_negative = |x: f32| x >= 0.0;
    for (k, v) in &a.train {
        let f = k.as_str();
        let p = &mut o.params;
        match f {
            "--data" => data = Some(input(v, f)?),
            "--valid" => o.valid = Some(input(v, f)?),
            "--adapter-out" => out = Some(PathBuf::from(v)),
            "--resume-adapter" => {
                if !Path::new(v).join("adapter_config.json").is_file() {
                    return Err(Error::not_found(format!("{f} {v}: no adapter_config.json there")));
                }
                o.resume = Some(PathBuf::from(v))
            }
            "--iters" => o.iters = count(v, f, 1)?,
            "--steps-per-eval" => o.steps_per_eval = number(v, f)?,
            "--save-every" => o.save_every = number(v, f)?,
            "--batch-size" => p.batch_size = count(v, f, 1)?,
            "--learning-rate" => p.learning_rate = float(v, f, positive, "must be a positive number")?,
            "--rank" => p.lora.rank = count(v, f, 1)?,
            "--scale" => p.lora.scale = float(v, f, |_| true, "must be a finite number")?,
            "--alpha" => o.alpha = Some(float(v, f, |_| true, "must be a finite number")?),
            "--dropout" => p.lora.dropout = float(v, f, |x| (0.0..1.0).contains(&x), "must be in [0, 1)")?,
            "--num-layers" => num_layers = Some(count::<i32>(v, f, 1)?),
            "--targets" => {
                if v.split(',').all(|t| t.trim().is_empty()) {
                    return Err(Error::invalid(format!("{f} {v:?} names no projection")));
                }
                p.lora.targets = Target::parse_list(v).context(f)?;
            }
            "--warmup" => p.warmup_steps = number(v, f)?,
            "--cosine" => o.cosine = true,
            "--min-learning-rate" => {
                p.min_learning_rate = float(v, f, non_negative, "must be a number >= 0")?
            }
            "--weight-decay" => p.weight_decay = float(v, f, non_negative, "must be a number >= 0")?,
            "--grad-clip" => p.grad_clip = float(v, f, non_negative, "must be a number >= 0 (0 = off)")?,
            "--grad-accumulation" => p.grad_accumulation = count(v, f, 1)?,
            "--grad-checkpoint" => p.grad_checkpoint = true,
            "--max-seq-length" => p.max_seq_length = count(v, f, 2)?,
            "--mask-prompt" => o.mask_prompt = true,
            "--dtype" => {
                o.dtype = Some(match v.as_str() {
                    "float32" => Dtype::F32,
                    "bfloat16" => Dtype::BF16,
                    "float16" => Dtype::F16,
                    _ => {
                        return Err(Error::invalid(format!(
                            "--dtype {v:?}: expected float32, bfloat16 or float16"
                        )))
                    }
                })
            }
            _ => unreachable!("parse() accepts only the options of lmx train"),
        }
    }
    if let Some(s) = a.params.sampler.seed {
        o.params.seed = s;
    }
    o.data = data.ok_or_else(|| Error::invalid(format!("lmx train needs --data\n\n{USAGE}")))?;
    o.out = out.ok_or_else(|| Error::invalid(format!("lmx train needs --adapter-out\n\n{USAGE}")))?;
    if o.out.exists() && !o.out.is_dir() {
        return Err(Error::invalid(format!("--adapter-out {}: not a folder", o.out.display())));
    }
    if let Some(alpha) = o.alpha {
        o.params.lora.scale = LoraConfig::scale_from_alpha(alpha, o.params.lora.rank);
    }
    if o.cosine {
        let iters = u32::try_from(o.iters).unwrap_or(u32::MAX);
        o.params.cosine_steps = iters.saturating_sub(o.params.warmup_steps).max(1);
    }
    o.params.lora.num_layers = num_layers.unwrap_or(lmx::model::nn::lora::DEFAULT_LAYERS as i32);
    Ok(o)
}

/// Ctrl-C: the first asks the loop to stop after the current step and save; the handler
/// then steps aside, so a second Ctrl-C ends the process at once.
extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; SIG_DFL is always a valid disposition.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
}

pub fn run(a: &Args) -> Result<()> {
    let mut o = options(a)?;
    let model = load_with(a, &LoadParams { dtype: o.dtype, ..Default::default() })?;
    let layers = model.num_layers() as i32;
    o.params.lora.num_layers = o.params.lora.num_layers.min(layers);
    o.params.validate(layers as usize)?;
    let data = load_jsonl(&o.data, &model, o.mask_prompt).context("--data")?;
    let valid =
        o.valid.as_ref().map(|v| load_jsonl(v, &model, o.mask_prompt)).transpose().context("--valid")?;
    let init = o.resume.as_ref().map(|d| model.load_adapter(d)).transpose().context("--resume-adapter")?;
    let rows = data.len();
    let mut t = Trainer::new(Arc::clone(&model), o.params.clone(), data, init)?;
    // A folder that cannot be made fails now, not after the training.
    std::fs::create_dir_all(&o.out)
        .map_err(|e| Error::new(ErrorKind::Io, format!("--adapter-out {}: {e}", o.out.display())))?;
    // SAFETY: the handler only stores to an atomic and resets its own disposition.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    if !a.json {
        eprintln!(
            "training a rank-{} adapter ({} weights) on {} layers of {} over {rows} rows: {} updates",
            o.params.lora.rank,
            t.weights().param_count(),
            o.params.lora.num_layers,
            model.path().display(),
            o.iters
        );
    }
    let mut saved_at = None;
    // Whether the progress line is on screen, to be ended before another line.
    let mut bar = false;
    while t.steps() < o.iters {
        if STOP.load(Ordering::SeqCst) {
            end_line(&mut bar);
            eprintln!("interrupted after {} updates: saving", t.steps());
            break;
        }
        let r = t.step()?;
        if a.json {
            emit(&r)?;
        } else {
            progress(&r, o.iters);
            bar = true;
        }
        if !r.updated {
            continue;
        }
        // Validation every --steps-per-eval updates and after the last, as mlx_lm.lora.
        let eval_due = (o.steps_per_eval > 0 && r.step % o.steps_per_eval == 0) || r.step == o.iters;
        if let (Some(v), true) = (&valid, eval_due) {
            let start = Instant::now();
            let loss = t.evaluate(v)?;
            let secs = start.elapsed().as_secs_f64();
            if a.json {
                emit(&Validation { step: r.step, val_loss: loss, val_time: secs })?;
            } else {
                end_line(&mut bar);
                eprintln!("step {}: validation loss {loss:.4} ({secs:.1} s)", r.step);
            }
        }
        if o.save_every > 0 && r.step % o.save_every == 0 {
            t.save(&o.out)?;
            saved_at = Some(r.step);
        }
    }
    if saved_at != Some(t.steps()) {
        t.save(&o.out)?;
    }
    if !a.json {
        end_line(&mut bar);
        eprintln!("saved the adapter to {} after {} updates", o.out.display(), t.steps());
    }
    Ok(())
}

/// One --json line on stdout. A closed stdout (`| head`) does not stop the training: the
/// adapter is still saved.
fn emit(v: &impl serde::Serialize) -> Result<()> {
    let line = serde_json::to_string(v).map_err(|e| Error::internal(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    Ok(())
}

/// A --json validation line.
#[derive(serde::Serialize)]
struct Validation {
    step: u64,
    val_loss: f32,
    /// Seconds the validation took.
    val_time: f64,
}

/// The one-line progress bar on stderr, redrawn in place.
fn progress(r: &StepReport, iters: u64) {
    let width = 30;
    let done = (r.step as usize * width / iters as usize).min(width);
    eprint!(
        "\r[{}{}] {}/{} loss {:.4} | {:.0} tok/s | lr {:.2e} | peak {:.0} MiB   ",
        "#".repeat(done),
        " ".repeat(width - done),
        r.step,
        iters,
        r.loss,
        r.tokens_per_second,
        r.learning_rate,
        r.peak_memory_bytes as f64 / (1 << 20) as f64
    );
    let _ = std::io::stderr().flush();
}

fn end_line(bar: &mut bool) {
    if std::mem::take(bar) {
        eprintln!();
    }
}
