//! `sluice enqueue`: one job from flags or JSON, or many from a JSONL file or stdin, pipelined in
//! batches behind a progress bar, closing with a summary (enqueued / deduplicated / rejected
//! with line numbers and reasons) and the rate achieved.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_common::job::Priority;
use sluice_producer::input::{Defaults, JobInput};
use sluice_producer::{NewJob, ProducerError};
use tokio::sync::mpsc;

use crate::Session;
use crate::show;

#[derive(clap::Args)]
pub struct Args {
    /// Queue (default: producer.default_queue); a job's own `queue` field wins.
    #[arg(long, short)]
    queue: Option<String>,
    /// Upstream name from the worker's config; a job's own `upstream` field wins.
    #[arg(long, short)]
    upstream: Option<String>,
    /// Request path for jobs that give none.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// JSON body of a single POST job; `-` reads it from stdin (no argument-size limit).
    #[arg(long, conflicts_with_all = ["job", "file", "body_file"])]
    body: Option<String>,
    /// File holding the JSON body of a single POST job.
    #[arg(long, conflicts_with_all = ["job", "file"])]
    body_file: Option<PathBuf>,
    /// One whole job as JSON (the JSONL line format).
    #[arg(long, conflicts_with = "file")]
    job: Option<String>,
    /// JSONL file of jobs, one per line; `-` for stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Dedupe key of a single job.
    #[arg(long, conflicts_with = "file")]
    dedupe_key: Option<String>,
    /// Id of a single job (default: a new UUIDv7).
    #[arg(long, conflicts_with = "file")]
    id: Option<String>,
    /// Serve a single job from the response cache (or an identical job under way) and cache its
    /// answer this long, e.g. `5m` (docs/OPERATIONS.md, "Response cache").
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "file")]
    cache_ttl: Option<std::time::Duration>,
    /// A single job's own fallback chain, e.g. `azure-east,anthropic`: upstreams in its
    /// upstream's configured `fallbacks` (docs/OPERATIONS.md, "Fallback chains"); `""` for none.
    #[arg(long, value_delimiter = ',', num_args = 0.., conflicts_with = "file")]
    fallbacks: Option<Vec<String>>,
    /// Tenant of the jobs that name none (fair shares and budgets).
    #[arg(long)]
    tenant: Option<String>,
    /// Priority lane of the jobs that name none: high, normal or low.
    #[arg(long, value_parser = parse_priority)]
    priority: Option<Priority>,
    /// Delay a single job by this many milliseconds (it waits as `scheduled`).
    #[arg(long, conflicts_with = "file")]
    delay_ms: Option<u64>,
    /// With --file: write `line<TAB>id<TAB>outcome` for every line here (outcome: created,
    /// duplicate, conflict, or rejected: why). If the file exists, the ids it records are reused
    /// for lines that give none, so re-running a partly failed file enqueues nothing twice.
    #[arg(long, requires = "file")]
    ids_out: Option<PathBuf>,
    /// Print rejected lines beyond the first 20 too.
    #[arg(long)]
    all_errors: bool,
    /// What a conflict does to the exit code — a dedupe key (or id) that already belongs to a
    /// job enqueued with a different request: `report` it and exit 0, or `error`: exit 3.
    #[arg(long, value_enum, default_value_t = OnConflict::Report)]
    on_conflict: OnConflict,
}

/// `--on-conflict`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnConflict {
    Report,
    Error,
}

/// The exit code of a run that met a conflict under `--on-conflict error`.
const CONFLICT_EXIT: u8 = 3;

impl Args {
    fn defaults(&self, ctx: &Session) -> Defaults {
        Defaults {
            queue: ctx.queue(&self.queue),
            upstream: self.upstream.clone(),
            path: self.path.clone(),
            tenant: self.tenant.clone(),
            priority: self.priority,
        }
    }
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
}

pub async fn run(ctx: &Session, args: Args) -> anyhow::Result<ExitCode> {
    match args.file.clone() {
        Some(path) => many(ctx, &args, path).await,
        None => one(ctx, &args).await,
    }
}

