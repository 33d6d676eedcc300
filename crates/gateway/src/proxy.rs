//! The request path: client wire format in, upstream out, and back; every call recorded.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use leanlm_cost::{cost_usd, tokens};
use leanlm_store::{CallRecord, CallStatus};
use leanlm_wire::anthropic::{self, MessagesRequest};
use leanlm_wire::openai::{self, ChatRequest};
use leanlm_wire::stream::{Translator, UsageTracker};
use leanlm_wire::{ClientFormat, ErrorKind, ProviderKind, Usage, WireError, gemini};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Secret;
use crate::route::Target;
use crate::server::AppState;
use crate::upstream::{self, ClientAuth, Operation, Prepared, Sent, status_of};

pub const HEADER_CALL_ID: &str = "x-leanlm-call-id";
pub const HEADER_MODEL: &str = "x-leanlm-model";
pub const HEADER_PROVIDER: &str = "x-leanlm-provider";
pub const HEADER_COST: &str = "x-leanlm-cost-usd";
pub const HEADER_COST_ESTIMATED: &str = "x-leanlm-cost-estimated";
pub const HEADER_TASK: &str = "x-leanlm-task";

/// Upstream response headers worth handing to the client (request ids, rate-limit state).
fn forwardable(name: &str) -> bool {
    name == "x-request-id"
        || name == "request-id"
        || name == "openai-processing-ms"
        || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Owns a call's record until it is logged, exactly once. Dropped unfinished (the client went away and
/// the request future was cancelled), it logs the call as `client_closed`.
pub(crate) struct Recorder {
    app: Arc<AppState>,
    started: Instant,
    rec: Option<CallRecord>,
}

impl Recorder {
    fn new(app: &Arc<AppState>, format: ClientFormat, endpoint: &str, headers: &HeaderMap) -> Recorder {
        let key = client_key(headers);
        Recorder {
            app: app.clone(),
            started: Instant::now(),
            rec: Some(CallRecord {
                id: uuid::Uuid::now_v7().to_string(),
                started_at_ms: unix_ms(),
                endpoint: endpoint.to_owned(),
                client_format: format.as_str().to_owned(),
                client_key_id: key.map(|k| key_id(&k)),
                task: headers
                    .get(HEADER_TASK)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
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
            }),
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

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.rec.is_some() {
            self.log(CallStatus::ClientClosed, 499);
        }
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

/// A stable, non-reversible id for a client key: enough to group calls by key, useless to an attacker.
fn key_id(key: &Secret) -> String {
    let digest = Sha256::digest(key.expose().as_bytes());
    format!("key_{}", hex::encode(&digest[..6]))
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

    /// The request in the OpenAI hub format.
    fn hub(&self) -> Result<ChatRequest, WireError> {
        match self {
            Ingress::OpenAi(r) => Ok(r.clone()),
            Ingress::Anthropic(r) => r.clone().into_openai(),
        }
    }

    /// The request body for one target, in the target's wire format.
    fn body_for(&self, target: &Target) -> Result<Vec<u8>, WireError> {
        let upstream = target.upstream_model.clone();
        let json = |v: &dyn erased::Ser| v.to_vec();
        match (target.provider.kind, self) {
            (ProviderKind::OpenAi, Ingress::OpenAi(r)) => {
                let mut r = r.clone();
                r.model = upstream;
                if r.is_stream() {
                    // Ask for usage even when the client did not, for exact cost; the extra chunk is
                    // withheld from a client that did not ask for it.
                    r.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
                }
                json(&r)
            }
            (ProviderKind::Anthropic, Ingress::Anthropic(r)) => {
                let mut r = r.clone();
                r.model = upstream;
                json(&r)
            }
            (ProviderKind::OpenAi, Ingress::Anthropic(_)) => {
                let mut hub = self.hub()?;
                hub.model = upstream;
                json(&hub)
            }
            (ProviderKind::Anthropic, Ingress::OpenAi(_)) => {
                let mut hub = self.hub()?;
                hub.model = upstream;
                json(&anthropic::from_openai(hub)?)
            }
            (ProviderKind::Gemini, _) => json(&gemini::from_openai(self.hub()?)?),
        }
    }
}

mod erased {
    use leanlm_wire::WireError;

    /// Serialises any request type to bytes with one error path.
    pub trait Ser {
        fn to_vec(&self) -> Result<Vec<u8>, WireError>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn to_vec(&self) -> Result<Vec<u8>, WireError> {
            serde_json::to_vec(self).map_err(|e| WireError::invalid(format!("could not encode the request: {e}")))
        }
    }
}

/// `POST /v1/chat/completions` and `POST /v1/messages`.
pub(crate) async fn chat(app: Arc<AppState>, format: ClientFormat, headers: HeaderMap, body: Body) -> Response {
    let endpoint = match format {
        ClientFormat::OpenAi => "chat.completions",
        ClientFormat::Anthropic => "messages",
    };
    let mut rec = Recorder::new(&app, format, endpoint, &headers);
    let bytes = match read_body(&headers, body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    if app.config.log_bodies {
        rec.rec().request_body = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let parsed = match format {
        ClientFormat::OpenAi => ChatRequest::parse(&bytes).map(Ingress::OpenAi),
        ClientFormat::Anthropic => MessagesRequest::parse(&bytes).map(Ingress::Anthropic),
    };
    let ingress = match parsed {
        Ok(i) => i,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    rec.rec().requested_model = ingress.model().to_owned();
    let stream = ingress.is_stream();
    rec.rec().stream = stream;
    let chain = match app.routes.resolve(ingress.model()) {
        Ok(c) => c,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    let auth = client_auth(&headers);
    let op = Operation::Chat { stream };
    let sent = upstream::send(&app.http, &chain, &app.config.retry, |target| {
        upstream::prepare(target, op, Bytes::from(ingress.body_for(target)?), &auth)
    })
    .await;
    let sent = match sent {
        Ok(s) => s,
        Err(failed) => {
            rec.set_target(&chain[failed.target]);
            rec.rec().attempts = failed.attempts;
            rec.rec().overhead_us = Some(rec.started.elapsed().saturating_sub(failed.waited).as_secs_f64() * 1e6);
            let (status, err) = failed.error.to_client();
            let call_status = match failed.error {
                upstream::UpstreamError::Translate(_) => CallStatus::ClientError,
                _ => CallStatus::UpstreamError,
            };
            return rec.fail(format, status, err, call_status);
        }
    };
    let target = chain[sent.target].clone();
    rec.set_target(&target);
    rec.rec().attempts = sent.attempts;
    let wants_usage = match &ingress {
        Ingress::OpenAi(r) => r.wants_stream_usage(),
        Ingress::Anthropic(_) => true,
    };
    if stream {
        stream_response(app, rec, format, target, sent, wants_usage, ingress)
    } else {
        unary_response(app, rec, format, target, sent, ingress).await
    }
}

/// Headers every successful LeanLM response carries, plus the forwardable upstream ones.
fn success_headers(resp: &mut Response, call_id: &str, target: &Target, upstream: &reqwest::header::HeaderMap) {
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
    put(HEADER_CALL_ID, call_id);
    put(HEADER_MODEL, &target.model);
    put(HEADER_PROVIDER, &target.provider.name);
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

/// Everything the model wrote in a response, for local token counting.
fn response_text(kind: ProviderKind, v: &Value) -> String {
    let mut out = String::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s {
            out.push_str(s);
        }
    };
    match kind {
        ProviderKind::OpenAi => {
            for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
                add(c.pointer("/message/content").and_then(Value::as_str));
                for tc in c
                    .pointer("/message/tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(tc.pointer("/function/arguments").and_then(Value::as_str));
                }
            }
        }
        ProviderKind::Anthropic => {
            for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
                add(b.get("text").and_then(Value::as_str));
                if let Some(i) = b.get("input") {
                    add(Some(&i.to_string()));
                }
            }
        }
        ProviderKind::Gemini => {
            for p in v
                .pointer("/candidates/0/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add(p.get("text").and_then(Value::as_str));
            }
        }
    }
    out
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

async fn unary_response(
    app: Arc<AppState>,
    mut rec: Recorder,
    format: ClientFormat,
    target: Target,
    sent: Sent,
    ingress: Ingress,
) -> Response {
    let Sent {
        response, mut waited, ..
    } = sent;
    let kind = target.provider.kind;
    let upstream_headers = response.headers().clone();
    let t0 = Instant::now();
    let bytes = tokio::time::timeout(target.provider.timeout, response.bytes()).await;
    waited += t0.elapsed();
    let bytes = match bytes {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let err = WireError::new(
                ErrorKind::Upstream,
                format!(
                    "upstream `{}` broke off while sending its answer: {e}",
                    target.provider.name
                ),
            );
            return rec.fail(format, 502, err, CallStatus::UpstreamError);
        }
        Err(_) => {
            let err = WireError::new(
                ErrorKind::Timeout,
                format!(
                    "upstream `{}` did not finish its answer within {}s",
                    target.provider.name,
                    target.provider.timeout.as_secs()
                ),
            );
            return rec.fail(format, 504, err, CallStatus::UpstreamError);
        }
    };
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
                Some(v) => response_text(kind, v),
                None => serde_json::from_slice::<Value>(&bytes)
                    .map(|v| response_text(kind, &v))
                    .unwrap_or_default(),
            };
            (estimate_usage(&target, &ingress, &text), true)
        }
    };
    let out: Bytes = match (&full, kind, format) {
        (None, ..) => bytes,
        (Some(v), ProviderKind::Anthropic, ClientFormat::OpenAi) => anthropic::response_to_openai(v).to_string().into(),
        (Some(v), ProviderKind::Gemini, ClientFormat::OpenAi) => {
            gemini::response_to_openai(v, &target.model).to_string().into()
        }
        (Some(v), ProviderKind::OpenAi, ClientFormat::Anthropic) => {
            anthropic::response_from_openai(v).to_string().into()
        }
        (Some(v), ProviderKind::Gemini, ClientFormat::Anthropic) => {
            anthropic::response_from_openai(&gemini::response_to_openai(v, &target.model))
                .to_string()
                .into()
        }
        (Some(v), ..) => v.to_string().into(),
    };
    let r = rec.rec();
    settle_cost(r, &target, usage, estimated);
    if app.config.log_bodies {
        r.response_body = Some(String::from_utf8_lossy(&out).into_owned());
    }
    let cost = r.cost_usd;
    let id = r.id.clone();
    let elapsed = rec.started.elapsed();
    rec.rec().overhead_us = Some(elapsed.saturating_sub(waited).as_secs_f64() * 1e6);
    rec.log(CallStatus::Ok, 200);

    let mut resp = ([(header::CONTENT_TYPE, "application/json")], out).into_response();
    success_headers(&mut resp, &id, &target, &upstream_headers);
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

/// Rebuilds the client's view of a stream for the call log.
enum Accumulator {
    Off,
    OpenAi(openai::StreamAccumulator),
    Anthropic(anthropic::StreamAccumulator),
}

impl Accumulator {
    fn push(&mut self, v: &Value) {
        match self {
            Accumulator::Off => {}
            Accumulator::OpenAi(a) => a.push(v),
            Accumulator::Anthropic(a) => a.push(v),
        }
    }

    fn finish(self) -> Option<String> {
        match self {
            Accumulator::Off => None,
            Accumulator::OpenAi(a) => Some(a.finish().to_string()),
            Accumulator::Anthropic(a) => Some(a.finish().to_string()),
        }
    }
}

fn sse_frame(buf: &mut Vec<u8>, format: ClientFormat, event: Option<&str>, data: &str) {
    if format == ClientFormat::Anthropic
        && let Some(e) = event
    {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(e.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(data.as_bytes());
    buf.extend_from_slice(b"\n\n");
}

fn error_frame(buf: &mut Vec<u8>, format: ClientFormat, message: &str) {
    let body = WireError::new(ErrorKind::Upstream, message).to_body(format);
    sse_frame(buf, format, Some("error"), &body.to_string());
}

/// An upstream event that reports an error mid-stream.
fn stream_error(kind: ProviderKind, v: &Value) -> Option<String> {
    let is_error = match kind {
        ProviderKind::Anthropic => v.get("type").and_then(Value::as_str) == Some("error"),
        ProviderKind::OpenAi | ProviderKind::Gemini => v.get("error").is_some_and(|e| !e.is_null()),
    };
    is_error.then(|| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    })
}

fn stream_response(
    app: Arc<AppState>,
    mut rec: Recorder,
    format: ClientFormat,
    target: Target,
    sent: Sent,
    wants_usage: bool,
    ingress: Ingress,
) -> Response {
    let overhead = rec.started.elapsed().saturating_sub(sent.waited);
    rec.rec().overhead_us = Some(overhead.as_secs_f64() * 1e6);
    let id = rec.id();
    let upstream_headers = sent.response.headers().clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(32);
    tokio::spawn(pump(
        app,
        rec,
        format,
        target.clone(),
        sent.response,
        wants_usage,
        ingress,
        tx,
    ));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    success_headers(&mut resp, &id, &target, &upstream_headers);
    resp
}

/// Moves a stream from the upstream to the client, translating where the formats differ, and records
/// the call when it ends, however it ends.
#[allow(clippy::too_many_arguments)]
async fn pump(
    app: Arc<AppState>,
    mut rec: Recorder,
    format: ClientFormat,
    target: Target,
    response: reqwest::Response,
    wants_usage: bool,
    ingress: Ingress,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let kind = target.provider.kind;
    let idle = target.provider.stream_idle_timeout;
    let mut events = response.bytes_stream().eventsource();
    let mut tracker = UsageTracker::new(kind);
    let mut translator = Translator::new(kind, format, &target.model, wants_usage);
    let mut acc = match (app.config.log_bodies, format) {
        (false, _) => Accumulator::Off,
        (true, ClientFormat::OpenAi) => Accumulator::OpenAi(Default::default()),
        (true, ClientFormat::Anthropic) => Accumulator::Anthropic(Default::default()),
    };
    let mut out: Vec<Value> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut error: Option<String> = None;
    let mut upstream_reported_error = false;
    let mut text_len_hint = String::new();

    loop {
        let next = tokio::select! {
            // The client went away: dropping `rec` logs `client_closed`, dropping `events` cancels upstream.
            _ = tx.closed() => return,
            n = tokio::time::timeout(idle, events.next()) => n,
        };
        let ev = match next {
            Err(_) => {
                error = Some(format!(
                    "upstream `{}` sent nothing for {}s",
                    target.provider.name,
                    idle.as_secs()
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                error = Some(format!("upstream `{}` stream broke: {e}", target.provider.name));
                break;
            }
            Ok(Some(Ok(ev))) => ev,
        };
        if ev.data == "[DONE]" {
            tracker.observe_done();
            break;
        }
        let v: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(_) => {
                let preview: String = ev.data.chars().take(120).collect();
                error = Some(format!(
                    "upstream `{}` sent an event that is not JSON: {preview}",
                    target.provider.name
                ));
                break;
            }
        };
        tracker.observe(&v);
        if let Some(msg) = stream_error(kind, &v) {
            error = Some(msg);
            upstream_reported_error = translator.is_none();
        }
        match &mut translator {
            None => {
                // Same format both sides: pass the event through as it came, except the usage chunk that
                // LeanLM asked for on the client's behalf.
                let usage_only = kind == ProviderKind::OpenAi
                    && v.get("choices").and_then(Value::as_array).is_some_and(|c| c.is_empty())
                    && v.get("usage").is_some();
                if !usage_only || wants_usage {
                    acc.push(&v);
                    let name = (!ev.event.is_empty() && ev.event != "message").then_some(ev.event.as_str());
                    sse_frame(&mut buf, format, name, &ev.data);
                }
            }
            Some(t) => {
                out.clear();
                t.push(&v, &mut out);
                for o in &out {
                    acc.push(o);
                    sse_frame(&mut buf, format, o.get("type").and_then(Value::as_str), &o.to_string());
                }
            }
        }
        if rec.rec().ttft_ms.is_none() && !buf.is_empty() {
            rec.rec().ttft_ms = Some(rec.elapsed_ms());
        }
        if text_len_hint.len() < 1 << 20 && tracker.usage().is_none() {
            text_len_hint.push_str(&response_text_chunk(kind, &v));
        }
        if !buf.is_empty() && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
            return;
        }
        if error.is_some() {
            break;
        }
    }

    if error.is_none() && !tracker.is_complete() {
        error = Some(format!(
            "upstream `{}` ended the stream before it was complete",
            target.provider.name
        ));
    }
    if let Some(t) = &mut translator
        && error.is_none()
    {
        out.clear();
        t.finish(&mut out);
        for o in &out {
            acc.push(o);
            sse_frame(&mut buf, format, o.get("type").and_then(Value::as_str), &o.to_string());
        }
    }
    let (usage, estimated) = match tracker.usage() {
        Some(u) => (u, false),
        None => (estimate_usage(&target, &ingress, &text_len_hint), true),
    };
    settle_cost(rec.rec(), &target, usage, estimated);
    match &error {
        Some(msg) if !upstream_reported_error => error_frame(&mut buf, format, msg),
        _ => {}
    }
    // A comment line: ignored by SSE clients, readable by people and scripts.
    if let Some(c) = rec.rec().cost_usd {
        let est = if estimated { " estimated" } else { "" };
        buf.extend_from_slice(format!(": leanlm call_id={} cost_usd={}{est}\n\n", rec.id(), format_cost(c)).as_bytes());
    }
    if format == ClientFormat::OpenAi && error.is_none() {
        buf.extend_from_slice(b"data: [DONE]\n\n");
    }
    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
        return;
    }
    rec.rec().response_body = acc.finish();
    match error {
        Some(e) => {
            rec.rec().error = Some(e);
            rec.log(CallStatus::UpstreamError, 200);
        }
        None => rec.log(CallStatus::Ok, 200),
    }
}

/// The text of one upstream stream event, for local counting when usage never arrives.
fn response_text_chunk(kind: ProviderKind, v: &Value) -> String {
    match kind {
        ProviderKind::OpenAi => v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        ProviderKind::Anthropic => v
            .pointer("/delta/text")
            .or_else(|| v.pointer("/delta/partial_json"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        ProviderKind::Gemini => response_text(kind, v),
    }
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(app: Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    let format = ClientFormat::OpenAi;
    let mut rec = Recorder::new(&app, format, "embeddings", &headers);
    let bytes = match read_body(&headers, body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    if app.config.log_bodies {
        rec.rec().request_body = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let req: Value = match leanlm_wire::parse_json(&bytes) {
        Ok(v) => v,
        Err(e) => return rec.fail(format, 400, e, CallStatus::ClientError),
    };
    let Some(model) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return rec.fail(
            format,
            400,
            WireError::invalid("invalid field `model`: a model name is required"),
            CallStatus::ClientError,
        );
    };
    rec.rec().requested_model = model.clone();
    let input_ok = match req.get("input") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    };
    if !input_ok {
        let e = WireError::invalid("invalid field `input`: a non-empty string or array is required");
        return rec.fail(format, 400, e, CallStatus::ClientError);
    }
    let chain = match app.routes.resolve(&model) {
        Ok(c) => c,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    let auth = client_auth(&headers);
    let sent = upstream::send(&app.http, &chain, &app.config.retry, |target| {
        let body = match target.provider.kind {
            ProviderKind::Gemini => gemini::embeddings_from_openai(&req, &target.upstream_model)?.to_string(),
            _ => {
                let mut r = req.clone();
                r["model"] = Value::String(target.upstream_model.clone());
                r.to_string()
            }
        };
        let p: Prepared = upstream::prepare(target, Operation::Embeddings, Bytes::from(body), &auth)?;
        Ok(p)
    })
    .await;
    let sent = match sent {
        Ok(s) => s,
        Err(failed) => {
            rec.set_target(&chain[failed.target]);
            rec.rec().attempts = failed.attempts;
            let (status, err) = failed.error.to_client();
            return rec.fail(format, status, err, CallStatus::UpstreamError);
        }
    };
    let target = chain[sent.target].clone();
    rec.set_target(&target);
    rec.rec().attempts = sent.attempts;
    let Sent {
        response, mut waited, ..
    } = sent;
    let upstream_headers = response.headers().clone();
    let t0 = Instant::now();
    let bytes = tokio::time::timeout(target.provider.timeout, response.bytes()).await;
    waited += t0.elapsed();
    let v: Value = match bytes
        .ok()
        .and_then(Result::ok)
        .map(|b| serde_json::from_slice::<Value>(&b))
    {
        Some(Ok(v)) => v,
        _ => {
            let err = WireError::new(
                ErrorKind::Upstream,
                format!(
                    "upstream `{}` returned an embeddings answer that could not be read as JSON",
                    target.provider.name
                ),
            );
            return rec.fail(format, 502, err, CallStatus::UpstreamError);
        }
    };
    let (out, usage, estimated) = match target.provider.kind {
        ProviderKind::Gemini => {
            let text: String = match req.get("input") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
                _ => String::new(),
            };
            let n = tokens::count_text(&target.upstream_model, &text);
            let mut out = gemini::embeddings_to_openai(&v, &target.model);
            out["usage"] = serde_json::json!({"prompt_tokens": n, "total_tokens": n});
            (
                out,
                Usage {
                    input_tokens: n,
                    ..Default::default()
                },
                true,
            )
        }
        _ => {
            let n = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64);
            let usage = Usage {
                input_tokens: n.unwrap_or(0),
                ..Default::default()
            };
            (v, usage, n.is_none())
        }
    };
    let r = rec.rec();
    settle_cost(r, &target, usage, estimated);
    if app.config.log_bodies {
        // The vectors themselves are large and reproducible: the log keeps their shape, not their values.
        let data = out.get("data").and_then(Value::as_array);
        r.response_body = Some(
            serde_json::json!({
                "object": "list",
                "embeddings": data.map(Vec::len).unwrap_or(0),
                "dimensions": data.and_then(|d| d.first()).and_then(|e| e.get("embedding")).and_then(Value::as_array).map(Vec::len),
                "usage": out.get("usage"),
            })
            .to_string(),
        );
    }
    let cost = r.cost_usd;
    let id = r.id.clone();
    rec.rec().overhead_us = Some(rec.started.elapsed().saturating_sub(waited).as_secs_f64() * 1e6);
    rec.log(CallStatus::Ok, 200);
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], out.to_string()).into_response();
    success_headers(&mut resp, &id, &target, &upstream_headers);
    if let Some(c) = cost
        && let Ok(v) = HeaderValue::from_str(&format_cost(c))
    {
        resp.headers_mut().insert(HeaderName::from_static(HEADER_COST), v);
    }
    resp
}
