//! Option groups that several subcommands share (flattened into each with
//! `#[command(flatten)]`), and the value parsers that check numbers as they are parsed, so a
//! bad value is refused with the option's name before anything loads.
//!
//! A group holds only options that mean the same in every subcommand that takes it; an option
//! that only one subcommand takes lives in that subcommand's struct, so no other accepts it.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use lmx::engine::{GenerateParams, SamplerParams, Session};
use lmx::model::{Constraint, LoadParams, Model, ToolChoice, Tools};
use lmx::{Error, Result};

/// The model every subcommand but `version`, `device` and `completions` runs.
#[derive(Args, Debug)]
pub(crate) struct ModelArgs {
    /// The model: a folder (config.json, *.safetensors, tokenizer.json) or a GGUF file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
}

impl ModelArgs {
    pub fn load(&self, p: &LoadParams) -> Result<Arc<Model>> {
        Ok(Arc::new(Model::load(&self.model, p)?))
    }
}

/// How `generate` and `chat` choose each token. The defaults are greedy decoding.
#[derive(Args, Debug)]
#[command(next_help_heading = "Sampling")]
pub(crate) struct SamplingArgs {
    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long, value_name = "T", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| x >= 0.0, "must be a number >= 0"))]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0, allow_negative_numbers = true,
          value_parser = at_least::<i32>(0))]
    pub top_k: i32,
    /// Sample among the most likely tokens whose probabilities add up to P (1 = off).
    #[arg(long, value_name = "P", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = float(|x| x > 0.0 && x <= 1.0, "must be in (0, 1]"))]
    pub top_p: f32,
    /// Drop the tokens less likely than P times the most likely one (0 = off).
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float(|x| (0.0..1.0).contains(&x), "must be in [0, 1)"))]
    pub min_p: f32,
    /// Penalize the tokens seen in the last 64 (prompt included): a penalty R > 1 makes them
    /// less likely (1 = off).
    #[arg(long, value_name = "R", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = float(|x| x > 0.0, "must be a positive number"))]
    pub repetition_penalty: f32,
    /// Seed of the sampler: the same seed and options give the same text [default: random].
    #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = at_least::<u64>(0))]
    pub seed: Option<u64>,
    /// Stop when the text would contain STRING (left out of the output); repeatable.
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// Generation parameters with these options and `max_tokens`.
    pub fn params(&self, max_tokens: usize) -> GenerateParams {
        GenerateParams {
            max_tokens,
            sampler: SamplerParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
            ..Default::default()
        }
    }
}

/// What the output must match (`generate` and `chat`); at most one of these.
#[derive(Args, Debug)]
#[command(next_help_heading = "Structured output")]
#[group(multiple = false)]
pub(crate) struct ConstraintArgs {
    /// Output a JSON value valid against the JSON Schema in FILE (draft 2020-12 subset;
    /// unsupported keywords are refused by name).
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Output a JSON object (any).
    #[arg(long)]
    pub json_object: bool,
    /// Output text that the regular expression RX matches whole.
    #[arg(long, value_name = "RX", allow_hyphen_values = true)]
    pub regex: Option<String>,
    /// Output text in the language of the Lark grammar in FILE (llguidance's format).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// Output exactly one of these comma-separated strings.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', allow_hyphen_values = true)]
    pub choices: Option<Vec<String>>,
}

impl ConstraintArgs {
    /// The constraint these options name, files read; None without one.
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
        };
        Ok(if let Some(p) = &self.json_schema {
            Some(Constraint::JsonSchema(read(p)?))
        } else if self.json_object {
            Some(Constraint::JsonObject)
        } else if let Some(rx) = &self.regex {
            Some(Constraint::Regex(rx.clone()))
        } else if let Some(p) = &self.grammar {
            Some(Constraint::Lark(read(p)?))
        } else {
            self.choices.as_ref().map(|c| Constraint::Choice(c.clone()))
        })
    }
}

