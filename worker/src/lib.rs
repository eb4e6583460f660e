//! The Tributary worker SDK and runtime.
//!
//! A job kind is a type implementing [`Job`]: a stable `KIND` name, typed
//! `Input` and `Output`, and a handler that runs one named phase and returns
//! a [`Step`]: complete, go to another phase, or spawn children and resume
//! at a phase once they are all terminal. Register kinds in a [`Registry`]
//! and run a [`Worker`]; it needs only the broker (and the coordinator's
//! HTTP API to page through children results), never database credentials.
//!
//! # Layout
//! - [`job`]: the [`Job`] trait, [`Step`], [`Child`] and [`PhaseError`].
//! - [`context`]: [`Context`], what a phase sees (checkpoint, spawn,
//!   progress, logs, children results).
//! - [`registry`]: kinds by name.
//! - [`identity`]: who this worker is (`pid-rand@host`), sent with `Started`.
//! - [`worker`]: the runtime (consume, execute, report, ack; graceful stop).
//! - [`reporter`]: coalesces report items into confirmed messages.
//! - `stops.rs`: stop orders from coordinators (cancelled or held
//!   executions), checked before a task runs and while it runs.
//! - [`kinds`]: the built-in demo and bench kinds the binary serves.
//! - [`settings`]: the binary's configuration.
//! - [`testing`]: unit-testing a [`Job`]: run one phase in process with
//!   supplied children results and collect what it did ([`testing::PhaseTest`]).

pub mod context;
pub mod identity;
pub mod job;
pub mod kinds;
pub mod registry;
pub mod reporter;
pub mod settings;
mod stops;
pub mod testing;
pub mod worker;

pub use context::{ChildOutcome, ChildResults, Context};
pub use job::{Child, Job, PhaseError, Step};
pub use registry::Registry;
pub use worker::{Worker, WorkerSettings};

/// The README, so that its Rust examples ("Writing a job") are doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
