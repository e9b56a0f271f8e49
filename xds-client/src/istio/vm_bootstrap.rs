//! A VM's whole bootstrap from the files `istioctl x workload entry configure` writes, the
//! way `istio-start.sh` and pilot-agent turn them into a node, a ProxyConfig and an xDS
//! connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::IstioError;
use super::environment::{Origin, VmEnv};
use super::host::Host;
use super::mesh::{AuthPolicy, ProxyConfig};
use crate::ads::Protocol;
use crate::bootstrap::{self, LoadedConfig};
use crate::node::IstioNode;

/// The Istio release whose pilot-agent vm-proxy stands in for: sent as `ISTIO_VERSION`,
/// which istiod uses to pick the forms of the config it sends.
pub const EMULATED_ISTIO_VERSION: &str = "1.31.0";

const META: &str = "ISTIO_META_";
const META_JSON: &str = "ISTIO_METAJSON_";

/// Where the files are; [`VmPaths::default`] is where Istio's VM install puts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// Optional; sourced first.
    pub sidecar_env: PathBuf,
    /// Required; sourced second, so it wins.
    pub cluster_env: PathBuf,
    /// The MeshConfig (`mesh.yaml`); a missing file means Istio's defaults, as in
    /// pilot-agent.
    pub mesh_config: PathBuf,
    /// The Kubernetes token for the CA and istiod.
    pub token: PathBuf,
    /// The mesh root certificate; `None`: `$PROV_CERT/root-cert.pem` (`/etc/certs`).
    pub root_cert: Option<PathBuf>,
}

impl Default for VmPaths {
    fn default() -> VmPaths {
        VmPaths {
            sidecar_env: "/var/lib/istio/envoy/sidecar.env".into(),
            cluster_env: "/var/lib/istio/envoy/cluster.env".into(),
            mesh_config: "/etc/istio/config/mesh".into(),
            token: "/var/run/secrets/tokens/istio-token".into(),
            root_cert: None,
        }
    }
}

/// Everything a VM proxy needs to join the mesh.
#[derive(Debug, Clone)]
pub struct VmBootstrap {
    /// istiod's xDS endpoint, `host:port` (`discoveryAddress`).
    pub discovery_address: String,
    /// The CA endpoint, `host:port` (`CA_ADDR`).
    pub ca_address: String,
    /// Whether istiod is reached over mutual TLS (`controlPlaneAuthPolicy`).
    pub auth_policy: AuthPolicy,
    pub node: IstioNode,
    /// The effective ProxyConfig.
    pub proxy_config: ProxyConfig,
    /// Where the istio-token is read from (for the CA and xDS calls).
    pub token_path: PathBuf,
    /// The root certificate that verifies istiod and the CA.
    pub root_cert_path: PathBuf,
    /// Where the proxy's admin server listens (127.0.0.1:`proxyAdminPort`).
    pub admin: SocketAddr,
    /// Delta xDS unless `ISTIO_DELTA_XDS=false`, as pilot-agent.
    pub protocol: Protocol,
    /// `terminationDrainDuration`.
    pub drain_duration: Duration,
    /// `concurrency`, when set and not 0.
    pub concurrency: Option<u16>,
    /// The environment as `istio-start.sh` leaves it for pilot-agent and istio-iptables:
    /// the process environment, then `sidecar.env`, then `cluster.env`, then its derived
    /// variables (`POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`, `CA_ADDR`, `PROXY_CONFIG`).
    pub env: VmEnv,
}

/// Sources `sidecar_env` (skipped when absent) and then `cluster_env` (required) on top of
/// `env`, as `istio-start.sh` does.
pub fn source_env_files(
    env: &mut VmEnv,
    sidecar_env: &Path,
    cluster_env: &Path,
) -> Result<(), IstioError> {
    env.source_if_present(sidecar_env)?;
    if !cluster_env.exists() {
        return Err(IstioError::MissingClusterEnv {
            path: cluster_env.to_path_buf(),
        });
    }
    env.source(cluster_env)?;
    Ok(())
}

impl VmBootstrap {
    /// Loads the files at `paths` with this process's environment and this machine's name
    /// and addresses.
    pub fn load(paths: &VmPaths) -> Result<VmBootstrap, IstioError> {
        VmBootstrap::load_with(paths, VmEnv::from_process(), &Host::system()?)
    }

