//! The completer: records finished jobs in batches.
//!
//! A processor hands its completion over and awaits the transition. One task sends whatever
//! arrived while its previous call was out as one `sluice_complete` per queue, so under load many
//! jobs share one server-side call and one round trip, and an idle worker still completes each
//! job at once (a batch of one: nothing waits for a batch to fill).

use std::collections::HashMap;

use sluice_common::Store;
use sluice_common::store::{Completion, StoreError, Transition};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::outage::until_written;

/// Most completions in one call.
const MAX_BATCH: usize = 256;

struct Pending {
    queue: String,
    completion: Completion,
    reply: oneshot::Sender<Result<Transition, StoreError>>,
}

/// The processors' handle; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Completer {
    /// Starts the task on the current runtime. Completions are held through a Redis outage of
    /// any length, until `abandon` (the end of shutdown's grace) is cancelled.
    pub fn start(store: Store, abandon: CancellationToken) -> Completer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, abandon));
        Completer { tx }
    }

    /// Records `completion`; resolves once Redis has (however long it was away).
    pub async fn complete(
        &self,
        queue: &str,
        completion: Completion,
    ) -> Result<Transition, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                queue: queue.to_string(),
                completion,
                reply,
            })
            .map_err(|_| StoreError::Stopping("the completer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::Stopping("the completer has stopped"))?
    }
}

/// What arrived, one group per queue (one `sluice_complete` each), in arrival order within it.
fn by_queue(batch: impl Iterator<Item = Pending>) -> HashMap<String, Vec<Pending>> {
    let mut groups: HashMap<String, Vec<Pending>> = HashMap::new();
    for p in batch {
        groups.entry(p.queue.clone()).or_default().push(p);
    }
    groups
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Pending>, abandon: CancellationToken) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for (queue, pending) in by_queue(batch.drain(..)) {
            let (jobs, replies): (Vec<Completion>, Vec<_>) =
                pending.into_iter().map(|p| (p.completion, p.reply)).unzip();
            match until_written(&abandon, || store.complete_many(&queue, &jobs)).await {
                Ok(transitions) => {
                    for (reply, t) in replies.into_iter().zip(transitions) {
                        let _ = reply.send(Ok(t));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(queue: &str, id: &str) -> Pending {
        let (reply, _) = oneshot::channel();
        Pending {
            queue: queue.to_string(),
            completion: Completion {
                id: id.to_string(),
                ..Completion::default()
            },
            reply,
        }
    }

    #[test]
    fn completions_are_grouped_by_queue_in_arrival_order() {
        let batch = vec![pending("a", "1"), pending("b", "2"), pending("a", "3")];
        let groups = by_queue(batch.into_iter());
        let ids = |q: &str| -> Vec<String> {
            groups[q].iter().map(|p| p.completion.id.clone()).collect()
        };
        assert_eq!(groups.len(), 2);
        assert_eq!(ids("a"), ["1", "3"]);
        assert_eq!(ids("b"), ["2"]);
    }
}
