//! Bench kinds: a parent that fans out N trivial children and sums them.
//! The benchmark harness and the end-to-end tests drive these, with knobs
//! for simulated work, sleeps and failures.

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::job::{Child, Job, PhaseError, Step};

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
}

/// Input of `bench.leaf`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafInput {
    /// The value it returns.
    pub value: u64,
    /// Milliseconds to sleep (simulated I/O).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Microseconds of busy work (simulated CPU).
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
        if input.sleep_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(input.sleep_ms)).await;
        }
        if input.work_us > 0 {
            let until = std::time::Instant::now() + std::time::Duration::from_micros(input.work_us);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
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
        }
        Ok(Step::Complete(input.value))
    }
}

/// Input of `bench.fanout`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutInput {
    /// Children to spawn; child `i` returns `i`.
    pub n: u64,
    /// Children per `ctx.spawn` call (default 1000).
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
    /// Milliseconds the spawning phase sleeps before it seals the fan-out.
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
                let batch = input.batch.unwrap_or(1000).max(1);
                // Resume after the last confirmed batch if this phase ran before.
                let mut next: u64 = ctx.state()?.unwrap_or(0);
                while next < input.n {
                    let end = (next + batch).min(input.n);
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
                    ctx.progress(next, input.n, "spawning");
                }
                if input.pause_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(input.pause_ms)).await;
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
