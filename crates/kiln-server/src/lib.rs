//! The core of `kiln serve`: kiln's native HTTP API, in-process workers, the output files,
//! webhooks and upload PUTs, API-key auth, metrics and the OpenAPI document.
//!
//! This crate owns everything between a client's HTTP request and the engine: one typed
//! [`VideoRequest`] validated once against the loaded model's [`ModelCapabilities`], jobs in
//! a [`kiln_jobs::JobStore`], workers that run a [`VideoGenerator`] and encode with
//! `kiln-media`. It must not run tensor code on a request thread (generation runs only on
//! blocking threads inside workers), and it holds no architecture or sampling code. Hosted
//! API dialects (fal, Runware, WaveSpeed, Prodia) will live in their own modules, each
//! translating into [`VideoRequest`] and out of the job view, with its own error type.

mod address;
mod auth;
mod conditions;
mod config;
mod delivery;
mod dialects;
mod error;
mod events;
mod files;
mod generator;
mod metrics;
mod native;
mod openapi;
pub mod priority;
mod request;
mod sweeper;
pub mod tls;
mod worker;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use kiln_jobs::{JobStore, SqliteStore, StoreConfig};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use address::is_public;
pub use auth::{key_hash, Owner, ANONYMOUS_OWNER};
pub use conditions::{load_conditions, ConditionError, ConditionInput, ConditionSources};
pub use config::{bind_allowed, Prices, ServerConfig, WebhookConfig, KLING_MASTER_IDS};
pub use delivery::{sign_body, OutboundWebhook, SIGNATURE_HEADER};
pub use dialects::ListenerScheme;
pub use error::{ErrorBody, ErrorDetail, NativeError};
pub use generator::{GenerateError, GeneratedClip, ModelCapabilities, VideoGenerator};
pub use native::{JobLinks, JobList, JobView};
pub use openapi::openapi_document;
pub use request::{
    AspectRatio, CameraAxes, CameraControl, CameraType, DurationSeconds, DynamicMaskInput,
    FrameImage, FramePosition, Mode, OutputFormat, RequestError, RequestLimits, ResolvedRequest,
    TrajectoryPoint, VideoRequest,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] kiln_jobs::JobError),
    #[error(
        "cannot create the output folder {path}: {source}; check that the data folder is writable"
    )]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for webhooks and uploads: {0}")]
    HttpClient(String),
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The native API, every dialect (fal's queue host), files, metrics.
    Api,
    /// fal's synchronous host (`fal.run`): the same paths as the queue host, answered when
    /// the video is done. fal's SDK reaches it on its own host name, so it needs its own port.
    FalRun,
}

/// What every handler and worker shares.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) generator: Arc<dyn VideoGenerator>,
    pub(crate) capabilities: ModelCapabilities,
    pub(crate) keys: auth::ApiKeys,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) files: files::FileStore,
    pub(crate) delivery: delivery::Delivery,
    /// Wakes an idle worker when a job is submitted.
    pub(crate) work_ready: Notify,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A started server core: the store is open, expired leases are reclaimed, workers and the
/// TTL sweeper run. Serve [`Server::router`] on a listener checked with [`bind_allowed`].
pub struct Server {
    state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens `<data_dir>/jobs.sqlite` and starts `config.workers` workers and the sweeper
    /// on the current tokio runtime.
    pub async fn start(
        config: ServerConfig,
        generator: Arc<dyn VideoGenerator>,
    ) -> Result<Self, ServerError> {
        let store_config = StoreConfig {
            max_queued: config.max_queued,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(config.data_dir.join("jobs.sqlite"), store_config).await?;
        Self::start_with_store(config, generator, Arc::new(store)).await
    }

    /// As [`Server::start`], on a store the caller opened (another backend, a test clock).
    pub async fn start_with_store(
        config: ServerConfig,
        generator: Arc<dyn VideoGenerator>,
        store: Arc<dyn JobStore>,
    ) -> Result<Self, ServerError> {
        // Jobs whose worker died with the last process go back to the queue (or end).
        let reclaimed = store.reclaim_expired().await?;
        if reclaimed != kiln_jobs::Reclaimed::default() {
            tracing::info!(?reclaimed, "reclaimed jobs from expired leases");
        }
        let files = files::FileStore::create(config.data_dir.join("files"))?;
        let delivery = delivery::Delivery::new(&config)?;
        let state = AppState(Arc::new(Shared {
            capabilities: generator.capabilities(),
            keys: auth::ApiKeys::new(&config.keys),
            metrics: metrics::Metrics::default(),
            files,
            delivery,
            work_ready: Notify::new(),
            config,
            store,
            generator,
        }));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for slot in 0..state.config.workers {
            tasks.push(tokio::spawn(worker::run_worker(
                state.clone(),
                slot,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(sweeper::run_sweeper(
            state.clone(),
            shutdown_rx,
        )));
        Ok(Self {
            state,
            shutdown,
            tasks,
        })
    }

    /// Every route of the native API and the dialects (fal with its queue host's
    /// semantics), plus files, health, metrics and the OpenAPI document, over plain HTTP.
    pub fn router(&self) -> Router {
        self.router_for(Surface::Api, ListenerScheme("http"))
    }

    /// The router of one listener: `scheme` is what the listener speaks, so URLs handed
    /// back to clients (fal's status and response URLs) use it.
    pub fn router_for(&self, surface: Surface, scheme: ListenerScheme) -> Router {
        let routes = match surface {
            Surface::Api => router(self.state.clone()),
            // Outputs are linked with this listener's address, so it serves them too.
            Surface::FalRun => dialects::fal::run_router()
                .route("/files/{key}", get(files::get_file))
                .layer(DefaultBodyLimit::max(self.state.config.max_body_bytes))
                .layer(axum::middleware::from_fn_with_state(
                    self.state.clone(),
                    metrics::track_http,
                ))
                .with_state(self.state.clone()),
        };
        routes.layer(axum::Extension(scheme))
    }

    pub fn store(&self) -> Arc<dyn JobStore> {
        self.state.store.clone()
    }

    pub fn capabilities(&self) -> &ModelCapabilities {
        &self.state.capabilities
    }

    /// Stops taking jobs and waits for the workers; a job in flight is left to its lease
    /// and is reclaimed by the next start.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/videos", post(native::submit).get(native::list))
        .route("/v1/videos/{id}", get(native::get_job))
        .route("/v1/videos/{id}/cancel", post(native::cancel))
        .route("/v1/videos/{id}/events", get(events::job_events))
        .route("/files/{key}", get(files::get_file))
        .route("/openapi.json", get(openapi::get_openapi))
        .route("/healthz", get(native::healthz))
        .route("/metrics", get(native::metrics))
        .merge(dialects::router())
        .fallback(native::no_route)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_http,
        ))
        .with_state(state)
}
