//! The admin API under `/api/`: the control plane ([`leanlm_control`]) over HTTP as JSON, behind a bearer
//! token. The CLI calls the same functions; the dashboard reads this API. A [`ControlError`] becomes a
//! status here, once: not found 404, conflict 409, invalid 400, the store 500.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leanlm_control::{ControlError, cache, policy, tasks};
use leanlm_core::CacheOutcome;
use leanlm_store::{CallFilter, CallStatus, PolicyMatch, SeriesBy, Span, SpendBy, Store, TaskRow};
use serde::Deserialize;
use serde_json::json;

use crate::route::catalog;
use crate::server::AppState;

pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/name", post(rename))
        .route("/api/calls", get(calls))
        .route("/api/calls/{id}", get(call))
        .route("/api/spend", get(spend))
        .route("/api/savings", get(savings_handler))
        .route("/api/series", get(series))
        .route("/api/series/stages", get(stage_series))
        .route("/api/catalog", get(catalog_handler))
        .route("/api/tasks/{id}/candidates", get(task_candidates_handler))
        .route("/api/validations", get(validations))
        .route("/api/validations/{id}", get(validation))
        .route("/api/cache", get(cache_overview))
        .route("/api/cache/clear", post(cache_clear))
        .route("/api/policies", get(policies))
        .route("/api/policies/log", get(policy_log))
        .route("/api/policies/{task}/deploy", post(deploy))
        .route("/api/policies/{task}/promote", post(promote))
        .route("/api/policies/{task}/rollback", post(rollback))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

/// Query parameters, refused in the admin API's JSON error shape (axum's own rejection is plain text).
struct Query<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// A path parameter, refused in the admin API's JSON error shape.
struct Path<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Path(p))
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": {"message": message.into()}}))).into_response()
}

async fn authorize(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.config.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is off: set LEANLM_ADMIN_TOKEN (or [admin] token in leanlm.toml) and send it as a bearer token",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in constant time: the token guards every prompt the gateway has logged.
    let ok = given.len() == token.expose().len()
        && given
            .bytes()
            .zip(token.expose().bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer …)",
        );
    }
    next.run(req).await
}

/// The answer for a control-plane error.
fn refused(e: ControlError) -> Response {
    let status = match &e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match e {
        ControlError::Store(e) => format!("store query failed: {e}"),
        other => other.to_string(),
    };
    error(status, message)
}

