//! Configuration from pilot-agent's environment variables (as `cluster.env` sets them on a VM).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::key::{KeyAlgorithm, RsaBits};
use crate::rotation::RotationPolicy;
use crate::spiffe::SpiffeId;

/// Where the default CA is, as istio-start.sh computes it.
const DEFAULT_CA_ADDR: &str = "istiod.istio-system.svc:15012";
/// The name istiod's serving certificate carries; pilot-agent uses it for `localhost`.
const ISTIOD_DEFAULT_SAN: &str = "istiod.istio-system.svc";
const DEFAULT_CERT_DIR: &str = "/etc/certs";
const THIRD_PARTY_TOKEN: &str = "/var/run/secrets/tokens/istio-token";
const FIRST_PARTY_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const WORKLOAD_SOCKET_DIR: &str = "/var/run/secrets/workload-spiffe-uds";
const CA_HEADER_PREFIX: &str = "CA_HEADER_";

/// Every variable read here (besides `CA_HEADER_*`).
const VARS: &[&str] = &[
    "TRUST_DOMAIN",
    "POD_NAMESPACE",
    "ISTIO_NAMESPACE",
    "SERVICE_ACCOUNT",
    "CA_ADDR",
    "ISTIOD_SAN",
    "CA_ROOT_CA",
    "PROV_CERT",
    "OUTPUT_CERTS",
    "JWT_POLICY",
    "ISTIO_META_CLUSTER_ID",
    "ISTIO_META_CERT_SIGNER",
    "SECRET_TTL",
    "SECRET_GRACE_PERIOD_RATIO",
    "SECRET_GRACE_PERIOD_RATIO_JITTER",
    "ECC_SIGNATURE_ALGORITHM",
    "ECC_CURVE",
    "WORKLOAD_RSA_KEY_SIZE",
    "FILE_MOUNTED_CERTS",
    "WORKLOAD_IDENTITY_SOCKET_FILE",
];

/// Everything the identity side needs, with pilot-agent's defaults.
#[derive(Debug, Clone)]
pub struct CertsConfig {
    /// `spiffe://<TRUST_DOMAIN>/ns/<POD_NAMESPACE>/sa/<SERVICE_ACCOUNT>`.
    pub spiffe_id: SpiffeId,
    /// How to reach and authenticate to istiod's CA.
    pub ca: CaConfig,
    /// `FILE_MOUNTED_CERTS=true`: use `cert-chain.pem`, `key.pem`, `root-cert.pem` from
    /// [`CaConfig::prov_cert_dir`] and never call a CA.
    pub file_mounted: bool,
    /// The workload SDS socket (`/var/run/secrets/workload-spiffe-uds/<WORKLOAD_IDENTITY_SOCKET_FILE>`);
    /// if a server answers there (SPIRE, say), certificates come from it.
    pub sds_socket: PathBuf,
    /// Renewal timing.
    pub rotation: RotationPolicy,
}

/// The istiod CA client's settings.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// `CA_ADDR` host.
    pub host: String,
    /// `CA_ADDR` port.
    pub port: u16,
    /// TLS name istiod's certificate must carry: `ISTIOD_SAN`, else the host of `CA_ADDR`
    /// (`localhost` means `istiod.istio-system.svc`, as in pilot-agent).
    pub server_name: String,
    /// Roots that verify istiod: `CA_ROOT_CA`, else `<PROV_CERT>/root-cert.pem`. Re-read on
    /// every request; the roots of the identity held are trusted as well.
    pub root_cert: PathBuf,
    /// `PROV_CERT` (default `/etc/certs`): a valid `cert-chain.pem` + `key.pem` found here at
    /// start is served and presented to the CA, so a reboot needs no token.
    pub prov_cert_dir: PathBuf,
    /// `OUTPUT_CERTS` (default `/etc/certs`; empty: write nothing): where issued certificates
    /// are written, 0600, atomically.
    pub output_dir: Option<PathBuf>,
    /// The bearer token, re-read for every request (`JWT_POLICY`: `third-party-jwt` →
    /// `/var/run/secrets/tokens/istio-token`, `first-party-jwt` → the service-account token).
    pub token_path: PathBuf,
    /// `ISTIO_META_CLUSTER_ID`, sent as the `ClusterID` header.
    pub cluster_id: String,
    /// `ISTIO_META_CERT_SIGNER`, sent as request metadata `CertSigner`.
    pub cert_signer: String,
    /// `CA_HEADER_<name>=<value>` pairs, sent as extra gRPC metadata (names lower-cased).
    pub extra_headers: Vec<(String, String)>,
    /// `SECRET_TTL` (default 24h): the validity requested.
    pub ttl: Duration,
    /// `ECC_SIGNATURE_ALGORITHM` / `ECC_CURVE` / `WORKLOAD_RSA_KEY_SIZE`.
    pub key_algorithm: KeyAlgorithm,
    /// Bound on one connect + CreateCertificate exchange.
    pub request_timeout: Duration,
}

