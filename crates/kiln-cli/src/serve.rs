//! `kiln serve`: loads the model, opens the data folder and serves kiln's HTTP API
//! (kiln-server) until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use kiln_pipeline::{CheckpointPaths, WanPipeline};
use kiln_server::{bind_allowed, Server, ServerConfig};
use serde::Deserialize;

#[derive(Args)]
pub struct ServeArgs {
    /// Checkpoint folder [default: the bundled model, models/kiln-bundled].
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data folder: the job store (jobs.sqlite) and the output files.
    #[arg(long, default_value = "kiln-data")]
    data: PathBuf,
    /// TOML file with keys, workers, limits, prices and delivery settings (see docs/server.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Jobs generated at once [default: 1, or the config file's].
    #[arg(long)]
    workers: Option<usize>,
}

/// The config file: every field optional, the rest from `ServerConfig::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    keys: Option<Vec<String>>,
    workers: Option<usize>,
    max_queued: Option<u64>,
    public_url: Option<String>,
    model_name: Option<String>,
    default_ttl_seconds: Option<u64>,
    max_ttl_seconds: Option<u64>,
    allow_private_addresses: Option<bool>,
    webhook_secret: Option<String>,
    webhook_max_attempts: Option<u32>,
    currency: Option<String>,
    price_per_output_second: Option<f64>,
    price_per_compute_second: Option<f64>,
}

fn read_config(path: &PathBuf) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--config {}: {}; fix the field or remove it",
            path.display(),
            e.message()
        )
    })
}

fn server_config(args: &ServeArgs, file: ConfigFile) -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: args.data.clone(),
        ..Default::default()
    };
    let secs = std::time::Duration::from_secs;
    if let Some(k) = file.keys {
        c.keys = k;
    }
    if let Some(w) = args.workers.or(file.workers) {
        c.workers = w;
    }
    if let Some(m) = file.max_queued {
        c.max_queued = m;
    }
    c.public_url = file.public_url.or(c.public_url);
    if let Some(n) = file.model_name {
        c.model_name = n;
    }
    if let Some(t) = file.default_ttl_seconds {
        c.default_ttl = secs(t);
    }
    if let Some(t) = file.max_ttl_seconds {
        c.max_ttl = secs(t);
    }
    if let Some(a) = file.allow_private_addresses {
        c.allow_private_addresses = a;
    }
    c.webhook.secret = file.webhook_secret.or(c.webhook.secret);
    if let Some(n) = file.webhook_max_attempts {
        c.webhook.max_attempts = n;
    }
    if let Some(cur) = file.currency {
        c.prices.currency = cur;
    }
    if let Some(p) = file.price_per_output_second {
        c.prices.per_output_second = p;
    }
    if let Some(p) = file.price_per_compute_second {
        c.prices.per_compute_second = p;
    }
    c
}

pub fn run(args: ServeArgs) -> Result<()> {
    let file = args
        .config
        .as_ref()
        .map(read_config)
        .transpose()?
        .unwrap_or_default();
    let config = server_config(&args, file);
    bind_allowed(args.listen, &config).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    if config.keys.is_empty() {
        tracing::warn!(
            "no API keys configured: serving one anonymous owner on loopback only ({})",
            args.listen
        );
    }
    let paths = CheckpointPaths {
        model: crate::generate::model_dir(args.model.as_ref())?,
        ..Default::default()
    };
    let pipeline = WanPipeline::load(&paths, DType::F32, &Device::Cpu)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config, Arc::new(pipeline)).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| {
                format!("--listen {}: cannot bind; is the port in use?", args.listen)
            })?;
        eprintln!("kiln serve: listening on http://{}", args.listen);
        axum::serve(listener, server.router())
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the HTTP server stopped")?;
        server.shutdown().await;
        Ok(())
    })
}