/// Runs a control-plane call off the async runtime, on a store connection of its own (writes need one, and
/// reads should not wait behind the call log's writer).
async fn with_store<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&mut Store) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Response> {
    let url = app.config.store_url.clone();
    tokio::task::spawn_blocking(move || f(&mut Store::open(&url)?))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("store query failed: {e}")))?
        .map_err(refused)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The time range every page reads: the last `days`, or from `since_ms` to `until_ms` (either end open).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Window {
    days: Option<f64>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

impl Window {
    /// The window, or why the parameters name none (a 400).
    fn span(&self) -> Result<Span, String> {
        let bad = |m: String| Err(m);
        let since_ms = match (self.days, self.since_ms) {
            (Some(_), Some(_)) => return bad("give `days` or `since_ms`, not both".into()),
            (Some(d), None) if d.is_finite() && d > 0.0 => Some(now_ms() - (d * 86_400_000.0) as i64),
            (Some(d), None) => return bad(format!("`days` must be a positive number, not {d}")),
            (None, s) => s,
        };
        if let (Some(a), Some(b)) = (since_ms, self.until_ms)
            && a >= b
        {
            return bad(format!("`since_ms` ({a}) must come before `until_ms` ({b})"));
        }
        Ok(Span {
            since_ms,
            until_ms: self.until_ms,
        })
    }
}

async fn tasks(State(app): State<Arc<AppState>>, Query(w): Query<Window>) -> Response {
    let since_ms = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let offers = tasks::offers(&crate::route::catalog(&app.config));
    match with_store(&app, move |s| {
        Ok(tasks::ranked(s, since_ms, &offers)?
            .into_iter()
            .map(|(t, p)| json!({"task": t, "profile": p}))
            .collect::<Vec<_>>())
    })
    .await
    {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// Answers with a view of one task, or 404 when there is none with that id.
async fn task_view(
    app: &AppState,
    id: String,
    since_ms: Span,
    view: impl FnOnce(&Store, TaskRow) -> Result<serde_json::Value, ControlError> + Send + 'static,
) -> Response {
    match with_store(app, move |s| view(s, tasks::by_id(s, &id, since_ms)?)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn task(State(app): State<Arc<AppState>>, Path(id): Path<String>, Query(w): Query<Window>) -> Response {
    let since_ms = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let offers = tasks::offers(&crate::route::catalog(&app.config));
    task_view(&app, id, since_ms, move |s, t| {
        let profile = tasks::profile_among(s, &t, since_ms, Some(&offers))?;
        let samples = s.calls(&CallFilter {
            limit: 20,
            task: Some(t.id.clone()),
            since_ms: since_ms.since_ms,
            until_ms: since_ms.until_ms,
            ..Default::default()
        })?;
        Ok(json!({"task": t, "profile": profile, "samples": samples}))
    })
    .await
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn rename(State(app): State<Arc<AppState>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let name = match serde_json::from_slice::<Rename>(&body) {
        Ok(r) if !r.name.trim().is_empty() => r.name.trim().to_owned(),
        Ok(_) => return error(StatusCode::BAD_REQUEST, "`name` must not be empty"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected {{\"name\": \"…\"}}: {e}")),
    };
    let (i, n) = (id.clone(), name.clone());
    match with_store(&app, move |s| tasks::rename(s, &i, &n)).await {
        Ok(()) => axum::Json(json!({"id": id, "name": name})).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct CallQuery {
    limit: Option<usize>,
    model: Option<String>,
    task: Option<String>,
    status: Option<String>,
    /// A call id, or its first characters.
    id: Option<String>,
    /// none, any, reference or replacement.
    policy: Option<String>,
    /// hit, semantic-hit, miss or bypass.
    cache: Option<String>,
}

/// An optional query parameter parsed, or why not, naming it.
fn parsed<T: std::str::FromStr<Err = String>>(name: &str, v: Option<&str>) -> Result<Option<T>, String> {
    v.filter(|v| !v.is_empty())
        .map(str::parse::<T>)
        .transpose()
        .map_err(|e| format!("`{name}`: {e}"))
}

async fn calls(State(app): State<Arc<AppState>>, Query(q): Query<CallQuery>, Query(w): Query<Window>) -> Response {
    let filter = match (|| {
        let span = w.span()?;
        Ok::<_, String>(CallFilter {
            limit: q.limit.unwrap_or(50).min(10_000),
            model: q.model.filter(|m| !m.is_empty()),
            task: q.task.filter(|t| !t.is_empty()),
            status: parsed::<CallStatus>("status", q.status.as_deref())?,
            since_ms: span.since_ms,
            until_ms: span.until_ms,
            id_prefix: q.id.map(|i| i.trim().to_owned()).filter(|i| !i.is_empty()),
            policy: parsed::<PolicyMatch>("policy", q.policy.as_deref())?,
            cache: parsed::<CacheOutcome>("cache", q.cache.as_deref())?,
        })
    })() {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| Ok(s.calls(&filter)?)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn call(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let lookup = id.clone();
    match with_store(&app, move |s| Ok(s.call(&lookup)?)).await {
        Ok(Some(c)) => axum::Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no call with id {id}")),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SpendQuery {
    by: Option<String>,
}

async fn spend(State(app): State<Arc<AppState>>, Query(q): Query<SpendQuery>, Query(w): Query<Window>) -> Response {
    let by = match q.by.as_deref().unwrap_or("model") {
        "model" => SpendBy::Model,
        "purpose" => SpendBy::Purpose,
        "day" => SpendBy::Day,
        "task" => SpendBy::Task,
        "policy" => SpendBy::Policy,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`by` is model, purpose, day, task or policy, not `{other}`"),
            );
        }
    };
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| Ok(s.spend(by, span)?)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// What replacements and caches saved in the window, by task, technique or day.
async fn savings_handler(
    State(app): State<Arc<AppState>>,
    Query(q): Query<SeriesQuery>,
    Query(w): Query<Window>,
) -> Response {
    use leanlm_control::savings::{SavingsBy, savings};
    let by = match q.by.as_deref().unwrap_or("task") {
        "task" => SavingsBy::Task,
        "technique" => SavingsBy::Technique,
        "day" => SavingsBy::Day,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`by` is task, technique or day, not `{other}`"),
            );
        }
    };
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| savings(s, span, by, true)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SeriesQuery {
    by: Option<String>,
}

/// Calls and spend per hour or day of the window, by model, task or cache outcome.
async fn series(State(app): State<Arc<AppState>>, Query(q): Query<SeriesQuery>, Query(w): Query<Window>) -> Response {
    let by = match q.by.as_deref().unwrap_or("model") {
        "model" => SeriesBy::Model,
        "task" => SeriesBy::Task,
        "cache" => SeriesBy::Cache,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`by` is model, task or cache, not `{other}`"),
            );
        }
    };
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| leanlm_control::series::calls(s, by, span)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// How many policies stood at each stage over the window.
async fn stage_series(State(app): State<Arc<AppState>>, Query(w): Query<Window>) -> Response {
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| leanlm_control::series::stages(s, span)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn catalog_handler(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(catalog(&app.config)).into_response()
}

async fn task_candidates_handler(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let catalog = catalog(&app.config);
    task_view(&app, id, Span::ALL, move |s, t| {
        let (usage, list) = tasks::candidates_for(s, &catalog, &t)?;
        Ok(json!({"task": t, "usage": usage, "candidates": list}))
    })
    .await
}

#[derive(Deserialize)]
struct ValidationQuery {
    task: Option<String>,
    limit: Option<usize>,
}

/// Stored reports are JSON text; they go out as JSON values, or `null` if unreadable.
fn report_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

async fn validations(
    State(app): State<Arc<AppState>>,
    Query(q): Query<ValidationQuery>,
    Query(w): Query<Window>,
) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let within = move |at: i64| span.since_ms.is_none_or(|s| at >= s) && span.until_ms.is_none_or(|u| at < u);
    match with_store(&app, move |s| Ok(s.validations(q.task.as_deref(), limit)?)).await {
        Ok(rows) => axum::Json(
            rows.iter()
                .filter(|r| within(r.created_at_ms))
                .map(|r| report_value(&r.report))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn validation(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(f): Query<FormatQuery>,
) -> Response {
    let lookup = id.clone();
    let row = match with_store(&app, move |s| Ok(s.validation(&lookup)?)).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no validation with id {id}")),
        Err(r) => return r,
    };
    match f.format.as_deref().unwrap_or("json") {
        "json" => axum::Json(report_value(&row.report)).into_response(),
        "md" | "markdown" => match serde_json::from_str::<leanlm_validate::Report>(&row.report) {
            Ok(r) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], r.markdown()).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("stored report unreadable: {e}"),
            ),
        },
        other => error(
            StatusCode::BAD_REQUEST,
            format!("`format` is json or md, not `{other}`"),
        ),
    }
}

/// Cache hits and savings per task, and the semantic cache's false-hit estimate.
async fn cache_overview(State(app): State<Arc<AppState>>, Query(w): Query<Window>) -> Response {
    let settings = app.config.cache_settings();
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| cache::overview(s, &settings, span)).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ClearQuery {
    /// A task id or name; every task when absent.
    task: Option<String>,
}

/// Drops the semantic cache's entries of a task (or of all): from the store, from this gateway at once,
/// and from every other gateway on the store within a second. The way to withdraw answers that should no
/// longer be served, without a restart.
async fn cache_clear(State(app): State<Arc<AppState>>, Query(q): Query<ClearQuery>) -> Response {
    let cleared = match with_store(&app, move |s| cache::clear(s, q.task.as_deref())).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let removed = app
        .semantic
        .as_ref()
        .map_or(0, |c| c.clear(cleared.task.as_deref(), cleared.clear_id, cleared.at_ms));
    axum::Json(json!({
        "task": cleared.task,
        "clear_id": cleared.clear_id,
        "stored_entries_deleted": cleared.stored_entries_deleted,
        "semantic_entries_removed": removed,
    }))
    .into_response()
}

async fn policies(State(app): State<Arc<AppState>>) -> Response {
    match with_store(&app, |s| Ok((policy::overview(s)?, s.task_names()?))).await {
        Ok((rows, names)) => {
            let v: Vec<_> = rows
                .into_iter()
                .map(|(p, c)| {
                    let a = leanlm_validate::stats::wilson(c.agreed, c.scored, leanlm_deploy::ONLINE_CONFIDENCE);
                    let name = names.get(&p.task_id);
                    json!({"policy": p, "task_name": name, "online": c, "agreement": a})
                })
                .collect();
            axum::Json(v).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct LogQuery {
    task: Option<String>,
    limit: Option<usize>,
}

async fn policy_log(State(app): State<Arc<AppState>>, Query(q): Query<LogQuery>, Query(w): Query<Window>) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    let span = match w.span() {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match with_store(&app, move |s| {
        Ok((s.policy_log(q.task.as_deref(), span, limit)?, s.task_names()?))
    })
    .await
    {
        Ok((rows, names)) => axum::Json(
            rows.into_iter()
                .map(|r| {
                    let name = names.get(&r.task_id).cloned();
                    let mut v = json!(r);
                    v["task_name"] = json!(name);
                    v
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// Runs a policy change and answers with the new policy.
async fn change(
    app: &AppState,
    f: impl FnOnce(&mut Store) -> Result<leanlm_deploy::Policy, ControlError> + Send + 'static,
) -> Response {
    match with_store(app, f).await {
        Ok(policy) => axum::Json(policy).into_response(),
        Err(r) => r,
    }
}

/// Parses a JSON body, naming the bad field.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        format!("invalid body at `{path}`: {}", e.into_inner())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    replacement: String,
    stage: Option<String>,
    share: Option<f64>,
    audit_rate: Option<f64>,
    bound: Option<f64>,
    error_bound: Option<f64>,
    min_samples: Option<u64>,
    #[serde(default)]
    auto_promote: bool,
    scorer: Option<String>,
    force: Option<String>,
}

async fn deploy(State(app): State<Arc<AppState>>, Path(task): Path<String>, bytes: axum::body::Bytes) -> Response {
    let b: DeployBody = match body(&bytes) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    change(&app, move |store| {
        let req = policy::DeployRequest {
            task_id: task,
            replacement: b.replacement.parse().map_err(ControlError::Invalid)?,
            stage: b
                .stage
                .as_deref()
                .unwrap_or("shadow")
                .parse()
                .map_err(ControlError::Invalid)?,
            share: b.share,
            audit_rate: b.audit_rate,
            bound: b.bound,
            error_bound: b.error_bound,
            min_samples: b.min_samples,
            auto_promote: b.auto_promote,
            scorer: b.scorer.map(|s| s.parse()).transpose().map_err(ControlError::Invalid)?,
            force: b.force,
            actor: "api".into(),
        };
        policy::deploy(store, req)
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    share: Option<f64>,
    force: Option<String>,
}

async fn promote(State(app): State<Arc<AppState>>, Path(task): Path<String>, bytes: axum::body::Bytes) -> Response {
    let b: PromoteBody = if bytes.is_empty() {
        PromoteBody::default()
    } else {
        match body(&bytes) {
            Ok(b) => b,
            Err(m) => return error(StatusCode::BAD_REQUEST, m),
        }
    };
    change(&app, move |store| {
        policy::promote(store, &task, b.share, b.force, "api")
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    reason: String,
}

async fn rollback(State(app): State<Arc<AppState>>, Path(task): Path<String>, bytes: axum::body::Bytes) -> Response {
    let b: RollbackBody = match body(&bytes) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    change(&app, move |store| policy::rollback(store, &task, &b.reason, "api")).await
}
