//! The HTTP server: routes, shared state, health and metrics endpoints, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leanlm_store::{CallLog, LogWriter, Store};
use leanlm_wire::{ClientFormat, ErrorKind, WireError};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::proxy;
use crate::route::Routes;

/// What every request handler shares.
pub struct AppState {
    pub config: Arc<Config>,
    pub routes: Routes,
    http: reqwest::Client,
    pub log: CallLog,
    /// Discovers which task each call belongs to.
    pub tasks: Arc<leanlm_profile::Discoverer>,
    pub(crate) cache: crate::cache::ExactCache,
    /// Deployment policies; `None` where calls are never served under one (replays).
    pub(crate) policies: Option<Arc<crate::policy::PolicyRuntime>>,
    /// The semantic cache; `None` in replays.
    pub(crate) semantic: Option<Arc<crate::semantic::SemanticCache>>,
    /// Embeddings for the semantic cache and learned routers; `None` in replays.
    pub(crate) embedder: Option<Arc<crate::embedder::Embedder>>,
    /// The key of the HMAC that turns client keys into logged ids: the store's, shared by its gateways.
    pub(crate) key_secret: [u8; 32],
}

thread_local! {
    /// A serving thread's own upstream client. A pooled connection is driven by the runtime that opened
    /// it; with one pool per thread, a request and its upstream connection stay on one thread.
    static LOCAL_HTTP: std::cell::RefCell<Option<reqwest::Client>> = const { std::cell::RefCell::new(None) };
}

/// A client for upstream providers.
fn upstream_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS crypto provider; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .build()
        .context("building the upstream HTTP client")
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        log: CallLog,
        tasks: Arc<leanlm_profile::Discoverer>,
    ) -> anyhow::Result<AppState> {
        let http = upstream_client()?;
        let cache = crate::cache::ExactCache::new(config.cache.clone()).map_err(anyhow::Error::msg)?;
        let config = Arc::new(config);
        let routes = Routes::new(config.clone());
        Ok(AppState {
            config,
            routes,
            http,
            log,
            tasks,
            cache,
            policies: None,
            semantic: None,
            embedder: None,
            key_secret: rand::random(),
        })
    }

    /// The upstream client for the calling thread: a serving thread's own, else the shared one.
    pub(crate) fn http(&self) -> reqwest::Client {
        LOCAL_HTTP
            .with_borrow(|c| c.clone())
            .unwrap_or_else(|| self.http.clone())
    }
}

/// A configured gateway, ready to serve.
pub struct Gateway {
    state: Arc<AppState>,
    writer: LogWriter,
}

impl Gateway {
    /// Opens the store and starts the call-log writer. Without an embedder, the semantic cache can only
    /// use a remote embedding model.
    pub fn new(config: Config) -> anyhow::Result<Gateway> {
        Gateway::with_embedder(config, None)
    }

