//! The fuzz targets on stable, in every test run: each body (tests/fuzz/src/lib.rs) over its seeds,
//! over every input that ever crashed it (tests/fuzz/regressions/, each fixed), and over random and
//! mutated bytes from proptest. libFuzzer's own runs are tests/fuzz.sh.

use std::path::PathBuf;

use proptest::prelude::*;
use sluice_tests::fuzz;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).expect("read a fuzz input");
            out.push((e.path(), bytes));
        }
    }
    out
}

fn replay(target: &str, body: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds for {target}");
    for (path, bytes) in inputs {
        let run = std::panic::catch_unwind(|| body(&bytes));
        assert!(run.is_ok(), "{target} panicked on {}", path.display());
    }
}

#[test]
fn every_seed_and_regression_input_passes_its_target() {
    replay("job_spec", fuzz::job_spec);
    replay("stream_entry", fuzz::stream_entry);
    replay("limit_headers", fuzz::limit_headers);
}

/// Seeds with a few bytes flipped or spliced: near-valid inputs reach deeper than noise.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = inputs(target).into_iter().map(|(_, b)| b).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    )
        .prop_map(|(mut seed, edits)| {
            for (at, byte) in edits {
                if seed.is_empty() {
                    seed.push(byte);
                } else {
                    let i = at % seed.len();
                    seed[i] = byte;
                }
            }
            seed
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn job_spec_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::job_spec(&bytes);
    }

    #[test]
    fn mutated_job_specs_never_panic(bytes in mutated("job_spec")) {
        fuzz::job_spec(&bytes);
    }

    #[test]
    fn mutated_stream_replies_never_panic(bytes in mutated("stream_entry")) {
        fuzz::stream_entry(&bytes);
    }

    #[test]
    fn header_lines_never_panic(lines in proptest::collection::vec(
        ("(retry-after|retry-after-ms|x-ms-retry-after-ms|x-ratelimit-reset-(requests|tokens)|x-ratelimit-remaining-tokens|anthropic-ratelimit-(requests|tokens)-(reset|remaining)|x-should-retry)",
         "[0-9a-zA-Z.:+ -]{0,40}"),
        0..6,
    )) {
        let text: String = lines.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
        fuzz::limit_headers(text.as_bytes());
    }
}
