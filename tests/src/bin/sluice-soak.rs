//! `sluice-soak`: the soak run by hand (tests/soak.sh); see `sluice_tests::soak`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Soak: the mock's whole fault menu under a steady load, with a summary")]
struct Args {
    /// How long to enqueue, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Jobs enqueued per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    sluice_tests::soak::run(sluice_tests::soak::SoakOptions {
        minutes: a.minutes,
        rate: a.rate,
        workers: a.workers,
    })
    .await
}
