//! Webhooks per the Standard Webhooks scheme (standardwebhooks.com): which URLs a key may call
//! (its host allowlist, exact names), its signing secret (`whsec_` + base64), and the signature
//! of one message: `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), sent as the
//! `webhook-signature` header beside `webhook-id` and `webhook-timestamp`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a webhook URL or secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook: {0:?} is not an http:// or https:// URL with a host")]
    NotUrl(String),
    #[error("webhook: host {0:?} is not in this key's webhook_hosts")]
    HostNotAllowed(String),
    #[error("webhook_secret: must be whsec_ followed by base64 (sluice api-key makes one)")]
    BadSecret,
}

/// Longest webhook URL accepted.
pub const MAX_URL: usize = 2048;

/// `url` is http(s) with a host in `hosts` (exact, case-insensitive); its host.
pub fn allowed(url: &str, hosts: &[String]) -> Result<String, WebhookError> {
    let parsed = url::Url::parse(url).map_err(|_| WebhookError::NotUrl(url.to_string()))?;
    let host = match (parsed.scheme(), parsed.host_str()) {
        ("http" | "https", Some(h)) if url.len() <= MAX_URL && parsed.username().is_empty() => {
            h.to_ascii_lowercase()
        }
        _ => return Err(WebhookError::NotUrl(url.to_string())),
    };
    if hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        Ok(host)
    } else {
        Err(WebhookError::HostNotAllowed(host))
    }
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, WebhookError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or(WebhookError::BadSecret)?;
    match STANDARD.decode(b64) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(WebhookError::BadSecret),
    }
}

/// A new secret from 32 random bytes.
pub fn new_secret(random: &[u8; 32]) -> String {
    format!("whsec_{}", STANDARD.encode(random))
}

/// The `webhook-signature` header's value for message `id` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signature_is_reproduced() {
        // The example of the Standard Webhooks spec (and its reference libraries' tests).
        let secret = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn only_http_urls_on_an_allowed_host_pass() {
        let hosts = vec!["hooks.example.com".to_string()];
        assert_eq!(
            allowed("https://Hooks.Example.com/a?b=1", &hosts),
            Ok("hooks.example.com".into())
        );
        assert!(matches!(
            allowed("https://evil.example.com/", &hosts),
            Err(WebhookError::HostNotAllowed(_))
        ));
        for bad in [
            "ftp://hooks.example.com/",
            "hooks.example.com",
            "https://u:p@hooks.example.com/",
        ] {
            assert!(
                matches!(allowed(bad, &hosts), Err(WebhookError::NotUrl(_))),
                "{bad}"
            );
        }
        assert_eq!(secret_bytes("nope"), Err(WebhookError::BadSecret));
    }
}
