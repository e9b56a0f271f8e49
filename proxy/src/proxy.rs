//! The proxy as a whole: start, apply snapshots, drain, and the process shell around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certs::{IdentityHandle, RotationManager};
use tokio::runtime::{Builder, Handle};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tracing::{info, warn};
use xds_client::ads::AdsClient;
use xds_client::model::Snapshot;

use crate::admin::{self, AdminContext, AdminServer, ConfigDumpFn};
use crate::connection::Shared;
use crate::drain::Connections;
use crate::error::{BindErrors, Error};
use crate::identity::Provisioning;
use crate::listener::ListenerSet;
use crate::options::Options;
use crate::state::{Active, ConfigHolder};
use crate::status::ServerState;
use crate::validate;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Connections still open when the drain time ran out, closed then.
    pub closed_at_deadline: usize,
}

/// A running proxy: its listeners, the active snapshot and the admin server. Cloning gives
/// another handle to the same proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    listeners: Arc<ListenerSet>,
    state: Arc<ServerState>,
    admin: Mutex<Option<AdminServer>>,
    admin_address: SocketAddr,
    /// Where listener accept loops and connections run.
    runtime: Handle,
    /// Snapshot updates and the drain change the bound listeners one at a time.
    changing: Mutex<()>,
}

impl Proxy {
    /// Binds the snapshot's listeners and the admin server (at the snapshot's admin address,
    /// else [`Options::default_admin_address`]) on the tokio runtime this is called from, and
    /// starts accepting. `/ready` says LIVE from the moment this returns.
    pub async fn start(
        snapshot: Snapshot,
        config_dump: impl Fn() -> serde_json::Value + Send + Sync + 'static,
        options: Options,
    ) -> Result<Proxy, Error> {
        let here = Handle::try_current().map_err(|e| Error::NoRuntime(e.to_string()))?;
        Proxy::start_on(
            snapshot,
            Arc::new(config_dump),
            options,
            here.clone(),
            &here,
        )
        .await
    }

    /// Like [`Proxy::start`], with the admin server on `admin_runtime` so a slow admin request
    /// never takes a data-path thread.
    async fn start_on(
        snapshot: Snapshot,
        config_dump: ConfigDumpFn,
        options: Options,
        runtime: Handle,
        admin_runtime: &Handle,
    ) -> Result<Proxy, Error> {
        validate::snapshot(&snapshot, options.identity.is_some())?;
        let admin_address = snapshot.admin.unwrap_or(options.default_admin_address);
        let shared = Arc::new(Shared {
            config: ConfigHolder::new(Active::new(Arc::new(Snapshot::default()))),
            connections: Connections::new(),
            options,
        });
        let listeners = Arc::new(ListenerSet::default());
        let state = Arc::new(ServerState::new());
        let ctx = Arc::new(AdminContext {
            state: state.clone(),
            listeners: listeners.clone(),
            shared: shared.clone(),
            config_dump,
        });
        let admin = admin::start(admin_address, ctx, admin_runtime)?;
        let proxy = Proxy {
            inner: Arc::new(Inner {
                shared,
                listeners,
                state,
                admin_address: admin.local,
                admin: Mutex::new(Some(admin)),
                runtime,
                changing: Mutex::new(()),
            }),
        };
        if let Some(identity) = &proxy.inner.shared.options.identity {
            wait_for_identity(identity).await;
        }
        if let Err(e) = proxy.apply(snapshot).await {
            proxy.inner.listeners.stop_all().await;
            proxy.stop_admin().await;
            return Err(e);
        }
        proxy.inner.state.set_listeners_bound();
        Ok(proxy)
    }

