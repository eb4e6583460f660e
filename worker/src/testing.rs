//! Unit-testing a [`Job`]: run one phase in process, with no broker and no
//! coordinator, and look at everything it did.
//!
//! ```text
//!  PhaseTest ──► Context ──► Job::run(phase) ──► PhaseRun
//!    input          │  spawn, checkpoint,          result (Step or PhaseError)
//!    phase          │  progress, log ──► collector  children, checkpoints,
//!    children ──────┘  (results read from memory)   progress, logs
//! ```
//!
//! A phase runs as the worker runs it: the entry phase `"start"` resolves
//! to [`Job::START`], [`Job::TIMEOUT`] applies, children returned in
//! [`Step::Spawn`] are spawned after those of [`Context::spawn`] (in the
//! same numbered batches, with the same size checks), and an output that
//! does not serialize fails the phase permanently. Every confirmed report
//! (spawn, checkpoint) succeeds at once. Two differences, both for the
//! test's sake: the input is handed over typed (the worker decodes it from
//! MessagePack), and a panic in the phase is not caught (the worker would
//! retry it): it fails the test where it happened.
//!
//! For a phase after a fan-in, supply the children's endings with
//! [`PhaseTest::children`]: [`Context::children`] pages them from memory
//! and [`Context::children_counts`] counts them.
//!
//! ```
//! use tributary_worker::testing::{ChildEnd, PhaseTest, run_phase};
//! use tributary_worker::{Child, Context, Job, PhaseError, Step};
//!
//! /// Squares each number in a child job, then adds the squares up.
//! struct SumOfSquares;
//!
//! impl Job for SumOfSquares {
//!     const KIND: &'static str = "example.sum_of_squares";
//!     type Input = Vec<u64>;
//!     type Output = u64;
//!
//!     async fn run(&self, phase: &str, input: Vec<u64>, ctx: &mut Context) -> Result<Step<u64>, PhaseError> {
//!         match phase {
//!             "start" => {
//!                 let children = input.iter().map(|n| Child::of_kind("example.square", n));
//!                 Ok(Step::spawn(children.collect::<Result<_, _>>()?, "add"))
//!             }
//!             "add" => {
//!                 let mut sum = 0;
//!                 for child in ctx.children::<u64>().collect().await? {
//!                     sum += child.result.map_err(PhaseError::permanent)?;
//!                 }
//!                 Ok(Step::Complete(sum))
//!             }
//!             other => Err(PhaseError::permanent(format!("no phase {other}"))),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().expect("a runtime").block_on(async {
//! let run = run_phase(&SumOfSquares, "start", vec![2, 3]).await;
//! assert_eq!(run.next_phase(), Some("add"));
//! assert_eq!(run.children[1].kind, "example.square");
//! assert_eq!(run.children[1].input::<u64>().expect("a number"), 3);
//!
//! let run = PhaseTest::new(&SumOfSquares, vec![2, 3])
//!     .phase("add")
//!     .children([ChildEnd::completed(4u64), ChildEnd::completed(9u64)])
//!     .run()
//!     .await;
//! assert_eq!(run.output(), Some(&13));
//!
//! let run = PhaseTest::new(&SumOfSquares, vec![2, 3])
//!     .phase("add")
//!     .children([ChildEnd::completed(4u64), ChildEnd::failed("out of range")])
//!     .run()
//!     .await;
//! assert_eq!(run.error().map(PhaseError::message), Some("out of range"));
//! # });
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use tributary_common::job::{ChildCounts, DispatchToken, ENTRY_PHASE, JobId, JobOptions};
use tributary_common::wire::{self, ChildResult, ReportItem, Task, WireError};
use uuid::Uuid;

use crate::context::{self, ChildSource, Context};
use crate::job::{Job, PhaseError, Step};
use crate::reporter::Reporter;

/// The phase number a test's fan-out had; the phase after it is the next.
const FANOUT_SEQ: u32 = 1;
/// Results per page, as the coordinator's API answers by default.
const DEFAULT_PAGE: usize = 5000;

/// Runs `phase` of `job` on `input` (first attempt, no checkpoint, not
/// after a fan-in). [`PhaseTest`] sets the rest.
pub async fn run_phase<J: Job>(job: &J, phase: &str, input: J::Input) -> PhaseRun<J::Output> {
    PhaseTest::new(job, input).phase(phase).run().await
}

