//! `sluice cache purge --queue Q [--upstream U]`: deletes a queue's cached answers (the response
//! cache, docs/OPERATIONS.md), all of them or one upstream's; jobs are not touched.

use std::process::ExitCode;

use crate::Session;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Delete cached answers, so the next identical requests are called again.
    Purge {
        #[arg(long, short)]
        queue: String,
        /// Only the answers of this upstream.
        #[arg(long, short)]
        upstream: Option<String>,
    },
}

pub async fn run(ctx: &Session, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Purge { queue, upstream } => {
            sluice_common::validate::queue_name(&queue)?;
            let n = ctx
                .producer
                .store()
                .purge_cache(&queue, upstream.as_deref())
                .await?;
            match upstream {
                Some(u) => println!("purged {n} cached answers of upstream {u} from {queue}"),
                None => println!("purged {n} cached answers from {queue}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
