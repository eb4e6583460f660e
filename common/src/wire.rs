//! The wire protocol: every message between coordinator and workers, and the
//! one codec that turns them into bytes. `docs/protocol.md` describes the
//! same contract for implementers in other languages.
//!
//! Every AMQP body is a MessagePack array `[version, message]`; `message` is
//! a map with named fields (rmp-serde's `to_vec_named`), enums are maps of
//! one key (the variant name). A receiver reads the version first and
//! refuses one it does not speak, so a message from a newer peer is
//! dead-lettered with a clear reason instead of misread.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::job::{ChildCounts, DispatchToken, JobId, JobOptions};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// The largest body either side accepts (16 MiB). A larger one is
/// dead-lettered; spawn children in several `ctx.spawn` batches instead.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Longest reason kept in [`WireError::Malformed`] and
/// [`WireError::Encode`], in bytes. A serde message can quote the input it
/// choked on (a 1 MiB string in, a 1 MiB log line out), and these reasons
/// end up in logs and in job errors: the start says what went wrong, the
/// rest is cut and marked.
pub const MAX_REASON_BYTES: usize = 300;

/// Why bytes could not become a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not MessagePack of the expected shape. The reason is at most
    /// [`MAX_REASON_BYTES`] long.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// A value that could not be encoded. The reason is at most
    /// [`MAX_REASON_BYTES`] long.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl WireError {
    /// A [`WireError::Malformed`] from a decoder's error, capped.
    fn malformed(e: impl std::fmt::Display) -> Self {
        Self::Malformed(capped(e))
    }

    /// A [`WireError::Encode`] from an encoder's error, capped.
    fn encode(e: impl std::fmt::Display) -> Self {
        Self::Encode(capped(e))
    }
}

/// `e` as text of at most [`MAX_REASON_BYTES`] bytes.
fn capped(e: impl std::fmt::Display) -> String {
    crate::limits::one_line(&e.to_string(), MAX_REASON_BYTES)
}

/// Coordinator → worker: run one phase of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The execution this task asks for; every report about it carries it.
    pub token: DispatchToken,
    /// The job kind; selects the handler.
    pub kind: String,
    /// The phase to run. [`crate::job::ENTRY_PHASE`] means the kind's entry phase.
    pub phase: String,
    /// The root of the job's tree.
    pub root_id: JobId,
    /// The parent, for a child job.
    pub parent_id: Option<JobId>,
    /// The job's input, MessagePack.
    pub input: ByteBuf,
    /// The last checkpoint of this phase, if an earlier execution saved one.
    pub state: Option<ByteBuf>,
    /// For the phase after a fan-in: how the children ended.
    pub children: Option<ChildCounts>,
    /// For the phase after a fan-in: the phase number that spawned the
    /// children, used to page their results.
    pub fanout_seq: Option<u32>,
}

/// Coordinator → worker: the body of every task message, one or more tasks
/// of one kind. Under load the relay bundles tasks (the broker's per-message
/// cost dominates trivial phases); each task is run, reported and fenced on
/// its own, and the message is acked once every task's outcome is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tasks {
    /// The tasks, all of the kind the queue serves.
    pub tasks: Vec<Task>,
}

/// Worker → coordinator: one or more report items, coalesced into one
/// message when a worker finishes many small phases at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Applied in order.
    pub items: Vec<ReportItem>,
}

/// Coordinator → every worker, on the fanout exchange `{ns}.control`:
/// executions to stop, because their job was cancelled or paused, or
/// because their report was fenced (their lease ran out, their job moved
/// on). A worker drops a task carrying one of these tokens when it arrives;
/// a running execution sees [`Context::cancelled`](../../tributary_worker)
/// resolve, and whatever it reports afterwards is discarded (the
/// coordinator would fence it anyway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// The executions to stop, at most [`MAX_STOPS_PER_MESSAGE`].
    pub stop: Vec<DispatchToken>,
}

