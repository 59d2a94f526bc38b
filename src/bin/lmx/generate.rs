//! `lmx generate`: one completion of a prompt, streamed to stdout or as one JSON object.

use std::io::Write;

use clap::Args;
use lmx::engine::{Cancel, FinishReason, Metrics};
use lmx::model::Message;
use lmx::{Error, Result};

use crate::cache::{self, CacheArgs};
use crate::interrupt;
use crate::options::{
    at_least, print_extras, AdapterArgs, ConstraintArgs, ModelArgs, SamplingArgs, ToolArgs,
};

/// Generate a completion of a prompt.
///
/// The text is streamed to stdout as it is made, and a metrics line goes to stderr (prompt
/// tokens, how many were computed and cached, tokens per second, peak memory, finish reason).
/// With --json, one JSON object is printed instead: `text`, `reasoning`, `tool_calls`,
/// `tokens` (the generated ids), `prompt_tokens` (the prompt's ids), `finish_reason` and
/// `metrics`. With --tools, each call is printed after the text as one JSON line; with
/// --think, the reasoning goes to stderr.
///
/// Ctrl-C stops the generation (the finish reason is then "cancelled") and still prints the
/// metrics and saves --save-cache; a second Ctrl-C ends at once.
#[derive(Args, Debug)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to complete (with --chat: the user's message).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: String,
    /// Put the prompt through the model's chat template as one user message.
    #[arg(long)]
    pub chat: bool,
    /// A system message before the prompt (with --chat).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate; 0 only computes the prompt's cache (needs --save-cache).
    #[arg(long, value_name = "N", default_value_t = 256, allow_negative_numbers = true,
          value_parser = at_least::<usize>(0))]
    pub max_tokens: usize,
    /// Go on past the model's end-of-sequence tokens, up to --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object on stdout instead of the text and the metrics line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    #[command(flatten)]
    pub tools: ToolArgs,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

const EXAMPLES: &str = "Examples:
  lmx generate --model M --prompt 'Once upon a time' --max-tokens 64 --temperature 0.7
  lmx generate --model M --chat --system 'Be brief.' --prompt 'What is MLX?' --json
  # Structured output: a JSON value valid against a schema, or one of a few answers:
  lmx generate --model M --chat --prompt 'A user record for Ada' --json-schema user.schema.json
  lmx generate --model M --chat --prompt 'Is MLX fast?' --choices yes,no,maybe
  # Tools: calls printed as JSON lines; --tool-choice required makes the output a valid call:
  lmx generate --model M --chat --prompt 'Weather in Paris?' --tools tools.json --tool-choice required
  # Compute a long document once, then ask about it (only the question is computed):
  lmx generate --model M --prompt \"$(cat report.txt)\" --max-tokens 0 --save-cache report.cache
  lmx generate --model M --load-cache report.cache --prompt \"$(cat report.txt) Summarize it.\"";

pub(crate) fn run(a: &GenerateArgs) -> Result<()> {
    // --max-tokens 0 only fills the cache with the prompt: the engine generates at least one
    // token, and a single one is never fed back, so the cache holds the prompt alone.
    let prefill_only = a.max_tokens == 0;
    if prefill_only && a.cache.save_cache.is_none() {
        return Err(Error::invalid("--max-tokens 0 (prefill the prompt only) needs --save-cache"));
    }
    cache::check_files(&a.cache, &a.adapter)?;
    let model = a.model.load(&Default::default())?;
    let (session, loaded) = cache::open(&a.cache, &model)?;
    a.adapter.apply(&model, &session)?;
    // A cache of unknown tokens (mlx-lm's) is continued: the prompt is appended after it.
    let append = loaded.as_ref().is_some_and(|l| l.opaque);
    let mut params = a.sampling.params(if prefill_only { 1 } else { a.max_tokens });
    let extra = a.tools.apply(&mut params)?;
    if !a.chat && (params.tools.is_some() || !extra.is_empty()) {
        return Err(Error::invalid(
            "--tools, --think and --no-think need --chat (they go through the chat template)",
        ));
    }
    let ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &a.prompt));
        if append {
            cache::chat_suffix_tokens(&model, &msgs)?
        } else {
            session.chat_tokens(&msgs, params.tools.as_deref(), &extra, None)?
        }
    } else if append {
        model.encode(&a.prompt, false)?
    } else {
        session.text_tokens(&a.prompt)?
    };
    params.ignore_eos = a.ignore_eos;
    params.constraint = a.constraint.constraint()?;
    let cancel = Cancel::new();
    params.cancel = Some(cancel.clone());
    let stdout = std::io::stdout();
    let mut out = interrupt::cancelling(&cancel, || {
        session.generate(&ids, &params, |ev| {
            if !a.json && !prefill_only {
                let mut o = stdout.lock();
                let _ = o.write_all(ev.text.as_bytes());
                let _ = o.flush();
            }
            true
        })
    })?;
    if prefill_only {
        out.tokens.clear();
        out.text.clear();
        let m = &mut out.metrics;
        m.generated_tokens = 0;
        (m.decode_seconds, m.decode_wait_seconds, m.decode_tokens_per_second) = (0.0, 0.0, 0.0);
        if out.finish != FinishReason::Cancelled {
            out.finish = FinishReason::Length;
        }
    }
    if a.json {
        let j = serde_json::json!({
            "text": out.text,
            "reasoning": out.reasoning,
            "tool_calls": out.tool_calls.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
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
        print_extras(&out);
        eprintln!("{} finish: {}", metrics_line(&out.metrics), out.finish.name());
    }
    if let Some(p) = &a.cache.save_cache {
        cache::save(&session, p, &Default::default())?;
    }
    Ok(())
}

/// The metrics line `generate` and `chat` print on stderr after each generation.
pub(crate) fn metrics_line(m: &Metrics) -> String {
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
