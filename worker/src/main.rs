//! `tributary-worker`: serves the built-in demo and bench kinds until SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = tributary_worker::settings::Settings::parse();
    tributary_worker::settings::serve(settings).await
}
