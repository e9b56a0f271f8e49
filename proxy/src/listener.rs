//! Listening sockets: binding, accept loops, and keeping the bound set in line with the
//! active snapshot.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use xds_client::model::{Listener, Snapshot};

use crate::connection::{self, Shared};
use crate::error::BindError;
use crate::original_dst::canonical;

/// After an accept error that is about the process (no file descriptors or memory left),
/// how long to wait before accepting again, rather than spinning on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener with its own socket.
#[derive(Debug)]
struct Bound {
    /// The socket-level settings it was bound with; a change means a new socket.
    address: SocketAddr,
    transparent: bool,
    local: SocketAddr,
    accept: JoinHandle<()>,
}

/// A socket bound but not yet accepting.
struct Pending {
    listener: Arc<Listener>,
    socket: std::net::TcpListener,
}

/// What a new snapshot changes about the bound listeners.
pub(crate) struct Plan {
    /// New sockets, bound before the snapshot becomes active (failure rejects the snapshot).
    bound_early: Vec<Pending>,
    /// Listeners whose address is held by a listener being stopped: bound after it stops.
    bind_late: Vec<Arc<Listener>>,
    stop: Vec<Arc<str>>,
}

/// The listeners that own a socket, by name.
#[derive(Debug, Default)]
pub(crate) struct ListenerSet {
    bound: Mutex<HashMap<Arc<str>, Bound>>,
}

impl ListenerSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Bound>> {
        // The map stays consistent across a panic elsewhere: every change is one insert/remove.
        self.bound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Compares `next` with what is bound and binds the sockets that can be bound while the
    /// current listeners keep running. Nothing changes if one fails.
    pub fn plan(&self, next: &Snapshot, backlog: i32) -> Result<Plan, BindError> {
        let bound = self.lock();
        let wanted: HashMap<&str, &Arc<Listener>> = next
            .listeners
            .iter()
            .filter(|l| l.bind_to_port)
            .map(|l| (&*l.name, l))
            .collect();
        let stop: Vec<Arc<str>> = bound
            .iter()
            .filter(|(name, b)| {
                wanted
                    .get(&***name)
                    .is_none_or(|l| l.address != b.address || l.transparent != b.transparent)
            })
            .map(|(name, _)| name.clone())
            .collect();
        // Port 0 never collides: the kernel picks a free port.
        let freed: Vec<SocketAddr> = stop
            .iter()
            .filter_map(|name| bound.get(name))
            .flat_map(|b| [canonical(b.address), canonical(b.local)])
            .filter(|a| a.port() != 0)
            .collect();
        let mut bound_early = Vec::new();
        let mut bind_late = Vec::new();
        for l in next.listeners.iter().filter(|l| l.bind_to_port) {
            let unchanged = bound
                .get(&l.name)
                .is_some_and(|b| b.address == l.address && b.transparent == l.transparent);
            if unchanged {
                continue;
            }
            if freed.contains(&canonical(l.address)) {
                bind_late.push(l.clone());
            } else {
                bound_early.push(Pending {
                    socket: bind(l, backlog)?,
                    listener: l.clone(),
                });
            }
        }
        Ok(Plan {
            bound_early,
            bind_late,
            stop,
        })
    }

    /// Carries out a plan once its snapshot is active: stops the accept loops of removed and
    /// changed listeners (their open connections go on), starts the new ones, then binds the
    /// listeners that were waiting for an address. Returns the listeners that could not be
    /// bound.
    pub async fn apply(
        &self,
        plan: Plan,
        shared: &Arc<Shared>,
        runtime: &Handle,
    ) -> Vec<BindError> {
        // Stopped first: a listener that changed address keeps its name, and its new socket
        // takes the old one's place in the map.
        let stopping: Vec<(Arc<str>, Bound)> = {
            let mut bound = self.lock();
            plan.stop
                .into_iter()
                .filter_map(|name| bound.remove(&name).map(|b| (name, b)))
                .collect()
        };
        for (name, b) in stopping {
            b.accept.abort();
            // Awaiting the aborted task guarantees its socket is closed before we go on.
            let _ = b.accept.await;
            info!(listener = %name, address = %b.local, "listener stopped");
        }
        let mut failed = Vec::new();
        for p in plan.bound_early {
            if let Err(e) = self.start(p, shared, runtime) {
                failed.push(e);
            }
        }
        for l in plan.bind_late {
            let started = bind(&l, shared.options.backlog).and_then(|socket| {
                self.start(
                    Pending {
                        listener: l.clone(),
                        socket,
                    },
                    shared,
                    runtime,
                )
            });
            if let Err(e) = started {
                failed.push(e);
            }
        }
        failed
    }

