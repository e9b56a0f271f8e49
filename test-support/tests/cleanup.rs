//! Nothing outlives a test: namespaces, processes and server threads go away on drop, also
//! when the test panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::{Netns, TcpServer, Topology, run_ok};

fn netns_list() -> Vec<String> {
    run_ok(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

#[test]
fn a_panicking_test_leaves_no_namespace_or_process() {
    let mut names = Vec::new();
    let mut pids = Vec::new();
    let mut strays = Vec::new();
    let mut log_dirs = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let t = Topology::builder().node("a").node("b").node("c").build();
        names.extend(t.nodes().iter().map(|n| n.name().to_string()));
        names.push(t.hub().unwrap().name().to_string());
        let _srv = TcpServer::echo(t.node("b"), t.node("b").addr(0));
        let p = t.node("a").process("sleep").arg("300").spawn();
        pids.push(p.pid());
        log_dirs.push(p.log_dir().to_path_buf());
        // Started outside the supervisor: the namespace itself must kill it.
        let stray = t.node("c").command("sleep").arg("300").spawn().unwrap();
        pids.push(stray.id());
        strays.push(stray);
        let listed = netns_list();
        assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");
        panic!("the test failed here");
    }));
    assert!(outcome.is_err());
    let listed = netns_list();
    for n in &names {
        assert!(!listed.contains(n), "{n} still exists: {listed:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in pids {
        assert!(!running(p), "pid {p} survived");
    }
    for mut s in strays {
        assert!(!s.wait().unwrap().success(), "the stray was killed");
    }
    // A failing test keeps its processes' logs; this one failed on purpose.
    for d in log_dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_dropped_server_frees_its_port_and_thread() {
    let t = Topology::vm_and_mesh();
    let addr = t.mesh.addr(7100);
    let first = TcpServer::echo(&t.mesh, addr);
    drop(first);
    // Binding the same address again only works once the old listener is closed.
    let second = TcpServer::echo(&t.mesh, addr);
    assert_eq!(second.addr(), addr);
}

#[test]
fn netns_names_are_unique_and_removed() {
    let a = Netns::new("u");
    let b = Netns::new("u");
    assert_ne!(a.name(), b.name());
    let names = [a.name().to_string(), b.name().to_string()];
    assert!(names.iter().all(|n| netns_list().contains(n)));
    drop(a);
    drop(b);
    let listed = netns_list();
    assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
}
