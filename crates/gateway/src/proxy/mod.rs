//! The request path: client wire format in, upstream out, and back; every call recorded.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use leanlm_core::transcript::answer_text;
use leanlm_core::{CacheOutcome, Role};
use leanlm_cost::{cost_usd, tokens};
use leanlm_profile::Identity;
use leanlm_store::{CallRecord, CallStatus, TaskRef};
use leanlm_wire::anthropic::{self, MessagesRequest};
use leanlm_wire::openai::{self, ChatRequest};
use leanlm_wire::{ClientFormat, ErrorKind, ProviderKind, Usage, WireError, gemini};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::{Entry, HEADER_CACHE, Key};
use crate::config::Secret;
use crate::route::Target;
use crate::server::AppState;
use crate::unix_ms;
use crate::upstream::{self, ClientAuth, Failed, Sent};
use leanlm_route::cascade::Chain;

mod cascade;
mod chat;
mod embeddings;
mod passthrough;
mod stream;

pub(crate) use chat::chat;
pub(crate) use embeddings::embeddings;
pub(crate) use passthrough::passthrough;

pub const HEADER_CALL_ID: &str = "x-leanlm-call-id";
pub const HEADER_MODEL: &str = "x-leanlm-model";
pub const HEADER_PROVIDER: &str = "x-leanlm-provider";
pub const HEADER_COST: &str = "x-leanlm-cost-usd";
pub const HEADER_COST_ESTIMATED: &str = "x-leanlm-cost-estimated";
pub const HEADER_TASK: &str = "x-leanlm-task";
/// Under a cascade: what it did with the last cheap answer it judged (`accepted`, `escalated`, `unusable`,
/// `failed`).
pub const HEADER_CASCADE: &str = "x-leanlm-cascade";
/// On a semantic hit: the similarity of the request to the cached one.
pub const HEADER_CACHE_SIMILARITY: &str = "x-leanlm-cache-similarity";

/// Upstream response headers worth handing to the client (request ids, rate-limit state).
fn forwardable(name: &str) -> bool {
    name == "x-request-id"
        || name == "request-id"
        || name == "openai-processing-ms"
        || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
}

/// Owns a call's record until it is logged, exactly once. Dropped unfinished (the client went away and
/// the request future was cancelled), it logs the call as `client_closed`.
pub(crate) struct Recorder {
    app: Arc<AppState>,
    started: Instant,
    rec: Option<CallRecord>,
    /// The call is served under a deployment policy: what to check once it is complete.
    online: Option<crate::policy::OnlineJob>,
    /// What earlier stages (a cascade's cheap model) cost: added to the served answer's cost.
    prior_cost: f64,
    /// Time earlier stages spent waiting on upstreams: not the gateway's own overhead.
    prior_wait: std::time::Duration,
    /// When the call must have an answer started, over every attempt, retry and fallback.
    deadline: Instant,
}

/// The `X-LeanLM-Timeout` header: seconds a client gives a call, within `[retry] deadline_secs`.
pub(crate) const HEADER_TIMEOUT: &str = "x-leanlm-timeout";

/// The time a client gave its call (`None`: the configured deadline), or why the header is refused.
fn requested_timeout(headers: &HeaderMap) -> Result<Option<std::time::Duration>, WireError> {
    let Some(v) = headers.get(HEADER_TIMEOUT) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t > 0.0 && *t <= 86_400.0)
        .map(|t| Some(std::time::Duration::from_secs_f64(t)))
        .ok_or_else(|| {
            WireError::invalid(format!(
                "header `{HEADER_TIMEOUT}`: a number of seconds above 0 (at most a day)"
            ))
        })
}

/// A new call id for a call started at `started_ms` (Unix milliseconds): a UUIDv7 (time-ordered), with a
/// 12-bit sequence so calls in one millisecond keep their order (up to 4,096 of them), and the rest drawn
/// from the thread's generator. `Uuid::now_v7` reads the OS's random source twice per id, two system calls
/// on every request.
fn call_id(started_ms: i64) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let random: [u8; 8] = rand::random();
    let mut bytes = [0u8; 10];
    bytes[0] = ((seq >> 8) & 0x0F) as u8;
    bytes[1] = seq as u8;
    bytes[2..].copy_from_slice(&random);
    uuid::Builder::from_unix_timestamp_millis(started_ms.max(0) as u64, &bytes)
        .into_uuid()
        .to_string()
}

