//! `sluice dlq list | redrive | purge`: the dead-letter stream of a queue.
//!
//! Re-drive and purge take entries by id, by filter (reason, upstream) or all; they page through
//! the stream and act on each page in one server-side call. A partitioned queue's partitions are
//! taken in turn (`-q hot#1` names one; entry ids are only unique within a partition, so `--entry`
//! needs the partition named).

use std::process::ExitCode;

use anyhow::bail;
use sluice_common::store::{DeadEntry, Redriven};

use crate::Session;
use crate::show;

const PAGE: usize = 500;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List dead-lettered jobs, oldest first.
    List {
        #[arg(long, short)]
        queue: Option<String>,
        /// Most entries to show (a page); the next page's cursor goes to stderr.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Where to start: the cursor the previous page printed (`more: --cursor C`).
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Queue dead jobs again, attempts reset, history kept.
    Redrive(Select),
    /// Delete dead-letter entries and their dead jobs.
    Purge(Select),
}

/// Which dead-letter entries to act on.
#[derive(clap::Args)]
struct Select {
    #[arg(long, short)]
    queue: Option<String>,
    /// Dead-stream entry ids (as `sluice dlq list` shows them).
    #[arg(long = "entry")]
    entries: Vec<String>,
    /// Only entries with this reason (e.g. invalid, malformed, exhausted).
    #[arg(long)]
    reason: Option<String>,
    /// Only entries of this upstream.
    #[arg(long)]
    upstream: Option<String>,
    /// Every entry (required when no other selector is given).
    #[arg(long)]
    all: bool,
}

impl Select {
    fn matches(&self, e: &DeadEntry) -> bool {
        (self.entries.is_empty() || self.entries.contains(&e.entry))
            && self.reason.as_ref().is_none_or(|r| *r == e.reason)
            && self.upstream.as_ref().is_none_or(|u| *u == e.upstream)
    }

    /// Refuses a selection that says nothing, or entry ids on a queue of several partitions
    /// (an id is only unique within one: the same id could name a job in another).
    fn check(&self, queue: &str, parts: &[String]) -> anyhow::Result<()> {
        if self.entries.is_empty() && self.reason.is_none() && self.upstream.is_none() && !self.all
        {
            bail!("say which entries: --entry ID, --reason R, --upstream U, or --all");
        }
        if !self.entries.is_empty() && parts.len() > 1 {
            bail!(
                "queue {queue} has {} partitions and an entry id is only unique within one: \
                 name the partition that `sluice dlq list` shows, e.g. -q {}",
                parts.len(),
                parts[0]
            );
        }
        Ok(())
    }
}

pub async fn run(ctx: &Session, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::List {
            queue,
            limit,
            cursor,
            json,
        } => {
            list(
                ctx,
                &ctx.queue(&queue),
                limit.max(1),
                cursor.as_deref(),
                json,
            )
            .await
        }
        Command::Redrive(sel) => {
            let queue = ctx.queue(&sel.queue);
            let parts = ctx.producer.store().partitions_of(&queue);
            sel.check(&queue, &parts)?;
            let mut total = Redriven::default();
            for part in parts {
                for page in selected(ctx, &part, &sel).await? {
                    let r = ctx.producer.store().redrive(&part, &page).await?;
                    total.redriven += r.redriven;
                    total.kept += r.kept;
                    total.skipped += r.skipped;
                }
            }
            println!(
                "re-driven {}, not re-drivable (no job hash; kept until purge) {}, skipped {}",
                show::count(total.redriven),
                show::count(total.kept),
                show::count(total.skipped)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge(sel) => {
            let queue = ctx.queue(&sel.queue);
            let parts = ctx.producer.store().partitions_of(&queue);
            sel.check(&queue, &parts)?;
            let mut removed = 0;
            for part in parts {
                for page in selected(ctx, &part, &sel).await? {
                    removed += ctx.producer.store().purge(&part, &page).await?;
                }
            }
            println!("purged {}", show::count(removed));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The selected entry ids, in pages.
async fn selected(ctx: &Session, queue: &str, sel: &Select) -> anyhow::Result<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let entries = ctx
            .producer
            .store()
            .dead_list(queue, after.as_deref(), PAGE)
            .await?;
        let Some(last) = entries.last() else { break };
        after = Some(last.entry.clone());
        let page: Vec<String> = entries
            .iter()
            .filter(|e| sel.matches(e))
            .map(|e| e.entry.clone())
            .collect();
        if !page.is_empty() {
            pages.push(page);
        }
        if entries.len() < PAGE {
            break;
        }
    }
    Ok(pages)
}

/// A dead-letter page's cursor: the partition's index and the last entry shown in it.
fn parse_cursor(c: &str) -> anyhow::Result<(usize, String)> {
    let bad = || anyhow::anyhow!("--cursor {c:?} is not a cursor this listing printed");
    let (part, entry) = c.split_once('/').ok_or_else(bad)?;
    Ok((part.parse().map_err(|_| bad())?, entry.to_string()))
}

async fn list(
    ctx: &Session,
    queue: &str,
    limit: usize,
    cursor: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let parts = ctx.producer.store().partitions_of(queue);
    let (first, mut after) = match cursor {
        Some(c) => {
            let (i, entry) = parse_cursor(c)?;
            (i, Some(entry))
        }
        None => (0, None),
    };
    let mut entries = Vec::new();
    let mut next = None;
    for (i, part) in parts.iter().enumerate().skip(first) {
        let want = limit - entries.len();
        let got = ctx
            .producer
            .store()
            .dead_list(part, after.take().as_deref(), want)
            .await?;
        let full = got.len() == want;
        if let (true, Some(last)) = (full, got.last()) {
            // The page is full: the next one goes on after its last entry.
            next = Some(format!("{i}/{}", last.entry));
        }
        entries.extend(got.into_iter().map(|e| (part.clone(), e)));
        if full {
            break;
        }
    }
    if json {
        /// An entry with the queue (partition) it is in: what re-drive and purge need with it.
        #[derive(serde::Serialize)]
        struct Row<'a> {
            queue: &'a str,
            #[serde(flatten)]
            entry: &'a DeadEntry,
        }
        let entries: Vec<Row> = entries
            .iter()
            .map(|(queue, entry)| Row { queue, entry })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
        more(next.as_deref());
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("dead-letter stream of {queue} is empty");
    }
    for (part, e) in entries {
        let error = if e.raw.is_empty() { &e.error } else { &e.raw };
        println!(
            "{}{}  {}  {} HTTP {} after {} attempts, {}  {}",
            if parts.len() > 1 {
                format!("{part}  ")
            } else {
                String::new()
            },
            e.entry,
            if e.id.is_empty() { "-" } else { &e.id },
            e.reason,
            if e.status.is_empty() { "-" } else { &e.status },
            e.attempts,
            show::time(Some(e.at_ms)),
            show::excerpt(error, 100)
        );
    }
    more(next.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// The next page's cursor, on stderr after the page (stdout stays entries for a pipe).
fn more(next: Option<&str>) {
    if let Some(next) = next {
        eprintln!("more: --cursor {next}");
    }
}
