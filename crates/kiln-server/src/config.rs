//! What a deployment decides: keys, limits, prices, delivery policy, worker count.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `kiln serve` is configured with. `Default` is a loopback-only, keyless server
/// with one worker, suitable for a laptop.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data folder: the job store (`jobs.sqlite`) and outputs (`files/`) live here.
    pub data_dir: PathBuf,
    /// API keys accepted as `Authorization: Bearer <key>`. Held in memory only as SHA-256
    /// hashes. Empty means one anonymous owner, and then only loopback binds are allowed.
    pub keys: Vec<String>,
    /// The model name reported on jobs.
    pub model_name: String,
    /// Model ids that name the loaded model in the dialects (fal endpoint ids, Runware
    /// AIRs, WaveSpeed model paths, Prodia model names); any other id gets the dialect's
    /// not-found error. Defaults to the Kling 2.1 Master ids of the four platforms.
    pub model_ids: Vec<String>,
    /// Absolute base for output URLs (`https://videos.example.com`); `None` gives
    /// server-relative `/files/<key>` URLs.
    pub public_url: Option<String>,
    /// In-process workers, each running one job at a time.
    pub workers: usize,
    /// Queued jobs beyond which submits answer 429.
    pub max_queued: u64,
    /// What a 429 asks the client to wait, in seconds.
    pub retry_after_seconds: u64,
    /// Largest accepted request body; larger ones answer 413.
    pub max_body_bytes: usize,
    /// A worker's lease on a job; renewed by heartbeats well before it runs out.
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    /// How long an idle worker sleeps before looking at the queue again (a submit wakes
    /// in-process workers at once; this covers jobs submitted by other processes).
    pub idle_poll: Duration,
    /// How often the SSE stream reads the job's stored progress.
    pub events_poll: Duration,
    /// How often expired outputs are deleted.
    pub sweep_interval: Duration,
    /// Output lifetime when a request names no `ttl`.
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub webhook: WebhookConfig,
    /// Webhook, upload and image URLs resolving to loopback, private, link-local or other
    /// non-public addresses are refused unless this is set (tests and trusted networks).
    pub allow_private_addresses: bool,
    pub prices: Prices,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("kiln-data"),
            keys: Vec::new(),
            model_name: "kiln".to_string(),
            model_ids: KLING_MASTER_IDS.iter().map(|s| s.to_string()).collect(),
            public_url: None,
            workers: 1,
            max_queued: 1000,
            retry_after_seconds: 30,
            max_body_bytes: 20 * 1024 * 1024,
            lease: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            idle_poll: Duration::from_secs(1),
            events_poll: Duration::from_millis(500),
            sweep_interval: Duration::from_secs(60),
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            webhook: WebhookConfig::default(),
            allow_private_addresses: false,
            prices: Prices::default(),
        }
    }
}

/// The ids under which the hosted platforms serve Kling 2.1 Master; by default each names
/// the loaded model, so client code written for them runs unchanged.
pub const KLING_MASTER_IDS: &[&str] = &[
    "fal-ai/kling-video/v2.1/master/text-to-video",
    "fal-ai/kling-video/v2.1/master/image-to-video",
    "klingai:5@3",
    "kwaivgi/kling-v2.1-t2v-master",
    "kwaivgi/kling-v2.1-i2v-master",
    "kling-v2-1-master",
];

impl ServerConfig {
    /// Whether a dialect's model id names the loaded model.
    pub fn serves_model(&self, id: &str) -> bool {
        id == self.model_name || self.model_ids.iter().any(|m| m == id)
    }
}

/// How webhooks are signed and retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// HMAC-SHA256 key for `X-Kiln-Signature`; `None` sends no signature.
    pub secret: Option<String>,
    /// Deliveries per event, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: None,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Prices reported when a request sets `include_cost`; zero by default (self-hosted).
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    pub currency: String,
    /// Per second of delivered video, summed over results.
    pub per_output_second: f64,
    /// Per second of worker time spent generating and encoding.
    pub per_compute_second: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            currency: "USD".to_string(),
            per_output_second: 0.0,
            per_compute_second: 0.0,
        }
    }
}

/// Whether the server may listen on `addr`: a keyless server answers anyone as the single
/// anonymous owner, so it may only listen on loopback.
pub fn bind_allowed(addr: SocketAddr, config: &ServerConfig) -> Result<(), String> {
    if config.keys.is_empty() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr} without API keys: anyone who can reach it could run and read jobs; add at least one API key, or bind 127.0.0.1 / [::1]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_servers_bind_loopback_only() {
        let mut config = ServerConfig::default();
        assert!(bind_allowed("127.0.0.1:8080".parse().unwrap(), &config).is_ok());
        assert!(bind_allowed("[::1]:8080".parse().unwrap(), &config).is_ok());
        let err = bind_allowed("0.0.0.0:8080".parse().unwrap(), &config).unwrap_err();
        assert!(err.contains("API key"), "{err}");
        config.keys.push("secret".into());
        assert!(bind_allowed("0.0.0.0:8080".parse().unwrap(), &config).is_ok());
    }
}