impl CaConfig {
    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl CertsConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str().map(str::to_owned) else {
                continue;
            };
            if !VARS.contains(&k.as_str()) && !k.starts_with(CA_HEADER_PREFIX) {
                continue;
            }
            match v.into_string() {
                Ok(v) => vars.push((k, v)),
                Err(v) => {
                    return Err(invalid(
                        static_name(&k),
                        &v.to_string_lossy(),
                        "not valid UTF-8",
                    ));
                }
            }
        }
        Self::from_vars(vars)
    }

    /// Builds the configuration from `(name, value)` pairs, pilot-agent's defaults for
    /// anything missing. An empty value means unset, except for `OUTPUT_CERTS`.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars = Vars(vars.into_iter().collect());
        let get = |k: &str| vars.get(k);

        // Istio falls back to the mesh's trust domain, cluster.local unless configured.
        let trust_domain = get("TRUST_DOMAIN").unwrap_or("cluster.local");
        let namespace = get("POD_NAMESPACE")
            .or(get("ISTIO_NAMESPACE"))
            .unwrap_or("default");
        let service_account = get("SERVICE_ACCOUNT").unwrap_or("default");
        let spiffe_id = SpiffeId::istio(trust_domain, namespace, service_account)?;

        let ca_addr = get("CA_ADDR").unwrap_or(DEFAULT_CA_ADDR);
        let (host, port) = parse_host_port(ca_addr)
            .ok_or_else(|| invalid("CA_ADDR", ca_addr, "expected host:port"))?;
        if port == 15010 {
            return Err(invalid(
                "CA_ADDR",
                ca_addr,
                "15010 is istiod's plaintext port; only TLS to the CA is supported (use 15012)",
            ));
        }
        let server_name = match get("ISTIOD_SAN") {
            Some(san) => san.to_owned(),
            None if host == "localhost" => ISTIOD_DEFAULT_SAN.to_owned(),
            None => host.clone(),
        };

        let prov_cert_dir = PathBuf::from(get("PROV_CERT").unwrap_or(DEFAULT_CERT_DIR));
        let root_cert = match get("CA_ROOT_CA") {
            Some("SYSTEM") => {
                return Err(invalid(
                    "CA_ROOT_CA",
                    "SYSTEM",
                    "the OS trust store is not supported; give the path of a PEM root file",
                ));
            }
            Some(path) => PathBuf::from(path),
            None => prov_cert_dir.join("root-cert.pem"),
        };
        // Unset means the VM default (istio-start.sh sets /etc/certs); empty disables output.
        let output_dir = match vars.0.get("OUTPUT_CERTS").map(String::as_str) {
            None => Some(PathBuf::from(DEFAULT_CERT_DIR)),
            Some("") => None,
            Some(dir) => Some(PathBuf::from(dir)),
        };
        let token_path = match get("JWT_POLICY").unwrap_or("third-party-jwt") {
            "third-party-jwt" => PathBuf::from(THIRD_PARTY_TOKEN),
            "first-party-jwt" => PathBuf::from(FIRST_PARTY_TOKEN),
            other => {
                return Err(invalid(
                    "JWT_POLICY",
                    other,
                    "expected third-party-jwt or first-party-jwt",
                ));
            }
        };

        let mut extra_headers = Vec::new();
        for (k, v) in &vars.0 {
            if let Some(name) = k.strip_prefix(CA_HEADER_PREFIX) {
                let lower = name.to_ascii_lowercase();
                tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                    lower.as_bytes(),
                )
                .map_err(|_| ConfigError::Header {
                    var: k.clone(),
                    reason: format!("{lower:?} is not a valid gRPC metadata name"),
                })?;
                if !printable_ascii(v) {
                    return Err(ConfigError::Header {
                        var: k.clone(),
                        reason: "value is not valid gRPC metadata (printable ASCII)".into(),
                    });
                }
                extra_headers.push((lower, v.clone()));
            }
        }
        extra_headers.sort();

        let cluster_id = get("ISTIO_META_CLUSTER_ID").unwrap_or_default().to_owned();
        if !printable_ascii(&cluster_id) {
            return Err(invalid(
                "ISTIO_META_CLUSTER_ID",
                &cluster_id,
                "must be printable ASCII (it is sent as the ClusterID header)",
            ));
        }

        let ttl = match get("SECRET_TTL") {
            Some(v) => parse_go_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(
                        "SECRET_TTL",
                        v,
                        "expected a positive duration like 24h or 90m",
                    )
                })?,
            None => Duration::from_secs(24 * 3600),
        };

        let key_algorithm = key_algorithm(&vars)?;

        let mut rotation = RotationPolicy::default();
        if let Some(v) = get("SECRET_GRACE_PERIOD_RATIO") {
            rotation.grace_ratio = v
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or_else(|| {
                    invalid(
                        "SECRET_GRACE_PERIOD_RATIO",
                        v,
                        "expected a number in (0, 1]",
                    )
                })?;
        }
        if let Some(v) = get("SECRET_GRACE_PERIOD_RATIO_JITTER") {
            rotation.grace_jitter = v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..1.0).contains(r))
                .ok_or_else(|| {
                    invalid(
                        "SECRET_GRACE_PERIOD_RATIO_JITTER",
                        v,
                        "expected a number in [0, 1)",
                    )
                })?;
        }

        let file_mounted = match get("FILE_MOUNTED_CERTS") {
            None => false,
            Some(v) => parse_bool(v)
                .ok_or_else(|| invalid("FILE_MOUNTED_CERTS", v, "expected true or false"))?,
        };
        let socket_file = get("WORKLOAD_IDENTITY_SOCKET_FILE").unwrap_or("socket");
        if socket_file.contains('/') {
            return Err(invalid(
                "WORKLOAD_IDENTITY_SOCKET_FILE",
                socket_file,
                "must be a file name inside /var/run/secrets/workload-spiffe-uds",
            ));
        }

        Ok(Self {
            spiffe_id,
            ca: CaConfig {
                host,
                port,
                server_name,
                root_cert,
                prov_cert_dir,
                output_dir,
                token_path,
                cluster_id,
                cert_signer: get("ISTIO_META_CERT_SIGNER").unwrap_or_default().to_owned(),
                extra_headers,
                ttl,
                key_algorithm,
                request_timeout: Duration::from_secs(30),
            },
            file_mounted,
            sds_socket: PathBuf::from(WORKLOAD_SOCKET_DIR).join(socket_file),
            rotation,
        })
    }
}

