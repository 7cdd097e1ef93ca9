//! A started job: what `sluice_start` or `sluice_fetch` handed a worker to run.

use sluice_common::store::Started;

/// A job the start function handed us.
#[derive(Debug, Clone)]
pub struct Job {
    pub queue: String,
    pub entry: String,
    pub id: String,
    pub spec: String,
    pub attempt: u32,
    pub waits: u32,
    /// When the job became runnable (Unix ms; 0 if unknown), for the end-to-end histogram.
    pub ready_ms: u64,
}

impl Job {
    /// The job `start` or `fetch` said to run (`Started::Run`) on `queue`; anything else is
    /// given back.
    pub fn started(queue: &str, s: Started) -> Result<Job, Started> {
        match s {
            Started::Run {
                entry,
                id,
                spec,
                attempt,
                waits,
                ready_ms,
            } => Ok(Job {
                queue: queue.to_string(),
                entry,
                id,
                spec,
                attempt,
                waits,
                ready_ms,
            }),
            other => Err(other),
        }
    }
}