    /// [`VmBootstrap::load`] with a given inherited environment and machine.
    pub fn load_with(
        paths: &VmPaths,
        inherited: VmEnv,
        host: &Host,
    ) -> Result<VmBootstrap, IstioError> {
        let mut env = inherited;
        source_env_files(&mut env, &paths.sidecar_env, &paths.cluster_env)?;
        let start = StartScript::run(&mut env, host)?;

        let mesh = match std::fs::read_to_string(&paths.mesh_config) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %paths.mesh_config.display(), "no mesh config file; using Istio's ProxyConfig defaults");
                String::new()
            }
            Err(source) => {
                return Err(IstioError::ReadMesh {
                    path: paths.mesh_config.clone(),
                    source,
                });
            }
        };
        let proxy_config = ProxyConfig::load(
            &mesh,
            &paths.mesh_config.display().to_string(),
            env.get("PROXY_CONFIG"),
        )?;
        let settings = proxy_config.settings();
        let node = node(&env, host, &start, &proxy_config)?;

        let root_cert_path = match &paths.root_cert {
            Some(p) => p.clone(),
            None => {
                Path::new(env.non_empty("PROV_CERT").unwrap_or("/etc/certs")).join("root-cert.pem")
            }
        };
        if !paths.token.exists() {
            // pilot-agent only warns: the CA may accept a client certificate instead.
            tracing::warn!(path = %paths.token.display(), "no istio-token: calls to istiod and the CA will carry no bearer token");
        }
        let protocol = match env_bool(&env, "ISTIO_DELTA_XDS")? {
            Some(false) => Protocol::StateOfTheWorld,
            _ => Protocol::Delta,
        };
        let loaded = VmBootstrap {
            discovery_address: settings.discovery_address.clone(),
            ca_address: start.ca_address.clone(),
            auth_policy: settings.control_plane_auth_policy,
            admin: SocketAddr::from(([127, 0, 0, 1], settings.proxy_admin_port)),
            protocol,
            drain_duration: settings.termination_drain_duration,
            concurrency: settings.concurrency.filter(|&c| c > 0),
            token_path: paths.token.clone(),
            root_cert_path,
            node,
            proxy_config,
            env,
        };
        tracing::info!(
            node = %loaded.node.id(),
            discovery = %loaded.discovery_address,
            ca = %loaded.ca_address,
            protocol = ?loaded.protocol,
            "Istio VM bootstrap loaded"
        );
        Ok(loaded)
    }

    /// The Envoy bootstrap pilot-agent would hand Envoy, reduced to what vm-proxy runs:
    /// this node, admin on 127.0.0.1, and ADS (Delta unless opted out) for clusters and
    /// listeners from the static cluster `xds-grpc` at `xds` — istiod itself, since there
    /// is no agent in between.
    pub fn envoy_bootstrap(&self, xds: SocketAddr) -> Result<Value, IstioError> {
        let node = crate::proto::to_json(&self.node.to_node()).map_err(IstioError::Node)?;
        let api_type = match self.protocol {
            Protocol::Delta => "DELTA_GRPC",
            Protocol::StateOfTheWorld => "GRPC",
        };
        let config_source =
            json!({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"});
        Ok(json!({
            "node": node,
            "admin": {"address": {"socket_address": {
                "address": self.admin.ip().to_string(), "port_value": self.admin.port()}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": api_type,
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                    "set_node_on_first_message_only": true,
                },
                "cds_config": config_source,
                "lds_config": config_source,
            },
            "static_resources": {"clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": xds.ip().to_string(), "port_value": xds.port()}}}}
                ]}]},
            }]},
        }))
    }

    /// The configuration to run: the static part (admin, `xds-grpc`), its config dump and
    /// the ADS client settings. `plaintext` is an xDS server reached without TLS (tests, a
    /// local control plane). Without it the stream goes to `discovery_address` (resolved
    /// once, now, by the system resolver, which reads the `/etc/hosts` lines istioctl's
    /// `hosts` file adds): plaintext with `controlPlaneAuthPolicy: NONE`, as pilot-agent
    /// dials insecurely then, else over TLS ([`VmBootstrap::xds_over_tls`]), which the
    /// caller sets up as the client's [`crate::ads::Transport`].
    pub fn load_config(&self, plaintext: Option<SocketAddr>) -> Result<LoadedConfig, IstioError> {
        let xds = match plaintext {
            Some(address) => address,
            None => resolve(&self.discovery_address)?,
        };
        let text = self.envoy_bootstrap(xds)?.to_string();
        bootstrap::load_str(&text, "generated Istio VM bootstrap.json")
            .map_err(IstioError::Generated)
    }

    /// Whether xDS goes to istiod over TLS: no `plaintext` server was named and the mesh's
    /// `controlPlaneAuthPolicy` is `MUTUAL_TLS`.
    pub fn xds_over_tls(&self, plaintext: Option<SocketAddr>) -> bool {
        plaintext.is_none() && self.auth_policy == AuthPolicy::MutualTls
    }
}

