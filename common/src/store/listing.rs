//! Listing a queue's jobs page by page (`sluice_jobs`), and finding which queue holds a job.

use super::*;

/// One row of a job listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    /// The queue (partition) the job is in.
    pub queue: String,
    pub state: JobState,
    pub attempts: u32,
    pub created_ms: Option<u64>,
    pub updated_ms: Option<u64>,
    pub upstream: String,
    /// The last error, cut to 200 bytes (empty: none).
    pub last_error: String,
}

/// Where the next page of a listing starts: the partition and the SCAN cursor within it. Its
/// text form (`<partition>.<cursor>`) is what the CLI prints and takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListCursor {
    pub partition: usize,
    pub scan: u64,
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.partition, self.scan)
    }
}

impl std::str::FromStr for ListCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a cursor this listing printed (<partition>.<position>)");
        let (p, c) = s.split_once('.').ok_or_else(bad)?;
        Ok(ListCursor {
            partition: p.parse().map_err(|_| bad())?,
            scan: c.parse().map_err(|_| bad())?,
        })
    }
}

/// A page of jobs and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    pub next: Option<ListCursor>,
}

impl Store {
    /// About `limit` jobs of `queue` (all partitions in turn) from `from`, optionally only those
    /// in `state`. Every job present through the whole paging is listed at least once.
    pub async fn jobs(
        &self,
        queue: &str,
        from: ListCursor,
        limit: usize,
        state: Option<JobState>,
    ) -> Result<JobPage, StoreError> {
        let parts = self.partitions_of(queue);
        let mut cursor = from;
        let mut jobs = Vec::new();
        while cursor.partition < parts.len() && jobs.len() < limit {
            let part = &parts[cursor.partition];
            let keys = keys_for(part)?;
            let want = limit - jobs.len();
            let reply: Value = Self::fcall("sluice_jobs", &keys)
                .arg(cursor.scan)
                .arg(want.clamp(1, 10_000))
                .arg(state.map(|s| s.to_string()).unwrap_or_default())
                .run(self)
                .await?;
            let (next, rows) = decode_jobs(part, &reply)?;
            jobs.extend(rows);
            cursor = if next == 0 {
                ListCursor {
                    partition: cursor.partition + 1,
                    scan: 0,
                }
            } else {
                ListCursor {
                    partition: cursor.partition,
                    scan: next,
                }
            };
        }
        let next = (cursor.partition < parts.len()).then_some(cursor);
        Ok(JobPage { jobs, next })
    }

    /// The statuses of job `id` in every queue `sluice stats` knows and in `also` (a configured
    /// default, say), each queue asked once: one round trip per queue (partition), all at once.
    pub async fn find_job(&self, id: &str, also: &[&str]) -> Result<Vec<JobStatus>, StoreError> {
        let mut queues = self.queues().await?;
        for q in also {
            if !queues.iter().any(|k| k == q) {
                queues.push(q.to_string());
            }
        }
        let parts: Vec<String> = queues
            .iter()
            .filter(|q| crate::validate::queue_name(keys::base_queue(q)).is_ok())
            .flat_map(|q| self.partitions_of(q))
            .collect();
        let found =
            futures::future::try_join_all(parts.iter().map(|p| self.status_in(p, id))).await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// `sluice_jobs`'s reply: `[cursor, [[id, state, attempts, created_ms, updated_ms, upstream,
/// last_error], …]]`. A row whose state this build does not know is skipped.
fn decode_jobs(queue: &str, reply: &Value) -> Result<(u64, Vec<JobRow>), StoreError> {
    let bad = || StoreError::Protocol("sluice_jobs");
    let top = array(reply).ok_or_else(bad)?;
    let next: u64 = top
        .first()
        .and_then(text)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let mut rows = Vec::new();
    for row in top.get(1).and_then(array).ok_or_else(bad)? {
        let f: Vec<String> = array(row)
            .ok_or_else(bad)?
            .iter()
            .map(|v| text(v).unwrap_or_default())
            .collect();
        let [id, state, attempts, created, updated, upstream, error] = f.as_slice() else {
            return Err(bad());
        };
        let Ok(state) = state.parse::<JobState>() else {
            continue;
        };
        rows.push(JobRow {
            id: id.clone(),
            queue: queue.to_string(),
            state,
            attempts: attempts.parse().unwrap_or(0),
            created_ms: created.parse().ok(),
            updated_ms: updated.parse().ok(),
            upstream: upstream.clone(),
            last_error: error.clone(),
        });
    }
    Ok((next, rows))
}
