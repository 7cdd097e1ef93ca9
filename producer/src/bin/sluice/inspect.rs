//! `sluice status | cancel | stats | pause | resume`.

use anyhow::bail;
use sluice_producer::{CancelOutcome, JobState, JobStatus};
use std::process::ExitCode;

use crate::Session;
use crate::show;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Job id.
    id: String,
    /// Queue of the job (default: every queue `sluice stats` knows, and producer.default_queue).
    #[arg(long, short)]
    queue: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print only the upstream's answer body (JSON, for `jq`); exit 1 if the job has none yet.
    #[arg(long, conflicts_with = "json")]
    result: bool,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    id: String,
    #[arg(long, short)]
    queue: Option<String>,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// One queue; all known queues when left out.
    queue: Option<String>,
    #[arg(long)]
    json: bool,
    /// Per tenant too: backlog, share of the tokens used, spend and budget, parked.
    #[arg(long)]
    tenants: bool,
}

#[derive(clap::Args)]
pub struct QueueArg {
    queue: String,
}

pub fn print_status(s: &JobStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("job        {}", s.id);
    println!("queue      {}", s.queue);
    match &s.held {
        Some(why) => println!("state      {} (held: {why})", s.state),
        None => println!("state      {}", s.state),
    }
    println!("upstream   {}", s.upstream);
    println!(
        "attempts   {} (all lives: {}, re-drives: {})",
        s.attempts, s.total_attempts, s.redrives
    );
    println!("created    {}", show::time(s.created_ms));
    println!("updated    {}", show::time(s.updated_ms));
    if s.started_ms.is_some() {
        println!("started    {}", show::time(s.started_ms));
    }
    if s.finished_ms.is_some() {
        println!("finished   {}", show::time(s.finished_ms));
    }
    if s.run_at_ms.is_some() {
        println!("due        {}", show::time(s.run_at_ms));
    }
    if let Some(k) = &s.dedupe_key {
        println!("dedupe     {k}");
    }
    if let Some(r) = &s.dead_reason {
        println!("dead       {r}");
    }
    if let Some(e) = &s.last_error {
        // `[transient, HTTP 503]`, `[transient]` for a transport failure, nothing when unknown.
        let tags: Vec<String> = s
            .last_class
            .iter()
            .cloned()
            .chain(s.last_status.map(|c| format!("HTTP {c}")))
            .collect();
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!("[{}] ", tags.join(", "))
        };
        println!("last error {tags}{}", show::excerpt(e, 200));
    }
    if let Some(r) = &s.result {
        match s.status {
            Some(c) => println!("result     HTTP {c} {}", show::excerpt(r, 400)),
            None => println!("result     {}", show::excerpt(r, 400)),
        }
    }
    if let Some(h) = &s.history {
        for line in h.lines() {
            println!("history    {line}");
        }
    }
    Ok(())
}