impl Recorder {
    fn new(app: &Arc<AppState>, format: ClientFormat, endpoint: &str, headers: &HeaderMap) -> Recorder {
        let key = client_key(headers);
        let now = unix_ms();
        let started = Instant::now();
        let allowed = app.config.retry.deadline;
        let deadline = started
            + requested_timeout(headers)
                .ok()
                .flatten()
                .map_or(allowed, |t| t.min(allowed));
        Recorder {
            app: app.clone(),
            started,
            deadline,
            rec: Some(CallRecord {
                id: call_id(now),
                started_at_ms: now,
                endpoint: endpoint.to_owned(),
                client_format: format,
                client_key_id: key.map(|k| key_id(&app.key_secret, &k)),
                task: explicit_task(&app.tasks, headers, None).ok().flatten(),
                requested_model: String::new(),
                served_model: None,
                provider: None,
                upstream_model: None,
                stream: false,
                status: CallStatus::ClientClosed,
                http_status: 499,
                error: None,
                usage: None,
                cost_usd: None,
                cost_estimated: false,
                latency_ms: 0.0,
                ttft_ms: None,
                overhead_us: None,
                attempts: 0,
                request_body: None,
                response_body: None,
                cache: None,
                cost_avoided_usd: None,
                policy: None,
                stages: Vec::new(),
            }),
            online: None,
            prior_cost: 0.0,
            prior_wait: std::time::Duration::ZERO,
        }
    }

    /// The gateway's own time so far: everything but the waits on upstreams.
    fn overhead_us(&self, waited: std::time::Duration) -> f64 {
        self.started
            .elapsed()
            .saturating_sub(waited + self.prior_wait)
            .as_secs_f64()
            * 1e6
    }

    /// Settles the served answer's usage and the call's cost: the answer's, plus earlier stages'.
    fn settle(&mut self, target: &Target, usage: Usage, estimated: bool) {
        let prior = self.prior_cost;
        let r = self.rec();
        settle_cost(r, target, usage, estimated);
        if prior > 0.0 {
            r.cost_usd = r.cost_usd.map(|c| c + prior);
        }
    }

    fn rec(&mut self) -> &mut CallRecord {
        self.rec.as_mut().expect("a recorder is only used before it finishes")
    }

    fn id(&self) -> String {
        self.rec.as_ref().map(|r| r.id.clone()).unwrap_or_default()
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn set_target(&mut self, t: &Target) {
        let r = self.rec();
        r.served_model = Some(t.model.clone());
        r.provider = Some(t.provider.name.clone());
        r.upstream_model = Some(t.upstream_model.clone());
    }

    fn log(&mut self, status: CallStatus, http_status: u16) {
        let latency = self.elapsed_ms();
        if let Some(mut r) = self.rec.take() {
            r.status = status;
            r.http_status = http_status;
            r.latency_ms = latency;
            crate::metrics::record(&r);
            if let (Some(job), Some(runtime)) = (self.online.take(), &self.app.policies) {
                runtime.finished(job, &r.id, r.client_format, &r, &self.app);
            }
            self.app.log.record(r);
        }
    }

    /// Ends the call with an error response in the client's format.
    fn fail(mut self, format: ClientFormat, http_status: u16, err: WireError, status: CallStatus) -> Response {
        self.rec().error = Some(err.message.clone());
        let id = self.id();
        self.log(status, http_status);
        error_response(format, http_status, &err, &id)
    }
}

impl Recorder {
    /// Ends a call none of whose upstreams answered.
    fn upstream_failed(mut self, format: ClientFormat, chain: &[Target], failed: Failed) -> Response {
        self.set_target(&chain[failed.target]);
        self.rec().attempts = failed.attempts;
        self.rec().overhead_us = Some(self.overhead_us(failed.waited));
        let (status, err) = failed.error.to_client();
        let call_status = match failed.error {
            upstream::UpstreamError::Translate(_) => CallStatus::ClientError,
            _ => CallStatus::UpstreamError,
        };
        self.fail(format, status, err, call_status)
    }

