//! `lmx train`: LoRA fine-tuning from the command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmx::engine::train::{StepReport, TrainParams, Trainer};
use lmx::engine::train_data::load_jsonl;
use lmx::engine::Cancel;
use lmx::error::Context;
use lmx::mlx::Dtype;
use lmx::model::nn::lora::DEFAULT_LAYERS;
use lmx::model::LoadParams;
use lmx::model::{LoraConfig, Target};
use lmx::{Error, ErrorKind, Result};

use crate::interrupt;
use crate::options::{at_least, float, ModelArgs};

/// Fine-tune a LoRA adapter.
///
/// The defaults are mlx_lm.lora's: rank 8, scale 20, the last 16 layers, every projection,
/// batch 4, learning rate 1e-5, 1000 iterations. A progress line goes to stderr (with
/// --json: on stdout, a JSON object per step and one per validation, with step, val_loss and
/// val_time). The loss on --valid is computed every --steps-per-eval updates and after the
/// last; the adapter is saved to --adapter-out every --save-every updates and at the end, in
/// mlx-lm's format (`lmx generate --adapter`, `mlx_lm.generate --adapter-path` use it).
///
/// Ctrl-C stops after the current step and saves; a second Ctrl-C ends at once.
#[derive(Args, Debug)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training rows, one JSON object a line: {"text"}, {"prompt", "completion"} or
    /// {"messages"}; up to 1 GiB, a row up to 64 MiB.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: PathBuf,
    /// Validation rows (same format), evaluated every --steps-per-eval updates and at the end.
    #[arg(long, value_name = "FILE.jsonl")]
    pub valid: Option<PathBuf>,
    /// The folder to save the adapter to (made if missing).
    #[arg(long, value_name = "DIR")]
    pub adapter_out: PathBuf,
    /// Continue training the adapter in DIR (its weights are the start).
    #[arg(long, value_name = "DIR")]
    pub resume_adapter: Option<PathBuf>,
    /// Loss over the last assistant turn (chat rows) or the completion only, not the prompt.
    #[arg(long)]
    pub mask_prompt: bool,
    /// Compute in this dtype [default: the checkpoint's; float32 on the CPU].
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<TrainDtype>,
    /// Print a JSON object per step and per validation on stdout instead of the progress line.
    #[arg(long)]
    pub json: bool,

    /// Updates to make.
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = at_least::<u64>(1), help_heading = "Training")]
    pub iters: u64,
    /// Rows per batch.
    #[arg(long, value_name = "N", default_value_t = TrainParams::default().batch_size,
          allow_negative_numbers = true, value_parser = at_least::<u32>(1), help_heading = "Training")]
    pub batch_size: u32,
    /// Peak learning rate.
    #[arg(long, value_name = "RATE", default_value_t = TrainParams::default().learning_rate,
          allow_negative_numbers = true, value_parser = float(|x| x > 0.0, "must be a positive number"),
          help_heading = "Training")]
    pub learning_rate: f32,
    /// Updates of linear warm-up from 0 to the peak rate.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = at_least::<u32>(0), help_heading = "Training")]
    pub warmup: u32,
    /// Decay the rate after the warm-up to --min-learning-rate along a cosine.
    #[arg(long, help_heading = "Training")]
    pub cosine: bool,
    /// The rate the cosine decay ends at.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| x >= 0.0, "must be a number >= 0"), help_heading = "Training")]
    pub min_learning_rate: f32,
    /// AdamW's decoupled weight decay.
    #[arg(long, value_name = "W", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| x >= 0.0, "must be a number >= 0"), help_heading = "Training")]
    pub weight_decay: f32,
    /// Clip the gradient's global norm to C (0 = off).
    #[arg(long, value_name = "C", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| x >= 0.0, "must be a number >= 0 (0 = off)"), help_heading = "Training")]
    pub grad_clip: f32,
    /// Batches whose gradients are averaged into one update.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true,
          value_parser = at_least::<u32>(1), help_heading = "Training")]
    pub grad_accumulation: u32,
    /// Recompute each layer's activations in the backward pass: less memory, slower.
    #[arg(long, help_heading = "Training")]
    pub grad_checkpoint: bool,
    /// Cut rows to their first N tokens as they are read (only the start of a long row is
    /// tokenized).
    #[arg(long, value_name = "N", default_value_t = TrainParams::default().max_seq_length,
          allow_negative_numbers = true, value_parser = at_least::<u32>(2), help_heading = "Training")]
    pub max_seq_length: u32,
    /// Seed of the batch order, dropout and the adapter's initial weights.
    #[arg(long, value_name = "S", default_value_t = 0, allow_negative_numbers = true,
          value_parser = at_least::<u64>(0), help_heading = "Training")]
    pub seed: u64,
    /// Validate every N updates (0: only after the last).
    #[arg(long, value_name = "N", default_value_t = 200, allow_negative_numbers = true,
          value_parser = at_least::<u64>(0), help_heading = "Training")]
    pub steps_per_eval: u64,
    /// Save the adapter every N updates (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
          value_parser = at_least::<u64>(0), help_heading = "Training")]
    pub save_every: u64,

    /// The adapter's rank.
    #[arg(long, value_name = "R", default_value_t = TrainParams::default().lora.rank,
          allow_negative_numbers = true, value_parser = at_least::<i32>(1), help_heading = "Adapter")]
    pub rank: i32,
    /// Multiplies the adapter's output (mlx-lm's scale).
    #[arg(long, value_name = "S", default_value_t = TrainParams::default().lora.scale,
          allow_negative_numbers = true, value_parser = float(|_| true, "must be a finite number"),
          conflicts_with = "alpha", help_heading = "Adapter")]
    pub scale: f32,
    /// Set the scale as other tools' alpha: A / rank.
    #[arg(long, value_name = "A", allow_negative_numbers = true,
          value_parser = float(|_| true, "must be a finite number"), help_heading = "Adapter")]
    pub alpha: Option<f32>,
    /// Dropout on the adapter's input while training.
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| (0.0..1.0).contains(&x), "must be in [0, 1)"), help_heading = "Adapter")]
    pub dropout: f32,
    /// Adapt the last N layers [default: 16, or all of a smaller model's].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<i32>(1),
          help_heading = "Adapter")]
    pub num_layers: Option<i32>,
    /// The projections to adapt, comma-separated: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj [default: all].
    #[arg(long, value_name = "LIST", value_parser = targets, help_heading = "Adapter")]
    pub targets: Option<Targets>,
}