/// Most tokens in one [`Control`] message: a cancelled 100k-child tree is
/// told in several messages, none large.
pub const MAX_STOPS_PER_MESSAGE: usize = 2_000;

/// One thing a worker tells the coordinator about one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportItem {
    /// The worker began executing the phase.
    Started {
        /// The execution.
        token: DispatchToken,
        /// The phase name actually run (the entry alias resolved).
        phase: String,
        /// The lease asked for: without a heartbeat within it, the
        /// coordinator retries the phase elsewhere.
        lease_ms: u64,
        /// Who runs it, for operators: `"id@host"` (see
        /// [`worker_identity`]). Optional and omitted when `None`, so
        /// peers of either age understand each other: an older
        /// coordinator ignores the key, and a `Started` without it reads
        /// as `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// The phase is still running: renew its lease.
    Heartbeat {
        /// The execution.
        token: DispatchToken,
        /// The new lease, from now.
        lease_ms: u64,
    },
    /// A batch of children spawned by the phase. Batches are numbered from
    /// 0 within a phase; a batch number seen before is ignored, so a
    /// re-executed phase that spawns the same batches creates no duplicates.
    Spawned {
        /// The execution.
        token: DispatchToken,
        /// The batch number within the phase.
        batch: u32,
        /// The spawn index of the batch's first child (children are numbered
        /// from 0 across all batches of the phase).
        first_index: u64,
        /// The children.
        children: Vec<ChildSpec>,
    },
    /// The phase saved its progress; a re-execution resumes from it.
    Checkpoint {
        /// The execution.
        token: DispatchToken,
        /// The state, MessagePack.
        state: ByteBuf,
    },
    /// How far the phase has got.
    Progress {
        /// The execution.
        token: DispatchToken,
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
        /// What is going on, for people.
        message: String,
    },
    /// A line for the job's log.
    Log {
        /// The execution.
        token: DispatchToken,
        /// `debug`, `info`, `warn` or `error`.
        level: String,
        /// The line.
        message: String,
    },
    /// The phase ended.
    Finished {
        /// The execution.
        token: DispatchToken,
        /// How.
        outcome: Outcome,
    },
}

impl ReportItem {
    /// The execution the item is about.
    pub fn token(&self) -> &DispatchToken {
        match self {
            Self::Started { token, .. }
            | Self::Heartbeat { token, .. }
            | Self::Spawned { token, .. }
            | Self::Checkpoint { token, .. }
            | Self::Progress { token, .. }
            | Self::Log { token, .. }
            | Self::Finished { token, .. } => token,
        }
    }
}

/// Longest worker identity kept, in bytes ([`worker_identity`]).
pub const MAX_WORKER_BYTES: usize = 128;

/// `raw` as a worker identity fit to store and show (the coordinator cleans
/// what any worker sends; the Rust worker cleans its own): every character
/// but ASCII letters, digits and `. _ - @ :` becomes `_`, and the result is
/// cut to [`MAX_WORKER_BYTES`]. `None` when nothing is left.
pub fn worker_identity(raw: &str) -> Option<String> {
    let clean: String = raw
        .chars()
        .take(MAX_WORKER_BYTES)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// A child to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Its job kind.
    pub kind: String,
    /// Its input, MessagePack.
    pub input: ByteBuf,
    /// Its options.
    #[serde(default)]
    pub options: Option<JobOptions>,
}

/// How a phase ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The job is done.
    Complete {
        /// Its output, MessagePack.
        output: ByteBuf,
    },
    /// Run another phase.
    Next {
        /// The phase.
        phase: String,
    },
    /// The fan-out is sealed: resume at `then` once every child is terminal.
    Wait {
        /// The phase to run after the fan-in.
        then: String,
        /// How many children the phase spawned in all batches.
        children: u64,
    },
    /// The phase failed.
    Fail {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

/// Encodes `message` as `[PROTOCOL_VERSION, message]`.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec_named(&(PROTOCOL_VERSION, message)).map_err(WireError::encode)
}

