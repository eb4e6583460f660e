//! The kinds the `tributary-worker` binary serves: demos users run first,
//! and bench kinds the benchmark harness and the tests drive.
//!
//! Anyone who can submit a job picks their inputs, so these kinds are
//! written to be shipped: the demos read only under the demo root
//! ([`demo::ROOT_ENV`]), every number that sizes work is held to a
//! documented [`cap::Cap`], and CPU-bound work runs on tokio's blocking
//! pool so heartbeats and other phases on the worker go on.
//!
//! # Layout
//! - [`cap`]: [`cap::Cap`], the caps on submitted numbers.
//! - [`demo`]: `demo.wordcount`, `demo.wordcount.chunk`, `demo.du`.
//! - [`mod@bench`]: `bench.fanout`, `bench.leaf`.

pub mod bench;
pub mod cap;
pub mod demo;

use crate::job::PhaseError;
use crate::registry::Registry;

/// Every built-in kind.
pub fn builtin() -> Registry {
    let mut r = Registry::new();
    r.register(demo::WordCount)
        .register(demo::WordCountChunk)
        .register(demo::DiskUsage)
        .register(bench::FanOut)
        .register(bench::Leaf);
    r
}

/// Runs `work` on tokio's blocking pool, so CPU-bound or blocking work
/// does not hold a runtime thread (heartbeats, reports and other phases
/// run there). A panic in `work` is a retryable failure, as a panic in a
/// phase is.
pub(crate) async fn run_blocking<T, F>(what: &str, work: F) -> Result<T, PhaseError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PhaseError::retryable(format!("{what}: {e}")))
}
