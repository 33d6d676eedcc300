//! Accepting connections with bounds a hostile client cannot stretch: a cap on open connections, a deadline
//! for each request's headers (which also closes idle keep-alive connections), and one for each piece of a
//! request body. Without them, connections that never finish a request hold a file descriptor each until
//! the process has none left and `/healthz` stops answering.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections served normally; past it, [`RESERVE`] more get a short deadline and one request.
    pub max_connections: usize,
    /// The longest a client may take to send a request's headers, counted from the connection being ready
    /// for one: an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// The longest silence while a request body is being sent.
    pub body_timeout: Duration,
    /// How long calls still in flight at shutdown may take to finish; then they are cancelled (and logged).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Connections accepted past the cap, each with [`RESERVE_HEADER_TIMEOUT`] to send one request: a health
/// check or a real client still gets in while the cap is held by connections that never finish. Past
/// these, a connection is closed as soon as it is accepted (so the kernel's backlog does not fill).
pub const RESERVE: usize = 256;
pub const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the open connections' requests to
/// finish (idle connections are closed).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(RESERVE));
    let graceful = GracefulShutdown::new();
    // Connections that have not sent their first byte yet are not hyper's: they are told here.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as new ones come, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: wait a little
                    // rather than spin, as hyper's own accept loop does.
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (permit, reserved) = match open.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    metrics::counter!("leanlm_connections_refused_total").increment(1);
                    continue;
                }
            },
        };
        // Without it, delayed ACKs add tens of milliseconds to small responses.
        let _ = stream.set_nodelay(true);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(if reserved {
                RESERVE_HEADER_TIMEOUT
            } else {
                limits.header_timeout
            })
            .keep_alive(!reserved)
            // Above the router's own limits, which answer in the client's format.
            .max_headers(4 * crate::server::MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(limits.header_timeout))
            .keep_alive_timeout(limits.header_timeout);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| app.clone().oneshot(request));
        let watcher = graceful.watcher();
        let first_byte = if reserved {
            RESERVE_HEADER_TIMEOUT
        } else {
            limits.header_timeout
        };
        let mut closed = closed.clone();
        connections.spawn(async move {
            // The protocol is told from the first bytes before hyper's header deadline starts: a connection
            // that sends nothing is closed here, or when the server stops.
            let mut byte = [0u8; 1];
            let first = tokio::select! {
                first = tokio::time::timeout(first_byte, stream.peek(&mut byte)) => first,
                _ = closed.wait_for(|c| *c) => return,
            };
            if !matches!(first, Ok(Ok(1..))) {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(connection.into_owned()).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_secs = limits.shutdown_grace.as_secs_f64(),
            "calls still in flight after the shutdown grace period: cancelling them (each is logged)"
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Errors of one connection, not of the listener: nothing to wait out.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
