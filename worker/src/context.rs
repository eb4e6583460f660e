//! What a phase sees: its job, its checkpoint, and ways to spawn children,
//! report progress and logs, and read its children's results.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use tributary_common::job::{ChildCounts, DispatchToken, JobId};
use tributary_common::wire::{self, ChildResult, ReportItem, Task};

use crate::job::{Child, PhaseError};
use crate::reporter::Reporter;

/// Children per spawn message; larger `spawn` calls are split.
const SPAWN_CHUNK: usize = 2000;
/// Input bytes per spawn message, roughly.
const SPAWN_BYTES: usize = 4 * 1024 * 1024;
/// The largest input of one child.
const MAX_CHILD_BYTES: usize = 8 * 1024 * 1024;
/// Children per page when reading results (the coordinator may answer
/// fewer to keep a page under its byte cap).
const RESULTS_PAGE: usize = 5000;

/// The checkpoint as stored: the user's state plus the spawn position, so
/// a resumed phase numbers its next spawn batch where the last one stopped.
#[derive(Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) batch: u32,
    pub(crate) spawned: u64,
    pub(crate) user: Option<ByteBuf>,
}

/// Where [`Context::children`] reads the children's results from.
pub(crate) enum ChildSource {
    /// The coordinator's results API, through the context's HTTP client.
    Api,
    /// Results a test supplied ([`crate::testing`]), in spawn order.
    Memory {
        /// The results, sorted by spawn index.
        results: Arc<[ChildResult]>,
        /// Results per page.
        page: usize,
    },
}

/// The context of one phase execution.
pub struct Context {
    task: Task,
    reporter: Reporter,
    http: reqwest::Client,
    coordinator_url: String,
    cancel: CancellationToken,
    /// Only [`crate::testing`] reads children results from elsewhere.
    source: ChildSource,
    next_batch: u32,
    spawned: u64,
    user_state: Option<ByteBuf>,
}

impl Context {
    pub(crate) fn new(
        task: Task,
        reporter: Reporter,
        http: reqwest::Client,
        coordinator_url: String,
        cancel: CancellationToken,
    ) -> Self {
        let restored = task
            .state
            .as_ref()
            .and_then(|s| wire::from_payload::<Checkpoint>(s).ok());
        let (next_batch, spawned, user_state) = match restored {
            Some(c) => (c.batch, c.spawned, c.user),
            None => (0, 0, None),
        };
        Self {
            task,
            reporter,
            http,
            coordinator_url,
            cancel,
            source: ChildSource::Api,
            next_batch,
            spawned,
            user_state,
        }
    }

    /// Reads children results from `source` instead (for [`crate::testing`]).
    pub(crate) fn with_source(mut self, source: ChildSource) -> Self {
        self.source = source;
        self
    }

    /// The job.
    pub fn job_id(&self) -> JobId {
        self.task.token.job_id
    }

    /// The root of the job's tree.
    pub fn root_id(&self) -> JobId {
        self.task.root_id
    }

    /// The parent, for a child job.
    pub fn parent_id(&self) -> Option<JobId> {
        self.task.parent_id
    }

    /// The execution: job, phase number, attempt.
    pub fn token(&self) -> DispatchToken {
        self.task.token
    }