/// The first address `host:port` resolves to.
fn resolve(address: &str) -> Result<SocketAddr, IstioError> {
    let failed = |message: String| IstioError::Resolve {
        address: address.to_string(),
        message,
    };
    address
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no addresses".into()))
}

/// What `istio-start.sh` computes before it starts pilot-agent.
struct StartScript {
    ca_address: String,
    instance_ip: IpAddr,
}

impl StartScript {
    /// Derives the script's variables and puts the ones it exports into `env`.
    fn run(env: &mut VmEnv, host: &Host) -> Result<StartScript, IstioError> {
        let namespace = env
            .non_empty("ISTIO_NAMESPACE")
            .unwrap_or("default")
            .to_string();
        let service = env
            .non_empty("ISTIO_SERVICE")
            .unwrap_or("rawvm")
            .to_string();
        let system_ns = env
            .non_empty("ISTIO_SYSTEM_NAMESPACE")
            .unwrap_or("istio-system")
            .to_string();
        let auth = env
            .non_empty("ISTIO_CP_AUTH")
            .unwrap_or("MUTUAL_TLS")
            .to_string();
        let instance_ip = match env.non_empty("ISTIO_SVC_IP") {
            Some(text) => text
                .parse::<IpAddr>()
                .map_err(|e| bad_variable(env, "ISTIO_SVC_IP", e.to_string()))?,
            None => *host.addresses.first().ok_or(IstioError::NoAddress)?,
        };
        let pod_name = match env.non_empty("POD_NAME") {
            Some(name) => name.to_string(),
            None => host.short_name.clone(),
        };
        // A custom pilot address is one the operator asked for: pilot-agent otherwise keeps
        // the mesh config's discoveryAddress.
        let custom = match (
            env.non_empty("PILOT_ADDRESS"),
            env.non_empty("ISTIO_PILOT_PORT"),
        ) {
            (Some(address), _) => Some(address.to_string()),
            (None, Some(port)) => Some(format!("istiod.{system_ns}.svc:{port}")),
            (None, None) => None,
        };
        let ca_address = match env.non_empty("CA_ADDR") {
            Some(ca) => ca.to_string(),
            None => custom
                .clone()
                .unwrap_or_else(|| format!("istiod.{system_ns}.svc:15012")),
        };
        if env.non_empty("PROXY_CONFIG").is_none() {
            // As JSON (which is YAML), so that no value can break the document.
            let mut overlay = json!({"serviceCluster": service, "controlPlaneAuthPolicy": auth});
            if let Some(address) = &custom {
                overlay["discoveryAddress"] = json!(address);
            }
            env.derive("PROXY_CONFIG", &overlay.to_string());
        }
        env.derive("INSTANCE_IP", &instance_ip.to_string());
        env.derive("POD_NAME", &pod_name);
        env.derive("POD_NAMESPACE", &namespace);
        // Only when unset, so that the origin of a given CA_ADDR stays visible.
        if env.non_empty("CA_ADDR").is_none() {
            env.derive("CA_ADDR", &ca_address);
        }
        for (name, default) in [("PROV_CERT", "/etc/certs"), ("OUTPUT_CERTS", "/etc/certs")] {
            if env.get(name).is_none() {
                env.derive(name, default);
            }
        }
        Ok(StartScript {
            ca_address,
            instance_ip,
        })
    }
}

