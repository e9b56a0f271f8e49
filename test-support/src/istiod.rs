//! A real istiod for tests: istiod's discovery server with its real config store, service
//! registries, push machinery and xDS generators, built from `test-support/istiod` (Go) and
//! run on loopback without Kubernetes.
//!
//! It serves plaintext ADS (SotW and Delta, like istiod's port 15010) for the Istio YAML it
//! is started with, takes changes at run time through [`IstiodServer::apply`] and
//! [`IstiodServer::delete`] (each a real push to connected proxies), and on request
//! ([`IstiodBuilder::secure`]) serves TLS ADS and the Istio CA behind a self-signed root,
//! like istiod's port 15012, accepting bearer tokens given with [`IstiodBuilder::token`].
//!
//! ```no_run
//! use test_support::IstiodServer;
//!
//! let istiod = IstiodServer::start(&["apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: app, namespace: ns}
//! spec:
//!   hosts: [app.ns.svc.cluster.local]
//!   ports: [{number: 8080, name: http, protocol: HTTP}]
//!   resolution: STATIC
//! "]);
//! println!("ADS on {}", istiod.xds_addr);
//! ```

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::gobuild::go_binaries;
use crate::netns::{Netns, kill_group, spawn_in, unique_name};

/// How long istiod gets to come up; it usually takes under a second.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the start-up wait looks again.
const POLL: Duration = Duration::from_millis(20);
/// How much of istiod's log goes into error messages.
const LOG_TAIL: u64 = 64 * 1024;

