//! What every kiln-server integration test shares: the tiny fixture checkpoint (text-only,
//! 9 frames at 48x32, 2-4 steps) behind a paced generator, and a server on 127.0.0.1.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candle_core::{DType, Device};
use kiln_pipeline::{CheckpointPaths, GenerateRequest, Progress, WanPipeline};
use kiln_server::{
    GenerateError, GeneratedClip, ModelCapabilities, Server, ServerConfig, VideoGenerator,
};

pub const WEBHOOK_SECRET: &str = "test-secret";

pub fn pipeline() -> Arc<WanPipeline> {
    static PIPELINE: OnceLock<Arc<WanPipeline>> = OnceLock::new();
    PIPELINE
        .get_or_init(|| {
            let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/wan/tiny_cfg/model");
            let paths = CheckpointPaths {
                model,
                transformer: None,
                vae: None,
                text_encoder: None,
            };
            Arc::new(WanPipeline::load(&paths, DType::F32, &Device::Cpu).expect("fixture loads"))
        })
        .clone()
}

/// The real pipeline, with a pause after each progress report so a test can watch steps
/// and cancel mid-run.
pub struct Paced {
    pub pipeline: Arc<WanPipeline>,
    pub pause: Duration,
}

impl VideoGenerator for Paced {
    fn capabilities(&self) -> ModelCapabilities {
        VideoGenerator::capabilities(self.pipeline.as_ref())
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<GeneratedClip, GenerateError> {
        let pause = self.pause;
        let mut paced = |p: Progress| {
            std::thread::sleep(pause);
            progress(p)
        };
        VideoGenerator::generate(self.pipeline.as_ref(), request, &mut paced)
    }
}

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub server: Server,
    pub _dir: tempfile::TempDir,
}

/// kiln's bundled model (models/kiln-bundled): it takes first/last frames, masks and camera
/// control, so image-to-video paths run for real. 64x64, 9 frames, 2 steps is well under a
/// second a clip.
pub fn bundled_pipeline() -> Arc<WanPipeline> {
    static PIPELINE: OnceLock<Arc<WanPipeline>> = OnceLock::new();
    PIPELINE
        .get_or_init(|| {
            let model =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/kiln-bundled");
            let paths = CheckpointPaths {
                model,
                transformer: None,
                vae: None,
                text_encoder: None,
            };
            Arc::new(
                WanPipeline::load(&paths, DType::F32, &Device::Cpu).expect("bundled model loads"),
            )
        })
        .clone()
}

/// A server on the text-only fixture.
pub async fn start(pause_ms: u64, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    start_on(pipeline(), pause_ms, configure).await
}

/// A server on `pipeline`, every route on one plain-HTTP listener; `public_url` is set to
/// the listener's address (clear it in `configure` to test Host-derived URLs).
pub async fn start_on(
    pipeline: Arc<WanPipeline>,
    pause_ms: u64,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        public_url: Some(base.clone()),
        allow_private_addresses: true,
        events_poll: Duration::from_millis(40),
        idle_poll: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(200),
        sweep_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    config.webhook.secret = Some(WEBHOOK_SECRET.into());
    config.webhook.initial_backoff = Duration::from_millis(20);
    config.webhook.max_backoff = Duration::from_millis(100);
    configure(&mut config);
    kiln_server::bind_allowed(addr, &config).unwrap();
    let generator = Arc::new(Paced {
        pipeline,
        pause: Duration::from_millis(pause_ms),
    });
    let server = Server::start(config, generator).await.unwrap();
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    TestServer {
        base,
        http: reqwest::Client::new(),
        server,
        _dir: dir,
    }
}
