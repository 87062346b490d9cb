//! `LocationService`: the in-memory location cache in front of the `location` table.
//!
//! Reads (call routing) never touch the database. Writes go to the database first (in
//! group commits, see `batch`) and then to the cache, under a per-AOR lock so that
//! concurrent REGISTERs for one AOR are serialised; if the database write fails the
//! cache is left unchanged and the caller answers 503.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Mutex;

use super::batch::BindingWriter;
use super::{Binding, BindingChange, Store, StoreError};

const LOCK_SHARDS: usize = 64;

/// Location cache + write-through persistence. Share it behind an `Arc`.
#[derive(Debug)]
pub struct LocationService {
    store: Store,
    writer: BindingWriter,
    node_id: String,
    cache: RwLock<HashMap<String, Vec<Binding>>>,
    locks: [Mutex<()>; LOCK_SHARDS],
    /// Flows of this node that closed, newest last (bounded): a REGISTER
    /// decided while its flow was open may finish after the flow closed.
    closed: std::sync::Mutex<ClosedFlows>,
}

/// The last [`CLOSED_FLOWS`] closed flow ids. Flow ids are never reused
/// within a process, so remembering a closed one is always right; the bound
/// only needs to outlast a REGISTER's database write.
#[derive(Debug, Default)]
struct ClosedFlows {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

const CLOSED_FLOWS: usize = 4096;

impl ClosedFlows {
    fn insert(&mut self, flow: &str) {
        if self.ids.insert(flow.to_owned()) {
            self.order.push_back(flow.to_owned());
            if self.order.len() > CLOSED_FLOWS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, flow: &str) -> bool {
        self.ids.contains(flow)
    }
}

impl LocationService {
    /// Loads all bindings not expired at `now` from the store (so a restart keeps
    /// registrations). `node_id` names this node: [`flow_closed`](Self::flow_closed)
    /// only removes bindings whose flow lives here.
    ///
    /// Bindings of this node that name a transport flow are deleted instead:
    /// the flows died with the previous process, and flow ids start over, so
    /// such a binding would route the user's calls to whichever browser gets
    /// that id next.
    pub async fn load(
        store: Store,
        node_id: impl Into<String>,
        now: i64,
    ) -> Result<Self, StoreError> {
        let node_id = node_id.into();
        let dead = store.remove_node_flow_bindings(&node_id).await?;
        if dead > 0 {
            tracing::info!(
                bindings = dead,
                "removed the registrations of connections of the previous run"
            );
        }
        let mut cache: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in store.list_all_bindings(now).await? {
            cache.entry(b.aor.clone()).or_default().push(b);
        }
        let count: usize = cache.values().map(Vec::len).sum();
        tracing::info!(
            bindings = count,
            aors = cache.len(),
            "location cache loaded"
        );
        Ok(Self {
            writer: BindingWriter::spawn(store.clone()),
            store,
            node_id,
            cache: RwLock::new(cache),
            locks: std::array::from_fn(|_| Mutex::new(())),
            closed: std::sync::Mutex::new(ClosedFlows::default()),
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    // A poisoned lock only means another thread panicked mid-update of a plain map:
    // the data is still usable, so never propagate the panic.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Vec<Binding>>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Vec<Binding>>> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_for(&self, aor: &str) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        aor.hash(&mut h);
        // Reduced modulo the array length, so always in range.
        let idx = usize::try_from(h.finish() % LOCK_SHARDS as u64).unwrap_or(0) % LOCK_SHARDS;
        &self.locks[idx]
    }

    /// Bindings of `aor` alive at `now`, best q first, most recent first.
    pub fn lookup(&self, aor: &str, now: i64) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .read()
            .get(aor)
            .map(|bs| bs.iter().filter(|b| !b.is_expired(now)).cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.q.cmp(&a.q).then(b.updated_at.cmp(&a.updated_at)));
        v
    }

    /// Every binding alive at `now`, ordered by AOR.
    pub fn all(&self, now: i64) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .read()
            .values()
            .flatten()
            .filter(|b| !b.is_expired(now))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.aor.cmp(&b.aor).then(b.q.cmp(&a.q)));
        v
    }

    /// Number of bindings alive at `now` (for metrics; no copy is made).
    pub fn live_count(&self, now: i64) -> usize {
        self.read()
            .values()
            .flatten()
            .filter(|b| !b.is_expired(now))
            .count()
    }

    /// Number of cached bindings (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }

