//! The jobs this worker is running right now, by queue: what the heartbeat keeps leased and
//! what a hard shutdown hands back. Locked only for instant map updates, never across an await.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries in flight: queue → entry id → job id.
#[derive(Default)]
pub struct Inflight {
    map: Mutex<HashMap<String, HashMap<String, String>>>,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, String>>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert/remove.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, queue: &str, entry: &str, id: &str) {
        self.lock()
            .entry(queue.to_string())
            .or_default()
            .insert(entry.to_string(), id.to_string());
    }

    pub fn remove(&self, queue: &str, entry: &str) {
        if let Some(q) = self.lock().get_mut(queue) {
            q.remove(entry);
        }
    }

    /// Whether `entry` of `queue` is in flight here.
    pub fn contains(&self, queue: &str, entry: &str) -> bool {
        self.lock()
            .get(queue)
            .is_some_and(|q| q.contains_key(entry))
    }

    /// Entry ids in flight for one queue.
    pub fn entries(&self, queue: &str) -> Vec<String> {
        self.lock()
            .get(queue)
            .map(|q| q.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (queue, [(entry, id)]) still in flight.
    pub fn all(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.lock()
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(queue, q)| {
                (
                    queue.clone(),
                    q.iter().map(|(e, i)| (e.clone(), i.clone())).collect(),
                )
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
