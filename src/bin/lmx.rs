//! The `lmx` command-line tool: generate, chat, and describe models.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use lmx::engine::{GenerateParams, Metrics, Session};
use lmx::model::{LoadParams, Message, Model};

#[path = "lmx/cache.rs"]
mod cache;
#[path = "lmx/train.rs"]
mod train;
use lmx::{Error, Result};

pub(crate) const USAGE: &str = "usage:
  lmx generate --model PATH --prompt TEXT [--chat] [--system TEXT] [--max-tokens N]
               [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]
               [--repetition-penalty R] [--stop STRING]... [--ignore-eos] [--json]
  lmx chat     --model PATH [--system TEXT] [--max-tokens N] [--temperature T] [--seed S]
  (generate and chat: [--adapter DIR] [--adapter-scale S] [--load-cache FILE] [--save-cache FILE]
   [--kv-bits 4|8] [--kv-group-size 32|64|128] [--quantized-kv-start N])
  lmx train    --model PATH --data FILE.jsonl --adapter-out DIR [--valid FILE.jsonl]
               [--iters N] [--batch-size N] [--learning-rate X] [--rank R] [--scale S | --alpha A]
               [--dropout P] [--num-layers N] [--targets q_proj,v_proj,...] [--warmup N] [--cosine]
               [--min-learning-rate X] [--weight-decay W] [--grad-clip C] [--grad-accumulation N]
               [--grad-checkpoint] [--max-seq-length N] [--mask-prompt] [--seed S]
               [--steps-per-eval N] [--save-every N] [--resume-adapter DIR]
               [--dtype float32|bfloat16|float16] [--json]
  lmx info     --model PATH
  lmx version
  lmx device

PATH is a model folder (config.json, *.safetensors, tokenizer.json) or a GGUF file.
generate streams the text as it is made and prints a metrics line to stderr; with --chat the
prompt is one user message put through the model's chat template; --json prints one JSON
object instead (text, tokens, prompt_tokens, finish_reason, metrics). chat reads one user
message per line from stdin and keeps the conversation (and the KV cache) across turns.
--adapter applies a LoRA adapter folder (mlx-lm's format) at its trained scale or
--adapter-scale (0 = off). --save-cache writes the KV cache and its token ids (mlx-lm's
prompt-cache layout) after generate (prompt and generated tokens; --max-tokens 0 only
prefills the prompt) or when chat ends (with the conversation); --load-cache restores one
first, and a prompt that extends the saved tokens computes only its new part (the metrics
line says how many were cached). chat resumes only files saved by chat. A file from
mlx_lm.cache_prompt has no token ids: the prompt (with --chat, the rendered chat from the
user's message on, as mlx_lm.generate does) is appended after its cached positions.
--kv-bits quantizes the global layers' KV cache (groups of --kv-group-size, default 64) once
it holds --quantized-kv-start positions (default 0; mlx_lm.generate's is 5000).
train fine-tunes a LoRA adapter (defaults as mlx_lm.lora: rank 8, scale 20,
the last 16 layers, every projection, batch 4, learning rate 1e-5, 1000 iterations)
with a progress line on stderr (--json: on stdout, a JSON object per step and one per
validation, with step, val_loss and val_time), validation on --valid every --steps-per-eval
updates (default 200) and after the last, saving to --adapter-out every --save-every updates
(default 100) and at the end; --alpha A sets the scale to A / rank, --cosine decays the rate
after --warmup to --min-learning-rate; Ctrl-C stops after the current step and saves (a second
Ctrl-C ends at once).
";

#[derive(Default)]
pub(crate) struct Args {
    model: Option<PathBuf>,
    prompt: Option<String>,
    system: Option<String>,
    chat: bool,
    json: bool,
    params: GenerateParams,
    adapter: Option<PathBuf>,
    adapter_scale: Option<f32>,
    /// Session files to restore before and to save after.
    load_cache: Option<PathBuf>,
    save_cache: Option<PathBuf>,
    /// The KV-cache quantization asked for.
    kv_bits: Option<i32>,
    kv_group_size: Option<i32>,
    kv_start: Option<i32>,
    /// `lmx train` options, as given.
    train: Vec<(String, String)>,
    /// The first option given that `lmx train` does not take.
    not_train: Option<String>,
}

/// Options of `lmx train`; those in [`TRAIN_FLAGS`] take no value.
const TRAIN_OPTIONS: &[&str] = &[
    "--data",
    "--valid",
    "--adapter-out",
    "--iters",
    "--batch-size",
    "--learning-rate",
    "--rank",
    "--scale",
    "--alpha",
    "--dropout",
    "--num-layers",
    "--targets",
    "--warmup",
    "--min-learning-rate",
    "--weight-decay",
    "--grad-clip",
    "--grad-accumulation",
    "--max-seq-length",
    "--steps-per-eval",
    "--save-every",
    "--resume-adapter",
    "--dtype",
];
const TRAIN_FLAGS: &[&str] = &["--cosine", "--grad-checkpoint", "--mask-prompt"];
/// The options `lmx train` shares with generate and chat.
const SHARED_OPTIONS: &[&str] = &["--model", "--seed", "--json"];

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<&'a String> {
    it.next().ok_or_else(|| Error::invalid(format!("{flag} needs a value")))
}

pub(crate) fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
    s.parse().map_err(|_| Error::invalid(format!("{flag}: {s:?} is not a valid number")))
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        if a.not_train.is_none()
            && !SHARED_OPTIONS.contains(&f)
            && !TRAIN_OPTIONS.contains(&f)
            && !TRAIN_FLAGS.contains(&f)
        {
            a.not_train = Some(f.to_string());
        }
        match f {
            "--model" => a.model = Some(PathBuf::from(value(&mut it, f)?)),
            "--prompt" => a.prompt = Some(value(&mut it, f)?.clone()),
            "--system" => a.system = Some(value(&mut it, f)?.clone()),
            "--chat" => a.chat = true,
            "--json" => a.json = true,
            "--max-tokens" => a.params.max_tokens = number(value(&mut it, f)?, f)?,
            "--temperature" => a.params.sampler.temperature = number(value(&mut it, f)?, f)?,
            "--top-k" => a.params.sampler.top_k = number(value(&mut it, f)?, f)?,
            "--top-p" => a.params.sampler.top_p = number(value(&mut it, f)?, f)?,
            "--min-p" => a.params.sampler.min_p = number(value(&mut it, f)?, f)?,
            "--seed" => a.params.sampler.seed = Some(number(value(&mut it, f)?, f)?),
            "--repetition-penalty" => a.params.sampler.repetition_penalty = number(value(&mut it, f)?, f)?,
            "--stop" => a.params.stop_strings.push(value(&mut it, f)?.clone()),
            "--ignore-eos" => a.params.ignore_eos = true,
            "--adapter" => a.adapter = Some(PathBuf::from(value(&mut it, f)?)),
            "--adapter-scale" => a.adapter_scale = Some(number(value(&mut it, f)?, f)?),
            "--load-cache" => a.load_cache = Some(PathBuf::from(value(&mut it, f)?)),
            "--save-cache" => a.save_cache = Some(PathBuf::from(value(&mut it, f)?)),
            "--kv-bits" => a.kv_bits = Some(number(value(&mut it, f)?, f)?),
            "--kv-group-size" => a.kv_group_size = Some(number(value(&mut it, f)?, f)?),
            "--quantized-kv-start" => a.kv_start = Some(number(value(&mut it, f)?, f)?),
            t if TRAIN_OPTIONS.contains(&t) => a.train.push((t.to_string(), value(&mut it, f)?.clone())),
            t if TRAIN_FLAGS.contains(&t) => a.train.push((t.to_string(), String::new())),
            other => return Err(Error::invalid(format!("unknown option {other:?}\n\n{USAGE}"))),
        }
    }
    Ok(a)
}