    /// True when no binding is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `decide` on the current bindings of `aor` (expired ones included, so the
    /// registrar can see their Call-ID/CSeq), persists the changes it returns and
    /// updates the cache, all under the AOR's lock. Returns `decide`'s output.
    pub async fn update<R, F>(&self, aor: &str, decide: F) -> Result<R, StoreError>
    where
        F: FnOnce(&[Binding]) -> (Vec<BindingChange>, R),
    {
        let _guard = self.lock_for(aor).lock().await;
        let current = self.read().get(aor).cloned().unwrap_or_default();
        let (mut changes, out) = decide(&current);
        // A flow that closed since the REGISTER came in gets no binding.
        changes.retain(|c| !self.names_closed_flow(c));
        if !changes.is_empty() {
            // Group commit: waits until the change is in the database.
            self.writer.apply(changes.clone()).await?;
            // Closed while the write ran: its removal may have gone first.
            let late: Vec<String> = changes
                .iter()
                .filter(|c| self.names_closed_flow(c))
                .filter_map(|c| match c {
                    BindingChange::Upsert(b) => b.flow_id.clone(),
                    BindingChange::Remove { .. } => None,
                })
                .collect();
            changes.retain(|c| !self.names_closed_flow(c));
            self.apply_to_cache(&changes);
            for flow in late {
                self.writer.remove_flow(&self.node_id, &flow).await?;
            }
        }
        Ok(out)
    }

    fn names_closed_flow(&self, change: &BindingChange) -> bool {
        match change {
            BindingChange::Upsert(b) => {
                b.node_id == self.node_id
                    && b.flow_id.as_deref().is_some_and(|f| {
                        self.closed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(f)
                    })
            }
            BindingChange::Remove { .. } => false,
        }
    }

    fn apply_to_cache(&self, changes: &[BindingChange]) {
        let mut cache = self.write();
        for c in changes {
            match c {
                BindingChange::Upsert(b) => {
                    let list = cache.entry(b.aor.clone()).or_default();
                    match list.iter_mut().find(|x| x.contact == b.contact) {
                        Some(slot) => *slot = b.clone(),
                        None => list.push(b.clone()),
                    }
                }
                BindingChange::Remove { aor, contact } => {
                    if let Some(list) = cache.get_mut(aor) {
                        list.retain(|x| &x.contact != contact);
                        if list.is_empty() {
                            cache.remove(aor);
                        }
                    }
                }
            }
        }
    }

    /// A transport flow closed: its bindings stop being routable at once (cache) and are
    /// deleted from the store. Returns the number of bindings removed from the cache.
    pub async fn flow_closed(&self, flow_id: &str) -> Result<usize, StoreError> {
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(flow_id);
        let mut removed = 0usize;
        {
            let mut cache = self.write();
            cache.retain(|_, list| {
                let before = list.len();
                list.retain(|b| {
                    !(b.flow_id.as_deref() == Some(flow_id) && b.node_id == self.node_id)
                });
                removed += before - list.len();
                !list.is_empty()
            });
        }
        let n = self.writer.remove_flow(&self.node_id, flow_id).await?;
        tracing::debug!(
            flow_id,
            removed,
            deleted = n,
            "flow closed, bindings removed"
        );
        Ok(removed)
    }

    /// Replaces the cached bindings of other nodes with `remote` (a fresh read of the
    /// table, see [`Store::remote_bindings`]): in a cluster, this is how a node learns
    /// the registrations held elsewhere. Bindings of this node are kept as they are,
    /// and a remote row for a contact this node holds (a re-registration that moved
    /// here after the read) is ignored. Returns the number of remote bindings cached.
    pub fn replace_remote(&self, remote: Vec<Binding>) -> usize {
        let mut cache = self.write();
        cache.retain(|_, list| {
            list.retain(|b| b.node_id == self.node_id);
            !list.is_empty()
        });
        let mut count = 0usize;
        for b in remote {
            if b.node_id == self.node_id {
                continue;
            }
            let list = cache.entry(b.aor.clone()).or_default();
            if list.iter().any(|x| x.contact == b.contact) {
                continue;
            }
            list.push(b);
            count += 1;
        }
        count
    }

    /// Drops bindings expired at `now` from the cache and the store; returns how many
    /// rows the store deleted.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        {
            let mut cache = self.write();
            cache.retain(|_, list| {
                list.retain(|b| !b.is_expired(now));
                !list.is_empty()
            });
        }
        self.store.purge_expired_bindings(now).await
    }
}