    /// Like `new`, with the loader of the local embedder the semantic cache uses.
    pub fn with_embedder(config: Config, embedder: Option<crate::embedder::EmbedLoader>) -> anyhow::Result<Gateway> {
        crate::metrics::handle();
        crate::metrics::configure_models(config.models.keys().chain(config.prices.keys()).cloned());
        let store =
            Store::open(&config.store_url).with_context(|| format!("opening the store {}", config.store_url))?;
        // Prices imported into the store (`leanlm prices --import`) over the bundled table, before any call.
        leanlm_control::prices::install(&store).context("reading imported prices")?;
        // Templates already known to be tasks keep their ids from the first call after a restart.
        let known = store.tasks(None).context("reading known tasks")?;
        let named: Vec<String> = known
            .iter()
            .filter(|t| t.origin == leanlm_core::Origin::Explicit)
            .map(|t| t.id.clone())
            .collect();
        let tasks = leanlm_profile::Discoverer::with_known(
            known
                .into_iter()
                .filter(|t| t.origin == leanlm_core::Origin::Template)
                .map(|t| t.id),
        );
        tasks.know_named(named);
        let tasks = Arc::new(tasks);
        let after = crate::templates::load(&store, &tasks).context("reading mined templates")?;
        crate::templates::spawn_sync(
            &tasks,
            Store::open(&config.store_url).context("opening the store for mined templates")?,
            after,
        )?;
        let policies = crate::policy::start(&config)?;
        let embedder = Arc::new(crate::embedder::Embedder::new(
            config.cache.semantic.embeddings.clone(),
            embedder,
        ));
        let semantic = crate::semantic::SemanticCache::new(
            config.cache.semantic.clone(),
            config.cache.semantic_tasks.clone(),
            &config.store_url,
            config.log_bodies,
            embedder.clone(),
        )?;
        let mut store = store;
        let key_secret = store
            .secret_or("client-key-id", rand::random())
            .context("reading the client-key secret")?;
        let (log, writer) = leanlm_store::spawn_writer(
            store,
            leanlm_store::QueueLimits {
                records: config.log_queue_capacity,
                bytes: config.log_queue_bytes,
            },
        );
        let mut state = AppState::new(config, log, tasks)?;
        state.key_secret = key_secret;
        state.policies = Some(policies);
        state.semantic = Some(Arc::new(semantic));
        state.embedder = Some(embedder);
        Ok(Gateway {
            state: Arc::new(state),
            writer,
        })
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish and flushes the call log.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = self.router();
        crate::listen::serve(listener, app, self.state.config.limits, shutdown)
            .await
            .context("serving HTTP")?;
        let Gateway { state, writer } = self;
        settle(&Arc::downgrade(&state)).await;
        tokio::task::spawn_blocking(move || flush(state, writer))
            .await
            .context("flushing the call log")
    }

    /// Serves on the configured address with `config.workers` threads until `shutdown` resolves, then lets in-flight calls
    /// finish and flushes the call log. Blocks the calling thread, whose runtime only waits for `shutdown`.
    ///
    /// Each thread runs its own single-threaded runtime with its own listening socket (`SO_REUSEPORT`: the
    /// kernel spreads connections over them) and its own upstream connections, so a request is served on
    /// one thread from start to end: no task stealing or cross-thread wake-ups on the request path.
    pub fn serve_on_threads(
        self,
        runtime: &tokio::runtime::Runtime,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let listen = self.state.config.listen;
        let workers = self.state.config.workers.get();
        let listeners = bind_shared(listen, workers).with_context(|| format!("binding {listen}"))?;
        let addr = listeners[0].local_addr()?;
        // Everything that can fail is set up before any worker starts, so a worker that cannot start stops
        // the gateway from starting rather than leaving it with fewer workers.
        let mut ready = Vec::with_capacity(workers);
        for listener in listeners {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a worker's runtime")?;
            let (listener, redis) = {
                let _entered = rt.enter();
                let redis = self.state.cache.worker_connection().map_err(anyhow::Error::msg)?;
                (TcpListener::from_std(listener)?, redis)
            };
            ready.push((rt, listener, upstream_client()?, redis));
        }
        // The connection cap is the process's: each worker takes its share.
        let limits = crate::listen::Limits {
            max_connections: self.state.config.limits.max_connections.div_ceil(workers),
            ..self.state.config.limits
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = Vec::with_capacity(workers);
        for (i, (rt, listener, http, redis)) in ready.into_iter().enumerate() {
            let app = self.router();
            let state = Arc::downgrade(&self.state);
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("leanlm-worker-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    LOCAL_HTTP.set(Some(http));
                    crate::cache::set_worker_connection(redis);
                    let served = rt.block_on(async move {
                        let stop = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        crate::listen::serve(listener, app, limits, stop).await?;
                        // Streams still sending on this thread's runtime finish before it stops.
                        settle(&state).await;
                        anyhow::Ok(())
                    });
                    // Its pooled upstream connections and its Redis connection close with the runtime that drives them.
                    LOCAL_HTTP.set(None);
                    crate::cache::set_worker_connection(None);
                    served.context("serving HTTP")
                })
                .context("starting a worker thread")?;
            threads.push(thread);
        }
        let store = &self.state.config.store_url;
        tracing::info!(%addr, %store, workers, "LeanLM gateway listening");
        println!("{}", banner(&self.state.config, addr));
        runtime.block_on(shutdown);
        let _ = stop.send(true);
        for t in threads {
            match t.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("a worker thread panicked"),
            }
        }
        let Gateway { state, writer } = self;
        flush(state, writer);
        Ok(())
    }
}