async fn one(ctx: &Session, args: &Args) -> anyhow::Result<ExitCode> {
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) if b == "-" => Some((
            std::io::read_to_string(std::io::stdin()).context("read the body from stdin")?,
            "the body on stdin",
        )),
        (Some(b), _) => Some((b.clone(), "--body")),
        (None, Some(path)) => Some((
            std::fs::read_to_string(path)
                .with_context(|| format!("--body-file {}", path.display()))?,
            "--body-file",
        )),
        (None, None) => None,
    };
    let mut input = match (&args.job, body) {
        (Some(text), _) => JobInput::parse(text).context("--job")?,
        (None, Some((body, from))) => {
            let body: serde_json::Value =
                serde_json::from_str(&body).with_context(|| format!("{from} is not JSON"))?;
            JobInput::parse("{}")?.with_body(body)
        }
        (None, None) => {
            bail!("give --body, --body-file, --job or --file (see sluice enqueue --help)")
        }
    };
    if args.dedupe_key.is_some() {
        input.dedupe_key = args.dedupe_key.clone();
    }
    if args.id.is_some() {
        input.id = args.id.clone();
    }
    if let Some(ttl) = args.cache_ttl {
        input.cache_ttl_ms = Some(ttl.as_millis() as u64);
    }
    if args.delay_ms.is_some() {
        input.delay_ms = args.delay_ms;
    }
    if let Some(chain) = &args.fallbacks {
        input.fallbacks = Some(chain.iter().filter(|u| !u.is_empty()).cloned().collect());
    }
    let job = input.into_job(&args.defaults(ctx))?;
    let queue = job.queue.clone();
    let e = ctx.producer.enqueue(job).await?;
    let state = e.state.map(|s| s.to_string()).unwrap_or("expired".into());
    if e.created {
        println!("enqueued {} in {queue} ({state})", e.id);
    } else if e.conflict {
        println!(
            "duplicate of {} in {queue} ({state}) — its request differs from this one",
            e.id
        );
        if args.on_conflict == OnConflict::Error {
            return Ok(ExitCode::from(CONFLICT_EXIT));
        }
    } else {
        println!("duplicate of {} in {queue} ({state})", e.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// A chunk of parsed lines on its way to Redis: (line number, job or why it was refused).
type Chunk = Vec<(u64, Result<NewJob, String>)>;

async fn many(ctx: &Session, args: &Args, path: PathBuf) -> anyhow::Result<ExitCode> {
    let stdin = path.as_os_str() == "-";
    let total = if stdin {
        None
    } else {
        Some(count_lines(&path).with_context(|| format!("read {}", path.display()))?)
    };
    let bar = progress_bar(total);
    let chunk_size = ctx.config.producer.batch_size * 4;
    let defaults = args.defaults(ctx);
    let mut ids = match &args.ids_out {
        Some(out) => Some(IdsFile::load(out)?),
        None => None,
    };
    let known = ids.as_ref().map(IdsFile::known).unwrap_or_default();
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Chunk>>(2);
    // Reading and parsing run on a blocking thread, overlapping the round trips to Redis.
    let reader =
        tokio::task::spawn_blocking(move || read_lines(path, defaults, known, chunk_size, tx));

    let started = Instant::now();
    let (mut enqueued, mut duplicates, mut processed) = (0u64, 0u64, 0u64);
    let mut conflicts: Vec<(u64, String)> = Vec::new();
    let mut rejected: Vec<(u64, String)> = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        processed += chunk.len() as u64;
        let mut lines = Vec::with_capacity(chunk.len());
        let mut jobs = Vec::with_capacity(chunk.len());
        for (line, parsed) in chunk {
            match parsed {
                Ok(job) => {
                    lines.push(line);
                    jobs.push(job);
                }
                Err(why) => {
                    if let Some(ids) = &mut ids {
                        ids.record(line, "", &format!("rejected: {why}"));
                    }
                    rejected.push((line, why))
                }
            }
        }
        for (line, result) in lines
            .into_iter()
            .zip(ctx.producer.enqueue_batch(jobs).await)
        {
            if let (Some(ids), Ok(e)) = (&mut ids, &result) {
                let outcome = match (e.created, e.conflict) {
                    (true, _) => "created",
                    (false, false) => "duplicate",
                    (false, true) => "conflict",
                };
                ids.record(line, &e.id, outcome);
            }
            match result {
                Ok(e) if e.created => enqueued += 1,
                Ok(e) => {
                    duplicates += 1;
                    if e.conflict {
                        conflicts.push((line, e.id));
                    }
                }
                Err(ProducerError::Store(e)) if is_connection_error(&e) => {
                    bar.abandon();
                    if let (Some(ids), Some(out)) = (&ids, &args.ids_out) {
                        ids.save(out)?;
                    }
                    return Err(e).context(format!(
                        "stopped at line {line}: {enqueued} enqueued before"
                    ));
                }
                Err(e) => {
                    if let Some(ids) = &mut ids {
                        ids.record(line, "", &format!("rejected: {e}"));
                    }
                    rejected.push((line, e.to_string()))
                }
            }
        }
        bar.set_position(processed);
    }
    reader.await.context("reader thread")??;
    bar.finish_and_clear();
    if let (Some(ids), Some(out)) = (&ids, &args.ids_out) {
        ids.save(out)?;
    }
    let elapsed = started.elapsed();
    let accepted = enqueued + duplicates;
    println!(
        "enqueued {}, deduplicated {}{}, rejected {} in {:.2} s ({} jobs/s)",
        show::count(enqueued),
        show::count(duplicates),
        if conflicts.is_empty() {
            String::new()
        } else {
            format!(" (conflicts {})", show::count(conflicts.len() as u64))
        },
        show::count(rejected.len() as u64),
        elapsed.as_secs_f64(),
        show::count(rate(accepted, elapsed))
    );
    rejected.sort_by_key(|(line, _)| *line);
    let shown = if args.all_errors { rejected.len() } else { 20 };
    for (line, why) in rejected.iter().take(shown) {
        eprintln!("line {line}: {why}");
    }
    if rejected.len() > shown {
        eprintln!(
            "… and {} more rejected lines (--all-errors lists them)",
            rejected.len() - shown
        );
    }
    conflicts.sort_by_key(|(line, _)| *line);
    for (line, id) in conflicts.iter().take(shown) {
        eprintln!("line {line}: duplicate of {id} — its request differs from this one");
    }
    Ok(if !rejected.is_empty() {
        ExitCode::from(1)
    } else if !conflicts.is_empty() && args.on_conflict == OnConflict::Error {
        ExitCode::from(CONFLICT_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}

fn is_connection_error(e: &sluice_common::StoreError) -> bool {
    use sluice_common::StoreError::*;
    match e {
        Redis(r) => r.is_io_error() || r.is_timeout() || r.is_connection_refusal(),
        Unreachable { .. } | Pool(_) => true,
        _ => false,
    }
}

fn rate(n: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        n
    }
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let template = if total.is_some() {
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} jobs {per_sec} eta {eta}"
    } else {
        "{spinner} {elapsed_precise} {human_pos} jobs {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn count_lines(path: &PathBuf) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut n = 0;
    for line in BufReader::new(file).split(b'\n') {
        if !line?.iter().all(u8::is_ascii_whitespace) {
            n += 1;
        }
    }
    Ok(n)
}

fn read_lines(
    path: PathBuf,
    defaults: Defaults,
    known: HashMap<u64, String>,
    chunk_size: usize,
    tx: mpsc::Sender<anyhow::Result<Chunk>>,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let mut chunk: Chunk = Vec::with_capacity(chunk_size);
    for (i, line) in reader.split(b'\n').enumerate() {
        let number = i as u64 + 1;
        let line = line.with_context(|| format!("read line {number}"))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|text| JobInput::parse(text).map_err(|e| e.to_string()))
            .map(|mut input| {
                // The id an earlier run gave this line (--ids-out): enqueueing it again is a
                // duplicate, not a second job.
                if input.id.is_none()
                    && let Some(id) = known.get(&number)
                {
                    input.id = Some(id.clone());
                }
                input
            })
            .and_then(|input| input.into_job(&defaults).map_err(|e| e.to_string()));
        chunk.push((number, parsed));
        if chunk.len() >= chunk_size {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_size));
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(()); // the receiver stopped (an error was reported there)
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// The `--ids-out` file: each line's id and outcome, by line number. Loaded first (the ids an
/// earlier run gave), saved at the end (or when the run stops on a lost connection), written
/// whole to a temporary file and renamed, so it is never half-written.
#[derive(Default)]
struct IdsFile {
    lines: BTreeMap<u64, (String, String)>,
}

impl IdsFile {
    fn load(path: &std::path::Path) -> anyhow::Result<IdsFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IdsFile::default()),
            Err(e) => return Err(e).with_context(|| format!("--ids-out {}", path.display())),
        };
        let mut lines = BTreeMap::new();
        for (i, row) in text.lines().enumerate() {
            let mut cols = row.splitn(3, '\t');
            let (Some(line), Some(id), Some(outcome)) = (cols.next(), cols.next(), cols.next())
            else {
                bail!(
                    "--ids-out {} line {}: not line<TAB>id<TAB>outcome",
                    path.display(),
                    i + 1
                );
            };
            let line: u64 = line.parse().with_context(|| {
                format!(
                    "--ids-out {} line {}: {line:?} is not a line number",
                    path.display(),
                    i + 1
                )
            })?;
            lines.insert(line, (id.to_string(), outcome.to_string()));
        }
        Ok(IdsFile { lines })
    }

    /// Line number → id, for the lines an earlier run enqueued.
    fn known(&self) -> HashMap<u64, String> {
        self.lines
            .iter()
            .filter(|(_, (id, _))| !id.is_empty())
            .map(|(line, (id, _))| (*line, id.clone()))
            .collect()
    }

    fn record(&mut self, line: u64, id: &str, outcome: &str) {
        let outcome = outcome.replace(['\t', '\n'], " ");
        self.lines.insert(line, (id.to_string(), outcome));
    }

    fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut text = String::new();
        for (line, (id, outcome)) in &self.lines {
            text.push_str(&format!("{line}\t{id}\t{outcome}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("write --ids-out {}", path.display()))
    }
}
