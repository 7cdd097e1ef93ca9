//! Property test of the job state machine on a real Redis: random sequences of what producers,
//! workers and operators do — enqueue (with dedupe keys, now or much later), fetch, complete,
//! retry, dead-letter, promote, a takeover of a live holder's entries (its lease "lapsed"),
//! late calls from holders whose turn is over, cancel, hand-back at shutdown, re-drive; jobs of
//! tenants (fair-queued in their tenants' lists) and tenants' budgets that park them — and
//! after every step and at the end:
//!
//! - nothing is lost: every job created has a hash in a known state, and where that state says
//!   it is (queued: its entry in the stream, or its id in its tenant's list; running: its entry pending in the group;
//!   scheduled/retrying: in the delayed ZSET; terminal: in neither);
//! - nothing completes twice: at most one completion call per job is accepted, a holder from
//!   an earlier life of the job is refused, and the events stream says `completed` at most once;
//! - the state gauges equal the jobs in each state;
//! - draining (promote, take over, run to completion) ends every job but the far-future ones.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use redis::AsyncCommands;
use sluice_common::keys::{GROUP, QueueKeys};
use sluice_common::store::{DeadLetter, Sleep};
use sluice_common::store::{Spend, Started, Transition};
use sluice_common::{JobState, NewJob, Schedule, Store};
use sluice_tests::RedisServer;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        key: Option<u8>,
        later: bool,
        tenant: Option<u8>,
    },
    /// A tenant's budget in tokens and in dollars (0: none); each job here is estimated at 1
    /// token, reserved at $1 (the queue's price of model `m`) and completed at $0.50.
    Budget {
        tenant: u8,
        tokens: u8,
        dollars: u8,
    },
    Fetch {
        consumer: u8,
        count: u8,
    },
    Complete {
        pick: u16,
    },
    Retry {
        pick: u16,
    },
    Dead {
        pick: u16,
    },
    Promote,
    Takeover {
        consumer: u8,
    },
    Late {
        pick: u16,
    },
    Cancel {
        pick: u16,
    },
    Release {
        pick: u16,
    },
    Redrive,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::of(0u8..4), proptest::bool::weighted(0.15), proptest::option::of(0u8..3))
            .prop_map(|(key, later, tenant)| Op::Enqueue { key, later, tenant }),
        2 => (0u8..3, 0u8..4, 0u8..4).prop_map(|(tenant, tokens, dollars)| Op::Budget { tenant, tokens, dollars }),
        4 => (0u8..3, 1u8..5).prop_map(|(consumer, count)| Op::Fetch { consumer, count }),
        3 => any::<u16>().prop_map(|pick| Op::Complete { pick }),
        2 => any::<u16>().prop_map(|pick| Op::Retry { pick }),
        1 => any::<u16>().prop_map(|pick| Op::Dead { pick }),
        2 => Just(Op::Promote),
        1 => (0u8..3).prop_map(|consumer| Op::Takeover { consumer }),
        2 => any::<u16>().prop_map(|pick| Op::Late { pick }),
        1 => any::<u16>().prop_map(|pick| Op::Cancel { pick }),
        1 => any::<u16>().prop_map(|pick| Op::Release { pick }),
        1 => Just(Op::Redrive),
    ]
}

/// A delivery a test "worker" holds: it may act on the job with this entry.
#[derive(Debug, Clone)]
struct Held {
    entry: String,
    id: String,
}

struct Model {
    store: Store,
    queue: String,
    keys: QueueKeys,
    conn: redis::aio::MultiplexedConnection,
    /// Every job created (dedupe duplicates excluded).
    jobs: Vec<String>,
    held: Vec<Held>,
    /// Deliveries whose holder's turn is over (finished, handed back, or taken over).
    late: Vec<Held>,
    accepted_completions: HashMap<String, u32>,
    far_future: HashSet<String>,
}

fn pick<T: Clone>(v: &[T], i: u16) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()].clone())
}

impl Model {
    async fn run_started(&mut self, consumer: &str, started: Vec<Started>) {
        for s in started {
            if let Started::Run { entry, id, .. } = s {
                let _ = consumer;
                self.held.push(Held { entry, id });
            }
        }
    }

    fn take_held(&mut self, i: u16) -> Option<Held> {
        if self.held.is_empty() {
            return None;
        }
        let h = self.held.remove(usize::from(i) % self.held.len());
        self.late.push(h.clone());
        Some(h)
    }

    async fn complete(&mut self, h: &Held) -> Transition {
        let t = self
            .store
            .complete(&self.queue, &h.id, &h.entry, "{}", 200, &[("cost", "0.5")])
            .await
            .expect("complete");
        if t == Transition::Done {
            *self.accepted_completions.entry(h.id.clone()).or_default() += 1;
        }
        t
    }