    /// Which execution of this phase this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.task.token.attempt
    }

    /// The last checkpoint saved by an earlier execution of this phase.
    pub fn state<S: DeserializeOwned>(&self) -> Result<Option<S>, PhaseError> {
        self.user_state
            .as_ref()
            .map(|s| {
                wire::from_payload(s).map_err(|e| PhaseError::permanent(format!("checkpoint: {e}")))
            })
            .transpose()
    }

    /// Saves progress; returns once the coordinator's queue holds it. A
    /// retried or redelivered execution of this phase starts from it.
    pub async fn checkpoint<S: Serialize>(&mut self, state: &S) -> Result<(), PhaseError> {
        let user = wire::to_payload(state)
            .map_err(|e| PhaseError::permanent(format!("checkpoint: {e}")))?;
        self.user_state = Some(user.clone());
        self.save_position().await
    }

    async fn save_position(&mut self) -> Result<(), PhaseError> {
        let checkpoint = Checkpoint {
            batch: self.next_batch,
            spawned: self.spawned,
            user: self.user_state.clone(),
        };
        let state = wire::to_payload(&checkpoint)
            .map_err(|e| PhaseError::permanent(format!("checkpoint: {e}")))?;
        self.reporter
            .send_confirmed(ReportItem::Checkpoint {
                token: self.task.token,
                state,
            })
            .await
            .map_err(|e| PhaseError::retryable(e.to_string()))
    }

    /// Spawns children now; returns once the coordinator's queue holds them.
    /// Call it any number of times, then return [`crate::Step::Wait`]: the
    /// fan-in is sealed only when the phase ends. Batches are numbered, so a
    /// re-executed phase that spawns the same batches creates no duplicates;
    /// one that resumes from a checkpoint continues the numbering.
    pub async fn spawn(&mut self, children: Vec<Child>) -> Result<(), PhaseError> {
        let mut children = children.into_iter().map(|c| c.spec).peekable();
        while children.peek().is_some() {
            // A chunk is at most SPAWN_CHUNK children and about SPAWN_BYTES
            // of inputs, so a report stays well under the wire limit.
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while let Some(next) = children.peek() {
                let size = next.input.len() + next.kind.len();
                if size > MAX_CHILD_BYTES {
                    return Err(PhaseError::permanent(format!(
                        "a {} child's input is {size} bytes, over the {MAX_CHILD_BYTES}-byte limit",
                        next.kind
                    )));
                }
                if !chunk.is_empty() && (chunk.len() == SPAWN_CHUNK || bytes + size > SPAWN_BYTES) {
                    break;
                }
                bytes += size;
                chunk.extend(children.next());
            }
            let n = chunk.len() as u64;
            let item = ReportItem::Spawned {
                token: self.task.token,
                batch: self.next_batch,
                first_index: self.spawned,
                children: chunk,
            };
            self.reporter
                .send_confirmed(item)
                .await
                .map_err(|e| PhaseError::retryable(e.to_string()))?;
            self.next_batch += 1;
            self.spawned += n;
        }
        Ok(())
    }

    /// Children spawned by this phase so far.
    pub fn spawned(&self) -> u64 {
        self.spawned
    }

    /// Reports progress (shown by the status API and `tributary watch`).
    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        self.reporter.send(ReportItem::Progress {
            token: self.task.token,
            done,
            total,
            message: message.into(),
        });
    }

    /// Appends a line to the job's log.
    pub fn log(&self, level: &str, message: impl Into<String>) {
        self.reporter.send(ReportItem::Log {
            token: self.task.token,
            level: level.to_owned(),
            message: message.into(),
        });
    }

    /// Whether this execution should stop: its job was cancelled by an
    /// operator (or this execution was otherwise superseded), or the worker
    /// is shutting down past its grace period. A long phase should
    /// checkpoint and return; whatever a cancelled execution reports is
    /// discarded.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when [`Context::is_cancelled`] turns true: `select!` on it
    /// beside long work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// In the phase after a fan-in: how the children ended.
    pub fn children_counts(&self) -> Option<ChildCounts> {
        self.task.children
    }

    /// In the phase after a fan-in: the children's results, in spawn order,
    /// a page at a time (read through the coordinator's API).
    pub fn children<T: DeserializeOwned>(&self) -> ChildResults<'_, T> {
        ChildResults {
            ctx: self,
            after: -1,
            done: self.task.fanout_seq.is_none(),
            _t: std::marker::PhantomData,
        }
    }

    pub(crate) fn into_spawned(self) -> u64 {
        self.spawned
    }
}

