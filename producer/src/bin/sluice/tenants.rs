//! Tenants (docs/OPERATIONS.md, "Tenants"): `sluice budget set` (tokens per day or month; raising
//! it resumes a parked tenant's jobs), `sluice weight set` (a tenant's weight in the fair share),
//! and the table `sluice stats --tenants` prints.

use std::process::ExitCode;

use sluice_common::store::{Period, TenantChange, TenantStats};

use crate::{Session, show};

#[derive(clap::Args)]
pub struct BudgetArgs {
    #[command(subcommand)]
    command: BudgetCommand,
}

#[derive(clap::Subcommand)]
enum BudgetCommand {
    /// Set a tenant's budget in tokens per period (0 removes it). A tenant parked over its
    /// budget is resumed when the new budget has room for its next job.
    Set {
        /// The tenant, as its jobs name it.
        tenant: String,
        /// Tokens per period.
        #[arg(long)]
        tokens: u64,
        /// The period the budget counts in (UTC): day or month.
        #[arg(long, value_enum)]
        period: Option<PeriodArg>,
        #[arg(long, short)]
        queue: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct WeightArgs {
    #[command(subcommand)]
    command: WeightCommand,
}

#[derive(clap::Subcommand)]
enum WeightCommand {
    /// Set a tenant's weight: backlogged tenants share the quota's tokens in proportion to their
    /// weights (default 1).
    Set {
        tenant: String,
        /// A number above 0; "default" goes back to 1.
        weight: String,
        #[arg(long, short)]
        queue: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PeriodArg {
    Day,
    Month,
}

pub async fn budget(ctx: &Session, args: BudgetArgs) -> anyhow::Result<ExitCode> {
    let BudgetCommand::Set {
        tenant,
        tokens,
        period,
        queue,
    } = args.command;
    let queue = ctx.queue(&queue);
    let change = TenantChange {
        budget_tokens: Some(tokens),
        period: period.map(|p| match p {
            PeriodArg::Day => Period::Day,
            PeriodArg::Month => Period::Month,
        }),
        ..TenantChange::default()
    };
    set(ctx, &queue, &tenant, &change).await
}

pub async fn weight(ctx: &Session, args: WeightArgs) -> anyhow::Result<ExitCode> {
    let WeightCommand::Set {
        tenant,
        weight,
        queue,
    } = args.command;
    let queue = ctx.queue(&queue);
    let w = if weight == "default" {
        None
    } else {
        match weight.parse::<f64>() {
            Ok(w) if w > 0.0 && w <= 1_000_000.0 => Some(w),
            _ => anyhow::bail!("weight: {weight:?} is not a number above 0 (at most 1000000)"),
        }
    };
    let change = TenantChange {
        weight: Some(w),
        ..TenantChange::default()
    };
    set(ctx, &queue, &tenant, &change).await
}

async fn set(
    ctx: &Session,
    queue: &str,
    tenant: &str,
    change: &TenantChange,
) -> anyhow::Result<ExitCode> {
    sluice_common::validate::queue_name(queue)?;
    let store = ctx.producer.store();
    store.set_tenant(queue, tenant, change).await?;
    let rows = store.tenants(queue).await?;
    match rows.iter().find(|t| t.tenant == tenant) {
        Some(t) => print_rows(queue, std::slice::from_ref(t)),
        None => println!("{queue}: tenant {tenant} set"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows shown per queue; `--json` has them all.
const SHOWN: usize = 50;

pub fn print_rows(queue: &str, rows: &[TenantStats]) {
    println!(
        "  {:<24} {:>6} {:>9} {:>13} {:>6} {:>24} parked",
        "tenant", "weight", "backlog", "tokens used", "share", "spent / budget"
    );
    for t in rows.iter().take(SHOWN) {
        let budget = match t.budget {
            Some(b) => format!(
                "{} / {} a {}",
                show::count(t.spent),
                show::count(b),
                t.period.as_deref().unwrap_or("month")
            ),
            None => "-".into(),
        };
        println!(
            "  {:<24} {:>6} {:>9} {:>13} {:>5.1}% {:>24} {}",
            t.tenant,
            t.weight,
            show::count(t.backlog),
            show::count(t.tokens),
            100.0 * t.share,
            budget,
            if t.parked { "yes (held: budget)" } else { "no" }
        );
    }
    if rows.len() > SHOWN {
        println!(
            "  … and {} more tenants of {queue} (--json lists all)",
            rows.len() - SHOWN
        );
    }
}
