//! The `vm-proxy` command line.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use iptables::args::{CaptureArgs, Host, SystemHost};
use iptables::error::ConfigError as CaptureConfigError;
use xds_client::ads::Transport;
use xds_client::istio::{VmEnv, VmPaths, source_env_files};

use crate::identity::Provisioning;
use crate::istiod_xds::IstiodXds;
use crate::metrics::Metrics;
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
    Run(Box<RunArgs>),
    /// Install, check or remove the traffic capture rules, with istio-iptables' flags and
    /// environment variables (iptables, or native nftables with --native-nftables).
    Capture(Box<CaptureCommand>),
    /// Check an Envoy bootstrap or `/config_dump` JSON the way `vm-proxy run` and its xDS
    /// client would decode it (like `envoy --mode validate`): exit 0 when every resource is
    /// accepted, 1 when some are rejected, 2 when the file cannot be read.
    CheckConfig {
        /// Envoy bootstrap (YAML or JSON) or admin `/config_dump` output.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `vm-proxy capture`: istio-iptables' flags, and optionally the env files its variables
/// come from on an Istio VM.
#[derive(Debug, Args)]
pub struct CaptureCommand {
    /// Read istio-iptables' variables (ISTIO_INBOUND_PORTS, ISTIO_SERVICE_CIDR, ...) from this
    /// cluster.env as istio-start.sh sources it: over sidecar.env, over the environment.
    #[arg(long, value_name = "FILE")]
    pub cluster_env: Option<PathBuf>,
    /// The sidecar.env read below --cluster-env; skipped when absent.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster_env",
        default_value = "/var/lib/istio/envoy/sidecar.env"
    )]
    pub sidecar_env: PathBuf,
    #[command(flatten)]
    pub args: CaptureArgs,
}

impl Command {
    /// Runs the subcommand to completion.
    pub fn execute(self) -> ExitCode {
        match self {
            Command::Run(args) => run(*args),
            Command::Capture(command) => capture(*command),
            Command::CheckConfig { file } => crate::check_config::run(&file),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Envoy bootstrap file (YAML or JSON); without it the built-in loopback configuration.
    #[arg(long, value_name = "FILE", conflicts_with = "istio_vm")]
    pub config: Option<PathBuf>,
    /// How long open connections may take to finish after a shutdown starts, e.g. 5s,
    /// 500ms, 1m [default: 5s, or the mesh's terminationDrainDuration with --istio-vm].
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub drain_timeout: Option<Duration>,
    /// Log level (trace, debug, info, warning, error, critical, off) or tracing filter
    /// directives such as `info,vm_proxy::tcp_proxy=debug`. Default: RUST_LOG, else info.
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_filter)]
    pub log_level: Option<String>,
    /// Data-path worker threads; default one per CPU (Envoy's --concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Obtain and rotate a workload certificate as pilot-agent does, for the TLS transport
    /// sockets of the bootstrap (SDS secrets `default` and `ROOTCA`), configured by
    /// pilot-agent's environment variables: CA_ADDR (istiod's CA, TLS; default
    /// istiod.istio-system.svc:15012), ISTIOD_SAN, CA_ROOT_CA or PROV_CERT/root-cert.pem,
    /// JWT_POLICY (token file), ISTIO_META_CLUSTER_ID, TRUST_DOMAIN, POD_NAMESPACE,
    /// SERVICE_ACCOUNT, SECRET_TTL, OUTPUT_CERTS, FILE_MOUNTED_CERTS (use
    /// PROV_CERT/{cert-chain,key,root-cert}.pem), an SDS server on
    /// /var/run/secrets/workload-spiffe-uds/socket if one answers. Always on with
    /// --istio-vm. Listeners are bound once the first certificate is held.
    #[arg(long)]
    pub workload_identity: bool,
    #[command(flatten)]
    pub istio: IstioVmArgs,
}