/// The variables given, by name.
struct Vars(HashMap<String, String>);

impl Vars {
    /// A variable's value; empty counts as unset.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn key_algorithm(vars: &Vars) -> Result<KeyAlgorithm, ConfigError> {
    let get = |k: &str| vars.get(k);
    match get("ECC_SIGNATURE_ALGORITHM") {
        None | Some("ECDSA") => match get("ECC_CURVE").unwrap_or("P256") {
            "P256" => Ok(KeyAlgorithm::EcdsaP256),
            "P384" => Ok(KeyAlgorithm::EcdsaP384),
            other => Err(invalid("ECC_CURVE", other, "expected P256 or P384")),
        },
        Some("RSA") => match get("WORKLOAD_RSA_KEY_SIZE").unwrap_or("2048") {
            "2048" => Ok(KeyAlgorithm::Rsa(RsaBits::B2048)),
            "3072" => Ok(KeyAlgorithm::Rsa(RsaBits::B3072)),
            "4096" => Ok(KeyAlgorithm::Rsa(RsaBits::B4096)),
            other => Err(invalid(
                "WORKLOAD_RSA_KEY_SIZE",
                other,
                "expected 2048, 3072 or 4096",
            )),
        },
        Some(other) => Err(invalid(
            "ECC_SIGNATURE_ALGORITHM",
            other,
            "expected ECDSA (the default) or RSA",
        )),
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The `&'static` spelling of a variable this module reads (for error messages).
fn static_name(name: &str) -> &'static str {
    VARS.iter()
        .copied()
        .find(|v| *v == name)
        .unwrap_or("CA_HEADER_*")
}

/// What gRPC ASCII metadata values may hold (HTTP would also pass bytes >= 0x80).
fn printable_ascii(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// Go's `time.ParseDuration` format, which Istio's duration variables use: a sequence of
/// decimal numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` (e.g. `24h`, `1h30m`, `1.5s`).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<CertsConfig, ConfigError> {
        CertsConfig::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn defaults_match_pilot_agent_on_a_vm() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            c.spiffe_id.as_str(),
            "spiffe://cluster.local/ns/default/sa/default"
        );
        assert_eq!(
            (c.ca.host.as_str(), c.ca.port),
            ("istiod.istio-system.svc", 15012)
        );
        assert_eq!(c.ca.server_name, "istiod.istio-system.svc");
        assert_eq!(c.ca.root_cert, PathBuf::from("/etc/certs/root-cert.pem"));
        assert_eq!(c.ca.output_dir, Some(PathBuf::from("/etc/certs")));
        assert_eq!(c.ca.token_path, PathBuf::from(THIRD_PARTY_TOKEN));
        assert_eq!(c.ca.ttl, Duration::from_secs(86400));
        assert_eq!(c.ca.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(c.rotation.grace_ratio, 0.5);
        assert_eq!(c.rotation.grace_jitter, 0.01);
        assert!(!c.file_mounted);
        assert_eq!(
            c.sds_socket,
            PathBuf::from("/var/run/secrets/workload-spiffe-uds/socket")
        );
    }

