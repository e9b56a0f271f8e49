//! Compiles the protobuf descriptors that Envoy's JSON form needs (type URLs inside `Any`) into
//! `$OUT_DIR/envoy_descriptors.bin`, from the `.proto` tree shipped inside the `envoy-types`
//! package plus the few Istio-only protos kept in `proto/`.
//!
//! The envoy-types package is found through `cargo metadata`, so the descriptors always match the
//! exact envoy-types version whose prost types the crate decodes into. When cargo metadata cannot
//! answer offline (it wants every package of the workspace on disk, dev-dependencies included,
//! which a first `cargo build` has not fetched), the version pinned in Cargo.lock is looked up in
//! cargo's registry cache. `ENVOY_PROTO_DIR` overrides both (point it at that package's `proto/`
//! directory).

use std::error::Error;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Root files: everything else they import is resolved by protox. Only what vm-proxy may meet
/// in a bootstrap, an xDS response or a config dump is listed; an `Any` of a type not reached
/// from here is reported by name when JSON is parsed.
const ENVOY_ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/listener/original_src/v3/original_src.proto",
    "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/network/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    "envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/lua/v3/lua.proto",
    "envoy/extensions/filters/http/compressor/v3/compressor.proto",
    "envoy/extensions/compression/brotli/compressor/v3/brotli.proto",
    "envoy/extensions/compression/gzip/compressor/v3/gzip.proto",
    "envoy/extensions/compression/zstd/compressor/v3/zstd.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/transport_sockets/internal_upstream/v3/internal_upstream.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/request_id/uuid/v3/uuid.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto",
    "envoy/extensions/bootstrap/internal_listener/v3/internal_listener.proto",
];

/// Our own declarations, under `proto/`, of types that no Envoy proto defines.
const LOCAL_ROOTS: &[&str] = &[
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
    "istio/stats.proto",
    "istio/alpn.proto",
    "istio/metadata_exchange.proto",
];

/// Include roots inside envoy-types' `proto/` directory (one per vendored repository).
const ENVOY_INCLUDE_DIRS: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec",
    "opentelemetry-proto",
    "client_model",
];

