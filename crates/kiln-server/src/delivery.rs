//! Outbound calls for a job: the signed webhook (retried with bounded exponential backoff,
//! every attempt recorded in the store) and the upload PUT of the finished file.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use kiln_jobs::WebhookOutcome;
use sha2::Sha256;

use crate::address::{is_public, PublicOnlyResolver};
use crate::config::{ServerConfig, WebhookConfig};
use crate::native::JobView;
use crate::request::host_address;
use crate::{AppState, ServerError};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Kiln-Signature";

/// `sha256=<hex>` of `body` under `secret`, as sent in [`SIGNATURE_HEADER`].
pub fn sign_body(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One webhook event: the body and extra headers (signatures) in the job's dialect.
#[derive(Debug, Clone)]
pub struct OutboundWebhook {
    pub job_id: String,
    pub url: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    client: reqwest::Client,
    webhook: WebhookConfig,
    allow_private: bool,
}

impl Delivery {
    pub fn new(config: &ServerConfig) -> Result<Self, ServerError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.webhook.timeout.max(Duration::from_secs(1)))
            // A redirect could lead to a private address the first check never saw.
            .redirect(reqwest::redirect::Policy::none());
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|e| ServerError::HttpClient(e.to_string()))?;
        Ok(Self {
            client,
            webhook: config.webhook.clone(),
            allow_private: config.allow_private_addresses,
        })
    }

    /// The configured webhook signing secret, for dialects that sign in their own way.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.webhook.secret.as_deref()
    }

    /// Names are filtered by the resolver; address literals never reach it.
    fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url}: {e}"))?;
        if let Some(ip) = host_address(&parsed) {
            if !self.allow_private && !is_public(ip) {
                return Err(format!(
                    "{ip} is a loopback or private address; this server calls public addresses only"
                ));
            }
        }
        Ok(parsed)
    }

    /// Delivers `view` to the job's webhook in the background, signed with
    /// [`SIGNATURE_HEADER`] when a secret is configured: the native API's webhook.
    pub fn spawn_webhook(&self, state: &AppState, view: &JobView) {
        let Some(url) = view
            .request
            .get("webhook_url")
            .and_then(|v| v.as_str())
            .map(str::to_string)
        else {
            return;
        };
        let body = match serde_json::to_vec(view) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(job = %view.id, "cannot serialize the webhook body: {e}");
                return;
            }
        };
        let headers = match self.webhook.secret.as_deref() {
            Some(secret) => vec![(SIGNATURE_HEADER.to_string(), sign_body(secret, &body))],
            None => Vec::new(),
        };
        self.spawn_post(
            state,
            OutboundWebhook {
                job_id: view.id.clone(),
                url,
                body,
                headers,
            },
        );
    }

    /// Delivers a webhook built by a dialect in its own shape, in the background.
    pub fn spawn_post(&self, state: &AppState, webhook: OutboundWebhook) {
        let state = state.clone();
        tokio::spawn(async move { state.delivery.deliver_webhook(&state, &webhook).await });
    }

    async fn deliver_webhook(&self, state: &AppState, webhook: &OutboundWebhook) {
        let OutboundWebhook {
            job_id,
            url,
            body,
            headers,
        } = webhook;
        let mut backoff = self.webhook.initial_backoff;
        let attempts = self.webhook.max_attempts.max(1);
        for attempt in 1..=attempts {
            let outcome = self.post_once(url, body, headers).await;
            let delivered = matches!(outcome, WebhookOutcome::Status(s) if (200..300).contains(&s));
            if let Err(e) = state
                .store
                .record_webhook_attempt(job_id, url, &outcome)
                .await
            {
                tracing::warn!(job = %job_id, "cannot record webhook attempt: {e}");
            }
            if delivered {
                return;
            }
            tracing::warn!(job = %job_id, attempt, ?outcome, "webhook delivery failed");
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.webhook.max_backoff);
            }
        }
    }

    async fn post_once(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> WebhookOutcome {
        let url = match self.check_url(url) {
            Ok(u) => u,
            Err(e) => return WebhookOutcome::Error(e),
        };
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "kiln-webhook")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        match request.send().await {
            Ok(response) => WebhookOutcome::Status(response.status().as_u16()),
            Err(e) => WebhookOutcome::Error(error_chain(&e)),
        }
    }

    /// PUTs a finished file to the client's upload endpoint; `Err` says why it failed.
    pub async fn upload(
        &self,
        url: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<u16, String> {
        let url = self.check_url(url)?;
        let response = self
            .client
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("upload failed: {}", error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!(
                "the upload endpoint answered HTTP {status}; check that the URL accepts a PUT (a presigned URL may have expired)"
            ))
        }
    }
}

/// reqwest's top-level message hides the cause (the resolver's refusal, a refused connection).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign_body("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
