//! Per-job times read back from the job hashes after a run, written as the harness's CSV
//! (`i,enq_ms,start_ms,end_ms,fail_ms`): enqueue (`created_ms`), the completing attempt's call
//! (`called_ms`, after any limiter wait: the "handler entry" of the other systems), completion
//! (`finished_ms`) and the first failure (`failed_ms`, W5).

use std::io::Write;

use redis::AsyncCommands;
use sluice_common::keys::QueueKeys;

/// One completed job's times (Unix ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub i: u64,
    pub enq_ms: f64,
    pub start_ms: f64,
    pub end_ms: f64,
    pub fail_ms: Option<f64>,
}

/// Hashes read per pipelined round trip.
const CHUNK: usize = 1000;

/// The completed jobs of `queue` (only those `consumer` ran, when given).
pub async fn read(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    consumer: Option<&str>,
) -> redis::RedisResult<Vec<Record>> {
    let keys = QueueKeys::new(queue);
    let pattern = keys.job("*");
    let mut job_keys: Vec<String> = Vec::new();
    {
        let mut it: redis::AsyncIter<String> = conn
            .scan_options(
                redis::ScanOptions::default()
                    .with_pattern(pattern)
                    .with_count(1000),
            )
            .await?;
        while let Some(k) = it.next_item().await {
            job_keys.push(k?);
        }
    }
    let mut out = Vec::with_capacity(job_keys.len());
    for chunk in job_keys.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HMGET").arg(k).arg(&[
                "state",
                "consumer",
                "spec",
                "created_ms",
                "called_ms",
                "finished_ms",
                "failed_ms",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
        for f in rows {
            if f.first().and_then(|s| s.as_deref()) != Some("completed") {
                continue;
            }
            if let Some(c) = consumer
                && f.get(1).and_then(|s| s.as_deref()) != Some(c)
            {
                continue;
            }
            let num = |k: usize| f.get(k).and_then(|s| s.as_deref()?.parse::<f64>().ok());
            // The payload's `i` when the hash kept the spec (a retried job's); else the record's
            // position: a completed job keeps no spec (docs/PROTOCOL.md), and `i` is a label only.
            let i = f
                .get(2)
                .and_then(|s| s.as_deref())
                .and_then(|spec| serde_json::from_str::<serde_json::Value>(spec).ok())
                .and_then(|v| v["request"]["body"]["i"].as_u64())
                .unwrap_or(out.len() as u64);
            if let (Some(enq), Some(start), Some(end)) = (num(3), num(4), num(5)) {
                out.push(Record {
                    i,
                    enq_ms: enq,
                    start_ms: start,
                    end_ms: end,
                    fail_ms: num(6),
                });
            }
        }
    }
    out.sort_by_key(|r| r.i);
    Ok(out)
}

/// Writes the harness's CSV.
pub fn write_csv(path: &std::path::Path, records: &[Record]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "i,enq_ms,start_ms,end_ms,fail_ms")?;
    for r in records {
        let fail = r.fail_ms.map(|v| v.to_string()).unwrap_or_default();
        writeln!(
            f,
            "{},{},{},{},{}",
            r.i, r.enq_ms, r.start_ms, r.end_ms, fail
        )?;
    }
    f.flush()
}

/// Reads the CSV that [`write_csv`] wrote.
pub fn read_csv(path: &std::path::Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let p: Vec<&str> = line.split(',').collect();
        if p.len() < 4 {
            continue;
        }
        out.push(Record {
            i: p[0].parse()?,
            enq_ms: p[1].parse()?,
            start_ms: p[2].parse()?,
            end_ms: p[3].parse()?,
            fail_ms: p.get(4).and_then(|v| v.parse().ok()),
        });
    }
    Ok(out)
}
