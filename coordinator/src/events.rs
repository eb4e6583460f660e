//! Live events: `GET /v1/jobs/{id}/events` as Server-Sent Events, over the
//! durable event log (`store/events.rs`).
//!
//! ```text
//!  applier tx: tree_summary row locked ─► events rows ─► NOTIFY tributary_events (at commit)
//!                                                              │ any coordinator
//!  Hub::listen (LISTEN) ─► feed of that tree: fetch new rows (≤ 10/s) into a ring
//!                                      ▼ watch(last id)
//!  each stream: read the ring after its position (or the table, if it is
//!  further back) ─► coalesce counts (≤ 10/s) ─► SSE `id:` = event id
//! ```
//!
//! One feed per watched tree reads the table, however many streams watch
//! it: a thousand streams on one tree cost one query per wake, not a
//! thousand. Events of one tree are numbered in commit order (the writer
//! holds the tree's summary row), so `Last-Event-ID` (or `?after=`) resumes
//! without loss or repeat; a position older than the retention gets a
//! fresh `snapshot` first. Every coordinator serves every tree: the NOTIFY
//! reaches all of them, and a feed also polls every 2 s in case one was
//! missed.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_common::status::JobStatus;
use uuid::Uuid;

use crate::dispatch::sleep_or_cancel;
use crate::event_data::{CountsData, JobEventData, SnapshotData, TreeStatusCounts, to_value};
use crate::store::{self, EVENTS_CHANNEL, StoreError, StoredEvent};

/// Events a feed keeps in memory for its streams.
const RING: usize = 4096;
/// Rows one read of the table takes.
const PAGE: i64 = 1000;
/// Least time between two reads by one feed, and between two `counts`
/// events on one stream.
const THROTTLE: Duration = Duration::from_millis(100);
/// How often a feed reads without a NOTIFY.
const POLL: Duration = Duration::from_secs(2);

/// Every feed of this coordinator, by tree.
pub struct Hub {
    pool: PgPool,
    feeds: Mutex<HashMap<Uuid, Arc<Feed>>>,
    cancel: CancellationToken,
}

/// The events of one watched tree.
struct Feed {
    root: Uuid,
    ring: Mutex<Ring>,
    last: watch::Sender<i64>,
    wake: Notify,
}

/// Every event of the tree with an id in `(floor, last]`, in order.
struct Ring {
    floor: i64,
    events: VecDeque<Arc<StoredEvent>>,
}

impl Ring {
    fn last(&self) -> i64 {
        self.events.back().map_or(self.floor, |e| e.id)
    }

