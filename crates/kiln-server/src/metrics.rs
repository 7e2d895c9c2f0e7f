//! Prometheus text metrics kept in process: HTTP latency per route and step time. Queue depth
//! and jobs by state are read from the store at scrape time, so they hold across processes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use kiln_jobs::{JobCounts, JobState};

use crate::AppState;

const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const STEP_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (bound, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *bound {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
pub struct Metrics {
    /// Keyed by (method, route template, status).
    http: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    steps: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http: Mutex::new(BTreeMap::new()),
            steps: Mutex::new(Histogram::new(STEP_BUCKETS)),
        }
    }
}

impl Metrics {
    pub fn observe_step(&self, seconds: f64) {
        // A poisoned lock only means a panic mid-update of plain counters; keep counting.
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(seconds);
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method.to_string(), route.to_string(), status))
            .or_insert_with(|| Histogram::new(HTTP_BUCKETS))
            .observe(seconds);
    }

    pub fn render(&self, counts: &JobCounts) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP kiln_queue_depth Jobs waiting for a worker.\n# TYPE kiln_queue_depth gauge\n",
        );
        let _ = writeln!(out, "kiln_queue_depth {}", counts.queued);
        out.push_str("# HELP kiln_jobs Jobs in the store by state.\n# TYPE kiln_jobs gauge\n");
        for state in JobState::ALL {
            let _ = writeln!(out, "kiln_jobs{{state=\"{state}\"}} {}", counts.get(state));
        }
        out.push_str("# HELP kiln_step_seconds Wall time of one denoising step.\n# TYPE kiln_step_seconds histogram\n");
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).render(
            &mut out,
            "kiln_step_seconds",
            "",
        );
        out.push_str("# HELP kiln_http_request_duration_seconds HTTP request latency by route.\n# TYPE kiln_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in
            self.http.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            h.render(&mut out, "kiln_http_request_duration_seconds", &labels);
        }
        out
    }
}

/// Middleware timing every request under its route template (never the raw path, which
/// would make one series per job id).
pub async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state.metrics.observe_http(
        &method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
