//! The reporter: one task that publishes every report item, coalescing
//! whatever is queued into one message, with a publisher confirm per message.
//!
//! ```text
//!  phases ──(item, confirm?)──► channel ──► [drain ≤ MAX_ITEMS] ──► Report ──► {ns}.reports
//!                                                   confirm ──► wake the waiters
//! ```
//!
//! Items from one phase stay in order, and a phase's outcome is confirmed
//! only after everything it reported before it.

use std::time::Duration;

use lapin::Channel;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tributary_common::broker;
use tributary_common::limits;
use tributary_common::topology::Topology;
use tributary_common::wire::{self, Outcome, Report, ReportItem};

/// Most items in one message.
const MAX_ITEMS: usize = 1000;
/// Soft cap on one message's size in bytes (estimated before encoding); an
/// item that would cross it goes in the next message.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// The largest single item: alone in its message, it stays well under the
/// 16 MiB wire limit.
const MAX_ITEM_BYTES: usize = 12 * 1024 * 1024;

/// Why a report could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("report not delivered: {0}")]
pub struct ReportError(pub String);

type Waiter = oneshot::Sender<Result<(), ReportError>>;

/// A handle for queueing report items; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<(ReportItem, Option<Waiter>)>,
}

impl Reporter {
    /// Queues an item without waiting.
    pub fn send(&self, item: ReportItem) {
        let _ = self.tx.send((item, None));
    }

    /// Queues an item and waits until the broker confirmed it.
    pub async fn send_confirmed(&self, item: ReportItem) -> Result<(), ReportError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((item, Some(tx)))
            .map_err(|_| ReportError("the reporter has stopped".into()))?;
        rx.await
            .map_err(|_| ReportError("the reporter has stopped".into()))?
    }

    /// A reporter with no broker behind it, for [`crate::testing`]: every
    /// confirmed send resolves `Ok` at once, and the task yields every item
    /// queued, in order, once the last clone of the reporter is dropped.
    pub(crate) fn collecting() -> (Self, tokio::task::JoinHandle<Vec<ReportItem>>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(ReportItem, Option<Waiter>)>();
        let collector = tokio::spawn(async move {
            let mut items = Vec::new();
            while let Some((item, waiter)) = rx.recv().await {
                items.push(item);
                if let Some(w) = waiter {
                    let _ = w.send(Ok(()));
                }
            }
            items
        });
        (Self { tx }, collector)
    }
}

/// Starts the reporter on `channel` (confirms on). It runs until every
/// [`Reporter`] is dropped or `cancel` fires; then unpublished items fail
/// their waiters. When `duplicate` is set, every message is published twice
/// (a fault-injection switch for tests of exactly-once effect).
pub fn start(
    channel: Channel,
    topology: Topology,
    duplicate: bool,
    cancel: CancellationToken,
) -> Reporter {
    let (tx, mut rx) = mpsc::unbounded_channel::<(ReportItem, Option<Waiter>)>();
    tokio::spawn(async move {
        let queue = topology.reports_queue();
        // An item that would push a message past MAX_BYTES waits for the
        // next one, so a large item travels alone and never drags others
        // over the wire limit with it.
        let mut carry: Option<(ReportItem, Option<Waiter>)> = None;
        loop {
            let first = match carry.take() {
                Some(entry) => Some(entry),
                None => tokio::select! {
                    _ = cancel.cancelled() => break,
                    item = rx.recv() => item,
                },
            };
            let Some(first) = first else { break };
            let mut items = Vec::with_capacity(64);
            let mut waiters = Vec::new();
            let mut bytes = 0usize;
            push(bounded(first), &mut items, &mut waiters, &mut bytes);
            while items.len() < MAX_ITEMS && bytes < MAX_BYTES {
                match rx.try_recv() {
                    Ok(next) => {
                        let next = bounded(next);
                        if bytes + approx_size(&next.0) > MAX_BYTES {
                            carry = Some(next);
                            break;
                        }
                        push(next, &mut items, &mut waiters, &mut bytes);
                    }
                    Err(_) => break,
                }
            }
            let result = publish(&channel, &queue, Report { items }, duplicate).await;
            if let Err(e) = &result {
                tracing::warn!("{e}");
            }
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if result.is_err() {
                // The channel is gone; the worker rebuilds its connections.
                break;
            }
        }
        // Fail whatever is still queued so no phase waits forever.
        rx.close();
        while let Ok((_, waiter)) = rx.try_recv() {
            if let Some(w) = waiter {
                let _ = w.send(Err(ReportError("the reporter has stopped".into())));
            }
        }
    });
    Reporter { tx }
}

