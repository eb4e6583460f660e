//! `tributary-coordinator`: parses settings, starts logging, runs until
//! SIGTERM or Ctrl-C.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = tributary_coordinator::Settings::parse();
    tributary_common::telemetry::init("tributary-coordinator");
    tributary_coordinator::serve(settings).await
}