/// What went wrong starting or talking to the istiod test server.
#[derive(Debug, thiserror::Error)]
pub enum IstiodError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("istiod exited ({status}) before it was ready:\n{stderr}")]
    Exited { status: ExitStatus, stderr: String },
    #[error("istiod was not ready within {waited:?}:\n{stderr}")]
    NotReady { waited: Duration, stderr: String },
    #[error("istiod announced {what} as {line:?}, which is not an address")]
    Announcement { what: &'static str, line: String },
    #[error("control request {method} {path} to {addr} failed: {source}")]
    Control {
        method: &'static str,
        path: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control request {method} {path} to {addr} got no HTTP response: {response:?}")]
    BadResponse {
        method: &'static str,
        path: String,
        addr: SocketAddr,
        response: String,
    },
    /// istiod refused the request; `message` is istiod's own (e.g. its validation error).
    #[error("istiod refused {method} {path} ({status}): {message}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot enter namespace {ns} for a control request: {source}")]
    Netns { ns: String, source: crate::Error },
    #[error("waiting for {program} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("running {program}: {source}")]
    Harness {
        program: String,
        source: crate::Error,
    },
    #[error("{program} did not finish within {waited:?}")]
    Timeout { program: String, waited: Duration },
}

/// How to start istiod; made by [`IstiodServer::builder`].
#[derive(Debug, Clone)]
pub struct IstiodBuilder {
    configs: Vec<String>,
    mesh: Option<String>,
    listen: SocketAddr,
    secure: bool,
    secure_listen: Option<SocketAddr>,
    tokens: Vec<(String, String)>,
    ns: Option<String>,
}

impl IstiodBuilder {
    /// Adds Istio YAML (one or more documents) istiod starts with.
    pub fn config(mut self, yaml: impl Into<String>) -> Self {
        self.configs.push(yaml.into());
        self
    }

    /// Sets the MeshConfig (YAML, as under the `mesh` key of istiod's ConfigMap); Istio's
    /// defaults fill in what it leaves out.
    pub fn mesh(mut self, yaml: impl Into<String>) -> Self {
        self.mesh = Some(yaml.into());
        self
    }

    /// Sets the plaintext ADS address (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Also serves TLS ADS and the Istio CA on a free loopback port, with a certificate
    /// for `istiod.istio-system.svc` from a self-signed root ([`IstiodServer::root_cert`]).
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// Serves TLS ADS and the Istio CA on `addr` (e.g. a namespace's address, port 0 for a
    /// free one) rather than on loopback, so workloads in other namespaces reach them.
    /// Implies [`IstiodBuilder::secure`].
    pub fn secure_listen(mut self, addr: SocketAddr) -> Self {
        self.secure = true;
        self.secure_listen = Some(addr);
        self
    }

    /// Makes the CA and TLS ADS accept `Authorization: Bearer <token>` as `spiffe_id`
    /// (e.g. `spiffe://cluster.local/ns/ns/sa/vm`), where istiod would review a Kubernetes
    /// service account token. Implies [`IstiodBuilder::secure`].
    pub fn token(mut self, token: impl Into<String>, spiffe_id: impl Into<String>) -> Self {
        self.secure = true;
        self.tokens.push((token.into(), spiffe_id.into()));
        self
    }

    /// Runs istiod inside `ns` (its addresses are then the namespace's loopback). The
    /// server must be dropped before the namespace.
    pub fn netns(mut self, ns: &Netns) -> Self {
        self.ns = Some(ns.name().to_string());
        self
    }

    /// Builds istiod if needed and starts it.
    ///
    /// # Panics
    /// When Go is missing or the build fails (see [`go_binaries`]), or when the server fails
    /// to start; the message carries istiod's own error.
    pub fn start(self) -> IstiodServer {
        self.try_start()
            .unwrap_or_else(|e| panic!("istiod test server: {e}"))
    }

    /// Builds istiod if needed and starts it, returning why it did not come up (for tests
    /// of bad input). A failing build still panics: that is set-up, not input.
    pub fn try_start(self) -> Result<IstiodServer, IstiodError> {
        let bins = go_binaries();
        let dir = std::env::temp_dir()
            .join("vm-proxy-tests")
            .join(unique_name("istiod"));
        std::fs::create_dir_all(&dir).map_err(|source| IstiodError::Write {
            path: dir.clone(),
            source,
        })?;
        // istiod exits when its stdin (a pipe we hold) closes, so it dies with the test
        // process even when that is killed before it can drop the server.
        let mut args: Vec<String> = vec![
            "--exit-on-stdin-eof".into(),
            "--listen".into(),
            self.listen.to_string(),
        ];
        let loopback = if self.listen.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        args.extend(["--control".into(), loopback.into()]);
        for (i, yaml) in self.configs.iter().enumerate() {
            let path = write(&dir.join(format!("config-{i}.yaml")), yaml)?;
            args.extend(["--config".into(), path.display().to_string()]);
        }
        if let Some(mesh) = &self.mesh {
            let path = write(&dir.join("mesh.yaml"), mesh)?;
            args.extend(["--mesh".into(), path.display().to_string()]);
        }
        let root_cert = self.secure.then(|| dir.join("root-cert.pem"));
        if let Some(root) = &root_cert {
            let secure = self
                .secure_listen
                .map_or_else(|| loopback.to_string(), |a| a.to_string());
            args.extend(["--secure-listen".into(), secure]);
            args.extend(["--root-cert-out".into(), root.display().to_string()]);
        }
        for (token, id) in &self.tokens {
            args.extend(["--token".into(), format!("{token}={id}")]);
        }

        let stdout_path = dir.join("stdout.log");
        let stderr_path = dir.join("stderr.log");
        let create = |p: &Path| {
            File::create(p).map_err(|source| IstiodError::Write {
                path: p.to_path_buf(),
                source,
            })
        };
        let program = bins.istiod.display().to_string();
        let mut command = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bins.istiod);
                c
            }
            None => Command::new(&bins.istiod),
        };
        command
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(create(&stdout_path)?)
            .stderr(create(&stderr_path)?)
            .process_group(0);
        let mut child = command.spawn().map_err(|source| IstiodError::Spawn {
            program: program.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        tracing::debug!(%program, pid = child.id(), ?args, "started istiod");
        let mut server = IstiodServer {
            xds_addr: self.listen,
            control_addr: self.listen,
            secure_addr: None,
            root_cert,
            ns: self.ns,
            dir,
            stderr_path,
            child,
            _stdin: stdin,
            exited: None,
        };
        let lines = server.wait_ready(&stdout_path)?;
        server.xds_addr = announced(&lines, "listening")?;
        server.control_addr = announced(&lines, "control")?;
        if server.root_cert.is_some() {
            server.secure_addr = Some(announced(&lines, "secure")?);
        }
        Ok(server)
    }
}

/// A running istiod test server; killed on drop.
pub struct IstiodServer {
    /// Plaintext ADS (SotW and Delta), like istiod's 15010.
    pub xds_addr: SocketAddr,
    /// HTTP control endpoint: `POST /config`, `DELETE /config`, `GET /debug/...`.
    pub control_addr: SocketAddr,
    /// TLS ADS and the Istio CA, like istiod's 15012 (with [`IstiodBuilder::secure`]).
    pub secure_addr: Option<SocketAddr>,
    root_cert: Option<PathBuf>,
    ns: Option<String>,
    dir: PathBuf,
    stderr_path: PathBuf,
    child: Child,
    /// Held only to be closed with the server (see `--exit-on-stdin-eof`).
    _stdin: Option<std::process::ChildStdin>,
    exited: Option<ExitStatus>,
}