/// Keeps every item deliverable: text is cut to the stored cap, and an
/// output or checkpoint too large for any message becomes what the
/// coordinator would make of it anyway (a permanent failure naming the
/// size, or a log line), instead of a message the broker or the
/// coordinator refuses whole, with other jobs' items inside.
fn bounded(entry: (ReportItem, Option<Waiter>)) -> (ReportItem, Option<Waiter>) {
    let (item, waiter) = entry;
    let text = |s: &str| limits::sanitize_text(s, limits::MAX_TEXT_BYTES).into_owned();
    let item = match item {
        ReportItem::Finished {
            token,
            outcome: Outcome::Complete { output },
        } if output.len() > MAX_ITEM_BYTES => ReportItem::Finished {
            token,
            outcome: Outcome::Fail {
                error: format!(
                    "the output is {} bytes, over the {MAX_ITEM_BYTES}-byte limit of one report item: return less, or store it elsewhere and return a reference",
                    output.len()
                ),
                retryable: false,
            },
        },
        ReportItem::Finished {
            token,
            outcome: Outcome::Fail { error, retryable },
        } => ReportItem::Finished {
            token,
            outcome: Outcome::Fail {
                error: text(&error),
                retryable,
            },
        },
        ReportItem::Checkpoint { token, state } if state.len() > MAX_ITEM_BYTES => {
            ReportItem::Log {
                token,
                level: "error".into(),
                message: format!(
                    "checkpoint dropped: {} bytes is over the {MAX_ITEM_BYTES}-byte limit of one report item",
                    state.len()
                ),
            }
        }
        ReportItem::Log {
            token,
            level,
            message,
        } => ReportItem::Log {
            token,
            level,
            message: text(&message),
        },
        ReportItem::Progress {
            token,
            done,
            total,
            message,
        } => ReportItem::Progress {
            token,
            done,
            total,
            message: text(&message),
        },
        other => other,
    };
    (item, waiter)
}

fn push(
    entry: (ReportItem, Option<Waiter>),
    items: &mut Vec<ReportItem>,
    waiters: &mut Vec<Waiter>,
    bytes: &mut usize,
) {
    *bytes += approx_size(&entry.0);
    items.push(entry.0);
    if let Some(w) = entry.1 {
        waiters.push(w);
    }
}

/// A generous estimate of an item's encoded size.
fn approx_size(item: &ReportItem) -> usize {
    128 + match item {
        ReportItem::Spawned { children, .. } => children
            .iter()
            .map(|c| c.input.len() + c.kind.len() + 96)
            .sum(),
        ReportItem::Checkpoint { state, .. } => state.len(),
        ReportItem::Progress { message, .. } | ReportItem::Log { message, .. } => message.len(),
        ReportItem::Finished {
            outcome: Outcome::Complete { output },
            ..
        } => output.len(),
        ReportItem::Finished {
            outcome: Outcome::Fail { error, .. },
            ..
        } => error.len(),
        _ => 0,
    }
}

async fn publish(
    channel: &Channel,
    queue: &str,
    report: Report,
    duplicate: bool,
) -> Result<(), ReportError> {
    let body = wire::encode(&report).map_err(|e| ReportError(e.to_string()))?;
    let copies = if duplicate { 2 } else { 1 };
    for _ in 0..copies {
        let pending = broker::publish(channel, "", queue, &body, true)
            .await
            .map_err(|e| ReportError(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(30), pending.confirmed())
            .await
            .map_err(|_| ReportError("confirm timed out".into()))?
            .map_err(|e| ReportError(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;
    use tributary_common::job::DispatchToken;
    use uuid::Uuid;

    use super::*;

    fn token() -> DispatchToken {
        DispatchToken {
            job_id: Uuid::now_v7(),
            seq: 1,
            attempt: 1,
            nonce: 1,
        }
    }

    #[test]
    fn an_output_too_large_for_any_message_fails_its_job_instead() {
        let item = ReportItem::Finished {
            token: token(),
            outcome: Outcome::Complete {
                output: ByteBuf::from(vec![0u8; MAX_ITEM_BYTES + 1]),
            },
        };
        let (item, _) = bounded((item, None));
        match item {
            ReportItem::Finished {
                outcome: Outcome::Fail { error, retryable },
                ..
            } => {
                assert!(!retryable);
                assert!(error.contains("limit of one report item"), "{error}");
            }
            other => panic!("not a failure: {other:?}"),
        }
        assert!(approx_size(&item_of(MAX_ITEM_BYTES)) < wire::MAX_MESSAGE_BYTES);
    }

    fn item_of(bytes: usize) -> ReportItem {
        ReportItem::Finished {
            token: token(),
            outcome: Outcome::Complete {
                output: ByteBuf::from(vec![0u8; bytes]),
            },
        }
    }

    #[test]
    fn text_is_capped_and_loses_nul_before_it_leaves() {
        let item = ReportItem::Log {
            token: token(),
            level: "info".into(),
            message: "a\0b".repeat(100_000),
        };
        let (ReportItem::Log { message, .. }, _) = bounded((item, None)) else {
            panic!("still a log line");
        };
        assert!(message.len() <= limits::MAX_TEXT_BYTES);
        assert!(!message.contains('\0'));
    }

    #[test]
    fn a_checkpoint_too_large_becomes_a_log_line() {
        let item = ReportItem::Checkpoint {
            token: token(),
            state: ByteBuf::from(vec![0u8; MAX_ITEM_BYTES + 1]),
        };
        let (item, _) = bounded((item, None));
        assert!(matches!(item, ReportItem::Log { ref level, .. } if level == "error"));
    }
}