/// The dtypes a model can be trained in.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum TrainDtype {
    Float32,
    Bfloat16,
    Float16,
}

/// A parsed `--targets` list.
#[derive(Clone, Debug)]
pub(crate) struct Targets(Vec<Target>);

fn targets(s: &str) -> std::result::Result<Targets, String> {
    if s.split(',').all(|t| t.trim().is_empty()) {
        return Err("names no projection".into());
    }
    Target::parse_list(s).map(Targets).map_err(|e| e.message)
}

const EXAMPLES: &str = "Examples:
  lmx train --model M --data train.jsonl --valid valid.jsonl --adapter-out adapter \\
            --iters 200 --learning-rate 1e-4 --mask-prompt
  lmx train --model M --data train.jsonl --adapter-out adapter2 --resume-adapter adapter --json
  lmx generate --model M --adapter adapter --prompt 'Hello'";

impl TrainArgs {
    /// The training parameters, for a model of `layers` layers.
    fn params(&self, layers: usize) -> TrainParams {
        let mut p = TrainParams {
            learning_rate: self.learning_rate,
            warmup_steps: self.warmup,
            min_learning_rate: self.min_learning_rate,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            grad_accumulation: self.grad_accumulation,
            grad_checkpoint: self.grad_checkpoint,
            batch_size: self.batch_size,
            max_seq_length: self.max_seq_length,
            seed: self.seed,
            ..TrainParams::default()
        };
        let l = &mut p.lora;
        l.rank = self.rank;
        l.scale = match self.alpha {
            Some(alpha) => LoraConfig::scale_from_alpha(alpha, self.rank),
            None => self.scale,
        };
        l.dropout = self.dropout;
        l.num_layers = self.num_layers.unwrap_or(DEFAULT_LAYERS as i32).min(layers as i32);
        if let Some(t) = &self.targets {
            l.targets = t.0.clone();
        }
        if self.cosine {
            let iters = u32::try_from(self.iters).unwrap_or(u32::MAX);
            p.cosine_steps = iters.saturating_sub(p.warmup_steps).max(1);
        }
        p
    }

    /// Checks the paths before the model loads.
    fn check_paths(&self) -> Result<()> {
        for (flag, p) in [("--data", Some(&self.data)), ("--valid", self.valid.as_ref())] {
            if let Some(p) = p.filter(|p| !p.is_file()) {
                return Err(Error::not_found(format!("{flag} {}: no such file", p.display())));
            }
        }
        if let Some(d) = self.resume_adapter.as_ref().filter(|d| !d.join("adapter_config.json").is_file()) {
            return Err(Error::not_found(format!(
                "--resume-adapter {}: no adapter_config.json there",
                d.display()
            )));
        }
        if self.adapter_out.exists() && !self.adapter_out.is_dir() {
            return Err(Error::invalid(format!(
                "--adapter-out {}: not a folder",
                self.adapter_out.display()
            )));
        }
        Ok(())
    }
}

