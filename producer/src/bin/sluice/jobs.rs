//! `sluice jobs`: a queue's jobs, a page at a time, optionally of one state — id, state, attempts,
//! age, upstream and last error. The next page's cursor goes to stderr (`more: --cursor C`), so
//! stdout stays rows (or one JSON array) for a pipe.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_common::store::{JobRow, ListCursor};
use sluice_producer::JobState;

use crate::Session;
use crate::show;

#[derive(clap::Args)]
pub struct Args {
    /// Queue (default: producer.default_queue).
    #[arg(long, short)]
    queue: Option<String>,
    /// Only jobs in this state (queued, scheduled, running, retrying, completed, dead, cancelled).
    #[arg(long)]
    state: Option<JobState>,
    /// About this many jobs per page (1 to 10,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    limit: u64,
    /// Where to start: the cursor the previous page printed.
    #[arg(long)]
    cursor: Option<ListCursor>,
    /// Print a JSON array instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Session, args: Args) -> anyhow::Result<ExitCode> {
    let queue = ctx.queue(&args.queue);
    sluice_common::validate::queue_name(sluice_common::keys::base_queue(&queue))?;
    let page = ctx
        .producer
        .store()
        .jobs(
            &queue,
            args.cursor.unwrap_or_default(),
            args.limit as usize,
            args.state,
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string(&page.jobs)?);
    } else {
        if page.jobs.is_empty() && page.next.is_none() {
            println!(
                "no jobs{}",
                match args.state {
                    Some(s) => format!(" {s}"),
                    None => String::new(),
                }
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for job in &page.jobs {
            println!("{}", row(job, now));
        }
    }
    if let Some(next) = page.next {
        eprintln!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `id  state  attempts  age  upstream  last error`.
fn row(job: &JobRow, now_ms: u64) -> String {
    let age = job
        .created_ms
        .map(|c| age(Duration::from_millis(now_ms.saturating_sub(c))))
        .unwrap_or_else(|| "?".into());
    let mut line = format!(
        "{}  {:<9}  {} attempt(s)  {:>6} old  {}",
        job.id, job.state, job.attempts, age, job.upstream
    );
    if !job.last_error.is_empty() {
        line.push_str("  ");
        line.push_str(&show::excerpt(&job.last_error, 100));
    }
    line
}

/// `42s`, `5m`, `3h`, `2d`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
