//! `sluice`: the operator's command line. Load the function library (`init`), enqueue from
//! flags, JSON or a JSONL file (with a progress bar), list a queue's jobs, look a job up, wait for
//! it (or a whole queue), cancel it, read queue stats, list / re-drive / purge the dead-letter
//! stream, pause and resume a queue.
//!
//! Exit codes: 0 done, 1 an error (one line naming the cause), 2 a usage error, 3 a dedupe
//! conflict under `--on-conflict error`; `wait`: 4 dead, 5 cancelled, 6 timed out.

mod cache;
mod dlq;
mod enqueue;
mod inspect;
mod jobs;
mod show;
mod tenants;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_producer::{Config, Producer};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Durable model-API jobs on Redis Streams"
)]
struct Cli {
    /// Redis URL (redis://[user:password@]host:port, rediss:// for TLS).
    #[arg(long, global = true, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// Config file (TOML); environment SLUICE__SECTION__KEY overrides it.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load (or update) the function library in Redis, so producers in any language can call it.
    Init(InitArgs),
    /// Make a new sluice-api key: prints the key (give it to the client) and its SHA-256 (put it
    /// in the config's [api.keys.NAME] sha256).
    ApiKey,
    /// Enqueue one job from flags or JSON, or many from a JSONL file or stdin.
    Enqueue(Box<enqueue::Args>),
    /// List a queue's jobs, a page at a time (optionally of one state).
    Jobs(jobs::Args),
    /// Show a job's state, attempts, last error and result (any queue unless --queue).
    Status(inspect::StatusArgs),
    /// Wait until a job (or, with --all, every job of a queue) is completed, dead or cancelled.
    Wait(wait::Args),
    /// Cancel a job that has not started (queued, scheduled or retrying).
    Cancel(inspect::CancelArgs),
    /// Queue numbers: ready, pending, delayed, dead, counts by state.
    Stats(inspect::StatsArgs),
    /// The dead-letter stream: list, re-drive, purge.
    Dlq(dlq::Args),
    /// The response cache: purge a queue's cached answers.
    Cache(cache::Args),
    /// Stop workers fetching from a queue (enqueues still land).
    Pause(inspect::QueueArg),
    /// Let workers fetch from a paused queue again.
    Resume(inspect::QueueArg),
    /// A tenant's budget: tokens per day or month; raising it resumes parked jobs.
    Budget(tenants::BudgetArgs),
    /// A tenant's weight in the fair share of an upstream's quota.
    Weight(tenants::WeightArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// Print the library's source (as loaded, version included) instead of loading it.
    #[arg(long)]
    print_library: bool,
}

/// What every command needs: the config and a connected producer.
pub struct Session {
    pub config: Config,
    pub producer: Producer,
}

impl Session {
    /// The queue named on the command line, or the configured default.
    pub fn queue(&self, given: &Option<String>) -> String {
        given
            .clone()
            .unwrap_or_else(|| self.config.producer.default_queue.clone())
    }
}

/// A reader that stops early (`sluice dlq list | head -1`) ends the CLI quietly, as it ends `cat`:
/// by SIGPIPE's default action, not by a panic in `println!` (exit 101 and a backtrace hint).
fn die_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread starts; it only restores the
    // signal's default disposition, which Rust's runtime set to "ignore".
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_quietly_on_a_closed_pipe();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {}", sluice_common::oneline::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::ApiKey = cli.command {
        let mut bytes = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let key = format!("sk-sluice-{}", hex::encode(bytes));
        println!("key     {key}");
        println!("sha256  {}", sluice_producer::api::auth::sha256_hex(&key));
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        println!(
            "webhook_secret  {}",
            sluice_common::webhook::new_secret(&bytes)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Init(InitArgs {
        print_library: true,
    }) = cli.command
    {
        print!("{}", sluice_common::Store::library_source());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.redis {
        config.redis.url = url;
    }
    let producer = Producer::from_config(&config).await?;
    let ctx = Session { config, producer };
    match cli.command {
        Command::ApiKey => unreachable!("handled before connecting"),
        Command::Init(_) => {
            // Connecting loaded the library where Redis lacked this version.
            println!(
                "sluice library {} loaded in {}",
                sluice_common::Store::library_version(),
                ctx.producer.store().url()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs(args) => jobs::run(&ctx, args).await,
        Command::Enqueue(args) => enqueue::run(&ctx, *args).await,
        Command::Status(args) => inspect::status(&ctx, args).await,
        Command::Wait(args) => wait::run(&ctx, args).await,
        Command::Cancel(args) => inspect::cancel(&ctx, args).await,
        Command::Stats(args) => inspect::stats(&ctx, args).await,
        Command::Dlq(args) => dlq::run(&ctx, args).await,
        Command::Cache(args) => cache::run(&ctx, args).await,
        Command::Pause(q) => inspect::pause(&ctx, q, true).await,
        Command::Resume(q) => inspect::pause(&ctx, q, false).await,
        Command::Budget(args) => tenants::budget(&ctx, args).await,
        Command::Weight(args) => tenants::weight(&ctx, args).await,
    }
}
