//! Tenants (docs/OPERATIONS.md, "Tenants"): `sluice budget set` (tokens and/or dollars per day or
//! month; raising it resumes a parked tenant's jobs), `sluice weight set` (a tenant's weight in
//! the fair share), and the table `sluice stats --tenants` prints.

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
    /// Set a tenant's budget in tokens and/or dollars per period (0 removes that limit). A tenant
    /// parked over its budget is resumed when the new budget has room for its next job.
    #[command(group(clap::ArgGroup::new("limit").required(true).multiple(true).args(["tokens", "dollars"])))]
    Set {
        /// The tenant, as its jobs name it.
        tenant: String,
        /// Tokens per period.
        #[arg(long)]
        tokens: Option<u64>,
        /// Dollars per period, at the workers' [prices] (each job reserved at its estimate,
        /// corrected by its call's cost).
        #[arg(long, value_parser = dollars)]
        dollars: Option<f64>,
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

/// A budget in dollars: a number from 0 to 1e12.
fn dollars(v: &str) -> Result<f64, String> {
    match v.trim_start_matches('$').parse::<f64>() {
        Ok(d) if (0.0..=1e12).contains(&d) => Ok(d),
        _ => Err(format!("{v:?} is not a number of dollars from 0 to 1e12")),
    }
}

pub async fn budget(ctx: &Session, args: BudgetArgs) -> anyhow::Result<ExitCode> {
    let BudgetCommand::Set {
        tenant,
        tokens,
        dollars,
        period,
        queue,
    } = args.command;
    let queue = ctx.queue(&queue);
    let change = TenantChange {
        budget_tokens: tokens,
        budget_dollars: dollars,
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
    let set = store.set_tenant(queue, tenant, change).await?;
    if change.budget_dollars.is_some_and(|d| d > 0.0) && !set.priced {
        eprintln!(
            "warning: no worker has published [prices] to {queue} yet: until one does, jobs \
             reserve $0 and the budget in dollars holds nothing back"
        );
    }
    match store.tenant(queue, tenant).await? {
        Some(t) => print_rows(queue, std::slice::from_ref(&t)),
        None => println!("{queue}: tenant {tenant} set"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Dollars as a person reads them: cents, or hundredths of a cent below $10.
fn money(d: f64) -> String {
    if d.abs() < 10.0 {
        format!("${d:.4}")
    } else {
        format!("${d:.2}")
    }
}

/// Rows shown per queue; `--json` has them all.
const SHOWN: usize = 50;

pub fn print_rows(queue: &str, rows: &[TenantStats]) {
    println!(
        "  {:<24} {:>6} {:>9} {:>13} {:>6} {:>32} parked",
        "tenant", "weight", "backlog", "tokens used", "share", "spent / budget"
    );
    for t in rows.iter().take(SHOWN) {
        let mut limits = Vec::new();
        if let Some(b) = t.budget {
            limits.push(format!("{} / {}", show::count(t.spent), show::count(b)));
        }
        if let Some(d) = t.budget_dollars {
            limits.push(format!("{} / {}", money(t.spent_dollars), money(d)));
        }
        let budget = if limits.is_empty() {
            "-".into()
        } else {
            format!(
                "{} a {}",
                limits.join(", "),
                t.period.as_deref().unwrap_or("month")
            )
        };
        println!(
            "  {:<24} {:>6} {:>9} {:>13} {:>5.1}% {:>32} {}",
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
