//! `lmx chat`: a conversation on stdin and stdout that keeps its KV cache across turns.

use std::io::{BufRead, Write};

use clap::Args;
use lmx::engine::Cancel;
use lmx::model::Message;
use lmx::{Error, ErrorKind, Result};

use crate::cache::{self, CacheArgs};
use crate::generate::metrics_line;
use crate::interrupt;
use crate::options::{
    at_least, print_extras, AdapterArgs, ConstraintArgs, ModelArgs, SamplingArgs, ToolArgs,
};

/// Chat with a model: one user message per line on stdin.
///
/// Each reply is streamed to stdout, followed by a metrics line on stderr. The conversation,
/// and the KV cache, are kept across turns, so each turn computes only its new tokens. An
/// empty line or the end of input ends the chat (and saves --save-cache).
///
/// Ctrl-C stops the reply being written (the conversation goes on); at the prompt, it ends
/// the chat at once, saving nothing.
#[derive(Args, Debug)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message that starts the conversation.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, value_name = "N", default_value_t = 256, allow_negative_numbers = true,
          value_parser = at_least::<usize>(1))]
    pub max_tokens: usize,
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
  lmx chat --model M --system 'Be brief.'
  lmx chat --model M --save-cache talk.cache      # later: lmx chat --model M --load-cache talk.cache
  lmx chat --model M --adapter adapter --adapter-scale 0.5";

pub(crate) fn run(a: &ChatArgs) -> Result<()> {
    cache::check_files(&a.cache, &a.adapter)?;
    let model = a.model.load(&Default::default())?;
    let (session, loaded) = cache::open(&a.cache, &model)?;
    a.adapter.apply(&model, &session)?;
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
    let mut base = a.sampling.params(a.max_tokens);
    let extra = a.tools.apply(&mut base)?;
    // Every reply of the conversation under the constraint (read and checked once, here).
    base.constraint = a.constraint.constraint()?;
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            break;
        }
        msgs.push(Message::new("user", text));
        let ids = session.chat_tokens(&msgs, base.tools.as_deref(), &extra, None)?;
        // A token per turn: a Ctrl-C stops this reply only.
        let cancel = Cancel::new();
        let params = lmx::engine::GenerateParams { cancel: Some(cancel.clone()), ..base.clone() };
        let out = interrupt::cancelling(&cancel, || {
            session.generate(&ids, &params, |ev| {
                print!("{}", ev.text);
                let _ = std::io::stdout().flush();
                true
            })
        })?;
        println!();
        print_extras(&out);
        eprintln!("{}", metrics_line(&out.metrics));
        let mut reply = Message::new("assistant", &out.text);
        reply.tool_calls = out.tool_calls.clone();
        msgs.push(reply);
    }
    if let Some(p) = &a.cache.save_cache {
        if session.cache_size()?.0 == 0 {
            eprintln!("[nothing to save to {}: the conversation is empty]", p.display());
        } else {
            cache::save(&session, p, &cache::chat_metadata(&msgs)?)?;
        }
    }
    Ok(())
}
