//! Connection accounting for a graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// Counts open downstream connections and can close them all at once.
#[derive(Debug)]
pub(crate) struct Connections {
    open: AtomicUsize,
    none_open: Notify,
    close_all: watch::Sender<bool>,
}

/// Held by one connection's task; dropping it ends the connection's count.
#[derive(Debug)]
pub(crate) struct Tracked {
    connections: Arc<Connections>,
    close: watch::Receiver<bool>,
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            none_open: Notify::new(),
            close_all: watch::Sender::new(false),
        })
    }

    pub fn track(self: &Arc<Self>) -> Tracked {
        self.open.fetch_add(1, Ordering::AcqRel);
        Tracked {
            connections: self.clone(),
            close: self.close_all.subscribe(),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.none_open.notified();
            tokio::pin!(notified);
            // Registered before the check, so a last close in between is not missed.
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Tells every tracked connection to close now.
    pub fn close_all(&self) {
        self.close_all.send_replace(true);
    }
}

impl Tracked {
    /// Resolves when [`Connections::close_all`] was called.
    pub async fn closing(&mut self) {
        // An error means the sender is gone, i.e. the proxy itself: close as well.
        let _ = self.close.wait_for(|close| *close).await;
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.connections.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.none_open.notify_waiters();
        }
    }
}
