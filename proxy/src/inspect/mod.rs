//! Listener filters that look at a connection's first bytes (Envoy's `tls_inspector` and
//! `http_inspector`): they only peek, so the filter chain that is chosen still reads every
//! byte the client sent.

mod http;
mod peek;
pub(crate) mod tls;

use std::io;

use tokio::net::TcpStream;
use tracing::trace;

use self::peek::Peeker;

/// What the inspectors learnt about a connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Detected {
    pub server_name: Option<String>,
    /// `tls` once a ClientHello was seen; filter-chain matching treats `None` as `raw_buffer`.
    pub transport_protocol: Option<&'static str>,
    pub application_protocols: Vec<String>,
}

/// Why a connection was closed during inspection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InspectError {
    #[error("client closed the connection before {inspector} could decide")]
    Closed { inspector: &'static str },
    #[error("{inspector}: no decision within the first {limit} bytes")]
    TooLarge {
        inspector: &'static str,
        limit: usize,
    },
    #[error("listener filters did not finish within listener_filters_timeout")]
    Timeout,
    #[error("peeking at the connection: {0}")]
    Io(#[from] io::Error),
}

/// The bytes of one connection and what was found in them, shared by the inspectors so each
/// peek builds on the previous one.
#[derive(Debug, Default)]
pub(crate) struct Inspection {
    peeker: Peeker,
    pub detected: Detected,
    tls_done: bool,
    http_done: bool,
}

impl Inspection {
    /// Envoy's tls_inspector: a well-formed ClientHello makes the transport `tls` and records
    /// SNI and the offered ALPN protocols; anything else leaves the connection plaintext.
    pub async fn tls(&mut self, stream: &TcpStream) -> Result<(), InspectError> {
        if self.tls_done {
            return Ok(());
        }
        loop {
            match tls::parse(self.peeker.bytes()) {
                tls::Parse::ClientHello(hello) => {
                    trace!(sni = ?hello.server_name, alpn = ?hello.alpn, "TLS ClientHello");
                    self.detected.transport_protocol = Some("tls");
                    self.detected.server_name = hello.server_name;
                    self.detected.application_protocols = hello.alpn;
                    break;
                }
                tls::Parse::NotTls => break,
                tls::Parse::NeedMore => {
                    self.wait_more(stream, "tls_inspector", tls::MAX_CLIENT_HELLO)
                        .await?
                }
            }
        }
        self.tls_done = true;
        Ok(())
    }

    /// Envoy's http_inspector: on a plaintext connection, an HTTP/1.x request line or the
    /// HTTP/2 preface sets the application protocol to `http/1.0`, `http/1.1` or `h2c`.
    pub async fn http(&mut self, stream: &TcpStream) -> Result<(), InspectError> {
        if self.http_done || self.detected.transport_protocol.is_some() {
            return Ok(());
        }
        loop {
            match http::parse(self.peeker.bytes()) {
                http::Parse::Protocol(p) => {
                    trace!(protocol = p, "HTTP detected");
                    self.detected.application_protocols = vec![p.to_owned()];
                    break;
                }
                http::Parse::NotHttp => break,
                http::Parse::NeedMore => {
                    self.wait_more(stream, "http_inspector", http::MAX_INSPECT)
                        .await?
                }
            }
        }
        self.http_done = true;
        Ok(())
    }

    async fn wait_more(
        &mut self,
        stream: &TcpStream,
        inspector: &'static str,
        limit: usize,
    ) -> Result<(), InspectError> {
        if self.peeker.bytes().len() >= limit {
            return Err(InspectError::TooLarge { inspector, limit });
        }
        if self.peeker.more(stream, limit).await? {
            Ok(())
        } else if self.peeker.bytes().len() >= limit {
            Err(InspectError::TooLarge { inspector, limit })
        } else {
            Err(InspectError::Closed { inspector })
        }
    }
}
