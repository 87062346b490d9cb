//! Accounting: one call record per call, written to the `call_records` table.
//!
//! The proxy's [`DialogEvent`]s (who calls whom, answer, end) and rtpengine's
//! delete statistics ([`DeletedCall`]) go through bounded channels to a
//! collector task (the sans-IO [`Collector`] in a thin shell), which hands
//! finished records through another bounded channel to a writer task that
//! inserts them in batches. Nothing here ever makes call handling wait.
//! While the database is unavailable the writer holds the records (as many
//! as a queue holds) and tries again with backoff, so an outage loses
//! nothing it outlasts; a full channel, an overflowing hold or a record the
//! database refuses loses records, counts them ([`AccountingStats`]) and
//! logs a warning. A refused record costs only itself: its batch is retried
//! one record at a time.

pub mod collector;

pub use collector::{
    Clock, Collector, CollectorConfig, CollectorStats, failure_reason, media_json,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::media::DeletedCall;
use crate::proxy::dialog::DialogEvent;
use crate::store::{NewCallRecord, Store};

/// Sizes and timing of accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountingConfig {
    /// Capacity of each channel (events in, statistics in, records out).
    pub queue: usize,
    /// Records per insert transaction, at most.
    pub batch: usize,
    /// How long an ended call waits for rtpengine's statistics (zero without rtpengine).
    pub media_wait: Duration,
    /// A call never seen to end is written as `lost` after this long.
    pub max_age: Duration,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            batch: 100,
            media_wait: Duration::ZERO,
            max_age: Duration::from_secs(5 * 3600),
        }
    }
}

/// What accounting did, and what it lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountingStats {
    /// Records in the database.
    pub written: u64,
    /// Records lost because the writer's queue was full (database slow or down).
    pub dropped_queue_full: u64,
    /// Records lost because the database refused them, or because more
    /// were waiting for an unavailable database than the hold keeps.
    pub dropped_db_error: u64,
    /// Records waiting for the database to come back.
    pub held: u64,
    /// Dialog events lost because the collector's queue was full.
    pub events_dropped: u64,
    /// Calls followed now.
    pub open_calls: u64,
    /// Calls not recorded: too many followed at once.
    pub not_followed: u64,
    /// Calls written as `lost` (their end was never seen).
    pub lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_db_error: AtomicU64,
    held: AtomicU64,
    events_dropped: AtomicU64,
    open_calls: AtomicU64,
    not_followed: AtomicU64,
    lost: AtomicU64,
}

/// Log the first loss and then every thousandth, not every one.
fn worth_a_warning(count: u64) -> bool {
    count == 1 || count.is_multiple_of(1000)
}

/// What the collector task takes in.
#[derive(Debug)]
enum Input {
    Event(DialogEvent, Clock),
    Flush(oneshot::Sender<()>),
}

/// What the writer task takes in.
// Nearly every item is a record: boxing them would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Output {
    Record(NewCallRecord),
    Flush(oneshot::Sender<()>),
}

/// The accounting service. Cheap to clone; the tasks stop when every clone is gone.
#[derive(Debug, Clone)]
pub struct Accounting {
    events: mpsc::Sender<Input>,
    media: mpsc::Sender<DeletedCall>,
    counters: Arc<Counters>,
}

impl Accounting {
    /// Starts the collector and writer tasks (needs a tokio runtime).
    pub fn start(store: Store, config: AccountingConfig) -> Self {
        let queue = config.queue.max(1);
        let (events_tx, events_rx) = mpsc::channel(queue);
        let (media_tx, media_rx) = mpsc::channel(queue);
        let (records_tx, records_rx) = mpsc::channel(queue);
        let counters = Arc::new(Counters::default());
        let collector = Collector::new(CollectorConfig {
            media_wait: config.media_wait,
            max_age: config.max_age,
            ..CollectorConfig::default()
        });
        tokio::spawn(collect(
            collector,
            events_rx,
            media_rx,
            records_tx,
            counters.clone(),
        ));
        let writer = Writer {
            store,
            held: std::collections::VecDeque::new(),
            max_held: queue,
            batch: config.batch.max(1),
            backoff: RETRY_MIN,
            retry_at: None,
            counters: counters.clone(),
        };
        tokio::spawn(writer.run(records_rx));
        Self {
            events: events_tx,
            media: media_tx,
            counters,
        }
    }

    /// Takes a dialog event (never waits; a full queue loses it).
    pub fn dialog_event(&self, ev: &DialogEvent) {
        if self
            .events
            .try_send(Input::Event(ev.clone(), Clock::now()))
            .is_err()
        {
            let n = self.counters.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_a_warning(n) {
                tracing::warn!(
                    dropped = n,
                    "accounting: event queue full; call records lost"
                );
            }
        }
    }

    /// Writes every ended call now (without waiting longer for media
    /// statistics) and waits, at most `within`, until the database has them;
    /// for a graceful shutdown. Returns whether it finished in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let done = async {
            self.events.send(Input::Flush(tx)).await.ok()?;
            rx.await.ok()
        };
        matches!(tokio::time::timeout(within, done).await, Ok(Some(())))
    }

    /// Where the media service sends the statistics of deleted calls
    /// ([`crate::media::Media::report_deleted_calls`]).
    pub fn media_sink(&self) -> mpsc::Sender<DeletedCall> {
        self.media.clone()
    }

    /// Counters.
    pub fn stats(&self) -> AccountingStats {
        let c = &self.counters;
        AccountingStats {
            written: c.written.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_db_error: c.dropped_db_error.load(Ordering::Relaxed),
            held: c.held.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
            open_calls: c.open_calls.load(Ordering::Relaxed),
            not_followed: c.not_followed.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        }
    }
}

