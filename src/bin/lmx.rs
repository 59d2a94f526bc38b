//! The `lmx` command-line tool: generate, chat, fine-tune and describe models.
//!
//! One module per subcommand, each with its clap `Args` struct and a `run`; option groups that
//! several subcommands share live in `options` (model, sampling, adapter) and `cache` (session
//! files, KV-cache quantization), flattened into each subcommand that takes them. A new
//! subcommand (serve, embed, rerank...) is a module and a variant of [`Command`].
//!
//! The CLI uses the library's model and engine layers, never its C ABI (`lmx::ffi`).

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

#[path = "lmx/cache.rs"]
mod cache;
#[path = "lmx/chat.rs"]
mod chat;
#[path = "lmx/generate.rs"]
mod generate;
#[path = "lmx/info.rs"]
mod info;
#[path = "lmx/interrupt.rs"]
mod interrupt;
#[path = "lmx/options.rs"]
mod options;
#[path = "lmx/train.rs"]
mod train;

use lmx::Result;

/// Run large language models on MLX: generate, chat, fine-tune LoRA adapters.
#[derive(Parser, Debug)]
#[command(
    name = "lmx",
    version,
    long_about = "Run large language models on MLX: generate, chat, fine-tune LoRA adapters.\n\n\
        A model (--model PATH) is a folder (config.json, *.safetensors, tokenizer.json) or a GGUF \
        file. `lmx <command> --help` describes each command and its options.",
    after_help = "Exit status: 0 on success, 1 on any error (a bad option included)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    Generate(generate::GenerateArgs),
    Chat(chat::ChatArgs),
    Train(train::TrainArgs),
    Info(info::InfoArgs),
    /// Print the versions of liblmx and MLX.
    Version,
    /// Describe the device MLX computes on: backend, name, memory.
    Device,
    /// Print a completion script for a shell.
    ///
    /// bash: `source <(lmx completions bash)`; zsh: `lmx completions zsh > ~/.zfunc/_lmx` (a
    /// folder on $fpath); fish: `lmx completions fish > ~/.config/fish/completions/lmx.fish`.
    Completions {
        /// The shell to complete in.
        shell: Shell,
    },
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        // Bare `lmx` prints the help and succeeds, as `lmx help` does.
        let _ = Cli::command().print_help();
        return Ok(());
    };
    match command {
        Command::Generate(a) => generate::run(&a),
        Command::Chat(a) => chat::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Info(a) => info::run(&a),
        Command::Version => {
            println!("liblmx {} (MLX {})", lmx::VERSION, lmx::mlx::device::mlx_version()?);
            Ok(())
        }
        Command::Device => {
            let d = lmx::mlx::device::describe()?;
            println!("backend: {}", d.backend.name());
            println!("device:  {} {}", d.device, if d.name.is_empty() { "(unnamed)" } else { &d.name });
            println!("memory:  {} MiB", d.memory_size / (1 << 20));
            if d.recommended_working_set > 0 {
                println!("recommended working set: {} MiB", d.recommended_working_set / (1 << 20));
            }
            Ok(())
        }
        Command::Completions { shell } => {
            // Made in memory: clap_complete panics when its output cannot be written.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "lmx", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(lmx::Error::new(lmx::ErrorKind::Io, format!("writing the completion script: {e}")))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Prints what clap answered instead of a parse (help, the version, or a usage error, with
/// our tips added) and returns the exit status: 0 for help and the version, 1 for an error,
/// as for every other error of lmx.
fn answer(e: clap::Error) -> i32 {
    if e.kind() == ErrorKind::DisplayVersion {
        // MLX's version too, which clap's static version string cannot know.
        match lmx::mlx::device::mlx_version() {
            Ok(mlx) => println!("lmx {} (MLX {mlx})", lmx::VERSION),
            Err(_) => println!("lmx {}", lmx::VERSION),
        }
        return 0;
    }
    let e = with_tip(e);
    let _ = e.print();
    if e.use_stderr() {
        1
    } else {
        0
    }
}

/// An unknown option gets a tip naming the subcommands that take it (`lmx chat --prompt`:
/// "'--prompt' is an option of 'lmx generate'"), on top of clap's own for a misspelling.
fn with_tip(mut e: clap::Error) -> clap::Error {
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return e };
    let Some(long) = arg.strip_prefix("--").and_then(|a| a.split('=').next()) else { return e };
    let long = long.to_string();
    let cli = Cli::command();
    // The top level takes no option with a value, so the first word is the subcommand.
    let Some(sub) = std::env::args_os().skip(1).find(|a| !a.as_encoded_bytes().starts_with(b"-")) else {
        return e;
    };
    let sub = sub.to_string_lossy();
    let tip = if sub == "train" && long == "adapter" {
        "'--resume-adapter DIR' continues training an adapter".to_string()
    } else {
        let takers: Vec<String> = cli
            .get_subcommands()
            .filter(|c| c.get_name() != sub && c.get_arguments().any(|a| a.get_long() == Some(&long)))
            .map(|c| format!("'lmx {}'", c.get_name()))
            .collect();
        if takers.is_empty() {
            return e;
        }
        format!("'--{long}' is an option of {}", takers.join(" and "))
    };
    let mut tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(v)) => v.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    e
}

fn main() -> ExitCode {
    let code = match Cli::try_parse() {
        Ok(cli) => match run(cli) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("lmx: {e}");
                1
            }
        },
        Err(e) => answer(e),
    };
    // Everything is written and every model freed by now. The process ends without running
    // the shared libraries' exit destructors: OpenBLAS 0.3.21's joins its worker threads and,
    // rarely, waits forever for one that missed the wake-up (seen once in `make`'s demo).
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}
