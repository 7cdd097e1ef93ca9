//! API keys. The config holds each key's SHA-256, never the key; a request's `Authorization:
//! Bearer <key>` is hashed and compared with every configured hash in constant time (all of them,
//! whatever matches, so timing says nothing about which). A key may use only its queues and
//! upstreams, and its jobs carry its tenant: anything else answers 404, as if absent.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use sluice_common::config::ApiConfig;

use super::errors::ApiError;

/// A configured key: its hash, its name, and what it may use.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    hash: [u8; 32],
    pub queues: Vec<String>,
    pub upstreams: Vec<String>,
    pub tenant: String,
    /// Hosts its webhooks may call, and the secret they are signed with.
    pub webhook_hosts: Vec<String>,
    pub webhook_secret: String,
    max_body_bytes: Option<usize>,
}

impl Key {
    /// `url` may be this key's webhook: http(s), its host in `webhook_hosts` (else 422).
    pub fn webhook(&self, url: &str) -> Result<(), ApiError> {
        if self.webhook_secret.is_empty() {
            return Err(ApiError::Invalid(
                "webhook: this key has no webhook_hosts configured".into(),
            ));
        }
        sluice_common::webhook::allowed(url, &self.webhook_hosts)
            .map(drop)
            .map_err(|e| ApiError::Invalid(e.to_string()))
    }

    /// A body of `len` bytes is within this key's cap (else 413 naming it).
    pub fn body_fits(&self, len: usize, global: usize) -> Result<(), ApiError> {
        let cap = self.max_body_bytes.map_or(global, |k| k.min(global));
        if len > cap {
            return Err(ApiError::TooLarge(format!(
                "body: {len} bytes, over this key's limit of {cap}"
            )));
        }
        Ok(())
    }

    /// `queue` is this key's (else 404, as if it did not exist).
    pub fn queue(&self, queue: &str) -> Result<(), ApiError> {
        if self.queues.iter().any(|q| q == queue) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no queue {queue}")))
        }
    }

    /// `upstream` is this key's (else 422: the request names one it may not use).
    pub fn upstream(&self, upstream: &str) -> Result<(), ApiError> {
        if self.upstreams.iter().any(|u| u == upstream) {
            Ok(())
        } else {
            Err(ApiError::Invalid(format!(
                "upstream: {upstream:?} is not one of this key's upstreams"
            )))
        }
    }
}

/// Every configured key.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<Key>);

/// A key's SHA-256, as the config stores it (hex).
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Keys {
    /// The config's keys (checked at load: 64 hex digits each).
    pub fn from_config(api: &ApiConfig) -> Keys {
        Keys(
            api.keys
                .iter()
                .filter_map(|(name, k)| {
                    let bytes = hex::decode(&k.sha256).ok()?;
                    let hash: [u8; 32] = bytes.try_into().ok()?;
                    Some(Key {
                        name: name.clone(),
                        hash,
                        queues: k.queues.clone(),
                        upstreams: k.upstreams.clone(),
                        tenant: k.tenant.clone(),
                        webhook_hosts: k.webhook_hosts.clone(),
                        webhook_secret: k.webhook_secret.clone(),
                        max_body_bytes: k.max_body_bytes,
                    })
                })
                .collect(),
        )
    }

    /// The key a request presents, or 401.
    pub fn check(&self, headers: &HeaderMap) -> Result<&Key, ApiError> {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let hash: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut found = None;
        for key in &self.0 {
            if bool::from(key.hash.ct_eq(&hash)) && found.is_none() {
                found = Some(key);
            }
        }
        found.ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::config::ApiKeyConfig;

    fn keys() -> Keys {
        let mut api = sluice_common::Config::defaults().api;
        api.keys.insert(
            "a".into(),
            ApiKeyConfig {
                sha256: sha256_hex("secret-a"),
                queues: vec!["q".into()],
                upstreams: vec!["mock".into()],
                tenant: "t1".into(),
                webhook_hosts: vec![],
                webhook_secret: String::new(),
                max_body_bytes: Some(10),
            },
        );
        Keys::from_config(&api)
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            v.parse().expect("header"),
        );
        h
    }

    #[test]
    fn only_a_configured_key_passes_and_it_sees_only_its_own() {
        let keys = keys();
        let key = keys.check(&bearer("Bearer secret-a")).expect("known key");
        assert_eq!(key.name, "a");
        assert!(keys.check(&bearer("Bearer secret-b")).is_err());
        assert!(
            keys.check(&bearer("secret-a")).is_err(),
            "not a bearer token"
        );
        assert!(keys.check(&HeaderMap::new()).is_err());
        assert!(key.queue("q").is_ok());
        assert!(matches!(key.queue("other"), Err(ApiError::NotFound(_))));
        assert!(matches!(key.upstream("openai"), Err(ApiError::Invalid(_))));
        assert!(key.body_fits(10, 100).is_ok());
        assert!(matches!(key.body_fits(11, 100), Err(ApiError::TooLarge(_))));
    }
}
