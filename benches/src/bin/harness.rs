//! `harness`: vm-proxy against direct, haproxy and nginx, in network namespaces, one command.
//! See benches/README.md.

#[path = "../harness/mod.rs"]
mod harness;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let opts = harness::options::Options::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match harness::main(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::FAILURE
        }
    }
}
