//! `lmx train`: LoRA fine-tuning from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lmx::engine::train::{TrainParams, Trainer};
use lmx::engine::train_data::load_jsonl;
use lmx::ffi::lora::parse_targets;
use lmx::mlx::Dtype;
use lmx::model::lora::LoraWeights;
use lmx::model::LoadParams;
use lmx::{Error, Result};

use super::{load_with, number, Args, USAGE};

/// Set by SIGINT: stop after the current step.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

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

fn options(a: &Args) -> Result<Options> {
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
    for (k, v) in &a.train {
        let f = k.as_str();
        let p = &mut o.params;
        match f {
            "--data" => data = Some(PathBuf::from(v)),
            "--valid" => o.valid = Some(PathBuf::from(v)),
            "--adapter-out" => out = Some(PathBuf::from(v)),
            "--resume-adapter" => o.resume = Some(PathBuf::from(v)),
            "--iters" => o.iters = number(v, f)?,
            "--steps-per-eval" => o.steps_per_eval = number(v, f)?,
            "--save-every" => o.save_every = number(v, f)?,
            "--batch-size" => p.batch_size = number(v, f)?,
            "--learning-rate" => p.learning_rate = number(v, f)?,
            "--rank" => p.lora.rank = number(v, f)?,
            "--scale" => p.lora.scale = number(v, f)?,
            "--alpha" => o.alpha = Some(number(v, f)?),
            "--dropout" => p.lora.dropout = number(v, f)?,
            "--num-layers" => num_layers = Some(number::<i32>(v, f)?),
            "--targets" => p.lora.targets = parse_targets(v)?,
            "--warmup" => p.warmup_steps = number(v, f)?,
            "--cosine" => o.cosine = true,
            "--min-learning-rate" => p.min_learning_rate = number(v, f)?,
            "--weight-decay" => p.weight_decay = number(v, f)?,
            "--grad-clip" => p.grad_clip = number(v, f)?,
            "--grad-accumulation" => p.grad_accumulation = number(v, f)?,
            "--grad-checkpoint" => p.grad_checkpoint = true,
            "--max-seq-length" => p.max_seq_length = number(v, f)?,
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
    if o.iters == 0 {
        return Err(Error::invalid("--iters must be at least 1"));
    }
    if o.params.lora.rank < 1 {
        return Err(Error::invalid(format!("--rank {} must be at least 1", o.params.lora.rank)));
    }
    if let Some(alpha) = o.alpha {
        o.params.lora.scale = alpha / o.params.lora.rank as f32;
    }
    if o.cosine {
        o.params.cosine_steps = (o.iters as u32).saturating_sub(o.params.warmup_steps).max(1);
    }
    o.params.lora.num_layers = num_layers.unwrap_or(16);
    Ok(o)
}

pub fn run(a: &Args) -> Result<()> {
    let mut o = options(a)?;
    let model = load_with(a, &LoadParams { dtype: o.dtype, ..Default::default() })?;
    let layers = model.transformer.spec.layers.len() as i32;
    if o.params.lora.num_layers < 1 {
        return Err(Error::invalid(format!("--num-layers {} must be at least 1", o.params.lora.num_layers)));
    }
    o.params.lora.num_layers = o.params.lora.num_layers.min(layers);
    o.params.validate(layers as usize)?;
    let data = load_jsonl(&o.data, &model, o.mask_prompt)?;
    let valid = o.valid.as_ref().map(|v| load_jsonl(v, &model, o.mask_prompt)).transpose()?;
    let init = o.resume.as_ref().map(|d| LoraWeights::load(d, &model.transformer.spec)).transpose()?;
    let rows = data.len();
    let mut t = Trainer::new(Arc::clone(&model), o.params.clone(), data, init)?;
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    if !a.json {
        eprintln!(
            "training a rank-{} adapter ({} weights) on {} layers of {} over {rows} rows: {} updates",
            o.params.lora.rank,
            t.weights().param_count(),
            o.params.lora.num_layers,
            model.dir.display(),
            o.iters
        );
    }
    let save = |t: &Trainer, out: &Path| -> Result<()> { t.save(out) };
    let mut last_val = None;
    while t.steps() < o.iters {
        if STOP.load(Ordering::SeqCst) {
            if !a.json {
                eprintln!("\ninterrupted: saving");
            }
            break;
        }
        let r = t.step()?;
        if r.updated && o.steps_per_eval > 0 && r.step % o.steps_per_eval == 0 {
            if let Some(v) = &valid {
                last_val = Some(t.evaluate(v)?);
            }
        }
        if a.json {
            let mut j = serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))?;
            if r.updated && last_val.is_some() && o.steps_per_eval > 0 && r.step % o.steps_per_eval == 0 {
                j["val_loss"] = serde_json::json!(last_val);
            }
            println!("{j}");
        } else {
            let width = 30;
            let done = (r.step as usize * width / o.iters as usize).min(width);
            eprint!(
                "\r[{}{}] {}/{} loss {:.4}{} | {:.0} tok/s | lr {:.2e} | peak {:.0} MiB   ",
                "#".repeat(done),
                " ".repeat(width - done),
                r.step,
                o.iters,
                r.loss,
                last_val.map(|v| format!(" (val {v:.4})")).unwrap_or_default(),
                r.tokens_per_second,
                r.learning_rate,
                r.peak_memory_bytes as f64 / (1 << 20) as f64
            );
            let _ = std::io::stderr().flush();
        }
        if r.updated && o.save_every > 0 && r.step % o.save_every == 0 {
            save(&t, &o.out)?;
        }
    }
    save(&t, &o.out)?;
    if !a.json {
        eprintln!("\nsaved the adapter to {} after {} updates", o.out.display(), t.steps());
    }
    Ok(())
}