/// Tools the model may call, and its reasoning (`generate --chat` and `chat`).
#[derive(Args, Debug)]
#[command(next_help_heading = "Tools and reasoning")]
pub(crate) struct ToolArgs {
    /// Offer the tools in FILE: a JSON array of function definitions (OpenAI / Hugging Face
    /// form). The model's calls are parsed from its output and printed as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
    /// auto (the model decides; a call it begins is constrained like required), none, required (the output is calls, each valid against its
    /// tool's parameters), or a tool's name (a call of that tool).
    #[arg(long, value_name = "CHOICE", default_value = "auto", requires = "tools")]
    pub tool_choice: String,
    /// Allow several calls in one reply (one by default: small models tend to repeat a call
    /// until --max-tokens).
    #[arg(long, requires = "tools")]
    pub parallel_tool_calls: bool,
    /// Ask the model to think first (the template's enable_thinking): its reasoning is
    /// printed apart, on stderr.
    #[arg(long, overrides_with = "no_think")]
    pub think: bool,
    /// Ask the model not to think (enable_thinking false).
    #[arg(long, overrides_with = "think")]
    pub no_think: bool,
    /// Close the reasoning after N tokens (its closing tag is forced); implies splitting it
    /// off the answer.
    #[arg(long, value_name = "N", value_parser = at_least::<usize>(1))]
    pub thinking_budget: Option<usize>,
}

impl ToolArgs {
    /// Sets the tools, tool choice and reasoning options on `p`; returns the template
    /// variables (enable_thinking) to render the chat with.
    pub fn apply(&self, p: &mut GenerateParams) -> Result<serde_json::Map<String, serde_json::Value>> {
        if let Some(path) = &self.tools {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            p.tools = Some(Arc::new(Tools::parse(&text).map_err(|e| e.context(path.display()))?));
            p.tool_choice = ToolChoice::parse(&self.tool_choice).map_err(|e| e.context("--tool-choice"))?;
            p.parallel_tool_calls = self.parallel_tool_calls;
        }
        let mut extra = serde_json::Map::new();
        if self.think || self.no_think {
            extra.insert("enable_thinking".into(), self.think.into());
        }
        p.split_reasoning = self.think || self.thinking_budget.is_some();
        p.thinking_budget = self.thinking_budget;
        Ok(extra)
    }
}

/// Prints a generation's reasoning (stderr) and tool calls (stdout, one JSON object each).
pub(crate) fn print_extras(out: &lmx::engine::generate::Output) {
    if !out.reasoning.is_empty() {
        eprintln!("[reasoning]\n{}\n[/reasoning]", out.reasoning);
    }
    for c in &out.tool_calls {
        println!("{}", c.to_json());
    }
    for e in &out.tool_errors {
        eprintln!("[unreadable tool call: {e}]");
    }
}

/// A LoRA adapter applied to the model (`generate` and `chat`).
#[derive(Args, Debug)]
#[command(next_help_heading = "Adapter")]
pub(crate) struct AdapterArgs {
    /// Apply the LoRA adapter in folder DIR (mlx-lm's format: adapter_config.json and
    /// adapters.safetensors, as `lmx train` and `mlx_lm.lora` save them).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// The adapter's scale (0 = the base model) [default: the scale it was trained with].
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = float(|_| true, "must be a finite number"))]
    pub adapter_scale: Option<f32>,
}

impl AdapterArgs {
    /// Applies the adapter, if any, to `session`.
    pub fn apply(&self, model: &Model, session: &Session) -> Result<()> {
        match &self.adapter {
            Some(dir) => {
                let w = model.load_adapter(dir)?;
                let scale = self.adapter_scale.unwrap_or(w.config().scale);
                session.set_adapter(Some((Arc::new(w), scale)))
            }
            None if self.adapter_scale.is_some() => Err(Error::invalid("--adapter-scale needs --adapter")),
            None => Ok(()),
        }
    }
}

/// A value parser for whole numbers of at least `min`; a negative value for an unsigned
/// option says so rather than "invalid digit".
pub(crate) fn at_least<T>(min: i128) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync
where
    T: TryFrom<i128> + Display,
{
    move |s| {
        let n: i128 = s.trim().parse().map_err(|_| "not a whole number".to_string())?;
        if n < min {
            return Err(format!("must be at least {min}"));
        }
        T::try_from(n).map_err(|_| "too large".to_string())
    }
}

/// A value parser for finite numbers that satisfy `ok` (`what` says how when they do not).
pub(crate) fn float(
    ok: fn(f32) -> bool,
    what: &'static str,
) -> impl Fn(&str) -> std::result::Result<f32, String> + Clone + Send + Sync {
    move |s| {
        let x: f32 = s.trim().parse().map_err(|_| "not a number".to_string())?;
        if x.is_finite() && ok(x) {
            Ok(x)
        } else {
            Err(what.to_string())
        }
    }
}
