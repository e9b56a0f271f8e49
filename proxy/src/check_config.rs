//! `vm-proxy check-config FILE`: Envoy's `--mode validate` for vm-proxy.

use std::path::Path;
use std::process::ExitCode;

use xds_client::validate;

/// Prints one line per resource type with accepted and rejected counts, and every reason of
/// each rejected resource. Exit status 0 when everything was accepted, 1 when something was
/// rejected, 2 when the file could not be read or parsed.
pub fn run(path: &Path) -> ExitCode {
    match validate::check_file(path) {
        Ok(report) => {
            print!("{report}");
            if report.all_accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("vm-proxy check-config: {err}");
            ExitCode::from(2)
        }
    }
}
