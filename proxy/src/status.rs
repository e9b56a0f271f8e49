//! The server state the admin server reports and changes.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Envoy's server states, as `/ready` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    PreInitializing,
    Live,
    Draining,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::PreInitializing => "PRE_INITIALIZING",
            State::Live => "LIVE",
            State::Draining => "DRAINING",
        }
    }
}

#[derive(Debug)]
pub(crate) struct ServerState {
    listeners_bound: AtomicBool,
    draining: AtomicBool,
    /// Set by `/healthcheck/fail`: Envoy then reports DRAINING until `/healthcheck/ok`.
    health_check_failed: AtomicBool,
    quit: watch::Sender<bool>,
}

impl ServerState {
    pub fn new() -> ServerState {
        ServerState {
            listeners_bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            health_check_failed: AtomicBool::new(false),
            quit: watch::Sender::new(false),
        }
    }

    pub fn state(&self) -> State {
        if self.draining.load(Ordering::Acquire) || self.health_check_failed.load(Ordering::Acquire)
        {
            State::Draining
        } else if self.listeners_bound.load(Ordering::Acquire) {
            State::Live
        } else {
            State::PreInitializing
        }
    }

    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn set_health_check_failed(&self, failed: bool) {
        self.health_check_failed.store(failed, Ordering::Release);
    }

    /// Asks the process to shut down (`/quitquitquit`).
    pub fn request_quit(&self) {
        self.quit.send_replace(true);
    }

    /// Resolves once a shutdown was requested.
    pub async fn quit_requested(&self) {
        let mut rx = self.quit.subscribe();
        // The sender lives as long as `self`, so this only ends by the value turning true.
        let _ = rx.wait_for(|quit| *quit).await;
    }
}
