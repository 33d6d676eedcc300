//! The admin API under `/api/`: tasks, calls and spend as JSON, behind a bearer token. The CLI and the
//! dashboard read the same data.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leanlm_profile::TaskProfile;
use leanlm_store::{CallFilter, CallStatus, SpendBy, Store, StoreError, TaskLookup, TaskRow};
use serde::Deserialize;
use serde_json::json;

use std::collections::BTreeSet;

use leanlm_cost::PriceTable;
use leanlm_validate::{Candidate, CatalogModel, Needs, TaskUsage, candidates};

use crate::config::Config;
use crate::server::AppState;
use crate::unix_ms;

/// How many recent calls are read whole to type a task.
const TYPING_SAMPLE: usize = 200;

/// A task's profile over a window, typed from a sample of its latest calls.
pub fn task_profile(store: &Store, task: &TaskRow, since_ms: Option<i64>) -> Result<TaskProfile, StoreError> {
    let stats = store.task_stats(&task.id, since_ms)?;
    let mut samples = Vec::new();
    for id in store.task_sample_ids(&task.id, TYPING_SAMPLE)? {
        if let Some(c) = store.call(&id)? {
            samples.push(c);
        }
    }
    Ok(leanlm_profile::profile(&stats, &samples, task.origin == "chat"))
}

/// Every task with its profile, ranked by what a cheaper model could save on it.
pub fn ranked_tasks(store: &Store, since_ms: Option<i64>) -> Result<Vec<(TaskRow, TaskProfile)>, StoreError> {
    ranked_tasks_with(store, since_ms, |_, _| {})
}

/// [`ranked_tasks`], telling `progress` how many of how many tasks are profiled.
pub fn ranked_tasks_with(
    store: &Store,
    since_ms: Option<i64>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<(TaskRow, TaskProfile)>, StoreError> {
    let tasks = store.tasks(since_ms)?;
    let total = tasks.len();
    let mut rows = tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let p = task_profile(store, &t, since_ms)?;
            progress(i + 1, total);
            Ok((t, p))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let key = |p: &TaskProfile| p.savings.as_ref().map(|s| s.savings_usd).unwrap_or(f64::NEG_INFINITY);
    rows.sort_by(|a, b| {
        key(&b.1)
            .total_cmp(&key(&a.1))
            .then(b.1.spend_usd.total_cmp(&a.1.spend_usd))
    });
    Ok(rows)
}

/// The models this deployment can route to, priced, with what the price table knows of their
/// capabilities, and which of them may replace a task's model. `[catalog] allow = ["*"]` allows every
/// model in the price table.
pub fn catalog(config: &Config) -> Vec<CatalogModel> {
    let routes = crate::route::Routes::new(Arc::new(config.clone()));
    let table = PriceTable::bundled();
    let everything = config.catalog_allow.iter().any(|m| m == "*");
    let mut names: BTreeSet<String> = config.models.keys().cloned().collect();
    names.extend(config.catalog_allow.iter().filter(|m| *m != "*").cloned());
    if everything {
        names.extend(table.models().into_iter().map(|(n, _)| n.to_owned()));
    }
    names
        .into_iter()
        .filter_map(|name| {
            let target = routes.resolve(&name).ok()?.into_iter().next()?;
            Some(CatalogModel {
                allowed: everything || config.catalog_allow.contains(&name),
                provider: target.provider.name.clone(),
                price: target.price,
                caps: table.lookup(&target.upstream_model).map(|e| e.caps),
                name,
            })
        })
        .collect()
}

/// A task's last month of traffic and the replacements that apply to it, priced.
pub fn task_candidates(
    store: &Store,
    config: &Config,
    task: &TaskRow,
) -> Result<(TaskUsage, Vec<Candidate>), StoreError> {
    let now = unix_ms();
    let since = now - 30 * 86_400_000;
    let profile = task_profile(store, task, Some(since))?;
    let needs = profile
        .savings
        .as_ref()
        .map(|s| Needs::from_profile(&s.needs))
        .unwrap_or_default();
    let stats = store.task_stats(&task.id, Some(since))?;
    let usage = TaskUsage::from_stats(&stats, now, needs);
    let list = candidates(&usage, &catalog(config));
    Ok((usage, list))
}

pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/name", post(rename))
        .route("/api/calls", get(calls))
        .route("/api/calls/{id}", get(call))
        .route("/api/spend", get(spend))
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

/// Runs a store query off the async runtime, on a read connection of its own.
async fn with_store<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let url = app.config.store_url.clone();
    tokio::task::spawn_blocking(move || Store::open(&url).and_then(|s| f(&s)))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("store query failed: {e}")))?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("store query failed: {e}")))
}