    async fn apply(&mut self, op: &Op) {
        let q = self.queue.clone();
        match op {
            Op::Budget {
                tenant,
                tokens,
                dollars,
            } => {
                let change = sluice_common::store::TenantChange {
                    budget_tokens: Some(u64::from(*tokens)),
                    budget_dollars: Some(f64::from(*dollars)),
                    ..Default::default()
                };
                self.store
                    .set_tenant(&q, &format!("t{tenant}"), &change)
                    .await
                    .expect("budget");
            }
            Op::Enqueue { key, later, tenant } => {
                let mut job = NewJob::post(
                    &q,
                    "mock",
                    "/v1/chat/completions",
                    serde_json::json!({"model": "m", "messages": []}),
                );
                if let Some(k) = key {
                    job = job.with_dedupe_key(format!("k{k}"));
                }
                if *later {
                    job = job.with_schedule(Schedule::After(Duration::from_secs(3600)));
                }
                if let Some(t) = tenant {
                    job = job.with_tenant(format!("t{t}"));
                }
                let prepared = job
                    .prepare(&sluice_common::JobLimits::default())
                    .expect("valid");
                let e = self.store.enqueue(&prepared).await.expect("enqueue");
                if e.created {
                    self.jobs.push(e.id.clone());
                    if *later {
                        self.far_future.insert(e.id);
                    }
                }
            }
            Op::Fetch { consumer, count } => {
                let c = format!("c{consumer}");
                let started = self
                    .store
                    .fetch(&q, &c, usize::from(*count))
                    .await
                    .expect("fetch");
                self.run_started(&c, started).await;
            }
            Op::Complete { pick } => {
                if let Some(h) = self.take_held(*pick) {
                    self.complete(&h).await;
                }
            }
            Op::Retry { pick } => {
                if let Some(h) = self.take_held(*pick) {
                    self.store
                        .retry(
                            &q,
                            &Sleep {
                                id: &h.id,
                                entry: &h.entry,
                                delay: Duration::ZERO,
                                class: "transient",
                                error: "503",
                                http_status: Some(503),
                                spend: Spend::Attempt,
                            },
                        )
                        .await
                        .expect("retry");
                }
            }
            Op::Dead { pick } => {
                if let Some(h) = self.take_held(*pick) {
                    self.store
                        .dead_letter(
                            &q,
                            &DeadLetter {
                                id: &h.id,
                                entry: &h.entry,
                                reason: "invalid",
                                error: "400",
                                http_status: Some(400),
                                raw: "",
                            },
                        )
                        .await
                        .expect("dead");
                }
            }
            Op::Promote => {
                self.store.promote(&q, 1000).await.expect("promote");
            }
            Op::Takeover { consumer } => {
                // Every pending entry is taken over as if its holder's lease had lapsed; the
                // old holder keeps its copy and may come back late.
                let c = format!("c{consumer}");
                let claimed = self
                    .store
                    .autoclaim(&q, &c, Duration::ZERO, 100)
                    .await
                    .expect("autoclaim");
                let pairs: Vec<(String, String)> = claimed
                    .into_iter()
                    .filter_map(|(d, _)| Some((d.entry, d.fields.get("id")?.clone())))
                    .collect();
                if !pairs.is_empty() {
                    let old: Vec<Held> = self
                        .held
                        .iter()
                        .filter(|h| pairs.iter().any(|(e, _)| *e == h.entry))
                        .cloned()
                        .collect();
                    self.held
                        .retain(|h| !pairs.iter().any(|(e, _)| *e == h.entry));
                    self.late.extend(old);
                    let started = self.store.start(&q, &c, &pairs).await.expect("start");
                    self.run_started(&c, started).await;
                }
            }
            Op::Late { pick } => {
                // A holder whose turn is over tries to complete: refused unless the job is
                // still running on that very entry (a takeover shares it) and nobody finished.
                if let Some(h) = pick_late(&self.late, *pick) {
                    let still_running_here = self.held.iter().any(|x| x.entry == h.entry);
                    let t = self.complete(&h).await;
                    if !still_running_here {
                        assert!(
                            matches!(t, Transition::Refused(_)),
                            "a late completion of {} on {} was accepted",
                            h.id,
                            h.entry
                        );
                    }
                }
            }
            Op::Cancel { pick } => {
                if let Some(id) = self::pick(&self.jobs, *pick) {
                    self.store.cancel(&q, &id).await.expect("cancel");
                }
            }
            Op::Release { pick } => {
                if let Some(h) = self.take_held(*pick) {
                    self.store
                        .release(&q, &[(h.entry.clone(), h.id.clone())])
                        .await
                        .expect("release");
                }
            }
            Op::Redrive => {
                let dead = self
                    .store
                    .dead_list(&q, None, 100)
                    .await
                    .expect("dead list");
                let entries: Vec<String> = dead.into_iter().map(|d| d.entry).collect();
                if !entries.is_empty() {
                    self.store.redrive(&q, &entries).await.expect("redrive");
                }
            }
        }
    }

