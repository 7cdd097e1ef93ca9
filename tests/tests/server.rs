//! The server under the suite and the server behaviours Sluice relies on, checked one by one
//! where Redis 7 and Valkey 8 could differ (`SLUICE_TEST_SERVER=redis|valkey`; tests/run.sh runs
//! the suite on both; docs/DEPLOY.md "Supported servers" lists what each check covers):
//! - the server is the one named, at the major version promised (so a run on "Valkey" that
//!   silently started Redis fails here);
//! - function flags: the library's `no-writes` functions run under `FCALL_RO`, a writing one is
//!   refused there, and `FUNCTION LIST` reports the flags;
//! - `XAUTOCLAIM`'s reply: `[cursor, claimed, deleted ids]`, an entry deleted while pending
//!   dropped from the pending list (the take-over of a dead worker's jobs reads it so);
//! - `CLIENT SETINFO` and `CLIENT SETNAME`, which the client library sends on connect;
//! - the `INFO` fields the benchmark and tests read.
//!
//! ACL lines (deploy/redis/users.acl), TLS, clusters and restarts are exercised by their own
//! tests (acl.rs, security.rs, cluster.rs, restarts.rs) on whichever server the run names.

use redis::Value;
use sluice_common::Store;
use sluice_tests::server_kind::ServerKind;
use sluice_tests::{RedisServer, test_producer};