fn since(days: Option<f64>) -> Option<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    days.filter(|d| d.is_finite() && *d > 0.0)
        .map(|d| now - (d * 86_400_000.0) as i64)
}

#[derive(Deserialize)]
struct Window {
    days: Option<f64>,
}

async fn tasks(State(app): State<Arc<AppState>>, Query(w): Query<Window>) -> Response {
    let since_ms = since(w.days);
    match with_store(&app, move |s| {
        Ok(ranked_tasks(s, since_ms)?
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
    since_ms: Option<i64>,
    view: impl FnOnce(&Store, TaskRow) -> Result<serde_json::Value, StoreError> + Send + 'static,
) -> Response {
    let lookup = id.clone();
    let found = with_store(app, move |s| {
        match s.tasks(since_ms)?.into_iter().find(|t| t.id == lookup) {
            Some(t) => view(s, t).map(Some),
            None => Ok(None),
        }
    })
    .await;
    match found {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no task with id {id}")),
        Err(r) => r,
    }
}

async fn task(State(app): State<Arc<AppState>>, Path(id): Path<String>, Query(w): Query<Window>) -> Response {
    let since_ms = since(w.days);
    task_view(&app, id, since_ms, move |s, t| {
        let profile = task_profile(s, &t, since_ms)?;
        let samples = s.calls(&CallFilter {
            limit: 20,
            task: Some(t.id.clone()),
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
    match with_store(&app, move |s| s.rename_task(&i, &n)).await {
        Ok(true) => axum::Json(json!({"id": id, "name": name})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no task with id {id}")),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct CallQuery {
    limit: Option<usize>,
    model: Option<String>,
    task: Option<String>,
    status: Option<String>,
    days: Option<f64>,
}

async fn calls(State(app): State<Arc<AppState>>, Query(q): Query<CallQuery>) -> Response {
    let status = match q.status.as_deref().map(str::parse::<CallStatus>).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let filter = CallFilter {
        limit: q.limit.unwrap_or(50).min(10_000),
        model: q.model,
        task: q.task,
        status,
        since_ms: since(q.days),
    };
    match with_store(&app, move |s| s.calls(&filter)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn call(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let lookup = id.clone();
    match with_store(&app, move |s| s.call(&lookup)).await {
        Ok(Some(c)) => axum::Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no call with id {id}")),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SpendQuery {
    by: Option<String>,
    days: Option<f64>,
}

async fn spend(State(app): State<Arc<AppState>>, Query(q): Query<SpendQuery>) -> Response {
    let by = match q.by.as_deref().unwrap_or("model") {
        "model" => SpendBy::Model,
        "day" => SpendBy::Day,
        "task" => SpendBy::Task,
        "policy" => SpendBy::Policy,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`by` is model, day, task or policy, not `{other}`"),
            );
        }
    };
    let since_ms = since(q.days);
    match with_store(&app, move |s| s.spend(by, since_ms)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn catalog_handler(State(app): State<Arc<AppState>>) -> Response {
    axum::Json(catalog(&app.config)).into_response()
}

async fn task_candidates_handler(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let config = app.config.clone();
    task_view(&app, id, None, move |s, t| {
        let (usage, list) = task_candidates(s, &config, &t)?;
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

async fn validations(State(app): State<Arc<AppState>>, Query(q): Query<ValidationQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    match with_store(&app, move |s| s.validations(q.task.as_deref(), limit)).await {
        Ok(rows) => axum::Json(rows.iter().map(|r| report_value(&r.report)).collect::<Vec<_>>()).into_response(),
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
    let row = match with_store(&app, move |s| s.validation(&lookup)).await {
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
async fn cache_overview(State(app): State<Arc<AppState>>) -> Response {
    let config = app.config.clone();
    match with_store(&app, move |s| crate::semantic::overview(s, &config)).await {
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
    let url = app.config.store_url.clone();
    let key = q.task.clone();
    // The store's writes need a connection of its own, as `with_store`'s reads have.
    let cleared = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url)?;
        let task = match key.as_deref().map(|k| store.find_task(k)).transpose()? {
            None => None,
            Some(TaskLookup::Found(t)) => Some(t.id),
            Some(other) => return Ok(Err(other)),
        };
        let at_ms = unix_ms();
        let (id, deleted) = store.clear_semantic_cache(task.as_deref(), at_ms)?;
        Ok::<_, StoreError>(Ok((task, id, at_ms, deleted)))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let key = q.task.unwrap_or_default();
    let (task, id, at_ms, deleted) = match cleared {
        Ok(Ok(c)) => c,
        Ok(Err(TaskLookup::Ambiguous(n))) => {
            return error(StatusCode::CONFLICT, format!("{n} tasks are named `{key}`; use the id"));
        }
        Ok(Err(_)) => return error(StatusCode::NOT_FOUND, format!("no task with id or name `{key}`")),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("clearing the cache failed: {e}"),
            );
        }
    };
    let removed = app.semantic.as_ref().map_or(0, |c| c.clear(task.as_deref(), id, at_ms));
    axum::Json(json!({
        "task": task,
        "clear_id": id,
        "stored_entries_deleted": deleted,
        "semantic_entries_removed": removed,
    }))
    .into_response()
}

async fn policies(State(app): State<Arc<AppState>>) -> Response {
    match with_store(&app, crate::deploy::overview).await {
        Ok(rows) => {
            let v: Vec<_> = rows
                .into_iter()
                .map(|(p, c)| {
                    let a = leanlm_validate::stats::wilson(c.agreed, c.scored, leanlm_deploy::ONLINE_CONFIDENCE);
                    json!({"policy": p, "online": c, "agreement": a})
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

async fn policy_log(State(app): State<Arc<AppState>>, Query(q): Query<LogQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    match with_store(&app, move |s| s.policy_audit(q.task.as_deref(), limit)).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => r,
    }
}

/// Runs a policy change on a store connection of its own, off the async runtime; a refused change is a 400
/// with the reason.
async fn change(
    app: &AppState,
    f: impl FnOnce(&mut Store) -> anyhow::Result<leanlm_deploy::Policy> + Send + 'static,
) -> Response {
    let url = app.config.store_url.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&url)?;
        f(&mut store)
    })
    .await;
    match result {
        Ok(Ok(policy)) => axum::Json(policy).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("policy change failed: {e}")),
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
        let req = crate::deploy::DeployRequest {
            task_id: task,
            replacement: b.replacement.parse().map_err(anyhow::Error::msg)?,
            stage: b
                .stage
                .as_deref()
                .unwrap_or("shadow")
                .parse()
                .map_err(anyhow::Error::msg)?,
            share: b.share,
            audit_rate: b.audit_rate,
            bound: b.bound,
            error_bound: b.error_bound,
            min_samples: b.min_samples,
            auto_promote: b.auto_promote,
            scorer: b.scorer.map(|s| s.parse()).transpose().map_err(anyhow::Error::msg)?,
            force: b.force,
            actor: "api".into(),
        };
        crate::deploy::deploy(store, req)
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
        crate::deploy::promote(store, &task, b.share, b.force, "api")
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
    change(&app, move |store| {
        crate::deploy::rollback(store, &task, &b.reason, "api")
    })
    .await
}
