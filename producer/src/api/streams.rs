//! The cap on open event streams per key (`api.max_streams_per_key`): a stream takes a slot when
//! it starts and gives it back when it is dropped (ended, or the client went away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::errors::ApiError;

/// Open streams per key name.
#[derive(Debug, Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
}

/// One open stream's slot.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Streams {
    pub fn new(max: usize) -> Streams {
        Streams {
            open: Arc::default(),
            max,
        }
    }

    /// A slot for key `key`, or 429 when it holds `max` already.
    pub fn take(&self, key: &str) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.to_string()).or_default();
        if *n >= self.max {
            return Err(ApiError::TooMany(format!(
                "this key has {n} event streams open, the most api.max_streams_per_key allows"
            )));
        }
        *n += 1;
        Ok(Slot {
            open: self.open.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_max_streams_and_a_dropped_one_frees_its_slot() {
        let streams = Streams::new(2);
        let a = streams.take("a").expect("first");
        let _b = streams.take("a").expect("second");
        assert!(matches!(streams.take("a"), Err(ApiError::TooMany(_))));
        assert!(streams.take("b").is_ok(), "another key has its own cap");
        drop(a);
        assert!(streams.take("a").is_ok());
    }
}