/// Joining an Istio mesh from the files `istioctl x workload entry configure` writes, at
/// Istio's paths by default.
#[derive(Debug, Args)]
pub struct IstioVmArgs {
    /// Bootstrap from cluster.env, mesh config, token and root certificate instead of an
    /// Envoy bootstrap file: node id and metadata as pilot-agent sends them, ADS to
    /// istiod's discoveryAddress.
    #[arg(long)]
    pub istio_vm: bool,
    /// The cluster.env istioctl wrote.
    #[arg(
        long,
        value_name = "FILE",
        env = "ISTIO_CLUSTER_CONFIG",
        default_value = "/var/lib/istio/envoy/cluster.env"
    )]
    pub cluster_env: PathBuf,
    /// Sourced before cluster.env; skipped when absent.
    #[arg(
        long,
        value_name = "FILE",
        env = "ISTIO_SIDECAR_CONFIG",
        default_value = "/var/lib/istio/envoy/sidecar.env"
    )]
    pub sidecar_env: PathBuf,
    /// The MeshConfig (istioctl's mesh.yaml).
    #[arg(long, value_name = "FILE", default_value = "/etc/istio/config/mesh")]
    pub mesh_config: PathBuf,
    /// The service-account token for istiod and the CA (with --istio-vm or
    /// --workload-identity), re-read for every request.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub token: PathBuf,
    /// The mesh root certificate [default: $PROV_CERT/root-cert.pem, /etc/certs/root-cert.pem].
    #[arg(long, value_name = "FILE")]
    pub root_cert: Option<PathBuf>,
    /// Speak plaintext xDS to this address instead of TLS to istiod's discoveryAddress (a
    /// local or test control plane). Without it xDS goes over TLS to discoveryAddress,
    /// verified with XDS_ROOT_CA or the root certificate and ISTIOD_SAN (else the address's
    /// host), authenticated with the token, the ClusterID header and, once held, the
    /// workload certificate; plaintext there if controlPlaneAuthPolicy is NONE.
    #[arg(long, value_name = "ADDR", requires = "istio_vm")]
    pub xds_plaintext: Option<SocketAddr>,
}

impl IstioVmArgs {
    fn paths(&self) -> VmPaths {
        VmPaths {
            sidecar_env: self.sidecar_env.clone(),
            cluster_env: self.cluster_env.clone(),
            mesh_config: self.mesh_config.clone(),
            token: self.token.clone(),
            root_cert: self.root_cert.clone(),
        }
    }
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

/// The machine, with the environment as `istio-start.sh` leaves it after sourcing the env
/// files.
struct SourcedHost {
    env: VmEnv,
}

impl Host for SourcedHost {
    fn env(&self, name: &str) -> Option<OsString> {
        self.env.get(name).map(OsString::from)
    }

    fn uid_of_user(&self, name: &str) -> Option<u32> {
        SystemHost.uid_of_user(name)
    }

    fn interface_addresses(&self) -> Result<Vec<IpAddr>, CaptureConfigError> {
        SystemHost.interface_addresses()
    }

