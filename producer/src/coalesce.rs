//! Coalescing of single enqueues: concurrent `Producer::enqueue` calls share server-side calls.
//!
//! Each call hands its prepared job to one task and awaits the answer. The task sends whatever
//! arrived while its previous call was out as one `enqueue_batch` (one `sluice_enqueue_many`
//! per queue), so 50 callers enqueueing one job each cost Redis about what one batch of 50 does,
//! and a lone caller still goes at once (a batch of one: nothing waits for a batch to fill).

use sluice_common::store::Enqueued;
use sluice_common::{PreparedJob, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one call.
const MAX_BATCH: usize = 512;

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
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (jobs, answers): (Vec<PreparedJob>, Vec<Answer>) = batch.drain(..).unzip();
        match store.enqueue_batch(&jobs).await {
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
}
