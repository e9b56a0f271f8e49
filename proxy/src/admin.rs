//! The admin server: the part of Envoy's admin API that Istio tooling and operators use.
//!
//! Paths match exactly, as in Envoy. Endpoints that change the server need POST (405
//! otherwise, with Envoy's message); the others answer GET and HEAD. Unknown paths get 404
//! with the list of endpoints. hyper rejects malformed requests with 400 before they get here.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::connection::Shared;
use crate::error::Error;
use crate::listener::ListenerSet;
use crate::status::{ServerState, State};

/// A client has this long to send a request's headers (slow clients must not pile up).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Produces `/config_dump`'s JSON (the decoder's `ConfigDump::to_json`).
pub type ConfigDumpFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the admin endpoints read and change.
pub(crate) struct AdminContext {
    pub state: Arc<ServerState>,
    pub listeners: Arc<ListenerSet>,
    pub shared: Arc<Shared>,
    pub config_dump: ConfigDumpFn,
}

pub(crate) struct AdminServer {
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Stops serving; open admin connections are closed too.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub(crate) fn start(
    address: SocketAddr,
    ctx: Arc<AdminContext>,
    runtime: &Handle,
) -> Result<AdminServer, Error> {
    let bind_error = |source| Error::AdminBind { address, source };
    // std sets SO_REUSEADDR, so a restart does not wait for old connections' TIME_WAIT.
    let socket = std::net::TcpListener::bind(address).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    let local = socket.local_addr().map_err(bind_error)?;
    let socket = {
        let _in_runtime = runtime.enter();
        TcpListener::from_std(socket).map_err(bind_error)?
    };
    info!(address = %local, "admin server listening");
    let task = runtime.spawn(serve(socket, ctx));
    Ok(AdminServer { local, task })
}

async fn serve(socket: TcpListener, ctx: Arc<AdminContext>) {
    // Owning the connections' tasks here means stopping the server stops them as well.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(ctx.clone(), req));
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            debug!(%peer, "admin connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("admin server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

struct Endpoint {
    path: &'static str,
    help: &'static str,
    mutates: bool,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/config_dump",
        help: "dump current Envoy configs",
        mutates: false,
    },
    Endpoint {
        path: "/healthcheck/fail",
        help: "cause the server to fail health checks",
        mutates: true,
    },
    Endpoint {
        path: "/healthcheck/ok",
        help: "cause the server to pass health checks",
        mutates: true,
    },
    Endpoint {
        path: "/help",
        help: "print out list of admin commands",
        mutates: false,
    },
    Endpoint {
        path: "/listeners",
        help: "print listener info (format=json for JSON)",
        mutates: false,
    },
    Endpoint {
        path: "/quitquitquit",
        help: "drain and exit the server",
        mutates: true,
    },
    Endpoint {
        path: "/ready",
        help: "print server state, return 200 if LIVE, otherwise return 503",
        mutates: false,
    },
    Endpoint {
        path: "/stats/prometheus",
        help: "print server stats in prometheus format",
        mutates: false,
    },
];

async fn handle(
    ctx: Arc<AdminContext>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let Some(endpoint) = ENDPOINTS.iter().find(|e| e.path == path) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("invalid path. {}", help()),
        ));
    };
    let method = req.method();
    if endpoint.mutates && method != Method::POST {
        warn!(path, %method, "admin path mutates state, method is not POST");
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, POST required."),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Ok(r);
    }
    if !endpoint.mutates && method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, GET required."),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let response = match endpoint.path {
        "/ready" => {
            let state = ctx.state.state();
            let code = if state == State::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, format!("{}\n", state.name()))
        }
        "/config_dump" => config_dump(&ctx).await,
        "/listeners" => listeners(&ctx, req.uri().query()),
        "/stats/prometheus" => prometheus(&ctx),
        "/healthcheck/fail" => {
            ctx.state.set_health_check_failed(true);
            text(StatusCode::OK, "OK\n".into())
        }
        "/healthcheck/ok" => {
            ctx.state.set_health_check_failed(false);
            text(StatusCode::OK, "OK\n".into())
        }
        "/quitquitquit" => {
            info!("shutdown requested through the admin server");
            ctx.state.request_quit();
            text(StatusCode::OK, "OK\n".into())
        }
        _ => text(StatusCode::OK, help()),
    };
    Ok(response)
}

async fn config_dump(ctx: &AdminContext) -> Response<Full<Bytes>> {
    // Building a large dump is CPU work that must not hold up other admin requests.
    let dump = ctx.config_dump.clone();
    let rendered = tokio::task::spawn_blocking(move || serde_json::to_vec_pretty(&dump())).await;
    match rendered {
        Ok(Ok(body)) => json_response(body),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config dump: cannot render JSON: {e}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config dump: building it failed: {e}\n"),
        ),
    }
}

/// Envoy's `/listeners`: `name::address` lines, or `?format=json` as `admin.v3.Listeners`.
fn listeners(ctx: &AdminContext, query: Option<&str>) -> Response<Full<Bytes>> {
    let active = ctx.shared.config.current();
    let listing = ctx.listeners.listing(&active.snapshot);
    let json = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|kv| kv == "format=json");
    if json {
        let statuses: Vec<_> = listing
            .iter()
            .map(|(name, addr)| {
                json!({
                    "name": &**name,
                    "local_address": {"socket_address": {
                        "address": addr.ip().to_string(),
                        "port_value": addr.port(),
                    }},
                })
            })
            .collect();
        let body = serde_json::to_vec_pretty(&json!({ "listener_statuses": statuses }));
        match body {
            Ok(b) => json_response(b),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("listeners: cannot render JSON: {e}\n"),
            ),
        }
    } else {
        let mut out = String::new();
        for (name, addr) in &listing {
            let _ = writeln!(out, "{name}::{addr}");
        }
        text(StatusCode::OK, out)
    }
}

/// Prometheus text format 0.0.4, the content type Envoy answers with.
fn prometheus(ctx: &AdminContext) -> Response<Full<Bytes>> {
    match ctx.shared.options.metrics.render() {
        Ok(body) => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(body),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stats: cannot render: {e}\n"),
        ),
    }
}

fn help() -> String {
    let mut out = String::from("admin commands are:\n");
    for e in ENDPOINTS {
        let post = if e.mutates { " (POST)" } else { "" };
        let _ = writeln!(out, "  {}{}: {}", e.path, post, e.help);
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=UTF-8", Bytes::from(body))
}

fn json_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    response(StatusCode::OK, "application/json", Bytes::from(body))
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}
