//! Tributary's shared domain: the pieces the coordinator, the worker SDK and
//! the CLI must agree on.
//!
//! ```text
//!  submit ──► coordinator ──Task──► RabbitMQ ──► worker (runs one phase)
//!                 ▲                                  │
//!                 └──────── Report (outcomes) ◄──────┘
//! ```
//!
//! # Layout
//! - [`job`]: job ids, dispatch tokens, child counts and submission options.
//! - [`status`]: the job and phase state machines (pure, table-tested).
//! - [`fanin`]: the per-parent error-tolerance policy and the fan-in rule.
//! - [`limits`]: caps and sanitising for everything that arrives from outside.
//! - [`retry`]: retry policy (attempts, exponential backoff with jitter).
//! - [`wire`]: the versioned MessagePack messages and their one codec.
//! - [`topology`]: names of every queue and exchange under a namespace.
//! - [`broker`] (feature `broker`): connecting with retry, declaring the
//!   topology, publishing with confirms.
//! - [`config`]: connection settings shared by every binary, with masking.
//! - [`shutdown`] (feature `broker`): SIGTERM / Ctrl-C into a cancellation token.
//! - [`token`] (feature `token`): bearer tokens from configuration, never shown.
//! - [`telemetry`]: the one `init` that sets up logging (and keeps message
//!   bodies out of it).
//! - [`tls`] (feature `http`): the HTTP client of the worker and the CLI,
//!   `https://` with the system's roots plus `TRIBUTARY_CA_FILE`.

#[cfg(feature = "broker")]
pub mod broker;
pub mod config;
pub mod fanin;
pub mod job;
pub mod limits;
pub mod retry;
#[cfg(feature = "broker")]
pub mod shutdown;
pub mod status;
pub mod telemetry;
#[cfg(feature = "http")]
pub mod tls;
#[cfg(feature = "token")]
pub mod token;
pub mod topology;
pub mod wire;
