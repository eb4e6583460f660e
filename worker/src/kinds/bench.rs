//! Bench kinds: a parent that fans out N trivial children and sums them.
//! The benchmark harness and the end-to-end tests drive these, with knobs
//! for simulated work, sleeps and failures.
//!
//! Every knob is capped ([`MAX_CHILDREN`], [`MAX_BATCH`], [`MAX_SLEEP_MS`],
//! [`MAX_WORK_US`]): a job over a cap fails permanently before it spawns
//! or sleeps. A leaf's busy work runs on the blocking pool, so it does not
//! hold up heartbeats or other phases on the worker.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::job::{Child, Job, PhaseError, Step};
use crate::kinds::cap::Cap;
use crate::kinds::run_blocking;

/// Children one `bench.fanout` may spawn.
pub const MAX_CHILDREN: Cap = Cap::new("bench.fanout n", 10_000_000);
/// Children per `ctx.spawn` call of `bench.fanout`.
pub const MAX_BATCH: Cap = Cap::new("bench.fanout batch", 10_000);
/// Milliseconds a leaf sleeps or a fan-out pauses (one hour).
pub const MAX_SLEEP_MS: Cap = Cap::new("sleep_ms and pause_ms", 3_600_000);
/// Microseconds of busy work in a leaf (ten seconds).
pub const MAX_WORK_US: Cap = Cap::new("work_us", 10_000_000);

/// How a leaf fails, for tests of retries and fan-in policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Never.
    #[default]
    Never,
    /// Its first attempt fails (retryable); the retry succeeds.
    FirstAttempt,
    /// Every attempt fails (retryable), so it fails after its retries.
    Always,
    /// Fails permanently at once.
    Permanent,
    /// Its first run fails permanently; a run after an operator's retry
    /// (a later phase number) succeeds.
    FirstRun,
}

/// Input of `bench.leaf`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafInput {
    /// The value it returns.
    pub value: u64,
    /// Milliseconds to sleep (simulated I/O; at most [`MAX_SLEEP_MS`]).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Microseconds of busy work (simulated CPU; at most [`MAX_WORK_US`]).
    #[serde(default)]
    pub work_us: u64,
    /// Failure injection.
    #[serde(default)]
    pub fail: FailMode,
}

/// `bench.leaf`: returns its value.
pub struct Leaf;

impl Job for Leaf {
    const KIND: &'static str = "bench.leaf";
    type Input = LeafInput;
    type Output = u64;

    async fn run(
        &self,
        _phase: &str,
        input: LeafInput,
        ctx: &mut Context,
    ) -> Result<Step<u64>, PhaseError> {
        let sleep_ms = MAX_SLEEP_MS.check(input.sleep_ms)?;
        let work_us = MAX_WORK_US.check(input.work_us)?;
        if sleep_ms > 0 {
            // Cooperative cancellation: a cancelled leaf stops sleeping.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = ctx.cancelled() => return Err(PhaseError::retryable("cancelled")),
            }
        }
        if work_us > 0 {
            run_blocking("busy work", move || spin(Duration::from_micros(work_us))).await?;
        }
        match input.fail {
            FailMode::Never => {}
            FailMode::FirstAttempt if ctx.attempt() > 1 => {}
            FailMode::FirstAttempt | FailMode::Always => {
                return Err(PhaseError::retryable(format!(
                    "leaf {} failed on attempt {}",
                    input.value,
                    ctx.attempt()
                )));
            }
            FailMode::Permanent => {
                return Err(PhaseError::permanent(format!(
                    "leaf {} failed for good",
                    input.value
                )));
            }
            FailMode::FirstRun if ctx.token().seq > 1 => {}
            FailMode::FirstRun => {
                return Err(PhaseError::permanent(format!(
                    "leaf {} failed on its first run",
                    input.value
                )));
            }
        }
        Ok(Step::Complete(input.value))
    }
}

/// Keeps a CPU busy for `work`.
fn spin(work: Duration) {
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Input of `bench.fanout`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutInput {
    /// Children to spawn; child `i` returns `i` (at most [`MAX_CHILDREN`]).
    pub n: u64,
    /// Children per `ctx.spawn` call (default 1000, at most [`MAX_BATCH`]).
    #[serde(default)]
    pub batch: Option<u64>,
    /// Sleep in each child.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Busy work in each child.
    #[serde(default)]
    pub work_us: u64,
    /// Children whose index is a multiple of this fail (with `fail`).
    #[serde(default)]
    pub fail_every: Option<u64>,
    /// How those children fail.
    #[serde(default)]
    pub fail: FailMode,
    /// Milliseconds the spawning phase sleeps before it seals the fan-out
    /// (at most [`MAX_SLEEP_MS`]).
    #[serde(default)]
    pub pause_ms: u64,
}

/// Output of `bench.fanout`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutOutput {
    /// Sum of the completed children's values.
    pub sum: u64,
    /// Children that completed (counted from their results).
    pub completed: u64,
    /// Children that failed (counted from their results).
    pub failed: u64,
    /// Children as the coordinator counted them: (total, completed, failed).
    pub counted: (u64, u64, u64),
}

/// `bench.fanout`: `start` spawns N leaves in batches, `sum` adds them up.
pub struct FanOut;

impl Job for FanOut {
    const KIND: &'static str = "bench.fanout";
    type Input = FanOutInput;
    type Output = FanOutOutput;

    async fn run(
        &self,
        phase: &str,
        input: FanOutInput,
        ctx: &mut Context,
    ) -> Result<Step<FanOutOutput>, PhaseError> {
        match phase {
            "start" => {
                let n = MAX_CHILDREN.check(input.n)?;
                let batch = MAX_BATCH.check(input.batch.unwrap_or(1000).max(1))?;
                let pause_ms = MAX_SLEEP_MS.check(input.pause_ms)?;
                // The children's knobs too: fail here, not in every child.
                MAX_SLEEP_MS.check(input.sleep_ms)?;
                MAX_WORK_US.check(input.work_us)?;
                // Resume after the last confirmed batch if this phase ran before.
                let mut next: u64 = ctx.state()?.unwrap_or(0);
                while next < n {
                    let end = (next + batch).min(n);
                    let children = (next..end)
                        .map(|i| {
                            let fail = match input.fail_every {
                                Some(k) if k > 0 && i % k == 0 => input.fail,
                                _ => FailMode::Never,
                            };
                            Child::new::<Leaf>(&LeafInput {
                                value: i,
                                sleep_ms: input.sleep_ms,
                                work_us: input.work_us,
                                fail,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    ctx.spawn(children).await?;
                    next = end;
                    ctx.checkpoint(&next).await?;
                    ctx.progress(next, n, "spawning");
                }
                if pause_ms > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
                        _ = ctx.cancelled() => return Err(PhaseError::retryable("cancelled")),
                    }
                }
                Ok(Step::wait("sum"))
            }
            "sum" => {
                let mut out = FanOutOutput::default();
                let mut pages = ctx.children::<u64>();
                while let Some(page) = pages.next_page().await? {
                    for child in page {
                        match child.result {
                            Ok(v) => {
                                out.sum += v;
                                out.completed += 1;
                            }
                            Err(_) => out.failed += 1,
                        }
                    }
                }
                let c = ctx.children_counts().unwrap_or_default();
                out.counted = (c.total, c.completed, c.failed);
                Ok(Step::Complete(out))
            }
            other => Err(PhaseError::permanent(format!(
                "bench.fanout has no phase {other:?}"
            ))),
        }
    }
}