    #[test]
    fn cluster_env_values_are_honoured() {
        let c = cfg(&[
            ("TRUST_DOMAIN", "example.org"),
            ("POD_NAMESPACE", "bar"),
            ("SERVICE_ACCOUNT", "vm-serviceaccount"),
            ("CA_ADDR", "istiod-rev-1.istio-system.svc:15012"),
            ("PROV_CERT", "/srv/prov"),
            ("OUTPUT_CERTS", "/srv/out"),
            ("JWT_POLICY", "first-party-jwt"),
            ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
            ("ISTIO_META_CERT_SIGNER", "signer-a"),
            ("CA_HEADER_X-Tenant", "t1"),
            ("SECRET_TTL", "1h30m"),
            ("SECRET_GRACE_PERIOD_RATIO", "0.3"),
            ("SECRET_GRACE_PERIOD_RATIO_JITTER", "0.05"),
            ("ECC_SIGNATURE_ALGORITHM", "RSA"),
            ("WORKLOAD_RSA_KEY_SIZE", "3072"),
            ("FILE_MOUNTED_CERTS", "true"),
            ("WORKLOAD_IDENTITY_SOCKET_FILE", "spire.sock"),
        ])
        .unwrap();
        assert_eq!(
            c.spiffe_id.as_str(),
            "spiffe://example.org/ns/bar/sa/vm-serviceaccount"
        );
        assert_eq!(c.ca.host, "istiod-rev-1.istio-system.svc");
        assert_eq!(c.ca.server_name, "istiod-rev-1.istio-system.svc");
        assert_eq!(c.ca.root_cert, PathBuf::from("/srv/prov/root-cert.pem"));
        assert_eq!(c.ca.prov_cert_dir, PathBuf::from("/srv/prov"));
        assert_eq!(c.ca.output_dir, Some(PathBuf::from("/srv/out")));
        assert_eq!(c.ca.token_path, PathBuf::from(FIRST_PARTY_TOKEN));
        assert_eq!(c.ca.cluster_id, "Kubernetes");
        assert_eq!(c.ca.cert_signer, "signer-a");
        assert_eq!(
            c.ca.extra_headers,
            [("x-tenant".to_owned(), "t1".to_owned())]
        );
        assert_eq!(c.ca.ttl, Duration::from_secs(5400));
        assert_eq!(c.ca.key_algorithm, KeyAlgorithm::Rsa(RsaBits::B3072));
        assert_eq!(c.rotation.grace_ratio, 0.3);
        assert_eq!(c.rotation.grace_jitter, 0.05);
        assert!(c.file_mounted);
        assert!(c.sds_socket.ends_with("spire.sock"));
        let c = cfg(&[("OUTPUT_CERTS", ""), ("TRUST_DOMAIN", "")]).unwrap();
        assert_eq!(c.ca.output_dir, None);
        assert_eq!(c.spiffe_id.trust_domain(), "cluster.local");
    }

