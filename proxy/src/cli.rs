//! The `vm-proxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::options::Options;
use crate::proxy::Proxy;

/// One binary replacing Envoy, pilot-agent and istio-iptables on VMs in an Istio mesh.
#[derive(Debug, Parser)]
#[command(name = "vm-proxy", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy until SIGTERM/SIGINT or POST /quitquitquit, then drain and exit.
    Run(RunArgs),
    /// Install, check or remove the traffic capture rules, with istio-iptables' flags and
    /// environment variables (iptables, or native nftables with --native-nftables).
    Capture(Box<iptables::args::CaptureArgs>),
    /// Check an Envoy bootstrap or `/config_dump` JSON the way `vm-proxy run` and its xDS
    /// client would decode it (like `envoy --mode validate`): exit 0 when every resource is
    /// accepted, 1 when some are rejected, 2 when the file cannot be read.
    CheckConfig {
        /// Envoy bootstrap (YAML or JSON) or admin `/config_dump` output.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

impl Command {
    /// Runs the subcommand to completion.
    pub fn execute(self) -> ExitCode {
        match self {
            Command::Run(args) => run(args),
            Command::Capture(args) => capture(*args),
            Command::CheckConfig { file } => crate::check_config::run(&file),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Envoy bootstrap file (YAML or JSON); without it the built-in loopback configuration.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long open connections may take to finish after a shutdown starts (Istio's
    /// terminationDrainDuration), e.g. 5s, 500ms, 1m.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = crate::duration::parse)]
    pub drain_timeout: Duration,
    /// Log level (trace, debug, info, warning, error, critical, off) or tracing filter
    /// directives such as `info,vm_proxy::tcp_proxy=debug`. Default: RUST_LOG, else info.
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_filter)]
    pub log_level: Option<String>,
    /// Data-path worker threads; default one per CPU (Envoy's --concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
}

/// Logs go to stderr (stdout carries `capture --dry-run` output), filtered by `directives`,
/// else by RUST_LOG, else at info.
fn init_logging(directives: Option<&str>) -> Result<(), ExitCode> {
    let filter = match directives {
        Some(d) => EnvFilter::new(d),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| {
            eprintln!("vm-proxy: cannot set up logging: {e}");
            ExitCode::FAILURE
        })
}

/// Runs `vm-proxy capture`: builds the rule set from flags and environment, then applies,
/// prints, reconciles or removes it.
fn capture(args: iptables::args::CaptureArgs) -> ExitCode {
    if let Err(code) = init_logging(None) {
        return code;
    }
    let plan = match args.into_plan() {
        Ok(p) => p,
        Err(e) => {
            error!("capture: {e}");
            return ExitCode::from(2);
        }
    };
    match iptables::execute(&plan) {
        Ok(outcome) => {
            info!("capture: {outcome}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("capture: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `vm-proxy run`: logging, configuration, then the proxy until shutdown.
pub fn run(args: RunArgs) -> ExitCode {
    if let Err(code) = init_logging(args.log_level.as_deref()) {
        return code;
    }
    let loaded = match crate::config::load(args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        drain_timeout: args.drain_timeout,
        worker_threads: args.concurrency.map(usize::from),
        ..Options::default()
    };
    match Proxy::run_following(loaded.snapshot, loaded.config_dump, options, loaded.ads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Envoy's level names map to tracing levels (`warning` → warn, `critical` → error); other
/// input must be valid filter directives.
fn parse_log_filter(s: &str) -> Result<String, String> {
    let level = match s {
        "trace" | "debug" | "info" | "error" | "off" => s,
        "warning" | "warn" => "warn",
        "critical" => "error",
        _ => {
            return EnvFilter::builder()
                .parse(s)
                .map(|_| s.to_owned())
                .map_err(|e| format!("not a log level or filter: {e}"));
        }
    };
    Ok(level.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(args),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn run_defaults() {
        let a = run_args(&["vm-proxy", "run"]).unwrap();
        assert_eq!(a.config, None);
        assert_eq!(a.drain_timeout, Duration::from_secs(5));
        assert_eq!(a.log_level, None);
        assert_eq!(a.concurrency, None);
    }

    #[test]
    fn run_flags() {
        let a = run_args(&[
            "vm-proxy",
            "run",
            "--config",
            "/etc/vm-proxy/bootstrap.yaml",
            "--drain-timeout",
            "1m30s",
            "--log-level",
            "warning",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(
            a.config.as_deref(),
            Some(std::path::Path::new("/etc/vm-proxy/bootstrap.yaml"))
        );
        assert_eq!(a.drain_timeout, Duration::from_secs(90));
        assert_eq!(a.log_level.as_deref(), Some("warn"));
        assert_eq!(a.concurrency, Some(2));
        let a = run_args(&[
            "vm-proxy",
            "run",
            "--log-level",
            "info,vm_proxy::tcp_proxy=debug",
        ])
        .unwrap();
        assert_eq!(
            a.log_level.as_deref(),
            Some("info,vm_proxy::tcp_proxy=debug")
        );
        assert_eq!(
            run_args(&["vm-proxy", "run", "--log-level", "critical"])
                .unwrap()
                .log_level
                .as_deref(),
            Some("error")
        );
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = run_args(&["vm-proxy", "run", "--drain-timeout", "5"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--drain-timeout") && e.contains("missing unit"),
            "{e}"
        );
        let e = run_args(&["vm-proxy", "run", "--log-level", "loud=="])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--log-level"), "{e}");
        let e = run_args(&["vm-proxy", "run", "--concurrency", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--concurrency"), "{e}");
        assert!(run_args(&["vm-proxy", "run", "--no-such-flag"]).is_err());
    }

    #[test]
    fn capture_takes_istio_iptables_flags() {
        let Command::Capture(a) =
            Cli::try_parse_from(["vm-proxy", "capture", "-p", "15001", "-b", "*", "--dry-run"])
                .unwrap()
                .command
        else {
            panic!("expected capture");
        };
        let plan = a.into_plan().unwrap();
        assert_eq!(plan.mode, iptables::plan::Mode::DryRun);
    }

    #[test]
    fn check_config_takes_one_file() {
        let Command::CheckConfig { file } =
            Cli::try_parse_from(["vm-proxy", "check-config", "/tmp/dump.json"])
                .unwrap()
                .command
        else {
            panic!("expected check-config");
        };
        assert_eq!(file, std::path::Path::new("/tmp/dump.json"));
        let e = Cli::try_parse_from(["vm-proxy", "check-config"]).unwrap_err();
        assert!(e.to_string().contains("<FILE>"), "{e}");
    }

    #[test]
    fn capture_rejects_a_bad_flag_by_name() {
        let e = Cli::try_parse_from(["vm-proxy", "capture", "--no-such-flag"]).unwrap_err();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