/// Decodes bytes made by [`encode`], checking size and version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (version, _): (u16, IgnoredAny) =
        rmp_serde::from_slice(bytes).map_err(WireError::malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let (_, message): (u16, T) = rmp_serde::from_slice(bytes).map_err(WireError::malformed)?;
    Ok(message)
}

/// Encodes a user value (input, output, state) as MessagePack.
pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<ByteBuf, WireError> {
    rmp_serde::to_vec_named(value)
        .map(ByteBuf::from)
        .map_err(WireError::encode)
}

/// Decodes a user value (input, output, state) from MessagePack.
pub fn from_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(bytes).map_err(WireError::malformed)
}

/// One child's ending, as the results API pages it to the phase after a
/// fan-in (MessagePack body: a list of these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    /// The child.
    pub id: JobId,
    /// Its spawn index.
    pub index: u64,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Its output, MessagePack, when it completed.
    pub output: Option<ByteBuf>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn token() -> DispatchToken {
        DispatchToken {
            job_id: Uuid::now_v7(),
            seq: 2,
            attempt: 1,
            nonce: DispatchToken::new_nonce(),
        }
    }

    #[test]
    fn report_round_trips() {
        let report = Report {
            items: vec![
                ReportItem::Started {
                    token: token(),
                    phase: "ingest".into(),
                    lease_ms: 30_000,
                    worker: Some("4242-9f3a@host-1".into()),
                },
                ReportItem::Started {
                    token: token(),
                    phase: "ingest".into(),
                    lease_ms: 30_000,
                    worker: None,
                },
                ReportItem::Spawned {
                    token: token(),
                    batch: 3,
                    first_index: 300,
                    children: vec![ChildSpec {
                        kind: "k".into(),
                        input: to_payload(&42u32).expect("encode"),
                        options: None,
                    }],
                },
                ReportItem::Finished {
                    token: token(),
                    outcome: Outcome::Wait {
                        then: "aggregate".into(),
                        children: 301,
                    },
                },
            ],
        };
        let bytes = encode(&report).expect("encode");
        assert_eq!(decode::<Report>(&bytes).expect("decode"), report);
    }

    /// `Started` as protocol 2 first shipped it, without `worker`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum OldItem {
        Started {
            token: DispatchToken,
            phase: String,
            lease_ms: u64,
        },
    }

    #[test]
    fn started_without_worker_is_understood_both_ways() {
        let t = token();
        // An older worker's item reads as `worker: None`.
        let old = OldItem::Started {
            token: t,
            phase: "p".into(),
            lease_ms: 9,
        };
        let bytes = encode(&Report {
            items: vec![ReportItem::Started {
                token: t,
                phase: "p".into(),
                lease_ms: 9,
                worker: None,
            }],
        })
        .expect("encode");
        // `None` is omitted: the bytes are exactly the old ones.
        let old_bytes = rmp_serde::to_vec_named(&(
            PROTOCOL_VERSION,
            std::collections::BTreeMap::from([("items", vec![&old])]),
        ))
        .expect("encode");
        assert_eq!(bytes, old_bytes);
        let read: Report = decode(&old_bytes).expect("decode");
        assert!(matches!(
            &read.items[0],
            ReportItem::Started { worker: None, .. }
        ));
        // An older coordinator ignores the key.
        let new = encode(&ReportItem::Started {
            token: t,
            phase: "p".into(),
            lease_ms: 9,
            worker: Some("1-ab@h".into()),
        })
        .expect("encode");
        assert_eq!(decode::<OldItem>(&new).expect("decode"), old);
    }

    #[test]
    fn worker_identities_are_cleaned_and_capped() {
        let cases = [
            (
                "4242-9f3a@host-1.example",
                Some("4242-9f3a@host-1.example".to_owned()),
            ),
            ("w 1@h\n\0ö", Some("w_1@h___".to_owned())),
            ("", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(worker_identity(raw), expected, "{raw:?}");
        }
        let long = worker_identity(&"é".repeat(1000)).expect("some");
        assert_eq!(long.len(), MAX_WORKER_BYTES);
    }

    #[test]
    fn task_round_trips() {
        let task = Task {
            token: token(),
            kind: "demo.wordcount".into(),
            phase: "start".into(),
            root_id: Uuid::now_v7(),
            parent_id: None,
            input: to_payload(&serde_json::json!({"path": "/tmp"})).expect("encode"),
            state: None,
            children: Some(ChildCounts {
                total: 3,
                completed: 2,
                failed: 1,
                cancelled: 0,
            }),
            fanout_seq: Some(1),
        };
        assert_eq!(
            decode::<Task>(&encode(&task).expect("encode")).expect("decode"),
            task
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            decode::<Task>(b"\xc1garbage"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(decode::<Task>(b""), Err(WireError::Malformed(_))));
    }

    #[test]
    fn other_versions_are_refused() {
        for other in [1u16, 3] {
            let bytes = rmp_serde::to_vec_named(&(other, "anything")).expect("encode");
            assert!(matches!(
                decode::<Task>(&bytes),
                Err(WireError::UnsupportedVersion(v)) if v == other
            ));
        }
    }

    #[test]
    fn oversize_is_refused() {
        let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<Task>(&bytes),
            Err(WireError::TooLarge(_))
        ));
    }

    /// The text of a malformed-message error, checked to be capped.
    fn capped_reason(err: WireError) -> String {
        let WireError::Malformed(reason) = err else {
            panic!("expected Malformed, got {err:?}");
        };
        assert!(
            reason.len() <= MAX_REASON_BYTES,
            "reason of {} bytes: {reason:.100}",
            reason.len()
        );
        reason
    }

    #[test]
    fn malformed_reasons_do_not_quote_whole_inputs() {
        // serde quotes what it cannot use: an unknown variant name of 1 MiB
        // would make a 1 MiB error (and log line).
        let big = "A".repeat(1024 * 1024);
        let payload = to_payload(&big).expect("encode");
        let reason = capped_reason(from_payload::<Outcome>(&payload).expect_err("no such variant"));
        assert!(reason.starts_with("unknown variant `AAA"), "{reason}");
        assert!(reason.ends_with("bytes cut]"), "{reason}");

        // The same inside a task message: 1 MiB of text where a task is expected.
        let body = rmp_serde::to_vec_named(&(PROTOCOL_VERSION, &big)).expect("encode");
        let reason = capped_reason(decode::<Task>(&body).expect_err("not a task"));
        assert!(reason.ends_with("bytes cut]"), "{reason}");

        // Multi-byte characters are cut on a character boundary.
        let wide = "é".repeat(100_000);
        let payload = to_payload(&wide).expect("encode");
        let reason = capped_reason(from_payload::<Outcome>(&payload).expect_err("no such variant"));
        assert!(reason.contains("éé…"), "{reason}");

        // A short reason is kept whole.
        let reason = capped_reason(decode::<Task>(b"\xc1").expect_err("garbage"));
        assert!(!reason.contains("cut"), "{reason}");
    }

    #[test]
    fn encode_reasons_are_capped() {
        struct Refuses(String);
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom(&self.0))
            }
        }
        let err = to_payload(&Refuses("x".repeat(100_000))).expect_err("refused");
        let WireError::Encode(reason) = err else {
            panic!("expected Encode, got {err:?}");
        };
        assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
    }

    #[test]
    fn json_input_survives_the_payload_codec() {
        let json = serde_json::json!({"path": "/x", "n": [1, 2, 3], "deep": {"ok": true}});
        let bytes = to_payload(&json).expect("encode");
        assert_eq!(
            from_payload::<serde_json::Value>(&bytes).expect("decode"),
            json
        );
    }
}