/// The collector's shell: feeds it, wakes it for its deadlines, queues what it finishes.
async fn collect(
    mut collector: Collector,
    mut events: mpsc::Receiver<Input>,
    mut media: mpsc::Receiver<DeletedCall>,
    records: mpsc::Sender<Output>,
    counters: Arc<Counters>,
) {
    loop {
        let deadline = collector.poll_timeout().map(tokio::time::Instant::from_std);
        let mut flush = None;
        tokio::select! {
            input = events.recv() => match input {
                None => break,
                Some(Input::Event(ev, clock)) => collector.handle_event(clock, ev),
                Some(Input::Flush(done)) => {
                    collector.flush_ended();
                    flush = Some(done);
                }
            },
            Some(deleted) = media.recv() => {
                collector.handle_media(&deleted.call_id, &deleted.stats);
            }
            _ = sleep_until(deadline) => {
                collector.handle_timeout(std::time::Instant::now());
            }
        }
        while let Some(r) = collector.poll_record() {
            let call_id = r.call_id.clone();
            if records.try_send(Output::Record(r)).is_err() {
                let n = counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_a_warning(n) {
                    tracing::warn!(%call_id, dropped = n, "accounting: database writer behind; call record lost");
                }
            }
        }
        if let Some(done) = flush {
            // Queued behind the records above; only a flush (shutdown) waits here.
            let _ = records.send(Output::Flush(done)).await;
        }
        let s = collector.stats();
        counters
            .open_calls
            .store(collector.open_calls() as u64, Ordering::Relaxed);
        counters
            .not_followed
            .store(s.not_followed, Ordering::Relaxed);
        counters.lost.store(s.lost, Ordering::Relaxed);
    }
}

/// First and longest wait before the writer tries an unavailable database again.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The writer: batches of whatever is held, one transaction each.
struct Writer {
    store: Store,
    /// Records not yet in the database, oldest first.
    held: std::collections::VecDeque<NewCallRecord>,
    max_held: usize,
    batch: usize,
    backoff: Duration,
    /// Set while the database is unavailable: when to try again.
    retry_at: Option<tokio::time::Instant>,
    counters: Arc<Counters>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Output>) {
        let mut taken = Vec::with_capacity(self.batch);
        loop {
            let mut flushes = Vec::new();
            let retry_at = self.retry_at;
            tokio::select! {
                n = queue.recv_many(&mut taken, self.batch) => {
                    if n == 0 {
                        break;
                    }
                    for item in taken.drain(..) {
                        match item {
                            Output::Record(r) => self.hold(r),
                            Output::Flush(done) => flushes.push(done),
                        }
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => self.retry_at = None,
            }
            // A flush (shutdown) tries once even while backing off.
            if self.retry_at.is_none() || !flushes.is_empty() {
                self.write_held().await;
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
        if !self.held.is_empty() {
            tracing::warn!(
                lost = self.held.len(),
                "accounting: database unavailable at shutdown; call records not written"
            );
        }
    }

    fn hold(&mut self, r: NewCallRecord) {
        if self.held.len() >= self.max_held
            && let Some(oldest) = self.held.pop_front()
        {
            self.lose(&oldest.call_id, "held too long for an unavailable database");
        }
        self.held.push_back(r);
        self.note_held();
    }

    fn note_held(&self) {
        self.counters
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    fn lose(&self, call_id: &str, why: &str) {
        let n = self
            .counters
            .dropped_db_error
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if worth_a_warning(n) {
            tracing::warn!(%call_id, dropped = n, "accounting: call record lost: {why}");
        }
    }

    /// Writes what is held, a batch per transaction, until done or the
    /// database is unavailable (then schedules the next try).
    async fn write_held(&mut self) {
        while !self.held.is_empty() {
            let n = self.held.len().min(self.batch);
            let result = self
                .store
                .insert_call_records(&self.held.make_contiguous()[..n])
                .await;
            match result {
                Ok(written) => {
                    self.counters.written.fetch_add(written, Ordering::Relaxed);
                    self.held.drain(..n);
                    self.recovered();
                }
                Err(e) if e.is_unavailable() => {
                    self.unavailable(&e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = n, "accounting: batch refused; writing its records one by one");
                    if !self.write_one_by_one(n).await {
                        break;
                    }
                }
            }
        }
        self.note_held();
    }

    /// The first `n` held records one transaction each; false when the
    /// database became unavailable (the rest stays held).
    async fn write_one_by_one(&mut self, n: usize) -> bool {
        for _ in 0..n {
            let Some(r) = self.held.front() else {
                break;
            };
            match self
                .store
                .insert_call_records(std::slice::from_ref(r))
                .await
            {
                Ok(written) => {
                    self.counters.written.fetch_add(written, Ordering::Relaxed);
                }
                Err(e) if e.is_unavailable() => {
                    self.unavailable(&e);
                    return false;
                }
                Err(e) => {
                    let call_id = r.call_id.clone();
                    tracing::warn!(%call_id, error = %e, "accounting: the database refused a call record");
                    self.lose(&call_id, "refused by the database");
                }
            }
            self.held.pop_front();
        }
        self.recovered();
        true
    }

    fn unavailable(&mut self, e: &crate::store::StoreError) {
        if self.backoff == RETRY_MIN {
            tracing::warn!(error = %e, held = self.held.len(), "accounting: database unavailable; holding call records");
        }
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    fn recovered(&mut self) {
        if self.backoff != RETRY_MIN {
            tracing::info!("accounting: database back; writing held call records");
        }
        self.backoff = RETRY_MIN;
        self.retry_at = None;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
