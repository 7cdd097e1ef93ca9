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