/// What `leanlm serve` says at start: where it listens, where the dashboard is (or how to turn it on),
/// where calls are logged, and which providers have a key of the gateway's.
fn banner(config: &Config, addr: SocketAddr) -> String {
    let dashboard = match &config.admin_token {
        Some(_) => format!("http://{addr}/ui (admin API on; sign in with the admin token)"),
        None => "off: set LEANLM_ADMIN_TOKEN (or [admin] token) to turn on the dashboard and /api".to_owned(),
    };
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|(name, p)| match p.api_key {
            Some(_) => format!("{name} (gateway key)"),
            None => format!("{name} (client's key)"),
        })
        .collect();
    let table = leanlm_cost::PriceTable::active();
    let prices = match leanlm_control::prices::staleness(table) {
        Some(warning) => {
            tracing::warn!("{warning}");
            format!("WARNING: {warning}")
        }
        None => format!("as of {}", table.newest()),
    };
    format!(
        "LeanLM listening on http://{addr}\n  dashboard: {dashboard}\n  call log:  {}\n  providers: {}\n  prices:    {prices}",
        config.store_url,
        if providers.is_empty() {
            "none".to_owned()
        } else {
            providers.join(", ")
        }
    )
}

/// Binds `n` listening sockets on one address. On Linux each has its own accept queue (`SO_REUSEPORT`),
/// which the kernel fills evenly; elsewhere they share one.
///
/// `SO_REUSEPORT` would also let any other process of the same user that sets it bind the same port: a
/// second gateway started by mistake on a port in use would silently take a share of its connections. A
/// plain bind first makes a port in use an error, as it is without workers.
fn bind_shared(listen: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let listen = std::net::TcpListener::bind(listen)?.local_addr()?;
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        #[cfg(target_os = "linux")]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    // Port 0 was given a port by the plain bind; every socket takes that one.
    let mut all = vec![bind(listen)?];
    for _ in 1..n {
        all.push(if cfg!(target_os = "linux") {
            bind(listen)?
        } else {
            all[0].try_clone()?
        });
    }
    Ok(all)
}

/// Waits, up to five seconds, for in-flight calls to let go of the state: streams may still be writing
/// their last record after the server stopped.
async fn settle(state: &std::sync::Weak<AppState>) {
    for _ in 0..100 {
        if state.strong_count() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flushes the call log: everything queued is written, even while something still holds the state (an
/// online check still running); what it records after this is counted as dropped.
fn flush(state: Arc<AppState>, writer: LogWriter) {
    let queued = state.log.queued();
    if Arc::strong_count(&state) > 1 {
        tracing::warn!(
            "work still in flight at shutdown (online checks): what it logs from now on is counted as dropped"
        );
    }
    // Templates mined since the last sync are kept too.
    match Store::open(&state.config.store_url) {
        Ok(mut store) => crate::templates::save(&mut store, &state.tasks),
        Err(e) => tracing::warn!(error = %e, "could not keep mined templates"),
    }
    drop(state);
    writer.finish();
    tracing::info!(flushed = queued, "call log flushed");
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let origins: Vec<HeaderValue> = state
        .config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let router = Router::new()
        .merge(crate::admin::routes(state.clone()))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/ui", get(ui))
        .route("/ui/", get(ui))
        .route("/ui/uplot.js", get(ui_chart_js))
        .route("/ui/uplot.css", get(ui_chart_css))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(header_limits))
        .layer(axum::middleware::from_fn_with_state(state.clone(), browsers))
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    if origins.is_empty() {
        return router;
    }
    // Pages of the allowed origins may read answers; without any, no CORS headers at all.
    router.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
            .expose_headers(tower_http::cors::ExposeHeaders::any()),
    )
}

/// The most request headers, and header bytes, a request may carry. hyper refuses past larger limits of
/// its own (with an empty 431), which [`crate::listen`] sets above these so that a client is told here, in
/// its own format.
pub(crate) const MAX_HEADERS: usize = 100;
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The error format a request expects: the admin API's, Anthropic's, or OpenAI's.
fn error_body(headers: &HeaderMap, path: &str, kind: ErrorKind, message: String) -> axum::Json<serde_json::Value> {
    if path.starts_with("/api/") {
        return axum::Json(json!({"error": {"message": message}}));
    }
    let format = if headers.contains_key("anthropic-version") || path.starts_with("/v1/messages") {
        ClientFormat::Anthropic
    } else {
        ClientFormat::OpenAi
    };
    axum::Json(WireError::new(kind, message).to_body(format))
}

async fn header_limits(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let message = format!(
            "the request's headers are too large: {} headers, {bytes} bytes (at most {MAX_HEADERS} and {MAX_HEADER_BYTES})",
            headers.len()
        );
        let body = error_body(headers, req.uri().path(), ErrorKind::InvalidRequest, message);
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, body).into_response();
    }
    next.run(req).await
}

