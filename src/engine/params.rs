//! Generation parameters and their validation.

use crate::{Error, Result};

/// How the next token is chosen. Applied in this order: logit bias, repetition penalty,
/// presence and frequency penalties, then either the argmax (temperature 0) or temperature
/// scaling, top-k, top-p, min-p and a draw from the remaining distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// 0 = greedy (argmax). Must be finite and ≥ 0.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: i32,
    /// Keep the smallest set of most likely tokens whose probability reaches p; in (0, 1], 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; in [0, 1), 0 = off.
    pub min_p: f32,
    /// Divides positive logits and multiplies negative ones of tokens seen in the last
    /// `penalty_window` tokens (prompt included); 1 = off. Must be > 0.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token seen in the window; 0 = off.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was seen in the window; 0 = off.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_window: usize,
    /// Added to the logits of the given token ids.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the sampling generator; the same seed gives the same tokens. None: random.
    pub seed: Option<u64>,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

/// Everything a generation call takes.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate; must be > 0.
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    /// Token ids that end generation (besides the model's EOS set).
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation; the text up to (not including) the first one is returned,
    /// and no text past it is ever emitted.
    pub stop_strings: Vec<String>,
    /// Do not stop at the model's EOS tokens.
    pub ignore_eos: bool,
    /// No stop before this many tokens were generated: until then the EOS and stop tokens
    /// cannot be chosen (their logits are masked to -inf, as transformers'
    /// `MinNewTokensLengthLogitsProcessor` and vLLM's `min_tokens` do) and stop strings are
    /// not looked for (only text of the tokens after the first `min_tokens` can hold one, as
    /// vLLM checks them). 0 = off. `max_tokens` and the context length still end generation.
    pub min_tokens: usize,
    /// Prompt tokens processed per forward pass.
    pub prefill_chunk: usize,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
    /// Stops the call when requested (checked between prefill chunks and decode steps).
    pub cancel: Option<super::Cancel>,
    /// What the output must match (JSON schema, regex, grammar, choice); None: anything.
    pub constraint: Option<crate::model::Constraint>,
    /// Tools the model may call: chat calls render them into the template, and the output
    /// is parsed for calls in the model's format (their text withheld from the stream).
    pub tools: Option<std::sync::Arc<crate::model::Tools>>,
    /// Auto: the model decides, and a call it begins (its trigger written) is constrained from
    /// there on; None: no calls are parsed; Required or a named function: the whole output is
    /// calls, constrained to the tools' schemas.
    pub tool_choice: crate::model::ToolChoice,
    /// Whether the output may hold several calls (as OpenAI's `parallel_tool_calls`); false:
    /// exactly one. Applies wherever calls are constrained (required, named, auto's calls).
    pub parallel_tool_calls: bool,
    /// Split the model's reasoning (`<think>...</think>`) off the text: events and the text
    /// carry the answer, [`Output::reasoning`](super::generate::Output::reasoning) the rest.
    pub split_reasoning: bool,
    /// Most tokens of reasoning before its closing tag is forced (implies
    /// `split_reasoning`); None: no limit.
    pub thinking_budget: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampler: SamplerParams::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            min_tokens: 0,
            prefill_chunk: 2048,
            skip_special_tokens: true,
            cancel: None,
            constraint: None,
            tools: None,
            tool_choice: crate::model::ToolChoice::Auto,
            parallel_tool_calls: true,
            split_reasoning: false,
            thinking_budget: None,
        }
    }
}

/// Largest allowed count of stop strings and their length, so that the per-token stop check
/// stays cheap.
pub const MAX_STOP_STRINGS: usize = 64;
pub const MAX_STOP_STRING_BYTES: usize = 1024;

impl GenerateParams {
    /// The ids that may end a constrained output, in order: the model's EOS set (unless
    /// `ignore_eos`) and `stop_tokens`.
    pub(crate) fn sorted_stop_ids(&self, model: &crate::model::Model) -> Vec<u32> {
        let mut eos: Vec<u32> = model.stop_ids(&self.stop_tokens, self.ignore_eos).into_iter().collect();
        eos.sort_unstable();
        eos
    }

