//! Logging setup: one `init` every binary calls first.

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `TRIBUTARY_LOG` (then `RUST_LOG`), default
/// `info`. Safe to call twice (the second call does nothing).
pub fn init(service: &str) {
    let filter = std::env::var("TRIBUTARY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,lapin=warn,sqlx=warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    tracing::debug!(service, "telemetry started");
}
