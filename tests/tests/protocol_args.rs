//! Every function of the library refuses a malformed call before its first write: a property
//! test over argument vectors made wrong on purpose (wrong counts, non-numbers, NaN, infinities,
//! negatives, huge values, bad ids and entry ids, keys outside `sluice:{<queue>}:`, ragged
//! `enqueue_many` lists). After every call that got an error reply, `DUMP` of every key in the
//! server is what it was before the call (a call that succeeded may change state: the snapshot
//! is taken again). A fixed list of calls that must be refused (each seen accepted, or
//! half-written, by an earlier library) runs first.

use std::collections::BTreeMap;

use proptest::prelude::*;
use redis::aio::MultiplexedConnection;
use sluice_common::keys::GROUP;
use sluice_common::store::DeadLetter;
use sluice_common::{NewJob, Schedule, Store};
use sluice_tests::RedisServer;

const Q: &str = "sluice:{pa}:";
const U: &str = "sluice:{u:mock}:";

/// Every key's DUMP.
async fn snapshot(conn: &mut MultiplexedConnection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(conn)
        .await
        .expect("KEYS");
    keys.sort();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("DUMP").arg(k);
    }
    let dumps: Vec<Option<Vec<u8>>> = pipe.query_async(conn).await.expect("DUMP");
    keys.into_iter()
        .zip(dumps)
        .filter_map(|(k, d)| d.map(|d| (k, d)))
        .collect()
}

/// A call: function, key, arguments.
#[derive(Debug, Clone)]
struct Call {
    function: &'static str,
    key: String,
    args: Vec<String>,
}

async fn fcall(conn: &mut MultiplexedConnection, c: &Call) -> redis::RedisResult<redis::Value> {
    redis::cmd("FCALL")
        .arg(c.function)
        .arg(1)
        .arg(&c.key)
        .arg(&c.args)
        .query_async(conn)
        .await
}

fn spec() -> String {
    r#"{"upstream":"mock","request":{"method":"POST","path":"/v1/chat/completions","body":{}}}"#
        .to_string()
}

/// A well-formed call of each function (`n` makes ids unique), with the positions of its
/// whole-number arguments.
fn base(function: usize, n: u64) -> (Call, Vec<usize>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let id = format!("pa-{n}");
    let (function, key, args, numbers): (&str, &str, Vec<String>, Vec<usize>) = match function {
        0 => (
            "sluice_enqueue",
            Q,
            s(&[&id, &spec(), "", "0", "0", "0", "1048576", "1000"]),
            vec![3, 4, 5, 6, 7],
        ),
        1 => (
            "sluice_enqueue_many",
            Q,
            s(&[
                "1048576",
                "1000",
                &id,
                &spec(),
                &format!("d{n}"),
                "60000",
                "0",
                "0",
                &format!("{id}b"),
                &spec(),
                "",
                "0",
                "5000",
                "0",
            ]),
            vec![0, 1, 5, 6, 7, 11, 12, 13],
        ),
        2 => (
            "sluice_start",
            Q,
            s(&[GROUP, "1000", "c", "1-1", &id]),
            vec![1],
        ),
        3 => ("sluice_fetch", Q, s(&[GROUP, "1000", "c", "1"]), vec![1, 3]),
        4 => (
            "sluice_complete",
            Q,
            s(&[
                GROUP, "60000", "1000", &id, "1-1", "{}", "200", "1", "usage", "{}",
            ]),
            vec![1, 2, 7],
        ),
        5 => (
            "sluice_retry",
            Q,
            s(&[
                GROUP,
                &id,
                "1-1",
                "100",
                "transient",
                "boom",
                "503",
                "1",
                "1000",
            ]),
            vec![3, 8],
        ),
        6 => (
            "sluice_dead",
            Q,
            s(&[
                GROUP, &id, "1-1", "invalid", "bad", "400", "60000", "100", "1000", "",
            ]),
            vec![6, 7, 8],
        ),
        7 => ("sluice_promote", Q, s(&["10", "1000", GROUP]), vec![0, 1]),
        8 => (
            "sluice_release",
            Q,
            s(&[GROUP, "1000", "1-1", &id]),
            vec![1],
        ),
        9 => (
            "sluice_cancel",
            Q,
            s(&[GROUP, &id, "60000", "1000"]),
            vec![2, 3],
        ),
        10 => ("sluice_redrive", Q, s(&["1000", "1-1"]), vec![0]),
        11 => ("sluice_purge", Q, s(&["1-1"]), vec![]),
        12 => (
            "sluice_admit",
            U,
            s(&[
                "600", "10000", "20", "50", "1000", "60000", "gpt", "0", "0", "0", "50",
            ]),
            vec![0, 1, 2, 3, 4, 5, 7, 8, 10],
        ),
        13 => ("sluice_beat", Q, s(&["c"]), vec![]),
        14 => (
            "sluice_takeover",
            Q,
            s(&[GROUP, "c", "3000", "10"]),
            vec![2, 3],
        ),
        15 => ("sluice_leave", Q, s(&[GROUP, "c"]), vec![]),
        16 => ("sluice_cache_purge", Q, s(&["", "0", "1000"]), vec![1, 2]),
        // `dollars` and the prices take fractions: only `budget` is a whole number.
        18 => (
            "sluice_tenant",
            Q,
            s(&[
                "acme", "weight", "2", "budget", "1000", "dollars", "1.5", "period", "day",
            ]),
            vec![4],
        ),
        19 => (
            "sluice_prices",
            Q,
            s(&["gpt-4o-mini", "0.15", "0.6", "*", "1", "2"]),
            vec![],
        ),
        _ => (
            "sluice_report",
            U,
            s(&["ok", "0", "30000", "20", "10000", "0", "0", "", "0"]),
            vec![1, 2, 3, 4, 5, 6, 8],
        ),
    };
    (
        Call {
            function,
            key: key.to_string(),
            args,
        },
        numbers,
    )
}