/// What a web page may do with the gateway: nothing, unless its origin is allowed. Browsers send `Origin`
/// with every cross-site request (a `text/plain` POST needs no preflight), so one from another origin is
/// refused, and a browser's POST must be JSON. A gateway on loopback answers only to loopback host names
/// (and `[server] allowed_hosts`), so a rebinding DNS name cannot read its answers.
async fn browsers(
    State(app): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let path = req.uri().path();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let refuse = |status: StatusCode, kind: ErrorKind, message: String| {
        (status, error_body(headers, path, kind, message)).into_response()
    };
    if app.config.listen.ip().is_loopback() && !host.is_empty() {
        let name = host_name(&host);
        let loopback = name == "localhost"
            || name.ends_with(".localhost")
            || name
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !app.config.allowed_hosts.iter().any(|h| h == name) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                ErrorKind::PermissionDenied,
                format!(
                    "this gateway listens on loopback and does not answer to host `{name}`: add it to [server] allowed_hosts"
                ),
            );
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| !host.is_empty() && authority == host);
        if !same && !app.config.allowed_origins.contains(&origin) {
            return refuse(
                StatusCode::FORBIDDEN,
                ErrorKind::PermissionDenied,
                format!("requests from web origin `{origin}` are refused: add it to [server] allowed_origins"),
            );
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
        // LeanLM's own endpoints take JSON only; passed-through ones (file uploads) take what they take.
        let own = path.starts_with("/api/")
            || [
                "/v1/chat/completions",
                "/chat/completions",
                "/v1/messages",
                "/v1/embeddings",
                "/embeddings",
            ]
            .contains(&path);
        if own && req.method() == axum::http::Method::POST && !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorKind::InvalidRequest,
                "a request from a web page must send `Content-Type: application/json`".into(),
            );
        }
    }
    next.run(req).await
}

/// The name in a `Host` header, without its port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(name, _)| &host[..name.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let message = format!("{} does not take {method}", uri.path());
    let body = error_body(&headers, uri.path(), ErrorKind::InvalidRequest, message);
    (StatusCode::METHOD_NOT_ALLOWED, body).into_response()
}

async fn chat_completions(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    proxy::chat(app, ClientFormat::OpenAi, headers, body).await
}

async fn messages(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    proxy::chat(app, ClientFormat::Anthropic, headers, body).await
}

async fn embeddings(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    proxy::embeddings(app, headers, body).await
}

/// `GET /v1/models`, in Anthropic's shape for Anthropic clients and OpenAI's otherwise.
async fn models(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let names = app.routes.model_names();
    if headers.contains_key("anthropic-version") {
        let data: Vec<_> = names
            .iter()
            .map(|(id, _)| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        let first = names.first().map(|n| n.0.clone());
        let last = names.last().map(|n| n.0.clone());
        return axum::Json(json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            .into_response();
    }
    let data: Vec<_> = names
        .iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// The dashboard: one self-contained page that reads the admin API.
async fn ui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../ui/index.html"),
    )
        .into_response()
}

/// The chart library the dashboard draws with (uPlot, MIT; `ui/vendor/`), served by the gateway itself so the
/// dashboard needs no network beyond it.
async fn ui_chart_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../ui/vendor/uPlot.iife.min.js"),
    )
}

async fn ui_chart_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../ui/vendor/uPlot.min.css"))
}