impl IstiodServer {
    /// Starts istiod on loopback with these Istio YAML streams.
    ///
    /// # Panics
    /// When the build fails or istiod does not start (e.g. it rejects the YAML).
    pub fn start(configs: &[&str]) -> IstiodServer {
        configs
            .iter()
            .fold(IstiodServer::builder(), |b, c| b.config(*c))
            .start()
    }

    /// Describes a server to start: YAML, MeshConfig, addresses, CA, namespace.
    pub fn builder() -> IstiodBuilder {
        IstiodBuilder {
            configs: Vec::new(),
            mesh: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secure: false,
            secure_listen: None,
            tokens: Vec::new(),
            ns: None,
        }
    }

    /// Creates or replaces (like `kubectl apply`) every object in `yaml`; istiod then
    /// pushes the change to connected proxies. Returns istiod's account of what it did, one
    /// line per object, e.g. `ServiceEntry ns/app created`.
    pub fn apply(&self, yaml: &str) -> Result<String, IstiodError> {
        self.control("POST", "/config", yaml)
    }

    /// Deletes every object `yaml` names (like `kubectl delete -f`); istiod then pushes.
    pub fn delete(&self, yaml: &str) -> Result<String, IstiodError> {
        self.control("DELETE", "/config", yaml)
    }

    /// One of istiod's debug views, e.g. `syncz`, `configz` or
    /// `config_dump?proxyID=vm.ns`.
    pub fn debug(&self, view: &str) -> Result<String, IstiodError> {
        self.control("GET", &format!("/debug/{view}"), "")
    }

    /// The CA's root certificate (PEM file), with [`IstiodBuilder::secure`].
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// istiod's log (the last 64 KiB), for assertion messages.
    pub fn logs(&self) -> String {
        read_tail(&self.stderr_path)
    }

    fn wait_ready(&mut self, stdout_path: &Path) -> Result<Vec<String>, IstiodError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(stdout_path).unwrap_or_default();
            let lines: Vec<String> = out.lines().map(str::to_string).collect();
            if lines.iter().any(|l| l == "ready") {
                return Ok(lines);
            }
            let polled = self.child.try_wait().map_err(|source| IstiodError::Wait {
                program: "istiod".into(),
                source,
            })?;
            if let Some(status) = polled {
                self.exited = Some(status);
                return Err(IstiodError::Exited {
                    status,
                    stderr: self.logs(),
                });
            }
            if Instant::now() >= deadline {
                return Err(IstiodError::NotReady {
                    waited: READY_TIMEOUT,
                    stderr: self.logs(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn control(&self, method: &'static str, path: &str, body: &str) -> Result<String, IstiodError> {
        let addr = self.control_addr;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/yaml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io_err = |source| IstiodError::Control {
            method,
            path: path.to_string(),
            addr,
            source,
        };
        let response = match &self.ns {
            None => http_exchange(addr, request.into_bytes()).map_err(io_err)?,
            Some(ns) => spawn_in(ns, move || http_exchange(addr, request.into_bytes()))
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
                .map_err(|source| IstiodError::Netns {
                    ns: ns.clone(),
                    source,
                })?
                .map_err(io_err)?,
        };
        let text = String::from_utf8_lossy(&response).into_owned();
        let bad = || IstiodError::BadResponse {
            method,
            path: path.to_string(),
            addr,
            response: text.clone(),
        };
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if status == 200 {
            Ok(body.to_string())
        } else {
            Err(IstiodError::Refused {
                method,
                path: path.to_string(),
                status,
                message: body.trim_end().to_string(),
            })
        }
    }
}

impl Drop for IstiodServer {
    fn drop(&mut self) {
        if self.exited.is_none() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- istiod (pid {}) stderr -----\n{}\n----- end (kept in {}) -----",
                self.child.id(),
                self.logs(),
                self.dir.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) -> Result<PathBuf, IstiodError> {
    std::fs::write(path, text).map_err(|source| IstiodError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// The address on the stdout line `<what> <addr>`.
fn announced(lines: &[String], what: &'static str) -> Result<SocketAddr, IstiodError> {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix(what).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_default();
    line.trim().parse().map_err(|_| IstiodError::Announcement {
        what,
        line: line.to_string(),
    })
}

/// One HTTP/1.0 exchange: the server closes the connection after its response, so the
/// response is simply everything up to end of stream, never chunked.
fn http_exchange(addr: SocketAddr, request: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, CONTROL_TIMEOUT)?;
    s.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    s.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    s.write_all(&request)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    Ok(response)
}

fn read_tail(path: &Path) -> String {
    let mut buf = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
        f.read_to_end(&mut buf)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