/// One phase execution to run in a test: a builder, ended by
/// [`PhaseTest::run`].
#[must_use = "a PhaseTest does nothing until `run().await`"]
pub struct PhaseTest<'a, J: Job> {
    job: &'a J,
    input: J::Input,
    phase: String,
    job_id: JobId,
    parent_id: Option<JobId>,
    attempt: u32,
    /// The raw checkpoint, as the coordinator would hand it back.
    state: Option<ByteBuf>,
    /// The children's endings, when the phase runs after a fan-in.
    children: Option<Vec<ChildResult>>,
    page: usize,
    cancel: CancellationToken,
}

impl<'a, J: Job> PhaseTest<'a, J> {
    /// The entry phase ([`Job::START`]) of `job` on `input`: first attempt,
    /// no checkpoint, not after a fan-in.
    pub fn new(job: &'a J, input: J::Input) -> Self {
        Self {
            job,
            input,
            phase: J::START.to_owned(),
            job_id: Uuid::now_v7(),
            parent_id: None,
            attempt: 1,
            state: None,
            children: None,
            page: DEFAULT_PAGE,
            cancel: CancellationToken::new(),
        }
    }

    /// Runs this phase (`"start"` means [`Job::START`], as for the worker).
    pub fn phase(mut self, phase: impl Into<String>) -> Self {
        self.phase = phase.into();
        self
    }

    /// Which execution this is (1, the default, for the first); see
    /// [`Context::attempt`].
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The job's id (a fresh one by default).
    pub fn job_id(mut self, id: JobId) -> Self {
        self.job_id = id;
        self
    }

    /// Runs as a child of `parent` ([`Context::parent_id`]), taken as the
    /// root of the tree; without it the job is its own root.
    pub fn parent_id(mut self, parent: JobId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Resumes from `state`, as if an earlier execution of this phase had
    /// called [`Context::checkpoint`] with it (having spawned nothing); see
    /// [`Context::state`].
    ///
    /// # Panics
    /// If `state` does not serialize to MessagePack.
    pub fn state<S: Serialize>(mut self, state: &S) -> Self {
        let checkpoint = context::Checkpoint {
            batch: 0,
            spawned: 0,
            user: Some(wire::to_payload(state).expect("the test's state serializes")),
        };
        self.state = Some(wire::to_payload(&checkpoint).expect("a checkpoint serializes"));
        self
    }

    /// Resumes from a checkpoint an earlier run saved, spawn position
    /// included: the batches this execution spawns are numbered on from it.
    pub fn resume_from(mut self, checkpoint: &Checkpoint) -> Self {
        self.state = Some(checkpoint.raw.clone());
        self
    }

    /// Runs as the phase after a fan-in whose children ended like this, in
    /// spawn order (indices 0, 1, ...): [`Context::children`] pages them
    /// and [`Context::children_counts`] counts them.
    pub fn children(mut self, children: impl IntoIterator<Item = ChildEnd>) -> Self {
        let results = children
            .into_iter()
            .enumerate()
            .map(|(index, end)| ChildResult {
                id: Uuid::now_v7(),
                index: index as u64,
                status: end.status.to_owned(),
                output: end.output,
                error: end.error,
            })
            .collect();
        self.children = Some(results);
        self
    }

    /// Children results per page (default 5000, the coordinator's), to
    /// exercise a phase's paging with few children.
    ///
    /// # Panics
    /// If `page` is 0.
    pub fn page_size(mut self, page: usize) -> Self {
        assert!(page > 0, "a page holds at least one result");
        self.page = page;
        self
    }

    /// Runs with [`Context::is_cancelled`] already true, as when the worker
    /// is shutting down.
    pub fn cancelled(self) -> Self {
        self.cancel.cancel();
        self
    }

    /// [`Context::is_cancelled`] turns true when `token` is cancelled: keep
    /// a clone and cancel it while the phase runs.
    pub fn cancel_with(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Runs the phase to its end and collects what it did.
    pub async fn run(self) -> PhaseRun<J::Output> {
        let phase = if self.phase == ENTRY_PHASE {
            J::START.to_owned()
        } else {
            self.phase
        };
        let counts = self.children.as_ref().map(|results| count(results));
        let fan_in = self.children.is_some();
        let task = Task {
            token: DispatchToken {
                job_id: self.job_id,
                seq: if fan_in { FANOUT_SEQ + 1 } else { 1 },
                attempt: self.attempt,
                nonce: 0,
            },
            kind: J::KIND.to_owned(),
            phase: phase.clone(),
            root_id: self.parent_id.unwrap_or(self.job_id),
            parent_id: self.parent_id,
            input: ByteBuf::new(),
            state: self.state,
            children: counts,
            fanout_seq: fan_in.then_some(FANOUT_SEQ),
        };
        let source = ChildSource::Memory {
            results: self.children.unwrap_or_default().into(),
            page: self.page,
        };
        let (reporter, collector) = Reporter::collecting();
        // The client is never used: children results come from memory.
        let mut ctx = Context::new(
            task,
            reporter,
            reqwest::Client::new(),
            String::new(),
            self.cancel,
        )
        .with_source(source);

        let result = match tokio::time::timeout(
            J::TIMEOUT,
            self.job.run(&phase, self.input, &mut ctx),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(PhaseError::retryable(format!(
                "phase timed out after {:?}",
                J::TIMEOUT
            ))),
        };
        // What the worker does with the step before it reports the outcome.
        let result = match result {
            Ok(Step::Complete(output)) => match wire::to_payload(&output) {
                Ok(_) => Ok(Step::Complete(output)),
                Err(e) => Err(PhaseError::permanent(format!("output: {e}"))),
            },
            Ok(Step::Spawn { children, then }) => ctx
                .spawn(children.clone())
                .await
                .map(|()| Step::Spawn { children, then }),
            other => other,
        };
        drop(ctx);
        let items = collector
            .await
            .expect("the test reporter's collector does not panic");
        PhaseRun::collect(result, items)
    }
}

/// How one child of a fan-in ended, as a test supplies it.
#[derive(Debug, Clone)]
pub struct ChildEnd {
    status: &'static str,
    output: Option<ByteBuf>,
    error: Option<String>,
}

impl ChildEnd {
    /// The child completed with `output`.
    ///
    /// # Panics
    /// If `output` does not serialize to MessagePack.
    pub fn completed(output: impl Serialize) -> Self {
        Self {
            status: "completed",
            output: Some(wire::to_payload(&output).expect("the child's output serializes")),
            error: None,
        }
    }

    /// The child failed (after its retries) with `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: "failed",
            output: None,
            error: Some(error.into()),
        }
    }

