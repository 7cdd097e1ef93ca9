//! `sluice wait ID` follows one job to its end; `sluice wait --all -q Q` follows a whole queue
//! until nothing is left queued, scheduled, running or retrying, with a progress bar.
//!
//! Exit codes (also for scripts): 0 completed (with `--all`: every job that ended meanwhile
//! completed), 4 dead (some job dead), 5 cancelled (some job cancelled, none dead), 6 timed out;
//! 1 an error such as no such job.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_producer::{JobState, ProducerError};

use crate::Session;
use crate::inspect::{find, print_status};
use crate::show;

pub const DEAD_EXIT: u8 = 4;
pub const CANCELLED_EXIT: u8 = 5;
pub const TIMED_OUT_EXIT: u8 = 6;

#[derive(clap::Args)]
pub struct Args {
    /// Job id (or --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Queue of the job; with --all, the queue to follow (default: producer.default_queue).
    #[arg(long, short)]
    queue: Option<String>,
    /// Follow every job of the queue until none is left to run.
    #[arg(long)]
    all: bool,
    /// Give up after this many seconds (exit 6). Default: 60 for one job, none with --all.
    #[arg(long)]
    timeout: Option<f64>,
    #[arg(long, conflicts_with = "all")]
    json: bool,
}

pub async fn run(ctx: &Session, args: Args) -> anyhow::Result<ExitCode> {
    let timeout = match args.timeout {
        Some(t) => Some(Duration::try_from_secs_f64(t).context("--timeout")?),
        None if args.all => None,
        None => Some(Duration::from_secs(60)),
    };
    match &args.id {
        Some(id) => one(ctx, &args, id, timeout.unwrap_or(Duration::MAX)).await,
        None => all(ctx, &ctx.queue(&args.queue), timeout).await,
    }
}

/// The exit code of a job that ended in `state`.
fn code_of(state: JobState) -> ExitCode {
    match state {
        JobState::Completed => ExitCode::SUCCESS,
        JobState::Cancelled => ExitCode::from(CANCELLED_EXIT),
        _ => ExitCode::from(DEAD_EXIT),
    }
}

async fn one(ctx: &Session, args: &Args, id: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let queue = match &args.queue {
        Some(q) => q.clone(),
        None => find(ctx, id).await?.queue,
    };
    // A job of a partitioned queue is waited on in its partition's events.
    let queue = sluice_common::keys::base_queue(&queue).to_string();
    let timeout = timeout.min(Duration::from_secs(366 * 24 * 3600));
    match ctx.producer.wait(&queue, id, timeout).await {
        Ok(s) => {
            print_status(&s, args.json)?;
            Ok(code_of(s.state))
        }
        Err(ProducerError::Timeout { .. }) => {
            eprintln!(
                "sluice: job {id} not finished after {:.1} s",
                timeout.as_secs_f64()
            );
            Ok(ExitCode::from(TIMED_OUT_EXIT))
        }
        Err(e) => Err(e.into()),
    }
}

/// Jobs of the queue that have not ended, and the totals of those that have.
#[derive(Clone, Copy)]
struct Tally {
    active: u64,
    completed: u64,
    dead: u64,
    cancelled: u64,
}

async fn tally(ctx: &Session, queue: &str) -> anyhow::Result<Tally> {
    let s = ctx.producer.store().stats(queue).await?;
    let c = |k: &str| s.counts.get(k).copied().unwrap_or(0).max(0) as u64;
    Ok(Tally {
        active: c("queued") + c("scheduled") + c("running") + c("retrying"),
        completed: c("completed"),
        dead: c("dead"),
        cancelled: c("cancelled"),
    })
}

async fn all(ctx: &Session, queue: &str, timeout: Option<Duration>) -> anyhow::Result<ExitCode> {
    sluice_common::validate::queue_name(queue)?;
    let started = Instant::now();
    let first = tally(ctx, queue).await?;
    eprintln!(
        "following {} job(s) of {queue} not yet ended (and any enqueued meanwhile)",
        show::count(first.active)
    );
    let bar = ProgressBar::new(first.active);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} ended {per_sec} eta {eta}  {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut now = first;
    let ended_since = |now: &Tally| {
        (
            now.completed.saturating_sub(first.completed),
            now.dead.saturating_sub(first.dead),
            now.cancelled.saturating_sub(first.cancelled),
        )
    };
    loop {
        let (completed, dead, cancelled) = ended_since(&now);
        let ended = completed + dead + cancelled;
        bar.set_length(ended + now.active);
        bar.set_position(ended);
        bar.set_message(format!("dead {dead}, cancelled {cancelled}"));
        if now.active == 0 {
            break;
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            bar.abandon();
            eprintln!(
                "sluice: {} job(s) of {queue} not finished after {:.1} s",
                show::count(now.active),
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::from(TIMED_OUT_EXIT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = tally(ctx, queue).await?;
    }
    let (completed, dead, cancelled) = ended_since(&now);
    bar.finish_and_clear();
    println!(
        "{queue}: nothing left to run; ended meanwhile: completed {}, dead {}, cancelled {} in {:.1} s",
        show::count(completed),
        show::count(dead),
        show::count(cancelled),
        started.elapsed().as_secs_f64()
    );
    Ok(if dead > 0 {
        ExitCode::from(DEAD_EXIT)
    } else if cancelled > 0 {
        ExitCode::from(CANCELLED_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}