fn load(a: &Args) -> Result<Arc<Model>> {
    if !a.train.is_empty() {
        return Err(Error::invalid(format!("{} is an option of lmx train\n\n{USAGE}", a.train[0].0)));
    }
    load_with(a, &LoadParams::default())
}

pub(crate) fn load_with(a: &Args, p: &LoadParams) -> Result<Arc<Model>> {
    let dir = a.model.as_ref().ok_or_else(|| Error::invalid(format!("--model is required\n\n{USAGE}")))?;
    Ok(Arc::new(Model::load(dir, p)?))
}

/// A session on `model` (restored from --load-cache, with the KV-cache options) and the
/// adapter the options name, if any.
fn session(a: &Args, model: &Arc<Model>) -> Result<(Session, Option<cache::Loaded>)> {
    let (session, loaded) = cache::open(a, model)?;
    match &a.adapter {
        Some(dir) => {
            let w = model.load_adapter(dir)?;
            let scale = a.adapter_scale.unwrap_or(w.config().scale);
            session.set_adapter(Some((Arc::new(w), scale)))?;
        }
        None if a.adapter_scale.is_some() => return Err(Error::invalid("--adapter-scale needs --adapter")),
        None => {}
    }
    Ok((session, loaded))
}

fn metrics_line(m: &Metrics) -> String {
    let cached = m.prompt_tokens - m.prefill_tokens;
    format!(
        "[{} prompt tokens ({} computed{}), {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token {:.3} s; peak memory {:.1} MiB]",
        m.prompt_tokens,
        m.prefill_tokens,
        if cached > 0 { format!(", {cached} cached") } else { String::new() },
        m.generated_tokens,
        m.prefill_tokens_per_second,
        m.decode_tokens_per_second,
        m.time_to_first_token,
        m.peak_memory as f64 / (1 << 20) as f64
    )
}