    /// The invariants of the module comment, read from Redis.
    async fn check(&mut self, after: &str) {
        let mut in_state: HashMap<String, i64> = HashMap::new();
        let delayed: Vec<String> = self
            .conn
            .zrange(self.keys.delayed(), 0, -1)
            .await
            .expect("ZRANGE");
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(self.keys.stream())
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(10_000)
            .query_async(&mut self.conn)
            .await
            .expect("XPENDING");
        let pending: HashSet<String> = sluice_common::reply::array(&pending)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| {
                sluice_common::reply::array(row)?
                    .first()
                    .and_then(sluice_common::reply::text)
            })
            .collect();
        // Spend is what was reserved and used: never below zero, whatever budgets came and went
        // while jobs were out.
        let mut pipe = redis::pipe();
        for tenant in 0..3 {
            pipe.cmd("HMGET")
                .arg(format!("{}budget:t{tenant}", self.keys.prefix()))
                .arg("spent")
                .arg("dspent");
        }
        let spends: Vec<(Option<i64>, Option<f64>)> =
            pipe.query_async(&mut self.conn).await.expect("HMGET");
        for (tenant, (spent, dspent)) in spends.into_iter().enumerate() {
            assert!(
                spent.unwrap_or(0) >= 0 && dspent.unwrap_or(0.0) >= -1e-9,
                "after {after}: tenant t{tenant}'s spend went below zero: {spent:?} tokens, \
                 {dspent:?} dollars"
            );
        }
        for id in &self.jobs {
            let f: HashMap<String, String> =
                self.conn.hgetall(self.keys.job(id)).await.expect("HGETALL");
            let state: JobState = f
                .get("state")
                .unwrap_or_else(|| panic!("after {after}: job {id} lost its hash"))
                .parse()
                .unwrap_or_else(|_| panic!("after {after}: job {id} has an unknown state"));
            *in_state.entry(state.to_string()).or_default() += 1;
            // A budget's reservation (`reserved`; `bres`, the budget charged; `dres` in dollars)
            // lives from a job's move to its settlement: only a queued (moved) or running job
            // holds one.
            let held = |k: &str| f.get(k).is_some_and(|v| !v.is_empty());
            assert!(
                !(held("dres") || held("bres"))
                    || f.get("reserved").map(String::as_str) == Some("1"),
                "after {after}: job {id} holds a budget's charge without a reservation: {f:?}"
            );
            assert!(
                matches!(state, JobState::Queued | JobState::Running)
                    || !(held("reserved") || held("dres") || held("bres")),
                "after {after}: {state} job {id} still holds a reservation: {f:?}"
            );
            let entry = f.get("entry").cloned().unwrap_or_default();
            let is_delayed = delayed.contains(id);
            match state {
                JobState::Queued if entry.is_empty() && f.contains_key("fair") => {
                    let tenant = f.get("tenant").map(String::as_str).unwrap_or("default");
                    let list: Vec<String> = self
                        .conn
                        .lrange(format!("{}tq:{tenant}:normal", self.keys.prefix()), 0, -1)
                        .await
                        .expect("LRANGE");
                    assert_eq!(
                        list.iter().filter(|x| *x == id).count(),
                        1,
                        "after {after}: queued job {id} is not once in tenant {tenant}'s list"
                    );
                    assert!(
                        !is_delayed,
                        "after {after}: queued job {id} is in the delayed ZSET"
                    );
                }
                JobState::Queued => {
                    let found: Vec<redis::Value> = self
                        .conn
                        .xrange(self.keys.stream(), &entry, &entry)
                        .await
                        .expect("XRANGE");
                    assert!(
                        !entry.is_empty() && found.len() == 1,
                        "after {after}: queued job {id} has no stream entry ({entry:?})"
                    );
                    assert!(
                        !is_delayed,
                        "after {after}: queued job {id} is in the delayed ZSET"
                    );
                }
                JobState::Running => {
                    assert!(
                        pending.contains(&entry),
                        "after {after}: running job {id} is not pending ({entry:?})"
                    );
                    assert!(
                        !is_delayed,
                        "after {after}: running job {id} is in the delayed ZSET"
                    );
                }
                JobState::Scheduled | JobState::Retrying => {
                    assert!(
                        is_delayed,
                        "after {after}: {state} job {id} is not in the delayed ZSET"
                    );
                }
                _ => {
                    assert!(
                        !is_delayed,
                        "after {after}: {state} job {id} is in the delayed ZSET"
                    );
                    assert!(
                        entry.is_empty() || !pending.contains(&entry),
                        "after {after}: {state} job {id} still pending"
                    );
                }
            }
            let accepted = self.accepted_completions.get(id).copied().unwrap_or(0);
            assert!(
                accepted <= 1,
                "after {after}: job {id} completed {accepted} times"
            );
        }
        let counts: HashMap<String, i64> =
            self.conn.hgetall(self.keys.counts()).await.expect("counts");
        let count = |m: &HashMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
        // Live states are gauges; terminal ones are totals (a re-driven job leaves `dead`
        // without taking it back).
        for state in ["queued", "running", "retrying", "scheduled"] {
            assert_eq!(
                count(&counts, state),
                count(&in_state, state),
                "after {after}: the {state} gauge disagrees with the jobs ({counts:?} vs {in_state:?})"
            );
        }
        let accepted: u32 = self.accepted_completions.values().sum();
        assert_eq!(
            count(&counts, "completed"),
            i64::from(accepted),
            "after {after}: {counts:?}"
        );
        assert_eq!(
            count(&in_state, "completed"),
            i64::from(accepted),
            "after {after}: {in_state:?}"
        );
        assert!(
            count(&counts, "dead") >= count(&in_state, "dead"),
            "after {after}: {counts:?} vs {in_state:?}"
        );
        assert_eq!(
            count(&counts, "cancelled"),
            count(&in_state, "cancelled"),
            "after {after}: {counts:?} vs {in_state:?}"
        );
    }

    /// Runs everything that can run to an end; returns the jobs not terminal.
    async fn drain(&mut self) -> Vec<(String, JobState)> {
        // Parked tenants resume once their budgets go.
        for tenant in 0..3 {
            self.apply(&Op::Budget {
                tenant,
                tokens: 0,
                dollars: 0,
            })
            .await;
        }
        for _ in 0..50 {
            for h in std::mem::take(&mut self.held) {
                self.late.push(h.clone());
                self.complete(&h).await;
            }
            self.apply(&Op::Promote).await;
            self.apply(&Op::Takeover { consumer: 9 }).await;
            self.apply(&Op::Fetch {
                consumer: 9,
                count: 100,
            })
            .await;
            if self.held.is_empty() {
                break;
            }
        }
        let mut left = Vec::new();
        for id in &self.jobs {
            let s = self
                .store
                .status(&self.queue, id)
                .await
                .expect("status")
                .expect("job");
            let done = matches!(
                s.state,
                JobState::Completed | JobState::Dead | JobState::Cancelled
            );
            let waiting_far_ahead = self.far_future.contains(id) && s.state == JobState::Scheduled;
            if !(done || waiting_far_ahead) {
                left.push((id.clone(), s.state));
            }
        }
        left
    }
}

