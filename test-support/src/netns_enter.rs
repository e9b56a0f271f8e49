//! Running a closure with its thread inside a test's network namespace.
//!
//! A network namespace belongs to a thread, and processes a thread spawns start in that
//! thread's namespace. So code under test that shells out (to `iptables`, `nft`, `ip`) acts on
//! the namespace's own netfilter and routing state, never on the host's.

use std::fs::File;

use nix::sched::{CloneFlags, setns};

use crate::netns::Netns;

/// Runs `f` on a fresh thread that has entered `ns`, and returns its result. The thread ends
/// with `f`, so no other code ever runs in the namespace by accident; a panic in `f` is
/// propagated to the caller.
pub fn within<T, F>(ns: &Netns, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("cannot enter network namespace {path}: {e}"));
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
