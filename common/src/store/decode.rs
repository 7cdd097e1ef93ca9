//! Decoding untrusted replies (`sluice_fetch`/`sluice_start`, `sluice_takeover`, XREADGROUP)
//! into typed values: a clear error out, never a panic (fuzzed in tests/fuzz/).

use super::*;

/// Decodes what `sluice_fetch` and `sluice_start` answer (`name` names the call in errors).
/// Untrusted bytes in, a clear error out: it never panics (fuzzed in tests/fuzz/).
pub fn decode_started(reply: &Value, name: &'static str) -> Result<Vec<Started>, StoreError> {
    let bad = || StoreError::Protocol(name);
    array(reply)
        .ok_or_else(bad)?
        .iter()
        .map(|item| {
            let f = array(item).ok_or_else(bad)?;
            let s = |i: usize| f.get(i).and_then(text).ok_or_else(bad);
            let (entry, id) = (s(0)?, s(1)?);
            Ok(match s(2)?.as_str() {
                "run" => Started::Run {
                    entry,
                    id,
                    spec: s(3)?,
                    attempt: f.get(4).and_then(int).unwrap_or(1) as u32,
                    waits: f.get(5).and_then(int).unwrap_or(0).max(0) as u32,
                    ready_ms: f.get(6).and_then(int).unwrap_or(0).max(0) as u64,
                },
                "skip" => Started::Skip { entry, id },
                "missing" => Started::Missing { entry, id },
                "malformed" => Started::Malformed {
                    entry,
                    raw: s(3).unwrap_or_default(),
                },
                "paused" => Started::Paused { entry, id },
                "corrupt" => Started::Corrupt {
                    entry,
                    id,
                    error: s(3).unwrap_or_default(),
                },
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// Decodes `sluice_takeover`'s reply: `[[entry, [field, value, …], deliveries], …]`.
pub fn decode_takeover(reply: &Value) -> Result<Vec<(Delivered, u64)>, StoreError> {
    let bad = || StoreError::Protocol("sluice_takeover");
    array(reply)
        .ok_or_else(bad)?
        .iter()
        .map(|row| {
            let row = array(row).ok_or_else(bad)?;
            let entry = row.first().and_then(text).ok_or_else(bad)?;
            let fields = match row.get(1) {
                Some(Value::Nil) | None => HashMap::new(),
                Some(f) => reply::map(f).ok_or_else(bad)?,
            };
            let n = row.get(2).and_then(int).unwrap_or(1).max(1) as u64;
            Ok((Delivered { entry, fields }, n))
        })
        .collect()
}

/// Decodes an XREADGROUP reply over a queue's lanes into delivered entries, each named with its
/// lane (`lanes`: stream key → lane; a stream not listed is the normal lane), the lanes in the
/// order given (fuzzed in tests/fuzz/).
pub fn decode_delivered(
    reply: &Value,
    lanes: &[(String, &str)],
) -> Result<Vec<Delivered>, StoreError> {
    let streams = reply::read_streams(reply).ok_or(StoreError::Protocol("XREADGROUP"))?;
    // Each stream's place in `lanes` (a stream not listed: first, the normal lane).
    let mut streams: Vec<_> = streams
        .into_iter()
        .map(|(name, entries)| {
            let at = lanes.iter().position(|(s, _)| *s == name);
            (at.unwrap_or(0), at.map_or("", |i| lanes[i].1), entries)
        })
        .collect();
    streams.sort_by_key(|(rank, _, _)| *rank);
    Ok(streams
        .into_iter()
        .flat_map(|(_, lane, entries)| {
            entries.into_iter().map(move |(entry, fields)| Delivered {
                entry: keys::lane_entry(lane, &entry),
                fields,
            })
        })
        .collect())
}
