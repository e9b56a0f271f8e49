//! In-process servers that live inside a namespace: each runs a single-threaded tokio runtime
//! on a thread that entered the namespace before binding, and stops when dropped.

pub mod http;
pub mod tcp;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::netns::{Netns, spawn_in};

/// What a server saw, shared between its connection tasks and the test.
pub(crate) struct Log<T> {
    items: Mutex<Vec<T>>,
    changed: Condvar,
}

impl<T: Clone> Log<T> {
    fn new() -> Arc<Log<T>> {
        Arc::new(Log {
            items: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        // A connection task that panicked mid-update leaves nothing half-written worth
        // refusing: each update is a single push or field store.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry and returns its index, for later updates.
    fn push(&self, item: T) -> usize {
        let mut items = self.lock();
        items.push(item);
        self.changed.notify_all();
        items.len() - 1
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut T)) {
        let mut items = self.lock();
        if let Some(item) = items.get_mut(index) {
            f(item);
        }
        self.changed.notify_all();
    }

    fn snapshot(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Waits until `done` holds for at least `want` entries, at most `timeout`; returns all
    /// entries, or the count that did qualify.
    fn wait_for(
        &self,
        want: usize,
        timeout: Duration,
        done: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, usize> {
        let deadline = Instant::now() + timeout;
        let mut items = self.lock();
        loop {
            let seen = items.iter().filter(|i| done(i)).count();
            if seen >= want {
                return Ok(items.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(seen);
            }
            items = self
                .changed
                .wait_timeout(items, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The thread and runtime behind every server here.
pub(crate) struct ServerThread {
    addr: SocketAddr,
    ns: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// How a server body tells [`ServerThread::run`] where it is bound, or why it is not.
pub(crate) type Bound = std::sync::mpsc::Sender<Result<SocketAddr, String>>;

impl ServerThread {
    /// Runs `body` inside `ns` on a single-threaded runtime until dropped. `body` binds, reports
    /// the bound address (or the failure) on its `Bound`, then serves until the receiver
    /// fires. Returns once the address was reported.
    ///
    /// # Panics
    /// When the namespace cannot be entered or `body` reports a failure to bind.
    fn run<B, F>(ns: &Netns, what: &str, body: B) -> ServerThread
    where
        B: FnOnce(Bound, oneshot::Receiver<()>) -> F + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = spawn_in(
            ns.name(),
            move || match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => tokio::task::LocalSet::new().block_on(&rt, body(bound_tx, stopped)),
                Err(e) => {
                    let _ = bound_tx.send(Err(format!("cannot build a runtime: {e}")));
                }
            },
        );
        let addr = match bound_rx.recv() {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => panic!("{what} in namespace {}: {e}", ns.name()),
            // The thread ended without a word: it could not enter the namespace.
            Err(_) => match thread.join() {
                Ok(Err(e)) => panic!("{what}: {e}"),
                _ => panic!("{what} in namespace {} died", ns.name()),
            },
        };
        ServerThread {
            addr,
            ns: ns.name().to_string(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Binds TCP `addr` inside `ns` (port 0 picks one) and serves each accepted connection
    /// with `handle` (given the stream, peer and local address) until dropped.
    ///
    /// # Panics
    /// When the namespace cannot be entered or `addr` cannot be bound there.
    fn start<H, F>(ns: &Netns, addr: SocketAddr, handle: H) -> ServerThread
    where
        H: Fn(TcpStream, SocketAddr, SocketAddr) -> F + Send + 'static,
        F: Future<Output = ()> + 'static,
    {
        ServerThread::run(
            ns,
            &format!("tcp server {addr}"),
            move |bound, mut stopped| async move {
                let listener = match retry_in_use(addr, || TcpListener::bind(addr)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound.send(Err(format!("cannot bind {addr}: {e}")));
                        return;
                    }
                };
                let local = match listener.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = bound.send(Err(format!("no local address for {addr}: {e}")));
                        return;
                    }
                };
                let _ = bound.send(Ok(local));
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) => {
                                let me = stream.local_addr().unwrap_or(local);
                                tokio::task::spawn_local(handle(stream, peer, me));
                            }
                            Err(e) => tracing::warn!(%local, "accept failed: {e}"),
                        },
                    }
                }
            },
        )
    }
}

/// How long a bind waits out `EADDRINUSE`.
const IN_USE_GRACE: Duration = Duration::from_secs(2);

/// Binds with `bind`, retrying while the address is in use for up to [`IN_USE_GRACE`]. A
/// server dropped a moment ago can still hold its port: any process that another test
/// thread is forking at that instant has a copy of the socket until it execs.
pub(crate) async fn retry_in_use<T, B, F>(addr: SocketAddr, bind: B) -> std::io::Result<T>
where
    B: Fn() -> F,
    F: Future<Output = std::io::Result<T>>,
{
    let deadline = Instant::now() + IN_USE_GRACE;
    loop {
        match bind().await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tracing::debug!(%addr, "address in use, retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Joining drops the runtime, which cancels every open connection: nothing of this
        // server outlives it, and its thread no longer pins the namespace.
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!(addr = %self.addr, ns = %self.ns, "server thread panicked");
        }
    }
}
