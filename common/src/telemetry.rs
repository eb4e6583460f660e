//! Logging setup: one `init` every binary calls first.
//!
//! # No message bodies in logs
//!
//! A message body holds users' data (a task carries its job's input, a
//! report its output), so no log line may print one. Our own lines print
//! sizes, ids and routing keys. Two of lapin's do not:
//!
//! - `lapin::returned_messages` logs every message RabbitMQ returns as
//!   unroutable (a task of a kind no worker serves) at `warn`, **body
//!   included**: a 1 MiB input became a 5 MiB log line. The broker module
//!   handles the return itself (`BrokerError::Unroutable`, routing key and
//!   size only).
//! - at `trace`, lapin dumps whole frames (body frames included) and
//!   amq-protocol prints the connection URI (password included).
//!
//! So the log filter is two filters: the operator's (`TRIBUTARY_LOG`, then
//! `RUST_LOG`, default [`DEFAULT_FILTER`]) and a fixed guard after it that
//! drops every event of `lapin::returned_messages` and every `trace` event
//! of `lapin` and `amq_protocol*`, whatever the operator's filter says.
//! `TRIBUTARY_LOG=trace` (or `lapin=trace`) still shows lapin's `debug`
//! lines; it cannot turn the body dumps back on.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The filter used when neither `TRIBUTARY_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_FILTER: &str = "info,lapin=warn,sqlx=warn";

/// Logs to stderr, filtered by `TRIBUTARY_LOG` (then `RUST_LOG`), default
/// [`DEFAULT_FILTER`], with the body guard described in the module docs.
/// Safe to call twice (the second call does nothing).
pub fn init(service: &str) {
    let spec = std::env::var("TRIBUTARY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let _ = subscriber(&spec, std::io::stderr).try_init();
    tracing::debug!(service, "telemetry started");
}

/// The subscriber `init` installs: `spec` as an `EnvFilter`, then the body
/// guard, writing to `writer`.
fn subscriber<W>(spec: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let guard = filter_fn(|meta| !may_print_body(meta));
    tracing_subscriber::registry()
        .with(EnvFilter::new(spec))
        .with(
            fmt::layer()
                .with_writer(writer)
                .with_target(false)
                .with_filter(guard),
        )
}

/// Whether an event may carry a message body (or a password): see the
/// module docs. Such events are never logged.
fn may_print_body(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let within = |krate: &str| {
        target == krate
            || target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.starts_with("::") || rest.starts_with('_'))
    };
    within("lapin::returned_messages")
        || ((within("lapin") || within("amq_protocol")) && *meta.level() == Level::TRACE)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Self;
        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        }
    }

    /// Emits lapin-like events under `spec`; returns what was printed.
    fn logged(spec: &str) -> String {
        let out = Captured::default();
        tracing::subscriber::with_default(subscriber(spec, out.clone()), || {
            tracing::warn!(target: "lapin::returned_messages", message = "BODY-1", "Server returned us a message");
            tracing::error!(target: "lapin::returned_messages", "BODY-2");
            tracing::trace!(target: "lapin::channels", frame = "BODY-3", "will handle frame");
            tracing::trace!(target: "lapin", "BODY-4");
            tracing::trace!(target: "amq_protocol_tcp", uri = "amqp://u:BODY-5@h", "Connecting.");
            tracing::debug!(target: "lapin::channels", "received heartbeat from server");
            tracing::warn!(target: "lapin::channel", "kept: lapin warning");
            tracing::info!(target: "tributary_coordinator::api", "kept: our line");
            tracing::trace!(target: "lapinsky", "kept: not lapin");
        });
        out.text()
    }

    #[test]
    fn bodies_are_never_logged_whatever_the_filter() {
        for spec in [
            DEFAULT_FILTER,
            "trace",
            "lapin=trace",
            "lapin::returned_messages=trace,lapin::channels=trace,amq_protocol_tcp=trace",
            "off,lapin[{message}]=trace",
        ] {
            let text = logged(spec);
            assert!(
                !text.contains("BODY"),
                "{spec:?} let a body through:\n{text}"
            );
        }
    }

    #[test]
    fn the_guard_keeps_everything_else() {
        let text = logged("trace");
        assert!(text.contains("received heartbeat"), "{text}");
        assert!(text.contains("kept: lapin warning"), "{text}");
        assert!(text.contains("kept: our line"), "{text}");
        assert!(text.contains("kept: not lapin"), "{text}");
        let text = logged(DEFAULT_FILTER);
        assert!(text.contains("kept: lapin warning"), "{text}");
        assert!(text.contains("kept: our line"), "{text}");
        assert!(!text.contains("received heartbeat"), "{text}");
    }
}
