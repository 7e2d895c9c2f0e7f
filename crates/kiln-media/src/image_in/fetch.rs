//! http(s) download of an image with timeouts, a byte cap, a redirect limit and an
//! address policy hook checked on every connection.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

use super::{AddressPolicy, FetchLimits, ImageError};

/// The policy's refusal, carried through ureq's error type back to [`fetch_url`].
#[derive(Debug)]
struct AddressRefused {
    reason: String,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for AddressRefused {}

/// Resolves with the system resolver, then lets the policy veto the addresses. The check
/// sits in the resolver, not before the request, so the addresses checked are the ones
/// connected to, and every redirect hop is checked too.
struct PolicyResolver {
    inner: DefaultResolver,
    policy: Option<AddressPolicy>,
}

impl fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyResolver")
            .field("policy", &self.policy.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Resolver for PolicyResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addresses = self.inner.resolve(uri, config, timeout)?;
        if let Some(policy) = &self.policy {
            let host = uri.host().unwrap_or_default();
            let ips: Vec<IpAddr> = addresses.iter().map(|a| a.ip()).collect();
            policy(host, &ips)
                .map_err(|reason| ureq::Error::Other(Box::new(AddressRefused { reason })))?;
        }
        Ok(addresses)
    }
}

fn agent_for(limits: &FetchLimits) -> Agent {
    let config = Agent::config_builder()
        .timeout_connect(Some(limits.connect_timeout))
        .timeout_recv_response(Some(limits.read_timeout))
        .timeout_per_read(Some(limits.read_timeout))
        .timeout_global(Some(limits.total_timeout))
        .max_redirects(limits.max_redirects)
        .max_redirects_will_error(true)
        // Statuses are reported by us, with the URL, rather than as ureq errors.
        .http_status_as_error(false)
        // An environment proxy would make the resolver see the proxy, not the image host.
        .proxy(None)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .accept("image/png,image/jpeg,image/webp,image/gif,*/*;q=0.5")
        .build();
    let resolver = PolicyResolver {
        inner: DefaultResolver::default(),
        policy: limits.address_policy.clone(),
    };
    Agent::with_parts(config, DefaultConnector::new(), resolver)
}

/// Downloads `url`, refusing bodies over `limits.max_bytes` as soon as they pass it
/// (a declared Content-Length over the cap is refused before reading any of the body).
pub(crate) fn fetch_url(url: &str, limits: &FetchLimits) -> Result<Vec<u8>, ImageError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| ImageError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        other => {
            return Err(ImageError::BadUrl {
                url: url.to_string(),
                reason: format!("scheme {:?} is not http or https", other.unwrap_or("")),
            })
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ImageError::BadUrl {
            url: url.to_string(),
            reason: "it has no host".to_string(),
        });
    }

    let response = agent_for(limits)
        .get(uri)
        .call()
        .map_err(|e| map_request_error(url, limits, e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ImageError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
        });
    }
    let too_large = || ImageError::TooLarge {
        origin: format!("the image at {url}"),
        limit: limits.max_bytes,
    };
    let mut body = response.into_body();
    if body.content_length().is_some_and(|n| n > limits.max_bytes) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // One byte past the cap distinguishes "at the cap" from "over it"; the rest of an
    // oversize body is never read.
    body.with_config()
        .reader()
        .take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| map_body_error(url, limits, e))?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

fn map_body_error(url: &str, limits: &FetchLimits, error: std::io::Error) -> ImageError {
    let kind = error.kind();
    let message = error.to_string();
    // ureq reports its own failures (timeouts, protocol errors) wrapped in io::Error.
    if let Some(inner) = error.into_inner() {
        if let Ok(ureq_error) = inner.downcast::<ureq::Error>() {
            return map_request_error(url, limits, *ureq_error);
        }
    }
    if kind == std::io::ErrorKind::TimedOut {
        return ImageError::Timeout {
            url: url.to_string(),
            phase: format!(
                "no data for {:?} while reading the body",
                limits.read_timeout
            ),
        };
    }
    ImageError::Unreachable {
        url: url.to_string(),
        reason: format!("the connection failed while reading the body: {message}"),
    }
}

fn map_request_error(url: &str, limits: &FetchLimits, error: ureq::Error) -> ImageError {
    use ureq::Timeout as T;
    let url = url.to_string();
    match error {
        ureq::Error::Timeout(which) => {
            let phase = match which {
                T::Connect => format!("no connection within {:?}", limits.connect_timeout),
                T::Resolve => "the host name did not resolve in time".to_string(),
                T::RecvResponse | T::PerRead => {
                    format!("no response within {:?}", limits.read_timeout)
                }
                T::Global => format!("the download took over {:?}", limits.total_timeout),
                other => format!("{other:?}"),
            };
            ImageError::Timeout { url, phase }
        }
        ureq::Error::TooManyRedirects => ImageError::TooManyRedirects {
            url,
            max: limits.max_redirects,
        },
        ureq::Error::HostNotFound => ImageError::Unreachable {
            url,
            reason: "the host name does not resolve".to_string(),
        },
        ureq::Error::ConnectionFailed => ImageError::Unreachable {
            url,
            reason: "the connection failed".to_string(),
        },
        ureq::Error::Io(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ImageError::Timeout {
                    url,
                    phase: format!("no data for {:?}", limits.read_timeout),
                }
            } else {
                ImageError::Unreachable {
                    url,
                    reason: e.to_string(),
                }
            }
        }
        ureq::Error::BadUri(reason) => ImageError::BadUrl { url, reason },
        ureq::Error::RedirectFailed => ImageError::Unreachable {
            url,
            reason: "a redirect had no usable Location".to_string(),
        },
        ureq::Error::Other(inner) => match inner.downcast::<AddressRefused>() {
            Ok(refused) => ImageError::AddressRefused {
                url,
                reason: refused.reason,
            },
            Err(other) => ImageError::Unreachable {
                url,
                reason: other.to_string(),
            },
        },
        other => ImageError::Unreachable {
            url,
            reason: other.to_string(),
        },
    }
}