/// A file that changes only with the binary: cached by the browser for a day.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let queued = app.log.queued();
    let capacity = app.config.log_queue_capacity;
    if queued >= capacity {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("call log queue full ({queued}/{capacity})"),
        )
            .into_response();
    }
    "ready".into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    metrics::gauge!("leanlm_call_log_queued").set(app.log.queued() as f64);
    let body = crate::metrics::handle().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Other `/v1/` paths pass through to a provider of the client's kind; anything else is not found.
async fn fallback(
    State(app): State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if app.config.passthrough && uri.path().starts_with("/v1/") {
        return proxy::passthrough(app, method, uri, headers, body).await;
    }
    not_found(headers, uri).await
}

async fn not_found(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let message = format!("LeanLM has no endpoint at {}", uri.path());
    (
        StatusCode::NOT_FOUND,
        error_body(&headers, uri.path(), ErrorKind::NotFound, message),
    )
        .into_response()
}

/// Binds the configured address and serves on the configured number of threads until Ctrl-C or SIGTERM.
pub fn run(config: Config, embedder: Option<crate::embedder::EmbedLoader>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let gateway = {
        let _entered = runtime.enter();
        Gateway::with_embedder(config, embedder)?
    };
    gateway.serve_on_threads(&runtime, shutdown_signal())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight calls and flushing the call log");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_where_everything_is() {
        let toml = "[admin]\ntoken = \"t\"\n[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-x\"\n";
        let c = Config::from_toml("t.toml", toml, &Default::default(), &|_| None).unwrap();
        let b = banner(&c, "127.0.0.1:8080".parse().unwrap());
        assert!(b.starts_with("LeanLM listening on http://127.0.0.1:8080"), "{b}");
        assert!(b.contains("http://127.0.0.1:8080/ui"), "{b}");
        assert!(
            b.contains("openai (gateway key)") && b.contains("anthropic (client's key)"),
            "{b}"
        );
        let off = Config::from_toml("t.toml", "", &Default::default(), &|_| None).unwrap();
        assert!(banner(&off, "127.0.0.1:8080".parse().unwrap()).contains("LEANLM_ADMIN_TOKEN"));
        // The bundled prices' date, with a warning once they are over 90 days old.
        let prices = b
            .lines()
            .find(|l| l.trim_start().starts_with("prices:"))
            .unwrap_or_default();
        let table = leanlm_cost::PriceTable::active();
        assert!(prices.contains(table.newest()), "{b}");
        let stale = leanlm_cost::age_days(table).is_some_and(|d| d > leanlm_cost::STALE_AFTER_DAYS);
        assert_eq!(prices.contains("WARNING") && prices.contains("--import"), stale, "{b}");
    }

    /// An online check still holding the state at shutdown (issue 24): the queue is written all the same.
    #[test]
    fn flush_writes_the_queue_while_an_online_check_holds_the_state() {
        let dir = std::env::temp_dir().join(format!("leanlm-flush-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("f.db").display());
        let overrides = crate::config::Overrides {
            db: Some(url.clone()),
            ..Default::default()
        };
        let config = Config::from_toml("t.toml", "", &overrides, &|_| None).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let gateway = {
            let _entered = runtime.enter();
            Gateway::new(config).unwrap()
        };
        let Gateway { state, writer } = gateway;
        for i in 0..50 {
            state.log.record(leanlm_core::CallRecord {
                id: format!("c{i}"),
                started_at_ms: i,
                endpoint: "chat.completions".into(),
                client_format: ClientFormat::OpenAi,
                client_key_id: None,
                task: None,
                requested_model: "m".into(),
                served_model: Some("m".into()),
                provider: Some("openai".into()),
                upstream_model: None,
                stream: false,
                status: leanlm_store::CallStatus::Ok,
                http_status: 200,
                error: None,
                usage: None,
                cost_usd: Some(0.001),
                cost_estimated: false,
                latency_ms: 1.0,
                ttft_ms: None,
                overhead_us: None,
                attempts: 1,
                request_body: None,
                response_body: None,
                cache: None,
                cost_avoided_usd: None,
                policy: None,
                stages: Vec::new(),
            });
        }
        let check = state.clone();
        flush(state, writer);
        let written = Store::open(&url)
            .unwrap()
            .calls(&leanlm_store::CallFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .len();
        assert_eq!(written, 50);
        drop(check);
        std::fs::remove_dir_all(dir).ok();
    }
}