fn generate(a: &Args) -> Result<()> {
    let prompt =
        a.prompt.as_deref().ok_or_else(|| Error::invalid(format!("--prompt is required\n\n{USAGE}")))?;
    // --max-tokens 0 only fills the cache with the prompt: the engine generates at least one
    // token, and a single one is never fed back, so the cache holds the prompt alone.
    let prefill_only = a.params.max_tokens == 0;
    if prefill_only && a.save_cache.is_none() {
        return Err(Error::invalid("--max-tokens 0 (prefill the prompt only) needs --save-cache"));
    }
    cache::check_files(a)?;
    let model = load(a)?;
    let (session, loaded) = session(a, &model)?;
    // A cache of unknown tokens (mlx-lm's) is continued: the prompt is appended after it.
    let append = loaded.as_ref().is_some_and(|l| l.opaque);
    let ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", prompt));
        if append {
            cache::chat_suffix_tokens(&model, &msgs)?
        } else {
            session.chat_tokens(&msgs, &Default::default())?
        }
    } else if append {
        model.encode(prompt, false)?
    } else {
        session.text_tokens(prompt)?
    };
    let mut params = a.params.clone();
    if prefill_only {
        params.max_tokens = 1;
    }
    let stdout = std::io::stdout();
    let mut out = session.generate(&ids, &params, |ev| {
        if !a.json && !prefill_only {
            let mut o = stdout.lock();
            let _ = o.write_all(ev.text.as_bytes());
            let _ = o.flush();
        }
        true
    })?;
    if prefill_only {
        out.tokens.clear();
        out.text.clear();
        let m = &mut out.metrics;
        m.generated_tokens = 0;
        (m.decode_seconds, m.decode_wait_seconds, m.decode_tokens_per_second) = (0.0, 0.0, 0.0);
        out.finish = lmx::engine::FinishReason::Length;
    }
    if a.json {
        let j = serde_json::json!({
            "text": out.text,
            "tokens": out.tokens,
            "prompt_tokens": ids,
            "finish_reason": out.finish.name(),
            "metrics": out.metrics,
        });
        println!("{j}");
    } else {
        if !prefill_only {
            println!();
        }
        eprintln!("{} finish: {}", metrics_line(&out.metrics), out.finish.name());
    }
    if let Some(p) = &a.save_cache {
        cache::save(&session, p, &Default::default())?;
    }
    Ok(())
}

fn chat(a: &Args) -> Result<()> {
    if a.params.max_tokens == 0 {
        return Err(Error::invalid("--max-tokens must be at least 1"));
    }
    cache::check_files(a)?;
    let model = load(a)?;
    let (session, loaded) = session(a, &model)?;
    let mut msgs = match &loaded {
        Some(l) => cache::chat_messages(l)?,
        None => Vec::new(),
    };
    if let Some(s) = &a.system {
        let system = Message::new("system", s);
        if loaded.is_none() {
            msgs.push(system);
        } else if msgs.first() != Some(&system) {
            return Err(Error::invalid(
                "--system differs from the system message of the conversation --load-cache resumes",
            ));
        }
    }
    eprintln!(
        "chatting with {} ({}); one message per line, an empty line or end of input quits",
        model.path().display(),
        model.info().architecture
    );
    if loaded.is_some() {
        eprintln!("[resuming the conversation ({} messages)]", msgs.len());
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::new(lmx::ErrorKind::Io, e.to_string()))? == 0
        {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            break;
        }
        msgs.push(Message::new("user", text));
        let ids = session.chat_tokens(&msgs, &Default::default())?;
        let out = session.generate(&ids, &a.params, |ev| {
            print!("{}", ev.text);
            let _ = std::io::stdout().flush();
            true
        })?;
        println!();
        eprintln!("{}", metrics_line(&out.metrics));
        msgs.push(Message::new("assistant", &out.text));
    }
    if let Some(p) = &a.save_cache {
        if session.cache_size()?.0 == 0 {
            eprintln!("[nothing to save to {}: the conversation is empty]", p.display());
        } else {
            cache::save(&session, p, &cache::chat_metadata(&msgs)?)?;
        }
    }
    Ok(())
}

fn info(a: &Args) -> Result<()> {
    let model = load(a)?;
    println!("{}", serde_json::to_string_pretty(model.info()).map_err(|e| Error::internal(e.to_string()))?);
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let rest = args.get(1..).unwrap_or(&[]);
    match args.first().map(String::as_str) {
        Some("generate") => generate(&parse(rest)?),
        Some("chat") => chat(&parse(rest)?),
        Some("info") => info(&parse(rest)?),
        Some("train") => train::run(&parse(rest)?),
        Some("version") => {
            println!("liblmx {} (MLX {})", lmx::VERSION, lmx::mlx::device::mlx_version()?);
            Ok(())
        }
        Some("device") => {
            let d = lmx::mlx::device::describe()?;
            println!("backend: {}", d.backend.name());
            println!("device:  {} {}", d.device, if d.name.is_empty() { "(unnamed)" } else { &d.name });
            println!("memory:  {} MiB", d.memory_size / (1 << 20));
            if d.recommended_working_set > 0 {
                println!("recommended working set: {} MiB", d.recommended_working_set / (1 << 20));
            }
            Ok(())
        }
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Error::invalid(format!("unknown command {other:?}\n\n{USAGE}"))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lmx: {e}");
            1
        }
    };
    // Everything is written and every model freed by now. The process ends without running
    // the shared libraries' exit destructors: OpenBLAS 0.3.21's joins its worker threads and,
    // rarely, waits forever for one that missed the wake-up (seen once in `make`'s demo).
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}