    fn start(&self, p: Pending, shared: &Arc<Shared>, runtime: &Handle) -> Result<(), BindError> {
        let l = &p.listener;
        let bind_error = |source| BindError {
            listener: l.name.clone(),
            address: l.address,
            source,
        };
        let local = p.socket.local_addr().map_err(bind_error)?;
        let socket = {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(p.socket).map_err(bind_error)?
        };
        let accept = runtime.spawn(accept_loop(l.name.clone(), socket, local, shared.clone()));
        info!(listener = %l.name, address = %local, "listening");
        let previous = self.lock().insert(
            l.name.clone(),
            Bound {
                address: l.address,
                transparent: l.transparent,
                local,
                accept,
            },
        );
        if let Some(old) = previous {
            // Only reachable if two updates raced, which the proxy serialises.
            old.accept.abort();
        }
        Ok(())
    }

    /// Stops every accept loop and waits until their sockets are closed: new connections are
    /// refused from then on.
    pub async fn stop_all(&self) {
        let all: Vec<(Arc<str>, Bound)> = self.lock().drain().collect();
        for (name, b) in all {
            b.accept.abort();
            let _ = b.accept.await;
            debug!(listener = %name, "stopped accepting");
        }
    }

    /// Every listener of `snapshot` with its address: where its socket is bound, or the
    /// configured address of a listener without a socket (Envoy's `/listeners`).
    pub fn listing(&self, snapshot: &Snapshot) -> Vec<(Arc<str>, SocketAddr)> {
        let bound = self.lock();
        snapshot
            .listeners
            .iter()
            .map(|l| {
                let address = bound.get(&l.name).map_or(l.address, |b| b.local);
                (l.name.clone(), address)
            })
            .collect()
    }

    /// The address a listener's socket is bound to (the kernel's choice for port 0).
    pub fn local_address(&self, name: &str) -> Option<SocketAddr> {
        self.lock().get(name).map(|b| b.local)
    }
}

/// A listening socket as the listener asks for it: `SO_REUSEADDR` (restarts must not wait for
/// TIME_WAIT), `IP_TRANSPARENT` for TPROXY, IPv6 sockets IPv6-only (Envoy's default; dual
/// stack comes from a second address).
fn bind(l: &Listener, backlog: i32) -> Result<std::net::TcpListener, BindError> {
    let socket = (|| -> io::Result<Socket> {
        let socket = Socket::new(
            Domain::for_address(l.address),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if l.address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if l.transparent {
            if l.address.is_ipv4() {
                socket.set_ip_transparent_v4(true)?;
            } else {
                socket.set_ip_transparent_v6(true)?;
            }
        }
        socket.bind(&l.address.into())?;
        socket.listen(backlog)?;
        Ok(socket)
    })()
    .map_err(|source| BindError {
        listener: l.name.clone(),
        address: l.address,
        source,
    })?;
    Ok(socket.into())
}

async fn accept_loop(name: Arc<str>, socket: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => connection::spawn(&shared, &name, local, stream, peer),
            Err(e) if is_resource_exhaustion(&e) => {
                warn!(listener = %name, "accept: {e}; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // Errors about one connection (it was reset while queued, ...): take the next.
            Err(e) => debug!(listener = %name, "accept: {e}"),
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}