    /// The child was cancelled.
    pub fn cancelled() -> Self {
        Self {
            status: "cancelled",
            output: None,
            error: None,
        }
    }
}

/// Counts the endings as the coordinator would.
fn count(results: &[ChildResult]) -> ChildCounts {
    let mut counts = ChildCounts {
        total: results.len() as u64,
        ..ChildCounts::default()
    };
    for r in results {
        match r.status.as_str() {
            "completed" => counts.completed += 1,
            "cancelled" => counts.cancelled += 1,
            _ => counts.failed += 1,
        }
    }
    counts
}

/// What one phase execution did.
#[derive(Debug)]
pub struct PhaseRun<O> {
    /// What the phase returned: its step, or its error (a failed spawn of
    /// [`Step::Spawn`]'s children, or an output that does not serialize,
    /// included).
    pub result: Result<Step<O>, PhaseError>,
    /// Every child spawned, in spawn order: the [`Context::spawn`] batches,
    /// then the children of [`Step::Spawn`].
    pub children: Vec<SpawnedChild>,
    /// Every checkpoint saved, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Every progress report, in order.
    pub progress: Vec<Progress>,
    /// Every log line, in order.
    pub logs: Vec<LogLine>,
}

impl<O> PhaseRun<O> {
    fn collect(result: Result<Step<O>, PhaseError>, items: Vec<ReportItem>) -> Self {
        let mut run = Self {
            result,
            children: Vec::new(),
            checkpoints: Vec::new(),
            progress: Vec::new(),
            logs: Vec::new(),
        };
        for item in items {
            match item {
                ReportItem::Spawned {
                    batch,
                    first_index,
                    children,
                    ..
                } => run
                    .children
                    .extend(
                        children
                            .into_iter()
                            .zip(first_index..)
                            .map(|(spec, index)| SpawnedChild {
                                index,
                                batch,
                                kind: spec.kind,
                                options: spec.options,
                                input: spec.input,
                            }),
                    ),
                ReportItem::Checkpoint { state, .. } => {
                    run.checkpoints.push(Checkpoint { raw: state });
                }
                ReportItem::Progress {
                    done,
                    total,
                    message,
                    ..
                } => run.progress.push(Progress {
                    done,
                    total,
                    message,
                }),
                ReportItem::Log { level, message, .. } => run.logs.push(LogLine { level, message }),
                // A phase cannot report anything else through its context.
                _ => {}
            }
        }
        run
    }

