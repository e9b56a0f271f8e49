//! Following an ADS server: every snapshot the xDS client accepts goes to
//! [`Proxy::update`], whose error (invalid, or a listener that cannot be bound) becomes the
//! client's NACK.

use std::sync::Arc;

use xds_client::ads::{AdsClient, ApplyFn};

use crate::proxy::Proxy;

/// The client's [`ApplyFn`] for `proxy`.
pub fn apply_to(proxy: Proxy) -> ApplyFn {
    Arc::new(move |snapshot| {
        let proxy = proxy.clone();
        Box::pin(async move { proxy.update(snapshot).await.map_err(|e| e.to_string()) })
    })
}

/// Runs `client` on the current runtime, feeding `proxy`, until the returned task is
/// aborted.
pub fn follow(client: AdsClient, proxy: &Proxy) -> tokio::task::JoinHandle<()> {
    tokio::spawn(client.run(apply_to(proxy.clone())))
}
