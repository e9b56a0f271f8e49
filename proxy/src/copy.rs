//! Moving bytes both ways between the downstream and upstream sockets.
//!
//! Each direction has one buffer, allocated once and reused. An end of stream on one side is
//! passed on as a write shutdown (FIN) to the other, and the opposite direction carries on
//! until it ends too, so half-closed protocols work. An error on either side ends both.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) use crate::metrics::Progress;

/// A stream whose two directions can be driven at once. A TCP socket splits into borrowed
/// halves with no synchronisation (the plaintext hot path); a TLS stream is one state machine,
/// so its halves share it through `tokio::io::split`'s lock.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Unpin {
    type Read<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Duplex for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

macro_rules! duplex_by_lock {
    ($($t:ty),*) => {$(
        impl<S: AsyncRead + AsyncWrite + Unpin> Duplex for $t {
            type Read<'a> = tokio::io::ReadHalf<&'a mut Self> where Self: 'a;
            type Write<'a> = tokio::io::WriteHalf<&'a mut Self> where Self: 'a;
            fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
                tokio::io::split(self)
            }
        }
    )*};
}

duplex_by_lock!(
    tokio_rustls::server::TlsStream<S>,
    tokio_rustls::client::TlsStream<S>
);

/// Bytes moved in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transferred {
    pub downstream_to_upstream: u64,
    pub upstream_to_downstream: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error("no traffic either way for {0:?}")]
    Idle(Duration),
    #[error("downstream: {0}")]
    Downstream(#[source] io::Error),
    #[error("upstream: {0}")]
    Upstream(#[source] io::Error),
}

/// Copies until both directions have ended, either side fails, or nothing moved for
/// `idle_timeout`. Bytes are also added to `progress` as they move, for metrics reported
/// while the connection is open.
pub(crate) async fn bidirectional<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    idle_timeout: Option<Duration>,
    buffer_size: usize,
    progress: &Progress,
) -> Result<Transferred, CopyError>
where
    D: Duplex,
    U: Duplex,
{
    let activity = Activity::new();
    let (mut down_read, mut down_write) = downstream.halves();
    let (mut up_read, mut up_write) = upstream.halves();
    let up = one_way(
        &mut down_read,
        &mut up_write,
        buffer_size,
        &activity,
        &progress.downstream_to_upstream,
        CopyError::Downstream,
        CopyError::Upstream,
    );
    let down = one_way(
        &mut up_read,
        &mut down_write,
        buffer_size,
        &activity,
        &progress.upstream_to_downstream,
        CopyError::Upstream,
        CopyError::Downstream,
    );
    let both = async { tokio::try_join!(up, down) };
    let (d2u, u2d) = match idle_timeout {
        None => both.await?,
        Some(idle) => tokio::select! {
            r = both => r?,
            () = activity.idle_for(idle) => return Err(CopyError::Idle(idle)),
        },
    };
    Ok(Transferred {
        downstream_to_upstream: d2u,
        upstream_to_downstream: u2d,
    })
}

async fn one_way<R, W>(
    from: &mut R,
    to: &mut W,
    buffer_size: usize,
    activity: &Activity,
    moved: &AtomicU64,
    read_err: fn(io::Error) -> CopyError,
    write_err: fn(io::Error) -> CopyError,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(buffer_size);
    let mut total = 0u64;
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            to.shutdown().await.map_err(write_err)?;
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf).await.map_err(write_err)?;
        activity.touch();
        total += n as u64;
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// When bytes last moved, shared by both directions.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