/// `INFO <section>` as `field → value`.
async fn info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> Vec<(String, String)> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(info: &'a [(String, String)], name: &str) -> Option<&'a str> {
    info.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_suite_runs_on_the_server_it_names() {
    let kind = ServerKind::current();
    let redis = RedisServer::start().await;
    let mut conn = redis.client().await;
    let server = info(&mut conn, "server").await;
    let (name, version) = match kind {
        // Valkey reports `redis_version:7.2.4` for clients that check it, and its own below.
        ServerKind::Valkey => (
            field(&server, "server_name"),
            field(&server, "valkey_version"),
        ),
        ServerKind::Redis => (Some("redis"), field(&server, "redis_version")),
    };
    let version = version.expect("a version field in INFO server");
    println!("running on {} {version}", kind.name());
    assert_eq!(name, Some(kind.name()), "INFO server: {server:?}");
    let major = match kind {
        ServerKind::Valkey => "8.",
        ServerKind::Redis => "7.",
    };
    assert!(version.starts_with(major), "{} {version}", kind.name());
    if kind == ServerKind::Redis {
        assert_eq!(
            field(&server, "server_name"),
            None,
            "Valkey under SLUICE_TEST_SERVER=redis"
        );
    }
    // The TLS test's server is the same family and major version (a separate build for Valkey).
    let tls_bin = kind.server_binary(true);
    let out = std::process::Command::new(&tls_bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} --version: {e}", tls_bin.display()));
    let banner = String::from_utf8_lossy(&out.stdout);
    let expected = match kind {
        ServerKind::Valkey => "Valkey server v=8.",
        ServerKind::Redis => "Redis server v=7.",
    };
    assert!(
        banner.starts_with(expected),
        "{}: {banner}",
        tls_bin.display()
    );
}

#[tokio::test]
async fn function_flags_xautoclaim_client_and_info_behave_as_sluice_expects() {
    let redis = RedisServer::start().await;
    let _producer = test_producer(&redis.url()).await; // loads the function library
    let mut conn = redis.client().await;

    // Function flags: FCALL_RO runs a `no-writes` function and refuses a writing one.
    let version: String = redis::cmd("FCALL_RO")
        .arg("sluice_version")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("FCALL_RO sluice_version");
    assert_eq!(version, Store::library_version());
    let refused: redis::RedisResult<Value> = redis::cmd("FCALL_RO")
        .arg("sluice_enqueue")
        .arg(1)
        .arg("sluice:{q}:")
        .arg("{}")
        .query_async(&mut conn)
        .await;
    assert!(
        refused.is_err(),
        "a writing function ran under FCALL_RO: {refused:?}"
    );
    let listed: Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("sluice")
        .query_async(&mut conn)
        .await
        .expect("FUNCTION LIST");
    let text = format!("{listed:?}");
    for f in ["sluice_version", "sluice_jobs", "sluice_enqueue"] {
        assert!(text.contains(f), "FUNCTION LIST lacks {f}: {text}");
    }
    assert!(
        text.contains("no-writes"),
        "FUNCTION LIST shows no flags: {text}"
    );

    // XAUTOCLAIM: three elements; the entry deleted while pending is reported and dropped.
    let stream = "sluice:{compat}:stream";
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .expect("XGROUP CREATE");
    let mut ids = Vec::new();
    for i in 0..2 {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(&mut conn)
            .await
            .expect("XADD");
        ids.push(id);
    }
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("dead-worker")
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    let _: i64 = redis::cmd("XDEL")
        .arg(stream)
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .expect("XDEL");
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg("g")
        .arg("heir")
        .arg(0)
        .arg("0-0")
        .arg("COUNT")
        .arg(10)
        .query_async(&mut conn)
        .await
        .expect("XAUTOCLAIM");
    let Value::Array(parts) = &reply else {
        panic!("XAUTOCLAIM answered {reply:?}");
    };
    assert_eq!(parts.len(), 3, "XAUTOCLAIM reply: {reply:?}");
    let Value::Array(claimed) = &parts[1] else {
        panic!("claimed entries: {:?}", parts[1]);
    };
    assert_eq!(claimed.len(), 1, "claimed: {claimed:?}");
    assert!(format!("{:?}", claimed[0]).contains(&ids[1]), "{claimed:?}");
    assert!(
        format!("{:?}", parts[2]).contains(&ids[0]),
        "deleted ids: {:?}",
        parts[2]
    );
    let pending: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    let Value::Array(summary) = &pending else {
        panic!("XPENDING answered {pending:?}");
    };
    assert_eq!(summary.first(), Some(&Value::Int(1)), "{pending:?}");

    // CLIENT SETNAME is accepted everywhere. CLIENT SETINFO, which redis-rs sends on connect
    // and whose error it ignores, is Redis 7.2's: Valkey 8 accepts it, Redis 7.0 answers
    // "unknown subcommand" (the one difference found; nothing of Sluice's depends on it).
    let client = |args: &[&str]| {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg(args);
        cmd
    };
    let named: redis::RedisResult<Value> = client(&["SETNAME", "sluice-compat"])
        .query_async(&mut conn)
        .await;
    assert!(named.is_ok(), "CLIENT SETNAME: {named:?}");
    let setinfo: redis::RedisResult<Value> = client(&["SETINFO", "LIB-NAME", "redis-rs"])
        .query_async(&mut conn)
        .await;
    let redis_7_0 = field(&info(&mut conn, "server").await, "redis_version")
        .is_some_and(|v| v.starts_with("7.0.") && ServerKind::current() == ServerKind::Redis);
    match &setinfo {
        Ok(_) => assert!(!redis_7_0, "Redis 7.0 accepted CLIENT SETINFO"),
        Err(e) => assert!(
            redis_7_0 && e.to_string().contains("unknown subcommand"),
            "CLIENT SETINFO: {e}"
        ),
    }

    // INFO fields the benchmark reads for Redis CPU, commands and memory per job.
    let all = info(&mut conn, "all").await;
    for f in [
        "used_cpu_user",
        "used_cpu_sys",
        "total_commands_processed",
        "used_memory",
        "connected_clients",
    ] {
        let v = field(&all, f).unwrap_or_else(|| panic!("INFO lacks {f}"));
        assert!(v.parse::<f64>().is_ok(), "INFO {f}:{v}");
    }
    // INFO commandstats, which the benchmark splits per command: `calls=N,usec=N,…`.
    let fcall_ro = field(&all, "cmdstat_fcall_ro").expect("INFO commandstats lacks fcall_ro");
    assert!(
        fcall_ro.starts_with("calls=") && fcall_ro.contains(",usec="),
        "cmdstat_fcall_ro:{fcall_ro}"
    );
}