    /// Ends a successful non-streaming call: settles its cost, logs it, and builds the response.
    fn succeed(
        mut self,
        done: Answered,
        target: &Target,
        usage: Usage,
        estimated: bool,
        logged: Option<String>,
    ) -> Response {
        self.settle(target, usage, estimated);
        let r = self.rec();
        r.response_body = logged;
        let cost = r.cost_usd;
        self.rec().overhead_us = Some(self.overhead_us(done.waited));
        let mut resp = ([(header::CONTENT_TYPE, "application/json")], done.body).into_response();
        success_headers(&mut resp, self.rec(), target, &done.headers);
        self.log(CallStatus::Ok, 200);
        if let Some(c) = cost
            && let Ok(v) = HeaderValue::from_str(&format_cost(c))
        {
            resp.headers_mut().insert(HeaderName::from_static(HEADER_COST), v);
        }
        if estimated {
            resp.headers_mut().insert(
                HeaderName::from_static(HEADER_COST_ESTIMATED),
                HeaderValue::from_static("true"),
            );
        }
        resp
    }
}

/// A whole non-streaming upstream answer.
struct Answered {
    body: Bytes,
    headers: reqwest::header::HeaderMap,
    /// Time spent waiting on upstreams, this read included.
    waited: std::time::Duration,
}

/// Reads a non-streaming answer within the provider's timeout.
async fn read_answer(sent: Sent, target: &Target) -> Result<Answered, (u16, WireError)> {
    let Sent {
        mut response,
        mut waited,
        ..
    } = sent;
    // Moved out, not copied: reading the body needs only the response's stream.
    let headers = std::mem::take(response.headers_mut());
    let t0 = Instant::now();
    let read = tokio::time::timeout(target.provider.timeout, response.bytes()).await;
    waited += t0.elapsed();
    match read {
        Ok(Ok(body)) => Ok(Answered {
            body: upstream::redact_bytes(body, target.provider.api_key.as_ref()),
            headers,
            waited,
        }),
        Ok(Err(e)) => Err(unfinished(&target.provider, Some(e))),
        Err(_) => Err(unfinished(&target.provider, None)),
    }
}

/// The error for an answer that broke off (`Some`), or did not finish within the provider's timeout.
fn unfinished(provider: &crate::config::ProviderConfig, broke: Option<reqwest::Error>) -> (u16, WireError) {
    let name = &provider.name;
    match broke {
        Some(e) => (
            502,
            WireError::new(
                ErrorKind::Upstream,
                format!("upstream `{name}` broke off while sending its answer: {e}"),
            ),
        ),
        None => (
            504,
            WireError::new(
                ErrorKind::Timeout,
                format!(
                    "upstream `{name}` did not finish its answer within {}s",
                    provider.timeout.as_secs()
                ),
            ),
        ),
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.rec.is_some() {
            self.log(CallStatus::ClientClosed, 499);
        }
    }
}

/// The task the client named (`X-LeanLM-Task`, else `metadata.leanlm_task`), if it named one: a name that
/// is too long, holds other characters, or would be one client-named task too many is refused, naming
/// where it came from.
fn explicit_task(
    tasks: &leanlm_profile::Discoverer,
    headers: &HeaderMap,
    metadata: Option<&serde_json::Value>,
) -> Result<Option<TaskRef>, WireError> {
    let (named, source) = match headers.get(HEADER_TASK) {
        Some(v) => (
            v.to_str()
                .map_err(|_| WireError::invalid(format!("header `{HEADER_TASK}`: a task name must be text")))?,
            "header `x-leanlm-task`",
        ),
        None => match metadata.and_then(|m| m.get("leanlm_task")).and_then(|v| v.as_str()) {
            Some(n) => (n, "field `metadata.leanlm_task`"),
            None => return Ok(None),
        },
    };
    if named.trim().is_empty() {
        return Ok(None);
    }
    tasks
        .named(named)
        .map(|i| Some(task_ref(i)))
        .map_err(|e| WireError::invalid(format!("invalid {source}: {e}")))
}

fn task_ref(i: Identity) -> TaskRef {
    TaskRef {
        id: i.id,
        name: i.name,
        origin: i.origin,
        absorbs: i.absorbs,
    }
}

fn error_response(format: ClientFormat, status: u16, err: &WireError, call_id: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (code, axum::Json(err.to_body(format))).into_response();
    if let Ok(v) = HeaderValue::from_str(call_id) {
        resp.headers_mut().insert(HeaderName::from_static(HEADER_CALL_ID), v);
    }
    resp
}

fn client_key(headers: &HeaderMap) -> Option<Secret> {
    let v = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|s| {
                    s.strip_prefix("Bearer ")
                        .or_else(|| s.strip_prefix("bearer "))
                        .unwrap_or(s)
                })
        })?
        .trim();
    (!v.is_empty()).then(|| Secret::new(v))
}