    #[test]
    fn istiod_san_and_localhost_set_the_tls_name() {
        let c = cfg(&[
            ("CA_ADDR", "10.0.0.5:15012"),
            ("ISTIOD_SAN", "istiod.istio-system.svc"),
        ])
        .unwrap();
        assert_eq!(c.ca.server_name, "istiod.istio-system.svc");
        assert_eq!(c.ca.addr(), "10.0.0.5:15012");
        let c = cfg(&[("CA_ADDR", "localhost:15012")]).unwrap();
        assert_eq!(c.ca.server_name, ISTIOD_DEFAULT_SAN);
        let c = cfg(&[("CA_ADDR", "[fd00::1]:15012")]).unwrap();
        assert_eq!(
            (c.ca.host.as_str(), c.ca.addr()),
            ("fd00::1", "[fd00::1]:15012".to_owned())
        );
    }

    #[test]
    fn ecdsa_curves_and_explicit_ecdsa() {
        let c = cfg(&[("ECC_SIGNATURE_ALGORITHM", "ECDSA"), ("ECC_CURVE", "P384")]).unwrap();
        assert_eq!(c.ca.key_algorithm, KeyAlgorithm::EcdsaP384);
        let c = cfg(&[("ECC_SIGNATURE_ALGORITHM", "RSA")]).unwrap();
        assert_eq!(c.ca.key_algorithm, KeyAlgorithm::Rsa(RsaBits::B2048));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("CA_ADDR", "no-port"),
            ("CA_ADDR", "istiod:15010"),
            ("CA_ROOT_CA", "SYSTEM"),
            ("JWT_POLICY", "none"),
            ("SECRET_TTL", "1 day"),
            ("SECRET_TTL", "0s"),
            ("SECRET_GRACE_PERIOD_RATIO", "1.5"),
            ("SECRET_GRACE_PERIOD_RATIO_JITTER", "x"),
            ("ECC_SIGNATURE_ALGORITHM", "ED25519"),
            ("ECC_CURVE", "P521"),
            ("FILE_MOUNTED_CERTS", "maybe"),
            ("WORKLOAD_IDENTITY_SOCKET_FILE", "../x"),
            ("TRUST_DOMAIN", "Bad Domain"),
            ("ISTIO_META_CLUSTER_ID", "clüster"),
        ] {
            let err = cfg(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(var) || err.contains(value),
                "{var}={value}: {err}"
            );
        }
        let err = cfg(&[
            ("ECC_SIGNATURE_ALGORITHM", "RSA"),
            ("WORKLOAD_RSA_KEY_SIZE", "1024"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("WORKLOAD_RSA_KEY_SIZE"), "{err}");
        let err = cfg(&[("CA_HEADER_bad name", "v")]).unwrap_err().to_string();
        assert!(err.contains("CA_HEADER_bad name"), "{err}");
        let err = cfg(&[("CA_HEADER_X", "välue")]).unwrap_err().to_string();
        assert!(err.contains("CA_HEADER_X"), "{err}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "h", "10", "10d", "1h x"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