    /// The events after `after`, or `None` if some of them are no longer
    /// (or not yet) in memory.
    fn after(&self, after: i64) -> Option<Vec<Arc<StoredEvent>>> {
        if after < self.floor {
            return None;
        }
        let start = self.events.partition_point(|e| e.id <= after);
        Some(self.events.range(start..).cloned().collect())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    /// A hub reading `pool`; its streams end when `cancel` fires.
    pub fn new(pool: PgPool, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            pool,
            feeds: Mutex::new(HashMap::new()),
            cancel,
        })
    }

    /// Listens for NOTIFY and wakes the feed of each tree named, until
    /// cancelled; reconnects when the database goes away.
    pub async fn listen(self: Arc<Self>) {
        while !self.cancel.is_cancelled() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("event listener cannot connect: {e}");
                    sleep_or_cancel(Duration::from_secs(1), &self.cancel).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
                tracing::warn!("event listener cannot LISTEN: {e}");
                sleep_or_cancel(Duration::from_secs(1), &self.cancel).await;
                continue;
            }
            loop {
                let n = tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match n {
                    Ok(Some(n)) => {
                        if let Ok(root) = Uuid::parse_str(n.payload())
                            && let Some(feed) = lock(&self.feeds).get(&root)
                        {
                            feed.wake.notify_one();
                        }
                    }
                    // Reconnected: wake every feed in case a NOTIFY was lost.
                    Ok(None) => {
                        for feed in lock(&self.feeds).values() {
                            feed.wake.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!("event listener failed: {e}; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// The feed of `root` (created, reading after `after`, if none), and a
    /// receiver that changes whenever it has read more.
    fn subscribe(self: &Arc<Self>, root: Uuid, after: i64) -> (Arc<Feed>, watch::Receiver<i64>) {
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get(&root) {
            let rx = feed.last.subscribe();
            return (feed.clone(), rx);
        }
        let (last, rx) = watch::channel(after);
        let feed = Arc::new(Feed {
            root,
            ring: Mutex::new(Ring {
                floor: after,
                events: VecDeque::new(),
            }),
            last,
            wake: Notify::new(),
        });
        feeds.insert(root, feed.clone());
        tokio::spawn(self.clone().read(feed.clone()));
        (feed, rx)
    }

    /// A feed's reader: on each wake (at most every [`THROTTLE`]), appends
    /// the tree's new events to the ring; ends when no stream watches.
    async fn read(self: Arc<Self>, feed: Arc<Feed>) {
        loop {
            if let Err(e) = self.fill(&feed).await {
                tracing::warn!(root = %feed.root, "event feed cannot read: {e}");
            }
            sleep_or_cancel(THROTTLE, &self.cancel).await;
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = feed.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            if self.cancel.is_cancelled() || feed.last.receiver_count() == 0 {
                let mut feeds = lock(&self.feeds);
                // A stream may have subscribed since: check under the lock.
                if self.cancel.is_cancelled() || feed.last.receiver_count() == 0 {
                    feeds.remove(&feed.root);
                    return;
                }
            }
        }
    }

    async fn fill(&self, feed: &Feed) -> Result<(), StoreError> {
        loop {
            let after = lock(&feed.ring).last();
            let page = store::events_after(&self.pool, feed.root, after, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            if page.is_empty() {
                return Ok(());
            }
            let last = {
                let mut ring = lock(&feed.ring);
                ring.events.extend(page.into_iter().map(Arc::new));
                while ring.events.len() > RING {
                    if let Some(old) = ring.events.pop_front() {
                        ring.floor = old.id;
                    }
                }
                ring.last()
            };
            feed.last.send_replace(last);
            if !full {
                return Ok(());
            }
        }
    }

    /// The SSE stream of `root`'s tree for a client at `after` (None: a
    /// fresh watcher, who gets a `snapshot` of `job` first).
    pub async fn stream(
        self: &Arc<Self>,
        root: Uuid,
        job: Uuid,
        after: Option<i64>,
    ) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, StoreError> {
        let (tx, rx) = mpsc::channel::<Event>(64);
        let pruned = store::counter(&self.pool, "events_pruned_through").await?;
        let last = store::last_event(&self.pool, root).await?;
        let start = match after {
            Some(after) if after >= pruned && after <= last => after,
            // Fresh, further back than the log keeps, or beyond anything
            // this tree has (a position from another tree or another
            // database): start from a snapshot of now. Its id never takes
            // a client back.
            _ => {
                let at = match after {
                    // Pruned: new events of this tree come after it anyway.
                    Some(a) if a < pruned => a.max(last),
                    _ => last,
                };
                let snapshot = snapshot(&self.pool, root, job, after.is_some()).await?;
                // The channel is new and empty: this cannot fail.
                let _ = tx.try_send(sse(at, "snapshot", &snapshot));
                at
            }
        };
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.pump(root, start, &tx).await {
                tracing::debug!(%root, "event stream ended: {e}");
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok(e), rx))
        });
        Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
    }

    /// Sends the tree's events after `pos` to `tx` until the client goes
    /// away or the coordinator stops.
    async fn pump(
        self: Arc<Self>,
        root: Uuid,
        mut pos: i64,
        tx: &mpsc::Sender<Event>,
    ) -> Result<(), StoreError> {
        let (feed, mut changed) = self.subscribe(root, pos);
        let mut counts: Option<TreeStatusCounts> = None;
        let mut counts_sent = Instant::now() - THROTTLE;
        loop {
            let cached = lock(&feed.ring).after(pos);
            let batch: Vec<Arc<StoredEvent>> = match cached {
                Some(b) => b,
                None => store::events_after(&self.pool, root, pos, PAGE)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            };
            for e in &batch {
                pos = e.id;
                if e.kind == "counts" {
                    // Absolute counts: only the latest matters.
                    match serde_json::from_value(e.payload.clone()) {
                        Ok(c) => counts = Some(c),
                        Err(err) => {
                            tracing::warn!(%root, id = e.id, "unreadable counts event: {err}")
                        }
                    }
                    continue;
                }
                if tx
                    .send(sse(e.id, &e.kind, &event_json(root, e)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            if !batch.is_empty() {
                continue;
            }
            let due = counts_sent + THROTTLE;
            if counts.is_some() && Instant::now() >= due {
                if let Some(c) = counts.take() {
                    // Labelled with the position reached: the counts as of then.
                    let data = to_value(&CountsData {
                        root_id: root,
                        counts: c,
                    });
                    if tx.send(sse(pos, "counts", &data)).await.is_err() {
                        return Ok(());
                    }
                    counts_sent = Instant::now();
                }
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                _ = tx.closed() => return Ok(()),
                r = changed.changed() => if r.is_err() { return Ok(()) },
                _ = tokio::time::sleep_until(due), if counts.is_some() => {}
            }
        }
    }
}

fn sse(id: i64, kind: &str, data: &Value) -> Event {
    Event::default()
        .id(id.to_string())
        .event(kind)
        .data(data.to_string())
}

fn event_json(root: Uuid, e: &StoredEvent) -> Value {
    to_value(&JobEventData {
        root_id: root,
        job_id: e.job_id.unwrap_or(root),
        at_ms: e.at_ms,
        data: &e.payload,
    })
}

/// Where the job and its tree stand now.
async fn snapshot(pool: &PgPool, root: Uuid, job: Uuid, reset: bool) -> Result<Value, StoreError> {
    let c = store::tree(pool, root)
        .await?
        .map(|v| v.counts)
        .unwrap_or_default();
    let counts = TreeStatusCounts {
        pending: c.get(JobStatus::Pending),
        running: c.get(JobStatus::Running),
        waiting: c.get(JobStatus::Waiting),
        paused: c.get(JobStatus::Paused),
        completed: c.get(JobStatus::Completed),
        failed: c.get(JobStatus::Failed),
        cancelled: c.get(JobStatus::Cancelled),
    };
    let job = store::job_brief(pool, job)
        .await?
        .and_then(|j| match serde_json::from_value(j) {
            Ok(j) => Some(j),
            Err(err) => {
                tracing::warn!(%job, "unreadable job brief: {err}");
                None
            }
        });
    Ok(to_value(&SnapshotData {
        root_id: root,
        job,
        counts,
        reset,
    }))
}

/// Prunes events older than `retention` every minute until cancelled.
pub async fn prune(pool: PgPool, retention: Duration, cancel: CancellationToken) {
    let secs = retention.as_secs() as i64;
    while !cancel.is_cancelled() {
        loop {
            match store::prune_events(&pool, secs, 10_000).await {
                Ok(0) => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => {
                    tracing::warn!("cannot prune events: {e}");
                    break;
                }
            }
        }
        sleep_or_cancel(Duration::from_secs(60), &cancel).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            id,
            job_id: None,
            kind: "log".into(),
            payload: Value::Null,
            at_ms: 0,
        })
    }

    #[test]
    fn the_ring_serves_only_positions_it_holds_completely() {
        let mut ring = Ring {
            floor: 10,
            events: [12, 15, 19].into_iter().map(event).collect(),
        };
        assert_eq!(ring.last(), 19);
        let ids = |v: Option<Vec<Arc<StoredEvent>>>| {
            v.map(|v| v.iter().map(|e| e.id).collect::<Vec<_>>())
        };
        assert_eq!(ids(ring.after(10)), Some(vec![12, 15, 19]));
        assert_eq!(ids(ring.after(12)), Some(vec![15, 19]));
        assert_eq!(ids(ring.after(13)), Some(vec![15, 19]), "ids have gaps");
        assert_eq!(ids(ring.after(19)), Some(vec![]));
        assert_eq!(
            ids(ring.after(9)),
            None,
            "older than the floor: read the table"
        );
        ring.events.pop_front();
        ring.floor = 12;
        assert_eq!(ids(ring.after(11)), None);
    }
}