/// A stable id for a client key, to group calls by key: an HMAC under a secret the store keeps, so a leaked
/// call log cannot be searched for a guessed or known key, at full length, so ids never collide.
fn key_id(secret: &[u8; 32], key: &Secret) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(key.expose().as_bytes());
    format!("key_{}", hex::encode(mac.finalize().into_bytes()))
}

/// The caches' scope for a call served by `target`: where the provider has no key of the gateway's, the
/// client's key is what authorises the call, so an answer it produced serves that key alone (and a request
/// with another key, or none, goes upstream and is refused there).
fn credential_scope(target: &Target, headers: &HeaderMap) -> Option<[u8; 32]> {
    target.provider.api_key.is_none().then(|| {
        let mut h = Sha256::new();
        h.update(b"leanlm cache scope\0");
        if let Some(k) = client_key(headers) {
            h.update(k.expose().as_bytes());
        }
        h.finalize().into()
    })
}

fn client_auth(headers: &HeaderMap) -> ClientAuth {
    ClientAuth {
        key: client_key(headers),
        anthropic_version: headers.get("anthropic-version").cloned(),
        anthropic_beta: headers.get("anthropic-beta").cloned(),
    }
}

/// Reads the request body up to the configured limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, WireError> {
    let too_large = || {
        WireError::new(
            ErrorKind::RequestTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(WireError::invalid(format!("could not read the request body: {e}"))),
    }
}

/// A chat request in the format the client sent.
enum Ingress {
    OpenAi(ChatRequest),
    Anthropic(MessagesRequest),
}

impl Ingress {
    fn model(&self) -> &str {
        match self {
            Ingress::OpenAi(r) => &r.model,
            Ingress::Anthropic(r) => &r.model,
        }
    }

    fn is_stream(&self) -> bool {
        match self {
            Ingress::OpenAi(r) => r.is_stream(),
            Ingress::Anthropic(r) => r.is_stream(),
        }
    }

    fn temperature(&self) -> Option<f64> {
        match self {
            Ingress::OpenAi(r) => r.temperature,
            Ingress::Anthropic(r) => r.temperature,
        }
    }

    /// The same request asking for a whole answer, not a stream.
    fn whole(&self) -> Ingress {
        match self {
            Ingress::OpenAi(r) => {
                let mut r = r.clone();
                r.stream = None;
                r.stream_options = None;
                Ingress::OpenAi(r)
            }
            Ingress::Anthropic(r) => {
                let mut r = r.clone();
                r.stream = None;
                Ingress::Anthropic(r)
            }
        }
    }

    /// The request in the OpenAI hub format.
    fn hub(&self) -> Result<ChatRequest, WireError> {
        match self {
            Ingress::OpenAi(r) => Ok(r.clone()),
            Ingress::Anthropic(r) => r.clone().into_openai(),
        }
    }

