use std::process::ExitCode;

use clap::Parser;
use vm_proxy::cli::Cli;

fn main() -> ExitCode {
    Cli::parse().command.execute()
}