pub async fn status(ctx: &Session, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let s = match &args.queue {
        Some(queue) => match ctx.producer.status(queue, &args.id).await? {
            Some(s) => s,
            None => bail!("no job {} in queue {queue}", args.id),
        },
        None => find(ctx, &args.id).await?,
    };
    if args.result {
        return match (&s.result, s.state) {
            (Some(body), JobState::Completed) => {
                println!("{body}");
                Ok(ExitCode::SUCCESS)
            }
            _ => bail!("job {} is {}: it has no result", s.id, s.state),
        };
    }
    print_status(&s, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The job with this id in whichever queue holds it (the queues `sluice stats` knows, and the
/// configured default queue); an error names the queues when several hold one.
pub async fn find(ctx: &Session, id: &str) -> anyhow::Result<JobStatus> {
    let default = ctx.config.producer.default_queue.as_str();
    let mut found = ctx.producer.store().find_job(id, &[default]).await?;
    match found.len() {
        0 => bail!("no job {id} in any queue (give --queue if its queue is not in `sluice stats`)"),
        1 => Ok(found.remove(0)),
        _ => {
            let queues: Vec<&str> = found.iter().map(|s| s.queue.as_str()).collect();
            bail!(
                "job id {id} is in {} queues ({}): say which with --queue",
                queues.len(),
                queues.join(", ")
            )
        }
    }
}

pub async fn cancel(ctx: &Session, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let queue = ctx.queue(&args.queue);
    match ctx.producer.cancel(&queue, &args.id).await? {
        CancelOutcome::Cancelled(from) => {
            println!("cancelled {} (was {from})", args.id);
            Ok(ExitCode::SUCCESS)
        }
        CancelOutcome::Refused(state) => {
            bail!(
                "job {} is {state}: only queued, scheduled or retrying jobs can be cancelled",
                args.id
            )
        }
        CancelOutcome::NotFound => bail!("no job {} in queue {queue}", args.id),
    }
}

pub async fn stats(ctx: &Session, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.producer.store();
    let queues = match args.queue {
        Some(q) => vec![q],
        None => store.queues().await?,
    };
    let mut all = Vec::with_capacity(queues.len());
    for q in &queues {
        all.push(store.stats(q).await?);
    }
    let upstreams = store.upstream_states().await?;
    let mut tenants = std::collections::BTreeMap::new();
    if args.tenants {
        for q in &queues {
            tenants.insert(q.clone(), store.tenants(q).await?);
        }
    }
    if args.json {
        let mut out = serde_json::json!({"queues": all, "upstreams": upstreams});
        if args.tenants {
            out["tenants"] = serde_json::json!(tenants);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no queues yet");
    }
    for s in all {
        let c = |k: &str| s.counts.get(k).copied().unwrap_or(0).max(0) as u64;
        let lag = s.lag.map(show::count).unwrap_or_else(|| "-".into());
        println!(
            "{}{}{}",
            s.queue,
            if s.partitions > 1 {
                format!("  ({} partitions, summed)", s.partitions)
            } else {
                String::new()
            },
            if s.paused { "  (paused)" } else { "" }
        );
        println!(
            "  stream   {} entries: {} not yet delivered (lag), {} pending",
            show::count(s.stream_len),
            lag,
            show::count(s.pending),
        );
        let lanes: Vec<String> = s
            .lanes
            .iter()
            .filter(|l| l.stream_len > 0)
            .map(|l| {
                let lag = l.lag.map(show::count).unwrap_or_else(|| "-".into());
                format!(
                    "{} {} entries ({lag} not yet delivered)",
                    l.lane,
                    show::count(l.stream_len)
                )
            })
            .collect();
        if !lanes.is_empty() {
            println!("  lanes    of which {}", lanes.join(", "));
        }
        let gone = s.consumers.saturating_sub(s.workers);
        println!(
            "  workers  {} live{}",
            s.workers,
            if gone > 0 {
                format!(" ({gone} more consumer(s) in the group without a recent heartbeat)")
            } else {
                String::new()
            }
        );
        println!(
            "  delayed  {}    dead-letter stream {}",
            show::count(s.delayed),
            show::count(s.dead_len)
        );
        println!(
            "  now      queued {}  scheduled {}  running {}  retrying {}",
            show::count(c("queued")),
            show::count(c("scheduled")),
            show::count(c("running")),
            show::count(c("retrying"))
        );
        println!(
            "  totals   completed {}  dead {}  cancelled {}  deduplicated {}  re-driven {}",
            show::count(c("completed")),
            show::count(c("dead")),
            show::count(c("cancelled")),
            show::count(c("deduplicated")),
            show::count(c("redriven"))
        );
        let (hits, misses, followers) = (c("cache_hits"), c("cache_misses"), c("cache_followers"));
        let asked = hits + misses + followers;
        if asked > 0 {
            println!(
                "  cache    hit rate {:.1}%: {} hits, {} followers of an identical job, {} misses",
                100.0 * (hits + followers) as f64 / asked as f64,
                show::count(hits),
                show::count(followers),
                show::count(misses)
            );
        }
        if let Some(rows) = tenants.get(&s.queue) {
            if rows.is_empty() {
                println!("  tenants  none (no job of this queue named a tenant)");
            } else {
                println!("  tenants  {}", rows.len());
                crate::tenants::print_rows(&s.queue, rows);
            }
        }
    }
    for u in upstreams {
        let mut line = format!("upstream {}  circuit {}", u.upstream, u.circuit);
        if let Some(ms) = u.open_for_ms {
            line.push_str(&format!(" (probe in {:.1} s)", ms as f64 / 1000.0));
        }
        if let Some(ms) = u.hold_for_ms {
            line.push_str(&format!(
                "  held by the provider for {:.1} s",
                ms as f64 / 1000.0
            ));
        }
        line.push_str(&format!("  opened {} times", u.opens));
        if let Some(rpm) = u.adaptive_rpm {
            line.push_str(&format!("  adaptive rate {rpm:.0} rpm"));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(ctx: &Session, q: QueueArg, paused: bool) -> anyhow::Result<ExitCode> {
    sluice_common::validate::queue_name(&q.queue)?;
    ctx.producer.store().set_paused(&q.queue, paused).await?;
    println!("{} {}", if paused { "paused" } else { "resumed" }, q.queue);
    Ok(ExitCode::SUCCESS)
}
