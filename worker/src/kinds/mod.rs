//! The kinds the `tributary-worker` binary serves: demos users run first,
//! and bench kinds the benchmark harness and the tests drive.

pub mod bench;
pub mod demo;

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