    /// The output, if the phase completed the job.
    pub fn output(&self) -> Option<&O> {
        match &self.result {
            Ok(Step::Complete(output)) => Some(output),
            _ => None,
        }
    }

    /// The error, if the phase failed.
    pub fn error(&self) -> Option<&PhaseError> {
        self.result.as_ref().err()
    }

    /// The phase that runs next: after [`Step::Next`] at once, after
    /// [`Step::Spawn`] or [`Step::Wait`] once the children are terminal.
    pub fn next_phase(&self) -> Option<&str> {
        match &self.result {
            Ok(
                Step::Next(phase) | Step::Spawn { then: phase, .. } | Step::Wait { then: phase },
            ) => Some(phase),
            _ => None,
        }
    }

    /// The last checkpoint saved, to resume a re-run from
    /// ([`PhaseTest::resume_from`]).
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoints.last()
    }
}

/// A child a phase spawned.
#[derive(Debug, Clone)]
pub struct SpawnedChild {
    /// Its spawn index (from 0 across the phase's batches).
    pub index: u64,
    /// The spawn batch it went in (numbered from 0 within the phase).
    pub batch: u32,
    /// Its job kind.
    pub kind: String,
    /// Its options, if the phase set any.
    pub options: Option<JobOptions>,
    input: ByteBuf,
}

impl SpawnedChild {
    /// Its input, decoded as the child's kind will decode it.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        wire::from_payload(&self.input)
    }
}

/// A checkpoint a phase saved with [`Context::checkpoint`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// As the coordinator would store it: the state and the spawn position.
    raw: ByteBuf,
}

impl Checkpoint {
    /// The state saved, decoded.
    pub fn state<S: DeserializeOwned>(&self) -> Result<S, WireError> {
        let checkpoint: context::Checkpoint = wire::from_payload(&self.raw)?;
        let user = checkpoint.user.unwrap_or_default();
        wire::from_payload(&user)
    }

    /// Children the phase had spawned when it saved this.
    pub fn spawned(&self) -> u64 {
        wire::from_payload::<context::Checkpoint>(&self.raw).map_or(0, |c| c.spawned)
    }
}

/// A progress report ([`Context::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// What is going on.
    pub message: String,
}

