//! The `kiln` binary: parses arguments and wires the libraries together. Logic that a
//! library could own lives in that library, not here.

mod generate;
mod train;
mod y4m;

use clap::{Parser, Subcommand};

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
    /// Train the bundled model (stage vae, then dit).
    Train(Box<train::TrainArgs>),
}

fn main() {
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
        Command::Train(args) => train::run(*args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
