//! Fallback chains in config (issue 21): the deployments an upstream's jobs may move to, each
//! with an optional model mapping, and the format each upstream speaks.
//!
//! ```toml
//! [upstreams.openai]
//! fallbacks = ["azure-east", { upstream = "anthropic", model_map = { "gpt-4o" = "claude-sonnet-4" } }]
//! fallback_after_ms = 5000                                  # a hold longer than this moves on
//! context_fallback = { upstream = "openai", model_map = { "gpt-4o-mini" = "gpt-4.1" } }
//! [upstreams.anthropic]
//! format = "anthropic"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, UpstreamConfig};

/// The request and answer format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApiFormat {
    /// `POST /v1/chat/completions` (OpenAI, Azure OpenAI, most gateways and local servers).
    #[default]
    Openai,
    /// `POST /v1/messages` (Anthropic).
    Anthropic,
}

impl ApiFormat {
    /// The path a chat request takes in this format.
    pub fn chat_path(self) -> &'static str {
        match self {
            ApiFormat::Openai => "/v1/chat/completions",
            ApiFormat::Anthropic => "/v1/messages",
        }
    }
}

/// One step of a chain: an upstream, and the model names to use there (by the job's model; a
/// model not in the map keeps its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub upstream: String,
    pub model_map: BTreeMap<String, String>,
}

impl Fallback {
    /// The model to ask `self.upstream` for, given the job's.
    pub fn model_for<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map
            .get(model)
            .map(String::as_str)
            .unwrap_or(model)
    }
}

/// A chain entry as written: `"azure-east"` or `{ upstream = "…", model_map = { … } }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Name(String),
    Full {
        upstream: String,
        #[serde(default)]
        model_map: BTreeMap<String, String>,
    },
}

impl<'de> Deserialize<'de> for Fallback {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Written::deserialize(d)? {
            Written::Name(upstream) => Fallback {
                upstream,
                model_map: BTreeMap::new(),
            },
            Written::Full {
                upstream,
                model_map,
            } => Fallback {
                upstream,
                model_map,
            },
        })
    }
}

/// Checks a job's own chain against what its upstream's config allows: every name must be one
/// of the configured fallbacks. The message names the first that is not, and what is allowed.
pub fn confine(upstream: &str, job_chain: &[String], allowed: &[Fallback]) -> Result<(), String> {
    match job_chain
        .iter()
        .find(|name| !allowed.iter().any(|f| &f.upstream == *name))
    {
        None => Ok(()),
        Some(name) => {
            let names: Vec<&str> = allowed.iter().map(|f| f.upstream.as_str()).collect();
            Err(format!(
                "upstream {name:?} is not in the fallbacks of {upstream:?} (allowed: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// How long a hold on the primary may be before its jobs move on (`fallback_after_ms`).
pub(super) fn default_fallback_after_ms() -> u64 {
    5_000
}

/// Calls that failed transiently on one deployment before a job moves to the next.
pub(super) fn default_transient_tries() -> u32 {
    2
}

/// An upstream's fallbacks and context fallback name other configured upstreams, once each.
pub(super) fn check_chain(
    upstreams: &BTreeMap<String, UpstreamConfig>,
    name: &str,
    up: &UpstreamConfig,
) -> Result<(), ConfigError> {
    let mut seen = vec![name];
    for f in &up.fallbacks {
        if !upstreams.contains_key(&f.upstream) {
            return Err(ConfigError::Invalid {
                key: "upstreams.*.fallbacks",
                reason: format!("upstream {name}: no upstream named {:?}", f.upstream),
            });
        }
        if seen.contains(&f.upstream.as_str()) {
            return Err(ConfigError::Invalid {
                key: "upstreams.*.fallbacks",
                reason: format!("upstream {name}: {:?} is in its chain twice", f.upstream),
            });
        }
        seen.push(&f.upstream);
    }
    if let Some(f) = &up.context_fallback
        && !upstreams.contains_key(&f.upstream)
    {
        return Err(ConfigError::Invalid {
            key: "upstreams.*.context_fallback",
            reason: format!("upstream {name}: no upstream named {:?}", f.upstream),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn fallback_chains_load_in_both_spellings_and_name_only_known_upstreams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).expect("write");
            Config::load(Some(&path))
        };
        let ok = load(
            r#"
[upstreams.openai]
base_url = "https://api.openai.com"
fallbacks = ["azure", { upstream = "anthropic", model_map = { "gpt-4o" = "claude-sonnet-4" } }]
fallback_after_ms = 2000
context_fallback = { upstream = "openai", model_map = { "gpt-4o-mini" = "gpt-4.1" } }
[upstreams.azure]
base_url = "https://example.openai.azure.com"
[upstreams.anthropic]
base_url = "https://api.anthropic.com"
format = "anthropic"
"#,
        )
        .expect("a valid chain");
        let up = &ok.upstreams["openai"];
        assert_eq!(up.fallbacks.len(), 2);
        assert_eq!(up.fallbacks[0].upstream, "azure");
        assert_eq!(up.fallbacks[0].model_for("gpt-4o"), "gpt-4o");
        assert_eq!(up.fallbacks[1].model_for("gpt-4o"), "claude-sonnet-4");
        assert_eq!(up.fallback_after_ms, 2000);
        assert_eq!(up.format, ApiFormat::Openai);
        assert_eq!(ok.upstreams["anthropic"].format, ApiFormat::Anthropic);
        assert_eq!(ok.upstreams["azure"].fallback_after_ms, 5000);
        assert_eq!(
            up.context_fallback
                .as_ref()
                .map(|f| f.model_for("gpt-4o-mini")),
            Some("gpt-4.1")
        );

        let unknown = load("[upstreams.a]\nbase_url = \"http://a\"\nfallbacks = [\"b\"]\n")
            .expect_err("an unknown fallback");
        assert!(
            unknown.to_string().contains("fallbacks") && unknown.to_string().contains("\"b\""),
            "{unknown}"
        );
        let itself = load("[upstreams.a]\nbase_url = \"http://a\"\nfallbacks = [\"a\"]\n")
            .expect_err("a chain back to itself");
        assert!(itself.to_string().contains("twice"), "{itself}");
        let format = load("[upstreams.a]\nbase_url = \"http://a\"\nformat = \"gemini\"\n")
            .expect_err("an unknown format");
        assert!(format.to_string().contains("gemini"), "{format}");
    }
}
