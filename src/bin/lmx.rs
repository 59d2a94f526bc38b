//! The `lmx` command-line tool.

use std::process::ExitCode;

fn usage() -> &'static str {
    "usage: lmx <command>\n\ncommands:\n  version    print liblmx and MLX versions\n  device     print the device MLX computes on and its memory\n"
}

fn run(args: &[String]) -> lmx::Result<()> {
    match args.first().map(String::as_str) {
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
            println!("active:  {} bytes, peak {} bytes", lmx::mlx::memory::active_memory()?, lmx::mlx::memory::peak_memory()?);
            Ok(())
        }
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{}", usage());
            Ok(())
        }
        Some(other) => Err(lmx::Error::invalid(format!("unknown command {other:?}\n{}", usage()))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmx: {e}");
            ExitCode::FAILURE
        }
    }
}
