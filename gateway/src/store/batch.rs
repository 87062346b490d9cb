//! Group commit for location writes.
//!
//! Every REGISTER still waits until its change is in the database, but the changes
//! of all REGISTERs that arrive while one commit runs go to the database together:
//! one multi-row upsert and one multi-row delete instead of a transaction each. On
//! SQLite this also means one writer, so no connection waits for the write lock.
//!
//! [`coalesce`] (pure) folds a batch into the final state per row; the
//! [`BindingWriter`] task feeds it and reports each job's own result.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::{Binding, BindingChange, Store, StoreError, binding_key};

/// Most jobs folded into one commit (bounds statement size and latency).
const MAX_JOBS_PER_BATCH: usize = 256;
/// Jobs waiting for the writer before senders wait in turn.
const QUEUE: usize = 8192;

/// The last write per row of a batch: what the database must hold afterwards.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Coalesced {
    /// Rows to insert or refresh, one per key.
    pub upserts: Vec<Binding>,
    /// Keys of rows to delete (none of them among `upserts`).
    pub deletes: Vec<String>,
}

/// Folds changes applied in order into one upsert set and one delete set with the
/// same end result (later changes to a row win).
pub(crate) fn coalesce<'a>(changes: impl IntoIterator<Item = &'a BindingChange>) -> Coalesced {
    // key -> (position of its last change, that change)
    let mut last: HashMap<String, (usize, Option<&'a Binding>)> = HashMap::new();
    for (i, c) in changes.into_iter().enumerate() {
        match c {
            BindingChange::Upsert(b) => last.insert(b.key(), (i, Some(b))),
            BindingChange::Remove { aor, contact } => {
                last.insert(binding_key(aor, contact), (i, None))
            }
        };
    }
    // Keep the original order so statements are deterministic (tests, lock order).
    let mut rows: Vec<(usize, String, Option<&Binding>)> =
        last.into_iter().map(|(k, (i, b))| (i, k, b)).collect();
    rows.sort_by_key(|(i, _, _)| *i);
    let mut out = Coalesced::default();
    for (_, key, b) in rows {
        match b {
            Some(b) => out.upserts.push(b.clone()),
            None => out.deletes.push(key),
        }
    }
    out
}

enum Job {
    Changes {
        changes: Vec<BindingChange>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Runs alone, after everything queued before it (a closed flow's delete must
    /// not overtake a refresh of one of its bindings).
    RemoveFlow {
        node_id: String,
        flow_id: String,
        done: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// Handle to the group-commit task of one store. Cheap to clone; the task ends when
/// the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct BindingWriter {
    tx: mpsc::Sender<Job>,
}

impl BindingWriter {
    /// Starts the writer task on the current tokio runtime.
    pub(crate) fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Persists `changes` atomically, together with whatever else is queued.
    pub(crate) async fn apply(&self, changes: Vec<BindingChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job::Changes { changes, done })
            .await
            .map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Deletes every binding carried by `flow_id` on `node_id`, in queue order.
    pub(crate) async fn remove_flow(
        &self,
        node_id: &str,
        flow_id: &str,
    ) -> Result<u64, StoreError> {
        let (done, rx) = oneshot::channel();
        let job = Job::RemoveFlow {
            node_id: node_id.to_owned(),
            flow_id: flow_id.to_owned(),
            done,
        };
        self.tx.send(job).await.map_err(|_| writer_gone())?;
        rx.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// The same outage for every job of a failed batch (`sqlx::Error` is not `Clone`).
fn unavailable_copy(e: &StoreError) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Protocol(e.to_string()))
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut batch = match first {
            Job::RemoveFlow {
                node_id,
                flow_id,
                done,
            } => {
                let r = store.remove_flow_bindings(&node_id, &flow_id).await;
                let _ = done.send(r);
                continue;
            }
            Job::Changes { changes, done } => vec![(changes, done)],
        };
        while batch.len() < MAX_JOBS_PER_BATCH {
            match rx.try_recv() {
                Ok(Job::Changes { changes, done }) => batch.push((changes, done)),
                Ok(j @ Job::RemoveFlow { .. }) => {
                    pending = Some(j);
                    break;
                }
                Err(_) => break,
            }
        }
        commit(&store, batch).await;
    }
}

type Pending = (Vec<BindingChange>, oneshot::Sender<Result<(), StoreError>>);

async fn commit(store: &Store, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for (changes, done) in batch {
            let _ = done.send(store.apply_binding_changes(&changes).await);
        }
        return;
    }
    let folded = coalesce(batch.iter().flat_map(|(c, _)| c.iter()));
    match store.apply_coalesced(&folded).await {
        Ok(()) => {
            for (_, done) in batch {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if e.is_unavailable() => {
            for (_, done) in batch {
                let _ = done.send(Err(unavailable_copy(&e)));
            }
        }
        Err(e) => {
            // One job's rows may be what the database refuses: give each its own answer.
            tracing::debug!(error = %e, jobs = batch.len(), "batched location write failed, retrying one by one");
            for (changes, done) in batch {
                let _ = done.send(store.apply_binding_changes(&changes).await);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(aor: &str, contact: &str, expires_at: i64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires_at,
            q: 1000,
            path: vec![],
            received: None,
            flow_id: None,
            node_id: "n".into(),
            instance: None,
            reg_id: None,
            user_agent: None,
            call_id: "c".into(),
            cseq: 1,
            updated_at: 0,
        }
    }

    fn rm(aor: &str, contact: &str) -> BindingChange {
        BindingChange::Remove {
            aor: aor.into(),
            contact: contact.into(),
        }
    }

    #[test]
    fn later_changes_to_a_row_win() {
        let changes = vec![
            BindingChange::Upsert(b("sip:a@x", "sip:1", 10)),
            BindingChange::Upsert(b("sip:b@x", "sip:2", 10)),
            BindingChange::Upsert(b("sip:a@x", "sip:1", 20)),
            rm("sip:b@x", "sip:2"),
            rm("sip:c@x", "sip:3"),
            BindingChange::Upsert(b("sip:c@x", "sip:3", 30)),
        ];
        let out = coalesce(&changes);
        assert_eq!(
            out.upserts,
            vec![b("sip:a@x", "sip:1", 20), b("sip:c@x", "sip:3", 30)]
        );
        assert_eq!(out.deletes, vec![binding_key("sip:b@x", "sip:2")]);
    }

    #[test]
    fn empty_batch_folds_to_nothing() {
        assert_eq!(coalesce(&[]), Coalesced::default());
    }
}