    /// The request body for one target, in the target's wire format.
    /// The request body for one target, in the target's wire format. When the client already speaks the
    /// target's format and names its model, the client's own bytes go upstream untouched.
    fn body_for(&self, target: &Target, raw: &Bytes) -> Result<Bytes, WireError> {
        let unchanged = match (target.provider.kind, self) {
            (ProviderKind::OpenAi, Ingress::OpenAi(r)) => {
                r.model == target.upstream_model
                    && (!r.is_stream() || r.wants_stream_usage())
                    && (target.provider.takes_extra_content || !r.has_tool_call_extra_content())
            }
            (ProviderKind::Anthropic, Ingress::Anthropic(r)) => r.model == target.upstream_model,
            _ => false,
        };
        if unchanged {
            return Ok(raw.clone());
        }
        self.translated_body_for(target).map(Bytes::from)
    }

    fn translated_body_for(&self, target: &Target) -> Result<Vec<u8>, WireError> {
        let upstream = target.upstream_model.clone();
        match (target.provider.kind, self) {
            (ProviderKind::OpenAi, Ingress::OpenAi(r)) => {
                let mut r = r.clone();
                r.model = upstream;
                if !target.provider.takes_extra_content {
                    // Gemini's thought signatures, from an earlier answer Gemini gave: only Google reads them.
                    r.strip_tool_call_extra_content();
                }
                if r.is_stream() {
                    // Ask for usage even when the client did not, for exact cost; the extra chunk is
                    // withheld from a client that did not ask for it.
                    r.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
                }
                to_vec(&r)
            }
            (ProviderKind::Anthropic, Ingress::Anthropic(r)) => {
                let mut r = r.clone();
                r.model = upstream;
                to_vec(&r)
            }
            (ProviderKind::OpenAi, Ingress::Anthropic(_)) => {
                let mut hub = self.hub()?;
                hub.model = upstream;
                to_vec(&hub)
            }
            (ProviderKind::Anthropic, Ingress::OpenAi(_)) => {
                let mut hub = self.hub()?;
                hub.model = upstream;
                to_vec(&anthropic::from_openai(hub)?)
            }
            (ProviderKind::Gemini, _) => to_vec(&gemini::from_openai(self.hub()?)?),
        }
    }
}

/// A body as text for the call log. Bodies are JSON, so valid UTF-8 in practice; the check is the fast path.
fn body_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn to_vec<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(v).map_err(|e| WireError::invalid(format!("could not encode the request: {e}")))
}

/// Routes a call under its task's policy: the replacement serves (the reference's chain behind it, so a
/// failing replacement falls back instead of failing the call) or the reference does; either way the call
/// is tagged with the policy version and may get a second opinion once complete. A cascade that serves
/// comes back with the chain of its strong model: its cheap stages run first.
async fn apply_policy(
    app: &AppState,
    rec: &mut Recorder,
    policy: Arc<leanlm_deploy::Policy>,
    call: &chat::Call,
    chain: Vec<Target>,
) -> Result<(Vec<Target>, Option<Arc<Chain>>), WireError> {
    use leanlm_core::Replacement;
    use leanlm_deploy::Route;
    let reference = call.ingress().model();
    let mut route = policy.route(rand::random(), rand::random());
    // Only a call the replacement serves or shadows needs its model; a router embeds the prompt for it.
    let needs_model = !matches!(route, Route::Reference { shadow: false });
    let cascade = match &policy.replacement {
        Replacement::Cascade { .. } if needs_model => app.policies.as_ref().and_then(|p| p.cascade(&policy.task_id)),
        _ => None,
    };
    let model = match &policy.replacement {
        Replacement::Model { model } => Some(model.clone()),
        Replacement::Router { .. } if needs_model => routed(app, &policy.task_id, call.json()).await,
        // Whatever the cheap stage does, the strong model is the chain behind it.
        Replacement::Cascade { strong, .. } => cascade.as_ref().map(|_| strong.clone()),
        _ => None,
    };
    if model.is_none() {
        route = Route::Reference { shadow: false };
    }
    let (chain, role, check, served_by_replacement) = match (route, &model) {
        (Route::Replacement { audit }, Some(model)) => {
            let mut served = app.routes.resolve(model)?;
            served.extend(chain);
            (
                served,
                Role::Replacement,
                audit.then_some(crate::policy::Check::Audit),
                true,
            )
        }
        (Route::Reference { shadow }, _) => (
            chain,
            Role::Reference,
            shadow.then_some(crate::policy::Check::Shadow),
            false,
        ),
        // Unreachable: without a model the route was set to the reference above.
        (Route::Replacement { .. }, None) => (chain, Role::Reference, None, false),
    };
    rec.rec().policy = Some(leanlm_store::PolicyTag {
        version: policy.version,
        role,
    });
    rec.online = Some(crate::policy::OnlineJob {
        policy,
        replacement: model.unwrap_or_default(),
        check,
        reference: reference.to_owned(),
        served_by_replacement,
        // A shadow check judges the cheap answer as the cascade would.
        cascade: cascade.clone().filter(|_| !served_by_replacement),
    });
    Ok((chain, cascade.filter(|_| served_by_replacement)))
}