fn pick_late(late: &[Held], i: u16) -> Option<Held> {
    pick(late, i)
}

async fn completed_events(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &QueueKeys,
) -> HashMap<String, u32> {
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(keys.events())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE events");
    let mut out: HashMap<String, u32> = HashMap::new();
    for (_, f) in sluice_common::reply::stream_entries(&v).unwrap_or_default() {
        if f.get("state").map(String::as_str) != Some("completed") {
            continue;
        }
        let ids: Vec<String> = match (f.get("id"), f.get("ids")) {
            (Some(id), _) => vec![id.clone()],
            (None, Some(ids)) => ids.split(' ').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        for id in ids {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

#[test]
fn no_sequence_of_operations_loses_a_job_or_completes_one_twice() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = rt.block_on(RedisServer::start());
    let settings = sluice_common::StoreSettings {
        events_maxlen: 1_000_000,
        ..Default::default()
    };
    let store = rt
        .block_on(Store::connect(&redis.url(), settings))
        .expect("store");
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..60))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let queue = format!("sm{n}");
            store.create_group(&queue).await.expect("group");
            // $1 a token in and out: a job here (1 token) is reserved at $1.
            let price = sluice_common::config::ModelPrice {
                input_per_mtok: 1e6,
                output_per_mtok: 1e6,
            };
            let prices = [("m".to_string(), price)].into_iter().collect();
            store.publish_prices(&queue, &prices).await.expect("prices");
            let mut model = Model {
                store: store.clone(),
                keys: QueueKeys::new(&queue),
                queue,
                conn: redis.client().await,
                jobs: Vec::new(),
                held: Vec::new(),
                late: Vec::new(),
                accepted_completions: HashMap::new(),
                far_future: HashSet::new(),
            };
            for (i, op) in ops.iter().enumerate() {
                model.apply(op).await;
                model.check(&format!("step {i} {op:?}")).await;
            }
            let left = model.drain().await;
            assert!(left.is_empty(), "jobs that never ended: {left:?} after {ops:?}");
            model.check("the drain").await;
            let keys = model.keys.clone();
            for (id, n) in completed_events(&mut model.conn, &keys).await {
                assert!(n <= 1, "job {id} has {n} completed events after {ops:?}");
            }
        });
    });
}
