//! A worker's /metrics read back for tests: the text exposition parsed into series, and the
//! metric names a PromQL expression uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One scrape: every sample line as (metric name, labels) → value.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// GETs `path` from a worker's HTTP server: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    match reqwest::get(&url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

impl Scrape {
    pub async fn fetch(addr: SocketAddr) -> Scrape {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {text}");
        Scrape::parse(&text)
    }

    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(p) => p,
                None => continue,
            };
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// Sum of the samples of `name` whose labels include every pair of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Metric family names present (histogram series folded to their family).
    pub fn families(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|(n, _, _)| family(n).to_string())
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// `x_bucket`, `x_sum` and `x_count` belong to histogram `x`.
pub fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(f) = name.strip_suffix(suffix) {
            return f;
        }
    }
    name
}

/// The `sluice_…` metric names a PromQL expression reads, folded to their family.
pub fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sluice_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(|e| start + e)
            .unwrap_or(expr.len());
        if boundary {
            out.insert(family(&expr[start..end]).to_string());
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_expressions() {
        let s = Scrape::parse(
            "# HELP a x\n# TYPE a counter\na_total{queue=\"q\",class=\"t\"} 3\na_total{queue=\"r\",class=\"t\"} 4\nb 1.5\n",
        );
        assert_eq!(s.sum("a_total", &[("class", "t")]), 7.0);
        assert_eq!(s.sum("a_total", &[("queue", "q")]), 3.0);
        assert_eq!(s.sum("b", &[]), 1.5);
        let m = metrics_in(
            "histogram_quantile(0.9, sum by (le) (rate(sluice_x_seconds_bucket[5m]))) / sluice_y_total",
        );
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec!["sluice_x_seconds", "sluice_y_total"]
        );
    }
}