    /// Makes `snapshot` the active configuration. Connections accepted from now on use it;
    /// open ones keep the snapshot they were accepted under. Listeners that are new or whose
    /// address changed are bound, removed ones stop accepting (their connections go on).
    /// A listener that cannot be bound rejects the whole snapshot, unless its address was
    /// held by a listener of the previous snapshot: then the snapshot stays active without
    /// it ([`Error::Rebind`]).
    pub async fn update(&self, snapshot: Snapshot) -> Result<(), Error> {
        validate::snapshot(&snapshot, self.inner.shared.options.identity.is_some())?;
        if snapshot
            .admin
            .is_some_and(|a| a != self.inner.admin_address)
        {
            warn!(
                current = %self.inner.admin_address, requested = ?snapshot.admin,
                "the admin address only changes with a restart; keeping the current one"
            );
        }
        self.apply(snapshot).await
    }

    async fn apply(&self, snapshot: Snapshot) -> Result<(), Error> {
        let _one_at_a_time = self.inner.changing.lock().await;
        if self.inner.state.is_draining() {
            return Err(Error::invalid(
                "proxy",
                "draining: no new configuration is taken",
            ));
        }
        let shared = &self.inner.shared;
        let plan = self
            .inner
            .listeners
            .plan(&snapshot, shared.options.backlog)?;
        let previous = shared.config.current();
        shared
            .config
            .replace(Active::after(Arc::new(snapshot), Some(&previous)));
        let failed = self
            .inner
            .listeners
            .apply(plan, shared, &self.inner.runtime)
            .await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Rebind(BindErrors(failed)))
        }
    }

    /// The address a listener's socket is bound to; useful when it asked for port 0.
    pub fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        self.inner.listeners.local_address(name)
    }

    /// Where the admin server listens.
    pub fn admin_address(&self) -> SocketAddr {
        self.inner.admin_address
    }

    /// Downstream connections open right now.
    pub fn open_connections(&self) -> usize {
        self.inner.shared.connections.open()
    }

    /// Resolves when `POST /quitquitquit` asked the proxy to shut down.
    pub async fn quit_requested(&self) {
        self.inner.state.quit_requested().await
    }

    /// Starts a drain: `/ready` turns to DRAINING and every listener stops accepting, so new
    /// connections are refused once this returns. Open connections go on.
    pub async fn start_drain(&self) {
        let _one_at_a_time = self.inner.changing.lock().await;
        self.inner.state.set_draining();
        self.inner.listeners.stop_all().await;
    }

    /// Waits up to [`Options::drain_timeout`] for open connections to finish, then closes the
    /// rest.
    pub async fn finish_drain(&self) -> DrainOutcome {
        let connections = &self.inner.shared.connections;
        let limit = self.inner.shared.options.drain_timeout;
        if tokio::time::timeout(limit, connections.all_closed())
            .await
            .is_ok()
        {
            return DrainOutcome {
                closed_at_deadline: 0,
            };
        }
        let closed_at_deadline = self.close_all().await;
        DrainOutcome { closed_at_deadline }
    }

    /// [`Proxy::start_drain`] then [`Proxy::finish_drain`].
    pub async fn drain(&self) -> DrainOutcome {
        self.start_drain().await;
        self.finish_drain().await
    }

    /// Drains, then stops the admin server.
    pub async fn shutdown(self) -> DrainOutcome {
        let outcome = self.drain().await;
        self.stop_admin().await;
        outcome
    }

    /// Closes every open connection now; returns how many there were.
    async fn close_all(&self) -> usize {
        let connections = &self.inner.shared.connections;
        let open = connections.open();
        connections.close_all();
        // Each task notices at its next poll; waiting lets their sockets close before we
        // report, bounded in case a task is stuck in a blocking call.
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.all_closed()).await;
        open
    }

    async fn stop_admin(&self) {
        if let Some(admin) = self.inner.admin.lock().await.take() {
            admin.stop().await;
        }
    }

    /// The process shell: runs the proxy on its own runtimes (data path on
    /// [`Options::worker_threads`] workers, admin on a separate thread) until SIGTERM, SIGINT
    /// or `/quitquitquit`, then drains for up to [`Options::drain_timeout`] and returns. A
    /// second signal during the drain closes the remaining connections at once.
    pub fn run(
        snapshot: Snapshot,
        config_dump: ConfigDumpFn,
        options: Options,
    ) -> Result<(), Error> {
        Proxy::run_following(snapshot, config_dump, options, None, None)
    }

    /// [`Proxy::run`], with `ads` (if any) running on the control runtime and feeding
    /// [`Proxy::update`] from the moment the listeners are bound, and `identity` (if any)
    /// keeping the workload certificate current there, published into
    /// [`Options::identity`] (which it sets).
    pub fn run_following(
        snapshot: Snapshot,
        config_dump: ConfigDumpFn,
        mut options: Options,
        ads: Option<AdsClient>,
        identity: Option<Provisioning>,
    ) -> Result<(), Error> {
        let mut data = Builder::new_multi_thread();
        data.enable_all().thread_name("vm-proxy-worker");
        if let Some(n) = options.worker_threads {
            data.worker_threads(n.max(1));
        }
        let data = data.build().map_err(|source| Error::Runtime {
            what: "data-path",
            source,
        })?;
        let control = ControlRuntime::start()?;
        let _rotation = match identity {
            Some(p) => {
                options.identity = Some(p.handle.clone());
                let _on_control = control.handle.enter();
                Some(
                    RotationManager::start_with(p.handle, p.source, p.policy)
                        .map_err(|e| Error::NoRuntime(e.to_string()))?,
                )
            }
            None => None,
        };
        data.block_on(async {
            let mut term = signal(SignalKind::terminate()).map_err(|source| Error::Signal {
                signal: "SIGTERM",
                source,
            })?;
            let mut int = signal(SignalKind::interrupt()).map_err(|source| Error::Signal {
                signal: "SIGINT",
                source,
            })?;
            // Starting may wait for the first certificate: a signal meanwhile just ends it.
            let starting =
                Proxy::start_on(snapshot, config_dump, options, Handle::current(), &control.handle);
            let proxy = tokio::select! {
                started = starting => started?,
                _ = term.recv() => {
                    info!("SIGTERM while starting");
                    return Ok(());
                }
                _ = int.recv() => {
                    info!("SIGINT while starting");
                    return Ok(());
                }
            };
            let following = ads.map(|client| {
                control
                    .handle
                    .spawn(client.run(crate::xds::apply_to(proxy.clone())))
            });
            let why = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = proxy.quit_requested() => "quitquitquit",
            };
            let limit = proxy.inner.shared.options.drain_timeout;
            info!(
                open = proxy.open_connections(),
                "{why}: draining for up to {limit:?}"
            );
            // A draining proxy takes no configuration: stop asking for it.
            if let Some(task) = following {
                task.abort();
            }
            proxy.start_drain().await;
            tokio::select! {
                outcome = proxy.finish_drain() => {
                    info!(closed_at_deadline = outcome.closed_at_deadline, "drained")
                }
                _ = term.recv() => warn!(closed = proxy.close_all().await, "SIGTERM again: closing now"),
                _ = int.recv() => warn!(closed = proxy.close_all().await, "SIGINT again: closing now"),
            }
            proxy.stop_admin().await;
            Ok(())
        })
    }
}

/// Waits for the first workload certificate, as Envoy keeps listeners with TLS chains
/// warming until pilot-agent's SDS has the secrets: nothing is bound or accepted before.
/// Bounded only by the identity source, which retries with backoff and logs every failure.
async fn wait_for_identity(identity: &IdentityHandle) {
    let mut updates = identity.subscribe();
    let mut logged = false;
    while identity.current().is_none() {
        if !logged {
            info!("waiting for the workload certificate before binding listeners");
            logged = true;
        }
        if updates.changed().await.is_err() {
            warn!("the workload certificate source stopped before publishing one");
            return;
        }
    }
    if logged {
        info!("workload certificate in place; binding listeners");
    }
}

/// A single-threaded runtime on its own thread for the control side (admin server).
struct ControlRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlRuntime {
    fn start() -> Result<ControlRuntime, Error> {
        let runtime_error = |source| Error::Runtime {
            what: "control",
            source,
        };
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vm-proxy-control".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(runtime_error)?;
        Ok(ControlRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ControlRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