const FUNCTIONS: usize = 20;

/// Values no whole-number argument may take.
const BAD_NUMBERS: &[&str] = &[
    "1.5",
    "-3",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e300",
    "99999999999999999999999",
    "0x10",
    " 5",
    "soon",
    "-",
];

const BAD_KEYS: &[&str] = &[
    "foo",
    "sluice:{a b}:",
    "sluice:{}:",
    "sluice:{u:mock}:",
    "sluice:{pa}",
    "sluice:{pa}:job:x",
];

/// How a well-formed call is made wrong.
#[derive(Debug, Clone)]
enum Mutation {
    /// A whole-number argument (the i-th of the function's) set to a bad value.
    Number(usize, usize),
    /// A key outside the function's namespace.
    Key(usize),
    /// The argument list cut to this many.
    Truncate(usize),
    /// This many extra arguments appended.
    Extend(usize),
    /// An argument replaced by a bad id / entry id / oversized text.
    Replace(usize, usize),
}

const BAD_VALUES: &[&str] = &["", "a b", "{x}", "1-", "-1-1", "x-1"];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0..16usize, 0..BAD_NUMBERS.len()).prop_map(|(i, v)| Mutation::Number(i, v)),
        1 => (0..BAD_KEYS.len()).prop_map(Mutation::Key),
        1 => (0..14usize).prop_map(Mutation::Truncate),
        1 => (1..8usize).prop_map(Mutation::Extend),
        2 => (0..16usize, 0..BAD_VALUES.len()).prop_map(|(i, v)| Mutation::Replace(i, v)),
    ]
}

fn mutate(call: &mut Call, numbers: &[usize], m: &Mutation) {
    match m {
        Mutation::Number(i, v) => {
            if let Some(&pos) = numbers.get(i % numbers.len().max(1))
                && pos < call.args.len()
            {
                call.args[pos] = BAD_NUMBERS[*v].to_string();
            }
        }
        Mutation::Key(k) => call.key = BAD_KEYS[*k].to_string(),
        Mutation::Truncate(n) => call.args.truncate(*n),
        Mutation::Extend(n) => call.args.extend((0..*n).map(|i| format!("x{i}"))),
        Mutation::Replace(i, v) => {
            if !call.args.is_empty() {
                let pos = i % call.args.len();
                call.args[pos] = BAD_VALUES[*v].to_string();
            }
        }
    }
}

