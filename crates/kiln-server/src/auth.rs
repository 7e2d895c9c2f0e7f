//! API keys: held only as SHA-256 hashes; a key's hash is the owner of the jobs it submits.

use std::collections::HashSet;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::NativeError;
use crate::AppState;

/// The owner every job gets on a server without keys.
pub const ANONYMOUS_OWNER: &str = "anonymous";

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    hashes: HashSet<String>,
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self {
            hashes: keys.iter().map(|k| key_hash(k)).collect(),
        }
    }

    /// The owner for an `Authorization` header value, or `Unauthorized`.
    pub fn owner_for(&self, authorization: Option<&str>) -> Result<String, NativeError> {
        self.owner_for_key(authorization.and_then(|v| scheme_token(v, "bearer")))
            .ok_or(NativeError::Unauthorized)
    }

    /// The owner for a key however a dialect carries it (`Key …`, a WebSocket message);
    /// `None` when keys are configured and this is not one of them.
    pub fn owner_for_key(&self, key: Option<&str>) -> Option<String> {
        if self.hashes.is_empty() {
            return Some(ANONYMOUS_OWNER.to_string());
        }
        let hash = key_hash(key?);
        self.hashes.contains(&hash).then_some(hash)
    }
}

/// The credential in an `Authorization` value of the form `<scheme> <token>` (scheme
/// compared without case), e.g. `scheme_token("Key abc", "key") == Some("abc")`.
pub fn scheme_token<'a>(authorization: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = authorization.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Hex SHA-256 of a key: what the server keeps, and the job owner id.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The caller, as a job owner id, from `Authorization: Bearer <key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

impl FromRequestParts<AppState> for Owner {
    type Rejection = NativeError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state.keys.owner_for(header).map(Owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_hash() {
        let keys = ApiKeys::new(&["alpha".into()]);
        assert_eq!(
            keys.owner_for(Some("Bearer alpha")).unwrap(),
            key_hash("alpha")
        );
        assert!(keys.owner_for(Some("Bearer beta")).is_err());
        assert!(keys.owner_for(None).is_err());
        assert!(keys.owner_for(Some("alpha")).is_err());
        let open = ApiKeys::new(&[]);
        assert_eq!(open.owner_for(None).unwrap(), ANONYMOUS_OWNER);
    }
}