/// `cargo metadata` normally answers in well under a second; this only bounds a wedged cargo.
const METADATA_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=ENVOY_PROTO_DIR");

    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let envoy_proto = match std::env::var_os("ENVOY_PROTO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => envoy_types_proto_dir(&manifest_dir).or_else(|metadata_err| {
            registry_proto_dir(&manifest_dir).map_err(|registry_err| {
                format!(
                    "cannot find envoy-types' proto/ directory: {metadata_err}; {registry_err} \
                     (set ENVOY_PROTO_DIR to it)"
                )
            })
        })?,
    };
    if !envoy_proto.join("data-plane-api").is_dir() {
        return Err(format!(
            "{} has no data-plane-api/ directory: is it envoy-types' proto/ directory?",
            envoy_proto.display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed={}", envoy_proto.display());

    let mut includes: Vec<PathBuf> = ENVOY_INCLUDE_DIRS
        .iter()
        .map(|dir| envoy_proto.join(dir))
        .collect();
    includes.push(manifest_dir.join("proto"));

    let started = Instant::now();
    let mut compiler = protox::Compiler::new(&includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(ENVOY_ROOTS.iter().chain(LOCAL_ROOTS))?;
    let descriptors = compiler.encode_file_descriptor_set();
    let out = PathBuf::from(env("OUT_DIR")?).join("envoy_descriptors.bin");
    std::fs::write(&out, &descriptors)
        .map_err(|err| format!("writing {}: {err}", out.display()))?;
    println!(
        "cargo:rustc-env=XDS_CLIENT_DESCRIPTOR_STATS={} files, {} bytes, compiled in {} ms",
        compiler.files().len(),
        descriptors.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn env(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name).map_err(|err| format!("build script variable {name}: {err}").into())
}

/// Asks cargo which `envoy-types` package this crate depends on, and returns its `proto/` dir.
fn envoy_types_proto_dir(manifest_dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let cargo = env("CARGO")?;
    let manifest = manifest_dir.join("Cargo.toml");
    let metadata = run_bounded(
        Command::new(&cargo)
            .args(["metadata", "--format-version", "1", "--offline"])
            .arg("--filter-platform")
            .arg(env("TARGET")?)
            .arg("--manifest-path")
            .arg(&manifest),
    )?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata)
        .map_err(|err| format!("cargo metadata printed something that is not JSON: {err}"))?;

    // A changed lock file may mean another envoy-types version, hence other protos.
    if let Some(root) = metadata["workspace_root"].as_str() {
        println!("cargo:rerun-if-changed={root}/Cargo.lock");
    }

    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages list")?;
    let manifest_str = manifest.to_string_lossy();
    let own_id = packages
        .iter()
        .find(|p| p["manifest_path"].as_str() == Some(manifest_str.as_ref()))
        .and_then(|p| p["id"].as_str())
        .ok_or_else(|| format!("cargo metadata does not list {manifest_str}"))?;
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no resolve graph")?;
    let envoy_id = nodes
        .iter()
        .find(|n| n["id"].as_str() == Some(own_id))
        .and_then(|n| n["deps"].as_array())
        .and_then(|deps| {
            deps.iter()
                .find(|d| d["name"].as_str() == Some("envoy_types"))
        })
        .and_then(|d| d["pkg"].as_str())
        .ok_or("cargo metadata: this crate has no envoy-types dependency")?;
    let envoy_manifest = packages
        .iter()
        .find(|p| p["id"].as_str() == Some(envoy_id))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| format!("cargo metadata: no package {envoy_id}"))?;
    let dir = Path::new(envoy_manifest)
        .parent()
        .ok_or_else(|| format!("{envoy_manifest} has no parent directory"))?;
    Ok(dir.join("proto"))
}

/// Finds `envoy-types-<version>/proto` for the version pinned in the workspace's Cargo.lock
/// under `$CARGO_HOME/registry/src/<index>/`.
fn registry_proto_dir(manifest_dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let lock_path = manifest_dir
        .ancestors()
        .map(|dir| dir.join("Cargo.lock"))
        .find(|path| path.is_file())
        .ok_or("no Cargo.lock above the crate")?;
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path)
        .map_err(|err| format!("reading {}: {err}", lock_path.display()))?;
    let version = lock
        .split("[[package]]")
        .find(|entry| {
            entry
                .lines()
                .any(|line| line.trim() == r#"name = "envoy-types""#)
        })
        .and_then(|entry| {
            entry
                .lines()
                .find_map(|line| line.trim().strip_prefix("version = "))
                .map(|v| v.trim_matches('"').to_string())
        })
        .ok_or_else(|| format!("{} pins no envoy-types", lock_path.display()))?;

    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env("HOME")?).join(".cargo"),
    };
    let registry = cargo_home.join("registry").join("src");
    let indexes = std::fs::read_dir(&registry)
        .map_err(|err| format!("reading {}: {err}", registry.display()))?;
    indexes
        .filter_map(|index| index.ok())
        .map(|index| {
            index
                .path()
                .join(format!("envoy-types-{version}"))
                .join("proto")
        })
        .find(|dir| dir.is_dir())
        .ok_or_else(|| format!("no envoy-types-{version} under {}", registry.display()).into())
}

/// Runs a command to completion, giving up after [`METADATA_TIMEOUT`]: a build script must not
/// hang forever if the outer cargo ever holds a lock the inner one waits for.
fn run_bounded(command: &mut Command) -> Result<Vec<u8>, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run cargo metadata: {err}"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or("cargo metadata: no stdout pipe")?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or("cargo metadata: no stderr pipe")?;
    // Drained on threads so a large output cannot fill the pipe and stall the child.
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        stderr.read_to_string(&mut buf).map(|_| buf)
    });

    let deadline = Instant::now() + METADATA_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // The child may exit between the check and the kill; either way it is gone.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "cargo metadata did not finish within {} s",
                    METADATA_TIMEOUT.as_secs()
                ));
            }
            Err(err) => return Err(format!("waiting for cargo metadata: {err}")),
        }
    };
    let stdout = out_reader
        .join()
        .map_err(|_| "cargo metadata stdout reader panicked".to_string())?
        .map_err(|err| format!("reading cargo metadata output: {err}"))?;
    let stderr = err_reader
        .join()
        .map_err(|_| "cargo metadata stderr reader panicked".to_string())?
        .unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "cargo metadata failed ({status}): {}",
            stderr.trim()
        ));
    }
    Ok(stdout)
}