/// The model a task's learned router picks for a request, or `None` (the reference serves) when there is
/// no router or the prompt cannot be embedded.
async fn routed(app: &AppState, task: &str, request: Option<&Value>) -> Option<String> {
    let router = app.policies.as_ref()?.router(task)?;
    let embedder = app.embedder.as_ref()?;
    let text = leanlm_core::transcript::transcript(request?);
    let vector = match embedder.embed(&app.routes, &app.http(), vec![text.clone()]).await {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(task, error = %e, "router: could not embed the prompt; the reference serves");
            return None;
        }
    };
    let cheap = router.cheap(&leanlm_route::features(&vector, &text));
    metrics::counter!("leanlm_router_picks_total", "pick" => if cheap { "cheap" } else { "strong" }).increment(1);
    Some(if cheap {
        router.cheap.clone()
    } else {
        router.strong.clone()
    })
}

/// An answer from a cache.
struct Served {
    body: Bytes,
    cost_usd: Option<f64>,
    model: String,
    provider: String,
    /// `hit` or `semantic-hit`.
    kind: CacheOutcome,
    /// For a semantic hit, how similar the request was to the one whose answer it gets.
    similarity: Option<f32>,
}

/// Where the upstream's answer goes once complete: the exact cache, the semantic cache, or both.
pub(super) struct CacheWrite {
    exact: Option<(Key, std::time::Duration)>,
    semantic: Option<crate::semantic::Pending>,
}

impl CacheWrite {
    fn wanted(&self) -> bool {
        self.exact.is_some() || self.semantic.is_some()
    }

    /// Stores a complete answer (in the client's format, non-streaming).
    fn write(self, app: &AppState, body: Bytes, cost: Option<f64>, target: &Target, call_id: &str) {
        if let (Some(s), Some(p)) = (&app.semantic, self.semantic) {
            s.complete(p, &body, cost, target, call_id);
        }
        if let Some((k, ttl)) = self.exact {
            app.cache.put(k, Entry::new(body, cost, target, ttl));
        }
    }
}

