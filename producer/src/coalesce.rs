//! Coalescing of single enqueues: concurrent `Producer::enqueue` calls share server-side calls.
//!
//! Each call hands its prepared job to one task and awaits the answer. The task sends whatever
//! has arrived as one `enqueue_batch` (one `sluice_enqueue_many` per queue), with up to
//! `MAX_IN_FLIGHT` such calls out at once, so 50 callers enqueueing one job each cost Redis about
//! what batches of them do, and a lone caller still goes at once (a batch of one: nothing waits
//! for a batch to fill).

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sluice_common::store::Enqueued;
use sluice_common::{PreparedJob, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one call.
const MAX_BATCH: usize = 512;
/// Calls out at once: the next batch goes while the last is still in Redis (pipelined on the
/// one connection, so they run in order), instead of waiting for its answer.
const MAX_IN_FLIGHT: usize = 4;

type Answer = oneshot::Sender<Result<Enqueued, StoreError>>;

/// The callers' handle; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::UnboundedSender<(PreparedJob, Answer)>,
}

impl Coalescer {
    /// Starts the task on the current runtime.
    pub fn start(store: Store) -> Coalescer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Coalescer { tx }
    }

    /// Enqueues one job, in a call shared with whatever other jobs are waiting.
    pub async fn enqueue(&self, job: PreparedJob) -> Result<Enqueued, StoreError> {
        let (answer, rx) = oneshot::channel();
        let stopped = || StoreError::Pool("the enqueue task has stopped".into());
        self.tx.send((job, answer)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<(PreparedJob, Answer)>) {
    let mut in_flight = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH), if in_flight.len() < MAX_IN_FLIGHT => {
                if n == 0 {
                    break;
                }
                let (jobs, answers): (Vec<PreparedJob>, Vec<Answer>) = batch.drain(..).unzip();
                let store = store.clone();
                in_flight.push(async move {
                    let results = store.enqueue_batch(&jobs).await;
                    deliver(answers, results);
                });
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

fn deliver(answers: Vec<Answer>, results: Result<Vec<Result<Enqueued, StoreError>>, StoreError>) {
    match results {
        Ok(results) => {
            for (answer, r) in answers.into_iter().zip(results) {
                let _ = answer.send(r);
            }
        }
        Err(e) => {
            // The round trip failed: every job of it says why (none was enqueued).
            let why = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(StoreError::Pool(why.clone())));
            }
        }
    }
}
