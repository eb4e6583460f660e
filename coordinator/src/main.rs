//! `tributary-coordinator`: parses settings, starts logging, runs until
//! SIGTERM or Ctrl-C. A failure to start is one line on stderr (the cause
//! chain joined) and exit status 1.

use clap::Parser;

#[tokio::main]
async fn main() {
    let settings = tributary_coordinator::Settings::parse();
    tributary_common::telemetry::init("tributary-coordinator");
    if let Err(e) = tributary_coordinator::serve(settings).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
