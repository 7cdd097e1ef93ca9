//! What webhook deliveries need from the config: each API key's host allowlist and signing secret
//! (`[api.keys.NAME]`, the same section `sluice-api` reads), and one HTTP client that follows no
//! redirects (a redirect could lead off the allowlist).

use std::collections::HashMap;
use std::time::Duration;

use sluice_common::config::ApiConfig;
use sluice_common::job::Delivery;
use sluice_common::webhook;

/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The API keys' webhook allowlists and secrets, and the HTTP client (no redirects).
pub struct Hooks {
    keys: HashMap<String, (Vec<String>, Vec<u8>)>,
    pub client: reqwest::Client,
}

impl Hooks {
    pub fn from_config(api: &ApiConfig) -> Result<Hooks, reqwest::Error> {
        let keys = api
            .keys
            .iter()
            .filter_map(|(name, k)| {
                let secret = webhook::secret_bytes(&k.webhook_secret).ok()?;
                Some((name.clone(), (k.webhook_hosts.clone(), secret)))
            })
            .collect();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()?;
        Ok(Hooks { keys, client })
    }

    /// The secret to sign with, if `d`'s URL is allowed for its key.
    pub fn secret(&self, d: &Delivery) -> Result<&[u8], String> {
        let (hosts, secret) = self.keys.get(&d.key).ok_or_else(|| {
            format!(
                "no API key {:?} with a webhook_secret in this worker's config ([api.keys.{}])",
                d.key, d.key
            )
        })?;
        webhook::allowed(&d.url, hosts).map_err(|e| e.to_string())?;
        Ok(secret)
    }
}