/// A log line ([`Context::log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::job::Child;
    use crate::kinds::bench::{FailMode, FanOut, FanOutInput, Leaf, LeafInput, MAX_CHILDREN};

    fn fanout(n: u64, batch: u64) -> FanOutInput {
        FanOutInput {
            n,
            batch: Some(batch),
            ..FanOutInput::default()
        }
    }

    fn leaf(value: u64) -> Result<Child, PhaseError> {
        Child::new::<Leaf>(&LeafInput {
            value,
            ..LeafInput::default()
        })
    }

    /// A kind with a phase for each behaviour of the kit under test.
    struct Probe;

    impl Job for Probe {
        const KIND: &'static str = "test.probe";
        const START: &'static str = "begin";
        const TIMEOUT: Duration = Duration::from_millis(200);
        type Input = u64;
        type Output = String;

        async fn run(
            &self,
            phase: &str,
            input: u64,
            ctx: &mut Context,
        ) -> Result<Step<String>, PhaseError> {
            match phase {
                "begin" => {
                    ctx.log("info", format!("spawning from {input}"));
                    ctx.spawn(vec![leaf(input)?]).await?;
                    Ok(Step::spawn(vec![leaf(input + 1)?, leaf(input + 2)?], "end"))
                }
                "until_cancelled" => {
                    while !ctx.is_cancelled() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(PhaseError::retryable(
                        "stopped: the worker is shutting down",
                    ))
                }
                "hang" => {
                    std::future::pending::<()>().await;
                    Ok(Step::next("never"))
                }
                "ids" => Ok(Step::Complete(format!(
                    "{} {} {:?} {}",
                    ctx.job_id(),
                    ctx.root_id(),
                    ctx.parent_id(),
                    ctx.attempt()
                ))),
                "counts" => Ok(Step::Complete(format!("{:?}", ctx.children_counts()))),
                other => Err(PhaseError::permanent(format!("no phase {other}"))),
            }
        }
    }

    #[tokio::test]
    async fn start_spawns_every_child_in_batches_and_waits_for_them() {
        let run = run_phase(&FanOut, "start", fanout(5, 2)).await;

        assert!(
            matches!(&run.result, Ok(Step::Wait { then }) if then == "sum"),
            "{:?}",
            run.result
        );
        assert_eq!(run.next_phase(), Some("sum"));
        let spawned: Vec<_> = run.children.iter().map(|c| (c.index, c.batch)).collect();
        assert_eq!(spawned, [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2)]);
        for child in &run.children {
            assert_eq!(child.kind, "bench.leaf");
            assert_eq!(child.options, None);
            let input: LeafInput = child.input().expect("a leaf input");
            assert_eq!(input.value, child.index);
            assert_eq!(input.fail, FailMode::Never);
        }
        let states: Vec<u64> = run
            .checkpoints
            .iter()
            .map(|c| c.state().expect("a count"))
            .collect();
        assert_eq!(states, [2, 4, 5]);
        let spawned_at: Vec<u64> = run.checkpoints.iter().map(Checkpoint::spawned).collect();
        assert_eq!(spawned_at, [2, 4, 5]);
        let progress: Vec<_> = run.progress.iter().map(|p| (p.done, p.total)).collect();
        assert_eq!(progress, [(2, 5), (4, 5), (5, 5)]);
        assert!(run.logs.is_empty());
    }

    #[tokio::test]
    async fn the_entry_phase_resolves_to_the_kinds_start() {
        let by_alias = run_phase(&FanOut, "start", fanout(1, 1)).await;
        let by_default = PhaseTest::new(&FanOut, fanout(1, 1)).run().await;
        assert_eq!(by_alias.next_phase(), Some("sum"));
        assert_eq!(by_default.children.len(), 1);

        let probe = PhaseTest::new(&Probe, 7).phase("start").run().await;
        assert_eq!(probe.next_phase(), Some("end"), "{:?}", probe.result);
    }

    #[tokio::test]
    async fn sum_adds_the_supplied_children_and_counts_failures() {
        let mut children: Vec<ChildEnd> = (0..10u64).map(ChildEnd::completed).collect();
        children.push(ChildEnd::failed("leaf 10 failed for good"));
        children.push(ChildEnd::cancelled());

        let run = PhaseTest::new(&FanOut, fanout(12, 5))
            .phase("sum")
            .children(children)
            .run()
            .await;

        let output = run.output().expect("sum completes");
        assert_eq!(output.sum, 45);
        assert_eq!(output.completed, 10);
        assert_eq!(output.failed, 2);
        assert_eq!(output.counted, (12, 10, 1));
        assert!(run.children.is_empty());
    }

    #[tokio::test]
    async fn children_results_page_from_memory_at_the_size_asked() {
        let children = || (1..=7u64).map(ChildEnd::completed);
        for page in [1, 2, 3, 7, 100] {
            let run = PhaseTest::new(&FanOut, fanout(7, 1))
                .phase("sum")
                .children(children())
                .page_size(page)
                .run()
                .await;
            let output = run.output().expect("sum completes");
            assert_eq!((output.sum, output.completed), (28, 7), "page size {page}");
        }
    }

    #[tokio::test]
    async fn children_counts_are_there_only_after_a_fan_in() {
        let before = run_phase(&Probe, "counts", 0).await;
        assert_eq!(before.output().map(String::as_str), Some("None"));

        let after = PhaseTest::new(&Probe, 0)
            .phase("counts")
            .children([
                ChildEnd::completed(1u64),
                ChildEnd::failed("no"),
                ChildEnd::cancelled(),
            ])
            .run()
            .await;
        let expected = ChildCounts {
            total: 3,
            completed: 1,
            failed: 1,
            cancelled: 1,
        };
        assert_eq!(after.output(), Some(&format!("{:?}", Some(expected))));

        let empty = PhaseTest::new(&FanOut, fanout(0, 1))
            .phase("sum")
            .children([])
            .run()
            .await;
        assert_eq!(empty.output().map(|o| o.counted), Some((0, 0, 0)));
    }

    #[tokio::test]
    async fn a_permanent_failure_surfaces_as_an_error() {
        let leaf = LeafInput {
            value: 3,
            fail: FailMode::Permanent,
            ..LeafInput::default()
        };
        let run = run_phase(&Leaf, "start", leaf).await;
        let error = run.error().expect("the leaf fails");
        assert!(!error.is_retryable());
        assert_eq!(error.message(), "leaf 3 failed for good");
        assert!(run.output().is_none());

        let too_many = run_phase(&FanOut, "start", fanout(MAX_CHILDREN.max() + 1, 1)).await;
        let error = too_many.error().expect("over the cap");
        assert!(!error.is_retryable());
        assert!(error.message().contains("bench.fanout n"), "{error}");
        assert!(too_many.children.is_empty());

        let unknown = run_phase(&FanOut, "nope", fanout(1, 1)).await;
        assert!(!unknown.error().expect("no such phase").is_retryable());
    }

    #[tokio::test]
    async fn the_attempt_reaches_the_phase() {
        let leaf = || LeafInput {
            value: 9,
            fail: FailMode::FirstAttempt,
            ..LeafInput::default()
        };
        let first = run_phase(&Leaf, "start", leaf()).await;
        assert!(
            first
                .error()
                .expect("the first attempt fails")
                .is_retryable()
        );
        let second = PhaseTest::new(&Leaf, leaf()).attempt(2).run().await;
        assert_eq!(second.output(), Some(&9));
    }

    #[tokio::test]
    async fn a_resumed_phase_spawns_the_rest_with_the_same_numbering() {
        let first = run_phase(&FanOut, "start", fanout(5, 2)).await;
        let after_one_batch = &first.checkpoints[0];

        let resumed = PhaseTest::new(&FanOut, fanout(5, 2))
            .attempt(2)
            .resume_from(after_one_batch)
            .run()
            .await;
        let spawned: Vec<_> = resumed
            .children
            .iter()
            .map(|c| (c.index, c.batch))
            .collect();
        assert_eq!(spawned, [(2, 1), (3, 1), (4, 2)]);
        assert_eq!(resumed.last_checkpoint().map(Checkpoint::spawned), Some(5));

        // A bare state has no spawn position: numbering starts over.
        let from_state = PhaseTest::new(&FanOut, fanout(5, 2))
            .state(&4u64)
            .run()
            .await;
        let values: Vec<u64> = from_state
            .children
            .iter()
            .map(|c| c.input::<LeafInput>().expect("a leaf input").value)
            .collect();
        assert_eq!(values, [4]);
        assert_eq!(from_state.children[0].index, 0);
    }

    #[tokio::test]
    async fn step_spawn_children_come_after_the_context_spawned_ones() {
        let run = run_phase(&Probe, "begin", 10).await;

        let spawned: Vec<_> = run
            .children
            .iter()
            .map(|c| {
                (
                    c.index,
                    c.batch,
                    c.input::<LeafInput>().expect("a leaf input").value,
                )
            })
            .collect();
        assert_eq!(spawned, [(0, 0, 10), (1, 1, 11), (2, 1, 12)]);
        assert!(
            matches!(&run.result, Ok(Step::Spawn { children, then }) if children.len() == 2 && then == "end"),
            "{:?}",
            run.result
        );
        assert_eq!(
            run.logs,
            [LogLine {
                level: "info".into(),
                message: "spawning from 10".into()
            }]
        );
    }

    #[tokio::test]
    async fn cancellation_is_seen_before_and_while_the_phase_runs() {
        let before = PhaseTest::new(&Probe, 0)
            .phase("until_cancelled")
            .cancelled()
            .run()
            .await;
        assert!(before.error().expect("stops").is_retryable());

        let token = CancellationToken::new();
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                token.cancel();
            })
        };
        let during = PhaseTest::new(&Probe, 0)
            .phase("until_cancelled")
            .cancel_with(token)
            .run()
            .await;
        assert_eq!(
            during.error().map(PhaseError::message),
            Some("stopped: the worker is shutting down")
        );
        canceller.await.expect("the canceller ran");
    }

    #[tokio::test]
    async fn the_kinds_timeout_applies() {
        let run = run_phase(&Probe, "hang", 0).await;
        let error = run.error().expect("times out");
        assert!(error.is_retryable());
        assert!(error.message().contains("timed out"), "{error}");
    }

    #[tokio::test]
    async fn ids_and_attempt_are_the_tests() {
        let job = Uuid::now_v7();
        let parent = Uuid::now_v7();
        let run = PhaseTest::new(&Probe, 0)
            .phase("ids")
            .job_id(job)
            .parent_id(parent)
            .attempt(3)
            .run()
            .await;
        assert_eq!(
            run.output(),
            Some(&format!("{job} {parent} Some({parent}) 3"))
        );
    }
}