/// The node as pilot-agent's `GetNodeMetaData` builds it.
fn node(
    env: &VmEnv,
    host: &Host,
    start: &StartScript,
    proxy_config: &ProxyConfig,
) -> Result<IstioNode, IstioError> {
    let settings = proxy_config.settings();
    // Pass-through metadata: proxyMetadata's ISTIO_META_* keys, then the environment's.
    let mut extra: BTreeMap<String, String> = settings
        .proxy_metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META)?.to_string(), v.clone())))
        .collect();
    for (k, v) in env.with_prefix(META) {
        extra.insert(k.to_string(), v.to_string());
    }
    // ISTIO_METAJSON_* objects are merged into the top level.
    let mut json_extra: BTreeMap<String, Value> = BTreeMap::new();
    for (k, text) in env.with_prefix(META_JSON) {
        let name = format!("{META_JSON}{k}");
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                json_extra.extend(map);
            }
            Ok(_) => return Err(bad_variable(env, &name, "not a JSON object".into())),
            Err(e) => return Err(bad_variable(env, &name, format!("not JSON: {e}"))),
        }
    }
    let labels: BTreeMap<String, String> = match env.non_empty("ISTIO_METAJSON_LABELS") {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            bad_variable(
                env,
                "ISTIO_METAJSON_LABELS",
                format!("labels must be a JSON object of strings: {e}"),
            )
        })?,
        None => BTreeMap::new(),
    };
    if !labels.is_empty() {
        json_extra.insert("STATIC_LABELS".into(), json!(labels));
    }

    let take = |key: &str| extra.get(key).cloned().unwrap_or_default();
    let namespace = env.get("POD_NAMESPACE").unwrap_or_default().to_string();
    let workload_name = take("WORKLOAD_NAME");
    let mut other_ips: Vec<IpAddr> = Vec::new();
    for ip in &host.addresses {
        if *ip != start.instance_ip && !other_ips.contains(ip) {
            other_ips.push(*ip);
        }
    }
    let service_cluster = service_cluster(
        &settings.service_cluster,
        &labels,
        &workload_name,
        &namespace,
    );
    let version = match extra.get("ISTIO_VERSION") {
        Some(v) if !v.is_empty() => v.clone(),
        _ => EMULATED_ISTIO_VERSION.to_string(),
    };
    Ok(IstioNode {
        ip: Some(start.instance_ip),
        other_ips,
        name: env.get("POD_NAME").unwrap_or_default().to_string(),
        namespace,
        dns_domain: None,
        service_cluster: Some(service_cluster),
        istio_version: version,
        cluster_id: take("CLUSTER_ID"),
        mesh_id: take("MESH_ID"),
        network: take("NETWORK"),
        service_account: env.get("SERVICE_ACCOUNT").unwrap_or_default().to_string(),
        workload_name,
        labels,
        extra,
        json_extra,
        proxy_config: Some(proxy_config.to_json()),
    })
}

/// pilot-agent's `serviceClusterOrDefault`: `istio-proxy` (the default) is replaced by
/// `<app label>.<ns>`, else `<workload>.<ns>`, else `istio-proxy.<ns>`.
fn service_cluster(
    configured: &str,
    labels: &BTreeMap<String, String>,
    workload: &str,
    namespace: &str,
) -> String {
    if !configured.is_empty() && configured != "istio-proxy" {
        return configured.to_string();
    }
    if let Some(app) = labels.get("app") {
        return format!("{app}.{namespace}");
    }
    if !workload.is_empty() {
        return format!("{workload}.{namespace}");
    }
    if namespace.is_empty() {
        "istio-proxy".to_string()
    } else {
        format!("istio-proxy.{namespace}")
    }
}

/// Go's `strconv.ParseBool`, which Istio's boolean variables go through; unset or empty is
/// `None`.
fn env_bool(env: &VmEnv, name: &str) -> Result<Option<bool>, IstioError> {
    match env.non_empty(name) {
        None => Ok(None),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(Some(true)),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(Some(false)),
        Some(_) => Err(bad_variable(
            env,
            name,
            "not a boolean (true or false)".into(),
        )),
    }
}

fn bad_variable(env: &VmEnv, name: &str, message: String) -> IstioError {
    IstioError::Variable {
        name: name.to_string(),
        value: env.get(name).unwrap_or_default().to_string(),
        origin: env.origin(name).cloned().unwrap_or(Origin::Process),
        message,
    }
}