pub(crate) fn run(a: &TrainArgs) -> Result<()> {
    a.check_paths()?;
    let dtype = a.dtype.map(|d| match d {
        TrainDtype::Float32 => Dtype::F32,
        TrainDtype::Bfloat16 => Dtype::BF16,
        TrainDtype::Float16 => Dtype::F16,
    });
    let model = a.model.load(&LoadParams { dtype, ..Default::default() })?;
    let params = a.params(model.num_layers());
    params.validate(model.num_layers())?;
    let max_len = params.max_seq_length as usize;
    let data = load_jsonl(&a.data, &model, a.mask_prompt, max_len).context("--data")?;
    let valid = a
        .valid
        .as_ref()
        .map(|v| load_jsonl(v, &model, a.mask_prompt, max_len))
        .transpose()
        .context("--valid")?;
    let init =
        a.resume_adapter.as_ref().map(|d| model.load_adapter(d)).transpose().context("--resume-adapter")?;
    let rows = data.len();
    let mut t = Trainer::new(Arc::clone(&model), params.clone(), data, init)?;
    // A folder that cannot be made fails now, not after the training.
    let out = &a.adapter_out;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::new(ErrorKind::Io, format!("--adapter-out {}: {e}", out.display())))?;
    if !a.json {
        eprintln!(
            "training a rank-{} adapter ({} weights) on {} layers of {} over {rows} rows: {} updates",
            params.lora.rank,
            t.weights().param_count(),
            params.lora.num_layers,
            model.path().display(),
            a.iters
        );
    }
    let progress = Progress::new(a.json, a.iters);
    let stop = Cancel::new();
    interrupt::cancelling(&stop, || {
        let mut saved_at = None;
        while t.steps() < a.iters {
            if stop.is_requested() {
                progress.note(&format!("interrupted after {} updates: saving", t.steps()));
                break;
            }
            let r = t.step()?;
            if a.json {
                emit(&r)?;
            }
            progress.step(&r);
            if !r.updated {
                continue;
            }
            // Validation every --steps-per-eval updates and after the last, as mlx_lm.lora.
            let eval_due = (a.steps_per_eval > 0 && r.step % a.steps_per_eval == 0) || r.step == a.iters;
            if let (Some(v), true) = (&valid, eval_due) {
                let start = Instant::now();
                let loss = t.evaluate(v)?;
                let secs = start.elapsed().as_secs_f64();
                if a.json {
                    emit(&Validation { step: r.step, val_loss: loss, val_time: secs })?;
                } else {
                    progress.note(&format!("step {}: validation loss {loss:.4} ({secs:.1} s)", r.step));
                }
            }
            if a.save_every > 0 && r.step % a.save_every == 0 {
                t.save(out)?;
                saved_at = Some(r.step);
            }
        }
        if saved_at != Some(t.steps()) {
            t.save(out)?;
        }
        Ok(())
    })?;
    progress.finish();
    if !a.json {
        eprintln!("saved the adapter to {} after {} updates", out.display(), t.steps());
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

/// The progress report on stderr: a bar redrawn in place on a terminal; elsewhere (a log
/// file, a pipe) a plain line every [`Progress::LINE_EVERY`] updates and after the last; with
/// --json nothing (the steps are on stdout).
enum Progress {
    Bar(ProgressBar),
    Lines { iters: u64 },
    Json,
}

impl Progress {
    const LINE_EVERY: u64 = 10;

    fn new(json: bool, iters: u64) -> Progress {
        if json {
            return Progress::Json;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { iters };
        }
        let bar = ProgressBar::with_draw_target(Some(iters), ProgressDrawTarget::stderr());
        // The template is a constant: it parses.
        if let Ok(style) = ProgressStyle::with_template("[{wide_bar}] {pos}/{len} {msg} | eta {eta}") {
            bar.set_style(style.progress_chars("#> "));
        }
        Progress::Bar(bar)
    }

    fn step(&self, r: &StepReport) {
        let line = || {
            format!(
                "loss {:.4} | {:.0} tok/s | lr {:.2e} | peak {:.0} MiB",
                r.loss,
                r.tokens_per_second,
                r.learning_rate,
                r.peak_memory_bytes as f64 / (1 << 20) as f64
            )
        };
        match self {
            Progress::Bar(bar) => {
                bar.set_position(r.step);
                bar.set_message(line());
            }
            Progress::Lines { iters } => {
                if r.updated && (r.step % Self::LINE_EVERY == 0 || r.step == *iters) {
                    eprintln!("step {}/{iters} {}", r.step, line());
                }
            }
            Progress::Json => {}
        }
    }

    /// A line of its own (above the bar on a terminal); printed with --json too.
    fn note(&self, msg: &str) {
        match self {
            Progress::Bar(bar) => bar.println(msg),
            _ => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
