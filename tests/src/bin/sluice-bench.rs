//! `sluice-bench`: Sluice's benchmark driver and the anchors harness's adapter.
//!
//! ```text
//! sluice-bench run all|w1|…|w6 [--out results.json]   # standalone, own Redis and mock
//! sluice-bench cluster-w2 [--runs 3] [--partitions 3]  # W2: 3-master cluster vs one Redis
//! sluice-bench api [--rate 500] [--n 50000]            # sluice-api vs direct calls
//! sluice-bench cache                                    # the response cache, Zipf, off vs on
//! sluice-bench enqueue …  /  sluice-bench worker …     # the adapter protocol (harness.py)
//! ```

use clap::{Parser, Subcommand};
use sluice_tests::bench::{adapter, api, cache, cluster, driver};

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    about = "Sluice through the anchors' workloads (W1–W6)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs workloads on a Redis and mock of its own and prints the figures.
    Run {
        #[arg(value_enum, default_value_t = driver::Workload::All)]
        workload: driver::Workload,
        /// Also write every figure as JSON here.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// W2 on a three-master Redis Cluster (queue in P partitions) against one Redis,
    /// interleaved, with the ratio.
    ClusterW2 {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 50_000)]
        n: usize,
        #[arg(long, default_value_t = 3)]
        partitions: u32,
    },
    /// sluice-api against direct calls: enqueue throughput, latency added at a fixed rate, RSS.
    Api(api::ApiArgs),
    /// The response cache on a Zipf workload (10,000 questions over 2,000): calls and tokens
    /// off against on, hit latency, Redis memory per answer.
    Cache,
    /// Adapter protocol: enqueue N payloads and print {"n", "seconds"}.
    Enqueue(adapter::EnqueueArgs),
    /// Adapter protocol: a worker driven by go/stop on stdin.
    Worker(adapter::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Run { workload, out } => driver::run(workload, out).await,
            Cmd::ClusterW2 {
                runs,
                n,
                partitions,
            } => cluster::w2(runs, n, partitions).await,
            Cmd::Api(a) => api::run(a).await,
            Cmd::Cache => cache::run().await,
            Cmd::Enqueue(a) => adapter::enqueue(a).await,
            Cmd::Worker(a) => adapter::worker(a).await,
        }
    })
}