/// How long a phase keeps retrying the coordinator's API before it fails:
/// a coordinator restarting (or a replica going away) is not the phase's
/// fault and must not burn its attempts.
const API_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// GETs `url`, retrying connection errors and 5xx answers with backoff for
/// up to [`API_PATIENCE`]; a 4xx fails at once.
async fn fetch_with_retry(
    http: &reqwest::Client,
    url: &str,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, PhaseError> {
    let started = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(100);
    // Errors reach the job's record and the log: never with credentials a
    // coordinator URL may carry.
    let shown = tributary_common::config::mask_url(url);
    loop {
        let error = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => return Ok(b.to_vec()),
                Err(e) => format!(
                    "{} from {shown}",
                    tributary_common::config::error_chain(&e.without_url())
                ),
            },
            // A token this worker lacks (or has wrong) is the worker's
            // configuration, not the job's fault: retryable, so another
            // worker may take the phase, and the message says the fix.
            Ok(r)
                if matches!(
                    r.status(),
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
                ) =>
            {
                return Err(PhaseError::retryable(format!(
                    "reading children results: {} from {shown}: give the worker the coordinator's TRIBUTARY_READ_TOKEN (or TRIBUTARY_API_TOKEN)",
                    r.status()
                )));
            }
            Ok(r) if r.status().is_client_error() => {
                return Err(PhaseError::permanent(format!(
                    "reading children results: {} from {shown}",
                    r.status()
                )));
            }
            Ok(r) => format!("{} from {shown}", r.status()),
            Err(e) => format!(
                "{} ({shown})",
                tributary_common::config::error_chain(&e.without_url())
            ),
        };
        if started.elapsed() > API_PATIENCE || cancel.is_cancelled() {
            return Err(PhaseError::retryable(format!(
                "reading children results: {error}"
            )));
        }
        tracing::warn!("reading children results: {error}; retrying in {delay:?}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(2));
    }
}

/// One child's ending.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome<T> {
    /// The child.
    pub id: JobId,
    /// Its spawn index.
    pub index: u64,
    /// Its output, or its error (`"cancelled"` for a cancelled child).
    pub result: Result<T, String>,
}

/// Pages through a parent's children results.
pub struct ChildResults<'a, T> {
    ctx: &'a Context,
    after: i64,
    done: bool,
    _t: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned> ChildResults<'_, T> {
    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ChildOutcome<T>>>, PhaseError> {
        if self.done {
            return Ok(None);
        }
        if let ChildSource::Memory { results, page } = &self.ctx.source {
            let from = results.partition_point(|c| c.index as i64 <= self.after);
            let end = results.len().min(from + page);
            return self.outcomes(results[from..end].to_vec());
        }
        let seq = self.ctx.task.fanout_seq.unwrap_or_default();
        let url = format!(
            "{}/v1/jobs/{}/children?seq={seq}&after={}&limit={RESULTS_PAGE}&format=msgpack",
            self.ctx.coordinator_url.trim_end_matches('/'),
            self.ctx.task.token.job_id,
            self.after
        );
        let bytes = fetch_with_retry(&self.ctx.http, &url, &self.ctx.cancel).await?;
        let page: Vec<ChildResult> = wire::decode(&bytes)
            .map_err(|e| PhaseError::retryable(format!("children results: {e}")))?;
        self.outcomes(page)
    }

    /// Decodes one page, moving the cursor past it.
    fn outcomes(
        &mut self,
        page: Vec<ChildResult>,
    ) -> Result<Option<Vec<ChildOutcome<T>>>, PhaseError> {
        if let Some(last) = page.last() {
            self.after = last.index as i64;
        }
        if page.is_empty() {
            return Ok(None);
        }
        page.into_iter()
            .map(|c| {
                let result = match (c.status.as_str(), c.output) {
                    ("completed", Some(out)) => Ok(wire::from_payload::<T>(&out).map_err(|e| {
                        PhaseError::permanent(format!("child {} output: {e}", c.id))
                    })?),
                    ("cancelled", _) => Err("cancelled".to_owned()),
                    (status, _) => Err(c.error.unwrap_or_else(|| status.to_owned())),
                };
                Ok(ChildOutcome {
                    id: c.id,
                    index: c.index,
                    result,
                })
            })
            .collect::<Result<Vec<_>, PhaseError>>()
            .map(Some)
    }

    /// Every remaining result (for fan-outs small enough to hold at once).
    pub async fn collect(mut self) -> Result<Vec<ChildOutcome<T>>, PhaseError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}
