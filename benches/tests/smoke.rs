//! The harness end to end in its tiny mode (seconds per row, one repetition): every row
//! gets a figure on every path it applies to, and nothing it created is left behind. No
//! figure is judged: on a shared CI machine they mean nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// A vm-proxy binary to measure: the debug build is enough to check the plumbing.
fn vm_proxy() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "vm-proxy", "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .status()
        .expect("run cargo build -p vm-proxy");
    assert!(status.success(), "cargo build -p vm-proxy: {status}");
    target_dir().join("debug").join("vm-proxy")
}

fn our_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("vmpb-"))
        .map(str::to_string)
        .collect()
}

fn our_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("read the temp dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmpb-"))
                .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

#[test]
fn tiny_run_has_a_figure_for_every_row_and_leaves_nothing_behind() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the harness needs root (network namespaces, capture rules)"
    );
    let bin = vm_proxy();
    let json = std::env::temp_dir().join(format!("harness-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["--tiny", "--vm-proxy"])
        .arg(&bin)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "harness failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("vm/haproxy"),
        "no table on stdout:\n{stdout}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read the JSON"))
            .expect("parse the JSON");
    let _ = std::fs::remove_file(&json);
    let rows = doc["rows"].as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    for want in [
        "lat/r1000/c4/p50",
        "lat/r1000/c4/p99.9",
        "lat/r1000/c4/cpu",
        "sat/rps",
        "sat/cpu",
        "rss/max",
        "rss/steady",
        "bulk/P1",
        "bulk/P8",
        "idle/per-conn",
    ] {
        assert!(ids.contains(&want), "row {want} missing from {ids:?}");
    }
    for row in rows {
        let per_proxy = row["kind"] == "per_proxy";
        let paths = row["paths"].as_object().expect("paths");
        let want: &[&str] = if per_proxy {
            &["vm-proxy", "haproxy", "nginx"]
        } else {
            &["direct", "vm-proxy", "haproxy", "nginx"]
        };
        for p in want {
            assert!(
                paths
                    .get(*p)
                    .and_then(|v| v["median"].as_f64())
                    .is_some_and(f64::is_finite),
                "row {} has no figure for {p}: {row}",
                row["id"]
            );
        }
        if row["kind"] == "latency" {
            assert!(paths["vm-proxy"]["added_over_direct"].is_number(), "{row}");
            assert!(
                paths["vm-proxy"]["ratios"]["vs_haproxy"].is_number(),
                "{row}"
            );
        }
    }
    assert_eq!(
        doc["errors"].as_array().map(Vec::len),
        Some(0),
        "{}",
        doc["errors"]
    );
    assert!(
        !doc["not_yet_measurable"]
            .as_array()
            .expect("list")
            .is_empty()
    );

    assert_eq!(
        our_namespaces(),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert_eq!(
        our_dirs(),
        Vec::<PathBuf>::new(),
        "work directories left behind"
    );
}
