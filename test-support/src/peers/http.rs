//! A minimal HTTP/1.1 server that answers every request with its own name, so a test (or
//! `curl`) can tell which peer a request reached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Log, ServerThread};
use crate::error::Error;
use crate::netns::Netns;

/// Largest request head accepted; beyond it the server answers 431.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers `200` with body `"<name>\n"` and header `x-served-by: <name>`, plus
/// `x-peer-addr` with the client address it saw; keeps connections alive unless asked to
/// close. Bodies are read by `content-length`; chunked requests get `501`.
pub struct HttpServer {
    thread: ServerThread,
    log: Arc<Log<Request>>,
}

impl HttpServer {
    /// Serves on `addr` inside `ns` (port 0 picks a free port).
    ///
    /// # Panics
    /// When `addr` cannot be bound inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> HttpServer {
        let log = Log::new();
        let requests = log.clone();
        let name: Arc<str> = name.into();
        let thread = ServerThread::start(ns, addr, move |stream, peer, local| {
            let log = requests.clone();
            let name = name.clone();
            async move {
                if let Err(e) = serve(stream, peer, local, &name, &log).await {
                    tracing::debug!(%peer, %local, "http connection ended: {e}");
                }
            }
        });
        HttpServer { thread, log }
    }

    pub fn addr(&self) -> SocketAddr {
        self.thread.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.snapshot()
    }

    /// Waits until `n` requests have arrived, at most `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<Vec<Request>, Error> {
        self.log
            .wait_for(n, timeout, |_| true)
            .map_err(|seen| Error::TooFew {
                what: "requests",
                addr: self.addr(),
                want: n,
                seen,
                waited: timeout,
            })
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    name: &str,
    log: &Log<Request>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    name,
                    peer,
                    true,
                )
                .await;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                // A clean end between requests; mid-request the client simply gave up.
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let Some(mut req) = parse_head(&head, peer, local) else {
            return respond(&mut stream, "400 Bad Request", name, peer, true).await;
        };
        if req.header("transfer-encoding").is_some() {
            log.push(req);
            return respond(&mut stream, "501 Not Implemented", name, peer, true).await;
        }
        let body_len = match req
            .header("content-length")
            .map(|v| v.trim().parse::<usize>())
        {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return respond(&mut stream, "400 Bad Request", name, peer, true).await,
        };
        while buf.len() < body_len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..body_len);
        req.body_len = body_len;
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        log.push(req);
        respond(&mut stream, "200 OK", name, peer, close).await?;
        if close {
            return Ok(());
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_head(head: &str, peer: SocketAddr, local: SocketAddr) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some(Request {
        peer,
        local,
        method,
        path,
        headers,
        body_len: 0,
    })
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    name: &str,
    peer: SocketAddr,
    close: bool,
) -> std::io::Result<()> {
    let body = format!("{name}\n");
    let connection = if close { "close" } else { "keep-alive" };
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         x-served-by: {name}\r\nx-peer-addr: {peer}\r\nconnection: {connection}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    if close {
        stream.shutdown().await?;
    }
    Ok(())
}
