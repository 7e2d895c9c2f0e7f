//! `kiln serve`: loads the model, opens the data folder and serves kiln's HTTP API
//! (kiln-server) until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use kiln_pipeline::{CheckpointPaths, WanPipeline};
use kiln_server::{bind_allowed, ListenerScheme, Server, ServerConfig, Surface};
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
    /// Compute dtype; auto is bf16 on CPUs with AVX512-BF16 and f32 elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
    dtype: crate::generate::ComputeDtype,
    /// Jobs generated at once [default: 1, or the config file's].
    #[arg(long)]
    workers: Option<usize>,
    /// Also serve every route over HTTPS on this address (needs --tls-cert and --tls-key).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Serve fal's synchronous host (fal.run) on this address: the same paths as the queue
    /// host, answered when the video is done. HTTPS when a certificate is given.
    #[arg(long)]
    fal_run_listen: Option<SocketAddr>,
    /// PEM certificate chain for the HTTPS listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTPS listeners.
    #[arg(long)]
    tls_key: Option<PathBuf>,
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
    model_ids: Option<Vec<String>>,
    /// A worker's lease on a running job: how long a crashed server's jobs wait before
    /// they go back to the queue.
    lease_seconds: Option<u64>,
    heartbeat_seconds: Option<u64>,
    /// How often outputs past their TTL are deleted.
    sweep_seconds: Option<u64>,
    tls_listen: Option<SocketAddr>,
    fal_run_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The extra listeners beside `--listen`, from the flags or the config file.
struct Listeners {
    tls_listen: Option<SocketAddr>,
    fal_run_listen: Option<SocketAddr>,
    tls: Option<(PathBuf, PathBuf)>,
}

fn listeners(args: &ServeArgs, file: &ConfigFile) -> Result<Listeners> {
    let cert = args.tls_cert.clone().or(file.tls_cert.clone());
    let key = args.tls_key.clone().or(file.tls_key.clone());
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together; give both PEM files, or neither"),
    };
    let tls_listen = args.tls_listen.or(file.tls_listen);
    if tls_listen.is_some() && tls.is_none() {
        anyhow::bail!("--tls-listen needs --tls-cert and --tls-key (PEM files)");
    }
    Ok(Listeners {
        tls_listen,
        fal_run_listen: args.fal_run_listen.or(file.fal_run_listen),
        tls,
    })
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

fn server_config(args: &ServeArgs, file: ConfigFile) -> Result<ServerConfig> {
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
    if let Some(ids) = file.model_ids {
        c.model_ids = ids;
    }
    if let Some(l) = file.lease_seconds {
        c.lease = secs(l);
    }
    if let Some(h) = file.heartbeat_seconds {
        c.heartbeat_interval = secs(h);
    }
    if let Some(s) = file.sweep_seconds {
        c.sweep_interval = secs(s.max(1));
    }
    if c.heartbeat_interval.is_zero() || c.heartbeat_interval >= c.lease {
        anyhow::bail!(
            "heartbeat_seconds ({}) must be at least 1 and below lease_seconds ({}), or a running job would lose its lease",
            c.heartbeat_interval.as_secs(),
            c.lease.as_secs()
        );
    }
    Ok(c)
}

pub fn run(args: ServeArgs) -> Result<()> {
    let file = args
        .config
        .as_ref()
        .map(read_config)
        .transpose()?
        .unwrap_or_default();
    let extra = listeners(&args, &file)?;
    let config = server_config(&args, file)?;
    for (flag, addr) in [
        ("--listen", Some(args.listen)),
        ("--tls-listen", extra.tls_listen),
        ("--fal-run-listen", extra.fal_run_listen),
    ] {
        if let Some(addr) = addr {
            bind_allowed(addr, &config).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
    }
    if config.keys.is_empty() {
        tracing::warn!(
            "no API keys configured: serving one anonymous owner on loopback only ({})",
            args.listen
        );
    }
    let acceptor = extra
        .tls
        .as_ref()
        .map(|(cert, key)| kiln_server::tls::acceptor(cert, key))
        .transpose()?;
    // Before any tensor code: the compute pool's threads yield to the request threads.
    kiln_server::priority::init_compute_pool();
    let paths = CheckpointPaths {
        model: crate::generate::model_dir(args.model.as_ref())?,
        ..Default::default()
    };
    let pipeline = WanPipeline::load(&paths, args.dtype.resolve(), &Device::Cpu)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config, Arc::new(pipeline)).await?;
        let bind = |flag: &'static str, addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("{flag} {addr}: cannot bind; is the port in use?"))
        };
        let listener = bind("--listen", args.listen).await?;
        let mut extra_tasks = Vec::new();
        if let (Some(addr), Some(acceptor)) = (extra.tls_listen, acceptor.clone()) {
            let tls_listener = bind("--tls-listen", addr).await?;
            let router = server.router_for(Surface::Api, ListenerScheme("https"));
            extra_tasks.push(tokio::spawn(kiln_server::tls::serve_tls(
                tls_listener,
                acceptor,
                router,
            )));
            eprintln!("kiln serve: listening on https://{addr}");
        }
        if let Some(addr) = extra.fal_run_listen {
            let run_listener = bind("--fal-run-listen", addr).await?;
            match acceptor.clone() {
                Some(acceptor) => {
                    let router = server.router_for(Surface::FalRun, ListenerScheme("https"));
                    extra_tasks.push(tokio::spawn(kiln_server::tls::serve_tls(
                        run_listener,
                        acceptor,
                        router,
                    )));
                    eprintln!("kiln serve: fal run host on https://{addr}");
                }
                None => {
                    let router = server.router_for(Surface::FalRun, ListenerScheme("http"));
                    extra_tasks.push(tokio::spawn(async move {
                        if let Err(e) = axum::serve(run_listener, router).await {
                            tracing::error!("fal run listener stopped: {e}");
                        }
                    }));
                    eprintln!("kiln serve: fal run host on http://{addr}");
                }
            }
        }
        eprintln!("kiln serve: listening on http://{}", args.listen);
        axum::serve(listener, server.router())
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the HTTP server stopped")?;
        for task in extra_tasks {
            task.abort();
        }
        server.shutdown().await;
        Ok(())
    })
}