/// Answers from the exact or semantic cache, as a stream when the client asked for one.
fn cache_hit(
    app: &AppState,
    mut rec: Recorder,
    format: ClientFormat,
    hit: Served,
    stream: bool,
    wants_usage: bool,
) -> Response {
    let r = rec.rec();
    r.cache = Some(hit.kind);
    r.cost_usd = Some(0.0);
    r.cost_avoided_usd = hit.cost_usd;
    r.served_model = Some(hit.model.clone());
    r.provider = Some(hit.provider.clone());
    if app.config.log_bodies {
        r.response_body = Some(body_text(&hit.body));
    }
    let (content_type, body) = if stream {
        let v: serde_json::Value = serde_json::from_slice(&hit.body).unwrap_or_default();
        ("text/event-stream", as_sse(format, &v, wants_usage))
    } else {
        ("application/json", hit.body.clone())
    };
    rec.rec().overhead_us = Some(rec.started.elapsed().as_secs_f64() * 1e6);
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    let r = rec.rec();
    for (name, value) in [
        (HEADER_CALL_ID, Some(r.id.as_str())),
        (HEADER_TASK, r.task.as_ref().map(|t| t.id.as_str())),
        (HEADER_MODEL, Some(hit.model.as_str())),
        (HEADER_PROVIDER, Some(hit.provider.as_str())),
        (HEADER_CACHE, Some(hit.kind.as_str())),
        (HEADER_COST, Some("0.00000000")),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(s) = hit.similarity
        && let Ok(v) = HeaderValue::from_str(&format!("{s:.4}"))
    {
        h.insert(HeaderName::from_static(HEADER_CACHE_SIMILARITY), v);
    }
    rec.log(CallStatus::Ok, 200);
    resp
}

/// A whole answer (in the client's format) replayed as the client's event stream.
fn as_sse(format: ClientFormat, v: &Value, wants_usage: bool) -> Bytes {
    let mut buf = Vec::with_capacity(1024);
    match format {
        ClientFormat::OpenAi => {
            for c in openai::completion_to_chunks(v, wants_usage) {
                stream::sse_frame(&mut buf, format, None, &c.to_string());
            }
            buf.extend_from_slice(b"data: [DONE]\n\n");
        }
        ClientFormat::Anthropic => {
            for e in anthropic::message_to_events(v) {
                stream::sse_frame(&mut buf, format, e.get("type").and_then(|t| t.as_str()), &e.to_string());
            }
        }
    }
    Bytes::from(buf)
}

/// Headers every successful LeanLM response carries, plus the forwardable upstream ones.
fn success_headers(resp: &mut Response, rec: &CallRecord, target: &Target, upstream: &reqwest::header::HeaderMap) {
    let h = resp.headers_mut();
    for (name, value) in upstream {
        if forwardable(name.as_str()) {
            h.insert(name.clone(), value.clone());
        }
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put(HEADER_CALL_ID, &rec.id);
    if let Some(t) = &rec.task {
        put(HEADER_TASK, &t.id);
    }
    put(HEADER_MODEL, &target.model);
    put(HEADER_PROVIDER, &target.provider.name);
    if let Some(c) = rec.cache {
        put(HEADER_CACHE, c.as_str());
    }
    if let Some(stage) = rec.stages.last() {
        put(HEADER_CASCADE, stage.outcome.as_str());
    }
}

/// The only part of a response LeanLM reads when it passes the body through untouched; serde skips the rest
/// without building it.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Value>,
}

fn usage_of_object(kind: ProviderKind, usage: &Value) -> Option<Usage> {
    match kind {
        ProviderKind::OpenAi => Usage::from_openai(usage),
        ProviderKind::Anthropic => Usage::from_anthropic(usage),
        ProviderKind::Gemini => Usage::from_gemini(usage),
    }
}

fn not_json(target: &Target, e: &serde_json::Error, bytes: &[u8]) -> WireError {
    let preview: String = String::from_utf8_lossy(bytes).chars().take(200).collect();
    WireError::new(
        ErrorKind::Upstream,
        format!(
            "upstream `{}` returned an answer that is not valid JSON ({e}): {preview}",
            target.provider.name
        ),
    )
}

fn usage_of(kind: ProviderKind, v: &Value) -> Option<Usage> {
    match kind {
        ProviderKind::OpenAi => v.get("usage").and_then(Usage::from_openai),
        ProviderKind::Anthropic => v.get("usage").and_then(Usage::from_anthropic),
        ProviderKind::Gemini => v.get("usageMetadata").and_then(Usage::from_gemini),
    }
}

/// Local estimate when the upstream reported no usage.
fn estimate_usage(target: &Target, ingress: &Ingress, output_text: &str) -> Usage {
    let prompt = ingress
        .hub()
        .map(|h| tokens::count_prompt(&target.upstream_model, &h))
        .unwrap_or(0);
    Usage {
        input_tokens: prompt,
        output_tokens: tokens::count_text(&target.upstream_model, output_text),
        ..Default::default()
    }
}

fn settle_cost(rec: &mut CallRecord, target: &Target, usage: Usage, estimated: bool) {
    rec.usage = Some(usage);
    rec.cost_estimated = estimated;
    rec.cost_usd = target.price.map(|p| cost_usd(&usage, &p));
}

fn format_cost(c: f64) -> String {
    format!("{c:.8}")
}

/// A whole upstream answer in the client's format.
fn to_client(kind: ProviderKind, format: ClientFormat, v: Value, target: &Target) -> Value {
    match (kind, format) {
        (ProviderKind::Anthropic, ClientFormat::OpenAi) => anthropic::response_to_openai(&v),
        (ProviderKind::Gemini, ClientFormat::OpenAi) => gemini::response_to_openai(&v, &target.model),
        (ProviderKind::OpenAi, ClientFormat::Anthropic) => anthropic::response_from_openai(&v),
        (ProviderKind::Gemini, ClientFormat::Anthropic) => {
            anthropic::response_from_openai(&gemini::response_to_openai(&v, &target.model))
        }
        _ => v,
    }
}

async fn unary_response(
    app: Arc<AppState>,
    rec: Recorder,
    format: ClientFormat,
    target: Target,
    sent: Sent,
    ingress: Ingress,
    cache_key: CacheWrite,
) -> Response {
    let kind = target.provider.kind;
    let mut done = match read_answer(sent, &target).await {
        Ok(d) => d,
        Err((status, err)) => return rec.fail(format, status, err, CallStatus::UpstreamError),
    };
    let bytes = std::mem::take(&mut done.body);
    // Same format both sides: the body goes back untouched, and only its usage is read.
    let passthrough = matches!(
        (kind, format),
        (ProviderKind::OpenAi, ClientFormat::OpenAi) | (ProviderKind::Anthropic, ClientFormat::Anthropic)
    );
    let (full, found) = if passthrough {
        match serde_json::from_slice::<UsageOnly>(&bytes) {
            Ok(head) => (None, head.usage.as_ref().and_then(|u| usage_of_object(kind, u))),
            Err(e) => return rec.fail(format, 502, not_json(&target, &e, &bytes), CallStatus::UpstreamError),
        }
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => {
                if kind == ProviderKind::Gemini
                    && let Some(reason) = gemini::blocked_reason(&v)
                {
                    return rec.fail(format, 400, WireError::invalid(reason), CallStatus::UpstreamError);
                }
                let found = usage_of(kind, &v);
                (Some(v), found)
            }
            Err(e) => return rec.fail(format, 502, not_json(&target, &e, &bytes), CallStatus::UpstreamError),
        }
    };
    let (usage, estimated) = match found {
        Some(u) => (u, false),
        None => {
            let text = match &full {
                Some(v) => answer_text(kind, v),
                None => serde_json::from_slice::<Value>(&bytes)
                    .map(|v| answer_text(kind, &v))
                    .unwrap_or_default(),
            };
            (estimate_usage(&target, &ingress, &text), true)
        }
    };
    let out: Bytes = match full {
        None => bytes,
        Some(v) => to_client(kind, format, v, &target).to_string().into(),
    };
    let logged = app.config.log_bodies.then(|| body_text(&out));
    if cache_key.wanted() {
        let cost = target.price.map(|p| cost_usd(&usage, &p));
        let id = rec.id();
        cache_key.write(&app, out.clone(), cost, &target, &id);
    }
    done.body = out;
    rec.succeed(done, &target, usage, estimated, logged)
}

#[cfg(test)]
mod tests {
    use super::call_id;

    #[test]
    fn call_ids_are_unique_time_ordered_uuids_that_keep_their_order_within_a_millisecond() {
        let ids: Vec<uuid::Uuid> = (0..2_000).map(|_| call_id(crate::unix_ms()).parse().unwrap()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for pair in ids.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(a.get_version_num(), 7);
            let ms = |u: uuid::Uuid| u.get_timestamp().map(|t| t.to_unix()).unwrap();
            assert!(ms(a) <= ms(b), "time goes forward");
            let seq = |u: uuid::Uuid| u16::from_be_bytes([u.as_bytes()[6], u.as_bytes()[7]]) & 0x0FFF;
            if ms(a) == ms(b) && seq(b) > seq(a) {
                assert!(a < b, "{a} then {b}");
            }
        }
    }
}