    /// Checks every field; `vocab` is the model's vocabulary size.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let s = &self.sampler;
        if self.max_tokens == 0 {
            return Err(Error::invalid("max_tokens must be at least 1"));
        }
        if !s.temperature.is_finite() || s.temperature < 0.0 {
            return Err(Error::invalid(format!("temperature {} must be finite and >= 0", s.temperature)));
        }
        if s.top_k < 0 {
            return Err(Error::invalid(format!("top_k {} must be >= 0", s.top_k)));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(Error::invalid(format!("top_p {} must be in (0, 1]", s.top_p)));
        }
        if !(s.min_p >= 0.0 && s.min_p < 1.0) {
            return Err(Error::invalid(format!("min_p {} must be in [0, 1)", s.min_p)));
        }
        if !s.repetition_penalty.is_finite() || s.repetition_penalty <= 0.0 {
            return Err(Error::invalid(format!(
                "repetition_penalty {} must be finite and > 0",
                s.repetition_penalty
            )));
        }
        if !s.presence_penalty.is_finite() || !s.frequency_penalty.is_finite() {
            return Err(Error::invalid("presence_penalty and frequency_penalty must be finite"));
        }
        if s.penalty_window == 0
            && (s.repetition_penalty != 1.0 || s.presence_penalty != 0.0 || s.frequency_penalty != 0.0)
        {
            return Err(Error::invalid("penalty_window must be at least 1 when a penalty is set"));
        }
        for &(id, bias) in &s.logit_bias {
            if id as usize >= vocab {
                return Err(Error::invalid(format!(
                    "logit_bias: token id {id} is outside the vocabulary (size {vocab})"
                )));
            }
            if !bias.is_finite() && bias != f32::NEG_INFINITY {
                return Err(Error::invalid(format!("logit_bias: {bias} for token {id} is not finite")));
            }
        }
        let banned: std::collections::HashSet<u32> =
            s.logit_bias.iter().filter(|(_, b)| *b == f32::NEG_INFINITY).map(|(id, _)| *id).collect();
        if vocab > 0 && banned.len() >= vocab {
            return Err(Error::invalid(format!(
                "logit_bias bans every token of the vocabulary ({vocab}): nothing could be generated"
            )));
        }
        for &id in &self.stop_tokens {
            if id as usize >= vocab {
                return Err(Error::invalid(format!(
                    "stop token id {id} is outside the vocabulary (size {vocab})"
                )));
            }
        }
        if self.stop_strings.len() > MAX_STOP_STRINGS {
            return Err(Error::invalid(format!("at most {MAX_STOP_STRINGS} stop strings")));
        }
        for st in &self.stop_strings {
            if st.is_empty() || st.len() > MAX_STOP_STRING_BYTES {
                return Err(Error::invalid(format!(
                    "stop strings must be 1 to {MAX_STOP_STRING_BYTES} bytes"
                )));
            }
        }
        if self.prefill_chunk == 0 {
            return Err(Error::invalid("prefill_chunk must be at least 1"));
        }
        if let Some(c) = &self.constraint {
            c.validate()?;
        }
        match &self.tools {
            Some(t) => self.tool_choice.check(t)?,
            None if matches!(
                self.tool_choice,
                crate::model::ToolChoice::Required | crate::model::ToolChoice::Function(_)
            ) =>
            {
                return Err(Error::invalid("tool_choice requires a call, but no tools were given"))
            }
            None => {}
        }
        if self.constraint.is_some()
            && self.tools.is_some()
            && matches!(
                self.tool_choice,
                crate::model::ToolChoice::Required | crate::model::ToolChoice::Function(_)
            )
        {
            return Err(Error::invalid(
                "a constraint and tool_choice required (or a named tool) cannot both be set: the calls are the constraint",
            ));
        }
        Ok(())
    }
}
