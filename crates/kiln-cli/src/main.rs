//! The `kiln` binary: parses arguments and wires the libraries together. Logic that a
//! library could own lives in that library, not here.

mod eval;
mod generate;
mod serve;
mod train;
mod y4m;

use clap::{Parser, Subcommand};

/// Inference and training allocate and free many tensors of tens of megabytes; the system
/// allocator returns each to the kernel and faults it back in (a third of training time went
/// to the kernel), mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the kernel: the next step or job reuses it, and the
/// process's footprint stays at its peak, which it needs anyway. `MIMALLOC_PURGE_DELAY`
/// in the environment still wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc allows this at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Self-hosted video generation (Wan 2.1 family)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a video from a text prompt.
    Generate(Box<generate::GenerateArgs>),
    /// Measure a model's adherence on held-out scenes of the procedural world.
    Eval(Box<eval::EvalArgs>),
    /// Serve kiln's HTTP API: a durable job queue with in-process workers.
    Serve(Box<serve::ServeArgs>),
    /// Train the bundled model (stage vae, then dit).
    Train(Box<train::TrainArgs>),
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Train(args) => train::run(*args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
