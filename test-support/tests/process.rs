//! Supervised processes: uid switching, capabilities, logs, signals, and nothing left behind.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use test_support::{Error, Topology, wait_for_tcp};

const T: Duration = Duration::from_secs(5);

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

#[test]
fn runs_as_the_given_uid_without_groups() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("sh")
            .args(["-c", "id -u; id -g; id -G"])
            .user(1337, 1337)
            .spawn();
    let status = p.wait_timeout(T).unwrap();
    assert!(status.success(), "{}", p.logs());
    assert_eq!(p.stdout(), "1337\n1337\n1337\n");
}

#[test]
fn keeps_ambient_capabilities_across_the_uid_change() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("grep")
            .args(["^CapAmb", "/proc/self/status"])
            .user(1337, 1337)
            .ambient_caps(&["net_admin"])
            .spawn();
    assert!(p.wait_timeout(T).unwrap().success(), "{}", p.logs());
    // CAP_NET_ADMIN is bit 12.
    assert_eq!(
        p.stdout().split_whitespace().nth(1),
        Some("0000000000001000")
    );
}

#[test]
fn process_lives_in_the_namespace_with_its_pid() {
    let t = Topology::vm_and_mesh();
    let p = t.vm.process("sleep").arg("30").spawn();
    let want = std::fs::metadata(t.vm.path()).unwrap().ino();
    // The pid is the program itself once `ip netns exec` has exec'd it.
    let deadline = Instant::now() + T;
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    while comm(p.pid()).trim() != "sleep" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(comm(p.pid()).trim(), "sleep");
    let ns = std::fs::metadata(format!("/proc/{}/ns/net", p.pid())).unwrap();
    assert_eq!(ns.ino(), want);
}

#[test]
fn drop_kills_the_whole_process_group() {
    let t = Topology::vm_and_mesh();
    let p =
        t.vm.process("sh")
            .args(["-c", "sleep 300 & echo $!; wait"])
            .spawn();
    let deadline = Instant::now() + T;
    while p.stdout().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let leader = p.pid();
    let child: u32 = p.stdout().trim().parse().unwrap();
    assert!(alive(leader) && alive(child));
    let log_dir = p.log_dir().to_path_buf();
    drop(p);
    assert!(gone_within(leader, T), "leader {leader} still runs");
    assert!(gone_within(child, T), "background child {child} still runs");
    assert!(!log_dir.exists(), "logs of a passing test are removed");
}

#[test]
fn terminate_delivers_sigterm_and_reports_the_exit() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("sh")
            .args([
                "-c",
                "trap 'echo got term; exit 7' TERM; echo ready; sleep 30 & wait",
            ])
            .spawn();
    let deadline = Instant::now() + T;
    while !p.stdout().contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = p.terminate(T).unwrap();
    assert_eq!(status.code(), Some(7), "{}", p.logs());
    assert!(p.stdout().contains("got term"));
}

#[test]
fn kill_is_sigkill() {
    let t = Topology::vm_and_mesh();
    let mut p = t.vm.process("sleep").arg("30").spawn();
    let status = p.kill().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(!alive(p.pid()));
    // Asking again returns the same status instead of signalling a reused pid.
    assert_eq!(p.kill().unwrap().signal(), Some(9));
}

#[test]
fn wait_timeout_is_bounded() {
    let t = Topology::vm_and_mesh();
    let mut p = t.vm.process("sleep").arg("30").spawn();
    match p.wait_timeout(Duration::from_millis(100)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(p.try_status().unwrap().is_none());
}

#[test]
fn wait_for_tcp_on_a_process_listener() {
    let t = Topology::vm_and_mesh();
    let addr = t.vm.addr(8080);
    let mut p =
        t.vm.process("socat")
            .args(["TCP-LISTEN:8080,bind=198.18.0.2,reuseaddr,fork", "EXEC:cat"])
            .user(1337, 1337)
            .spawn();
    p.wait_for_tcp(addr, T).unwrap();
    // Reachable from the peer as well.
    wait_for_tcp(&t.mesh, addr, T).unwrap();
    let got = test_support::tcp_exchange(&t.mesh, addr, b"via socat", T).unwrap();
    assert_eq!(got.received, b"via socat");
}

#[test]
fn wait_for_tcp_fails_fast_with_logs_when_the_process_dies() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("sh")
            .args(["-c", "echo cannot bind >&2; exit 3"])
            .spawn();
    let started = Instant::now();
    match p.wait_for_tcp(t.vm.addr(9), Duration::from_secs(30)) {
        Err(e @ Error::ExitedEarly { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("cannot bind"), "{msg}");
            assert!(msg.contains("exit status: 3"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn logs_are_kept_when_the_test_fails() {
    let t = Topology::vm_and_mesh();
    let mut dir = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut p = t.vm.process("echo").arg("evidence").spawn();
        p.wait_timeout(T).unwrap();
        dir = Some(p.log_dir().to_path_buf());
        panic!("a failing assertion");
    }));
    assert!(outcome.is_err());
    let dir = dir.unwrap();
    let kept = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(kept, "evidence\n");
}

#[test]
fn run_timeout_kills_a_hanging_program() {
    let t = Topology::vm_and_mesh();
    match t
        .vm
        .run_timeout(&["sleep", "30"], Duration::from_millis(200))
    {
        Err(Error::Timeout { pid, .. }) => assert!(gone_within(pid, T)),
        other => panic!("{other:?}"),
    }
    let out = t.vm.run_timeout_input(&["cat"], b"echoed", T).unwrap();
    assert_eq!(out.stdout, b"echoed");
}

#[test]
fn drop_kills_what_an_exited_program_left_running() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("sh")
            .args(["-c", "sleep 300 & echo $!"])
            .spawn();
    assert!(p.wait_timeout(T).unwrap().success());
    let orphan: u32 = p.stdout().trim().parse().unwrap();
    assert!(alive(orphan));
    drop(p);
    assert!(gone_within(orphan, T), "orphan {orphan} still runs");
}

#[test]
fn environment_and_directory_are_passed() {
    let t = Topology::vm_and_mesh();
    let mut p =
        t.vm.process("sh")
            .args(["-c", "echo \"$HARNESS_VAR\"; pwd"])
            .env("HARNESS_VAR", "set by the test")
            .current_dir("/usr")
            .user(1337, 1337)
            .spawn();
    assert!(p.wait_timeout(T).unwrap().success(), "{}", p.logs());
    assert_eq!(p.stdout(), "set by the test\n/usr\n");
}
