//! Small readers for raw Redis replies (`redis::Value`), in RESP2 or RESP3 shape.
//!
//! The function library answers with nested arrays; these turn them into Rust values without
//! panicking on a reply of the wrong shape (the caller turns `None` into a protocol error).

use std::collections::HashMap;

use redis::Value;

/// A string-like reply as text (integers are formatted).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_string()),
        _ => None,
    }
}

/// An integer reply, or a string holding one.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => text(v)?.parse().ok(),
    }
}

/// An array (or set) reply.
pub fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Field/value pairs, flat (RESP2) or as a map (RESP3), with raw values.
pub fn map_values(v: &Value) -> Option<HashMap<String, Value>> {
    match v {
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v.clone())))
                .collect(),
        ),
        _ => {
            let items = array(v)?;
            Some(
                items
                    .chunks_exact(2)
                    .filter_map(|kv| Some((text(&kv[0])?, kv[1].clone())))
                    .collect(),
            )
        }
    }
}

/// Field/value pairs with text values (a hash, or a stream entry's fields).
pub fn map(v: &Value) -> Option<HashMap<String, String>> {
    Some(
        map_values(v)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, text(&v)?)))
            .collect(),
    )
}

/// Stream entries (XRANGE, or one stream of XREAD): `[[id, [field, value, …]], …]`.
pub fn stream_entries(v: &Value) -> Option<Vec<(String, HashMap<String, String>)>> {
    if matches!(v, Value::Nil) {
        return Some(Vec::new());
    }
    array(v)?
        .iter()
        .map(|e| {
            let e = array(e)?;
            let id = text(e.first()?)?;
            let fields = match e.get(1) {
                Some(Value::Nil) | None => HashMap::new(),
                Some(f) => map(f)?,
            };
            Some((id, fields))
        })
        .collect()
}

/// Stream entries: `(id, fields)` in order.
pub type Entries = Vec<(String, HashMap<String, String>)>;

/// Each stream's entries of an XREAD or XREADGROUP over several streams, by stream name:
/// `[[stream, entries], …]` (RESP2) or a map (RESP3); nil when a blocking read timed out.
pub fn read_streams(v: &Value) -> Option<Vec<(String, Entries)>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(name, entries)| Some((text(name)?, stream_entries(entries)?)))
            .collect(),
        _ => array(v)?
            .iter()
            .map(|s| {
                let s = array(s)?;
                Some((text(s.first()?)?, stream_entries(s.get(1)?)?))
            })
            .collect(),
    }
}

/// The entries of the one stream an XREAD or XREADGROUP asked for: `[[stream, entries]]`, or nil
/// when a blocking read timed out (no entries).
pub fn read_entries(v: &Value) -> Option<Vec<(String, HashMap<String, String>)>> {
    match array(v).and_then(|streams| streams.first()) {
        None => Some(Vec::new()),
        Some(stream) => stream_entries(array(stream)?.get(1)?),
    }
}