/// A queue with jobs in every live state, a dead letter, and limiter state for `mock`.
async fn populate(store: &Store, conn: &mut MultiplexedConnection) {
    store.create_group("pa").await.expect("group");
    let job = |i: usize| {
        NewJob::post(
            "pa",
            "mock",
            "/v1/chat/completions",
            serde_json::json!({"n": i}),
        )
    };
    let mut jobs: Vec<NewJob> = (0..6).map(job).collect();
    jobs[5].schedule = Schedule::After(std::time::Duration::from_secs(3600));
    for j in &jobs {
        store
            .enqueue(&j.prepare(&Default::default()).expect("prepare"))
            .await
            .expect("enqueue");
    }
    let started = store.fetch("pa", "c", 3).await.expect("fetch");
    if let Some(sluice_common::store::Started::Run { id, entry, .. }) = started.first() {
        store
            .dead_letter(
                "pa",
                &DeadLetter {
                    id,
                    entry,
                    reason: "invalid",
                    error: "bad",
                    http_status: Some(400),
                    raw: "",
                },
            )
            .await
            .expect("dead");
    }
    let _: redis::Value = redis::cmd("FCALL")
        .arg("sluice_admit")
        .arg(1)
        .arg(U)
        .arg(&[
            "600", "10000", "20", "50", "1000", "60000", "gpt", "0", "0", "0", "50",
        ])
        .query_async(conn)
        .await
        .expect("admit");
}

/// Calls each seen accepted, or written halfway before an error, by an earlier library.
fn must_refuse() -> Vec<Call> {
    let mut out = Vec::new();
    let mut push = |f: usize, n: u64, edit: &dyn Fn(&mut Call)| {
        let (mut c, _) = base(f, n);
        edit(&mut c);
        out.push(c);
    };
    // enqueue: events maxlen 1.5 / -3 (wrote the job, then failed in XADD), delays and run-at
    // times that are not finite whole numbers or lie beyond the horizon, a 10 MB dedupe key.
    for (pos, v) in [
        (7, "1.5"),
        (7, "-3"),
        (4, "soon"),
        (4, "nan"),
        (4, "inf"),
        (4, "1e300"),
        (4, "31708800001"),
        (5, "nan"),
        (5, "1e300"),
        (5, "99999999999999"),
        (6, "-1"),
        (6, "999999999999"),
    ] {
        push(0, 900, &|c| c.args[pos] = v.to_string());
    }
    push(0, 901, &|c| {
        c.args[2] = "k".repeat(10_000_000);
        c.args[3] = "60000".into();
    });
    // Keys outside sluice:{<queue>}: for every queue function, the limiter's namespace included.
    for f in 0..12 {
        for k in ["foo", "sluice:{a b}:", "sluice:{u:mock}:"] {
            push(f, 902, &|c| c.key = k.to_string());
        }
    }
    // enqueue_many with a ragged job list.
    push(1, 903, &|c| {
        c.args.pop();
    });
    // dead: a bad retention after a good entry (acknowledged the entry, then failed).
    push(6, 904, &|c| c.args[6] = "nan".into());
    out
}

#[test]
fn a_refused_call_of_any_function_writes_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = rt.block_on(RedisServer::start());
    let store = rt
        .block_on(Store::connect(&redis.url(), Default::default()))
        .expect("store");
    let mut conn = rt.block_on(redis.client());
    rt.block_on(populate(&store, &mut conn));

    // The fixed list: each must be refused, and leave every key as it was.
    let mut refused = 0;
    for call in must_refuse() {
        rt.block_on(async {
            let before = snapshot(&mut conn).await;
            let r = fcall(&mut conn, &call).await;
            let shown = format!("{} {} {:?}", call.function, call.key, {
                let mut a = call.args.clone();
                for x in &mut a {
                    x.truncate(40);
                }
                a
            });
            let e = r.err().unwrap_or_else(|| panic!("accepted: {shown}"));
            assert!(
                e.code().is_some_and(|c| c.starts_with("SLUICE_")),
                "{shown}: not a SLUICE_ refusal: {e}"
            );
            assert!(
                snapshot(&mut conn).await == before,
                "{shown} was refused ({e}) but wrote"
            );
        });
        refused += 1;
    }

    // Random malformed calls of every function.
    let counter = std::sync::atomic::AtomicU64::new(1000);
    let errors = std::sync::atomic::AtomicU64::new(0);
    let cases = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    };
    proptest!(config, |(f in 0..FUNCTIONS, ms in proptest::collection::vec(mutation(), 1..4))| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mut call, numbers) = base(f, n);
        for m in &ms {
            mutate(&mut call, &numbers, m);
        }
        let mut conn = conn.clone();
        rt.block_on(async {
            let before = snapshot(&mut conn).await;
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = fcall(&mut conn, &call).await {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(
                    snapshot(&mut conn).await == before,
                    "{call:?} after {ms:?} was refused ({e}) but wrote"
                );
            }
        });
    });
    println!(
        "protocol arguments: {refused} known-bad calls refused with nothing written; {} random \
         malformed calls, {} refused with nothing written, the rest accepted",
        cases.load(std::sync::atomic::Ordering::Relaxed),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
}