    fn resolv_conf(&self) -> std::io::Result<String> {
        SystemHost.resolv_conf()
    }
}

/// Runs `vm-proxy capture`: builds the rule set from flags and environment (and the env
/// files, if named), then applies, prints, reconciles or removes it.
fn capture(command: CaptureCommand) -> ExitCode {
    if let Err(code) = init_logging(None) {
        return code;
    }
    let planned = match &command.cluster_env {
        Some(cluster_env) => {
            let mut env = VmEnv::from_process();
            if let Err(e) = source_env_files(&mut env, &command.sidecar_env, cluster_env) {
                error!("capture: {e}");
                return ExitCode::from(2);
            }
            command.args.plan_on(&SourcedHost { env })
        }
        None => command.args.into_plan(),
    };
    let plan = match planned {
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
    let (loaded, vm, identity) = if args.istio.istio_vm {
        let plaintext = args.istio.xds_plaintext;
        let loaded = crate::config::load_istio_vm(&args.istio.paths())
            .map_err(|e| e.to_string())
            .and_then(|vm| {
                let identity = Provisioning::for_istio_vm(&vm).map_err(|e| e.to_string())?;
                let transport: Option<Arc<dyn Transport>> = if vm.xds_over_tls(plaintext) {
                    Some(Arc::new(
                        IstiodXds::new(&vm, &identity).map_err(|e| e.to_string())?,
                    ))
                } else {
                    None
                };
                let loaded = crate::config::istio_vm_config(&vm, plaintext, transport)
                    .map_err(|e| e.to_string())?;
                Ok((loaded, Some(vm), Some(identity)))
            });
        match loaded {
            Ok(l) => l,
            Err(e) => {
                error!("--istio-vm: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let identity = match args
            .workload_identity
            .then(|| Provisioning::from_env(&args.istio.token))
        {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                error!("--workload-identity: {e}");
                return ExitCode::FAILURE;
            }
        };
        match crate::config::load(args.config.as_deref()) {
            Ok(l) => (l, None, identity),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    };
    // Flags first, then the mesh's ProxyConfig, then vm-proxy's defaults.
    let drain_timeout = args
        .drain_timeout
        .or(vm.as_ref().map(|v| v.drain_duration))
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let concurrency = args.concurrency.or(vm.as_ref().and_then(|v| v.concurrency));
    let options = Options {
        drain_timeout,
        worker_threads: concurrency.map(usize::from),
        metrics: Arc::new(Metrics::new(loaded.local_workload.clone())),
        ..Options::default()
    };
    match Proxy::run_following(
        loaded.snapshot,
        loaded.config_dump,
        options,
        loaded.ads,
        identity,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Istio's terminationDrainDuration default.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
            Command::Run(args) => Ok(*args),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn run_defaults() {
        let a = run_args(&["vm-proxy", "run"]).unwrap();
        assert_eq!(a.config, None);
        assert_eq!(a.drain_timeout, None);
        assert!(!a.istio.istio_vm);
        assert_eq!(a.istio.paths(), VmPaths::default());
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
        assert_eq!(a.drain_timeout, Some(Duration::from_secs(90)));
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
        assert_eq!(a.cluster_env, None);
        let plan = a.args.into_plan().unwrap();
        assert_eq!(plan.mode, iptables::plan::Mode::DryRun);
    }

    fn fixture(name: &str) -> String {
        format!(
            "{}/../xds-client/testdata/istioctl/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn istio_vm_flags() {
        let a = run_args(&[
            "vm-proxy",
            "run",
            "--istio-vm",
            "--cluster-env",
            "/tmp/c.env",
            "--sidecar-env",
            "/tmp/s.env",
            "--mesh-config",
            "/tmp/mesh",
            "--token",
            "/tmp/token",
            "--root-cert",
            "/tmp/root.pem",
            "--xds-plaintext",
            "127.0.0.1:15010",
        ])
        .unwrap();
        assert!(a.istio.istio_vm);
        assert_eq!(
            a.istio.paths(),
            VmPaths {
                sidecar_env: "/tmp/s.env".into(),
                cluster_env: "/tmp/c.env".into(),
                mesh_config: "/tmp/mesh".into(),
                token: "/tmp/token".into(),
                root_cert: Some("/tmp/root.pem".into()),
            }
        );
        assert_eq!(
            a.istio.xds_plaintext,
            Some("127.0.0.1:15010".parse().unwrap())
        );

        let e = run_args(&["vm-proxy", "run", "--xds-plaintext", "127.0.0.1:1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--istio-vm"), "{e}");
        let e = run_args(&["vm-proxy", "run", "--istio-vm", "--config", "b.yaml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--config") && e.contains("--istio-vm"), "{e}");
        let e = run_args(&[
            "vm-proxy",
            "run",
            "--istio-vm",
            "--xds-plaintext",
            "istiod:15010",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--xds-plaintext"), "{e}");
    }

    #[test]
    fn capture_reads_istio_iptables_variables_from_cluster_env() {
        let cluster_env = fixture("cluster.env");
        let Command::Capture(a) = Cli::try_parse_from([
            "vm-proxy",
            "capture",
            "--cluster-env",
            &cluster_env,
            "--sidecar-env",
            "/nonexistent/sidecar.env",
        ])
        .unwrap()
        .command
        else {
            panic!("expected capture");
        };
        let mut env = VmEnv::from_vars([("ISTIO_INBOUND_PORTS".to_string(), "1".to_string())]);
        source_env_files(&mut env, &a.sidecar_env, a.cluster_env.as_deref().unwrap()).unwrap();
        let config = a.args.config_on(&SourcedHost { env }).unwrap();
        assert_eq!(
            config.inbound_ports,
            iptables::config::InboundPorts::Only(vec![8080, 9090]),
            "cluster.env wins over the environment"
        );
        assert!(config.redirect_dns, "ISTIO_META_DNS_CAPTURE='true'");

        let e = Cli::try_parse_from(["vm-proxy", "capture", "--sidecar-env", "/x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster-env"), "{e}");
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
