//! A mock LLM upstream for LeanLM's tests and benchmarks: a real HTTP server speaking the OpenAI,
//! Anthropic and Gemini wire formats, streaming included.
//!
//! Behaviour is steered from inside the request, so it survives any gateway in between: directives such
//! as `[[mock:status=503]]` anywhere in the body. See [`Directives`] for the list. Without directives the
//! mock answers `Echo: <last user text>` at once, which is what the overhead benchmark measures against.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod intents;
mod labels;
mod maths;
mod recorded;
pub use intents::{PER_INTENT, intents, intents_csv};
pub use labels::Labeller;
/// A labelled set as the `text,label` CSV the mock's `--labels` reads.
pub use maths::csv as labels_csv;
pub use maths::{Style, deliveries, word_problems};
pub use recorded::Recorded;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Directives found in a request body.
#[derive(Debug, Default, Clone)]
pub struct Directives {
    /// `[[mock:status=N]]`: answer with this HTTP error status (in the provider's error format).
    pub status: Option<u16>,
    /// `[[mock:fail_times=N:KEY]]`: fail the first N requests carrying KEY (with `status`, default 503).
    pub fail_times: Option<(u64, String)>,
    /// `[[mock:retry_after=S]]`: a `Retry-After` header on errors.
    pub retry_after: Option<u64>,
    /// `[[mock:delay_ms=N]]`: wait before answering.
    pub delay_ms: Option<u64>,
    /// `[[mock:hang]]`: never answer.
    pub hang: bool,
    /// `[[mock:garbage]]`: answer 200 with a body that is not JSON.
    pub garbage: bool,
    /// `[[mock:truncate]]`: cut the answer (or the stream) off halfway.
    pub truncate: bool,
    /// `[[mock:no_usage]]`: report no token usage.
    pub no_usage: bool,
    /// `[[mock:cached=N]]`: report N cached prompt tokens.
    pub cached: u64,
    /// `[[mock:reasoning=N]]`: report N reasoning tokens.
    pub reasoning: u64,
    /// `[[mock:chunk_delay_ms=N]]`: wait between stream events.
    pub chunk_delay_ms: u64,
}

impl Directives {
    pub fn parse(text: &str) -> Directives {
        let mut d = Directives::default();
        for piece in text.split("[[mock:").skip(1) {
            let Some(end) = piece.find("]]") else { continue };
            let (k, v) = piece[..end].split_once('=').unwrap_or((&piece[..end], ""));
            let n = v.parse::<u64>().ok();
            match k {
                "status" => d.status = n.map(|n| n as u16),
                "fail_times" => {
                    if let Some((count, key)) = v.split_once(':') {
                        d.fail_times = count.parse().ok().map(|c| (c, key.to_owned()));
                    }
                }
                "retry_after" => d.retry_after = n,
                "delay_ms" => d.delay_ms = n,
                "hang" => d.hang = true,
                "garbage" => d.garbage = true,
                "truncate" => d.truncate = true,
                "no_usage" => d.no_usage = true,
                "cached" => d.cached = n.unwrap_or(0),
                "reasoning" => d.reasoning = n.unwrap_or(0),
                "chunk_delay_ms" => d.chunk_delay_ms = n.unwrap_or(0),
                _ => {}
            }
        }
        d
    }
}

/// A request as the mock received it, for tests to inspect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    fail_counters: Mutex<HashMap<String, u64>>,
    seen: Mutex<Vec<Seen>>,
    record: std::sync::atomic::AtomicBool,
    labeller: Option<std::sync::RwLock<Labeller>>,
    recorded: Option<Recorded>,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    /// Requests whose client (the gateway) went away before the answer was complete.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// Counts a request as cancelled if dropped before `done`.
struct Inflight {
    stats: Arc<Stats>,
    done: bool,
}

impl Inflight {
    fn finish(mut self) {
        self.done = true;
        self.stats.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A running mock upstream.
pub struct Mock {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Mock {
    /// Starts on an ephemeral port on 127.0.0.1, recording every request it sees.
    pub async fn start() -> anyhow::Result<Mock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Mock::serve(listener, true))
    }

    /// Serves on the given listener; `record` keeps each request for inspection (off for benchmarks).
    pub fn serve(listener: TcpListener, record: bool) -> Mock {
        Mock::serve_with(listener, record, None)
    }

    /// Serves with a labeller: prompts that are examples of its data set get a label as the answer.
    pub fn serve_with(listener: TcpListener, record: bool, labeller: Option<Labeller>) -> Mock {
        Mock::serve_recorded(listener, record, labeller, None)
    }

    /// Serves with recorded answers too: a model answers a recorded prompt as it was recorded, before any
    /// labeller or echo.
    pub fn serve_recorded(
        listener: TcpListener,
        record: bool,
        labeller: Option<Labeller>,
        recorded: Option<Recorded>,
    ) -> Mock {
        let addr = listener.local_addr().expect("bound listener has an address");
        let stats = Arc::new(Stats {
            labeller: labeller.map(std::sync::RwLock::new),
            recorded,
            ..Stats::default()
        });
        stats.record.store(record, Ordering::SeqCst);
        let app = router(stats.clone());
        tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Mock { addr, stats }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub fn router(stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/models", get(models))
        .route("/v1/responses", post(openai_responses))
        .route("/v1/messages/count_tokens", post(anthropic_count_tokens))
        .route("/v1beta/models/{action}", post(gemini))
        .route("/mock/stats", get(stats_handler))
        .route("/mock/requests", get(requests_handler))
        .route("/mock/accuracy", post(accuracy_handler))
        .route("/mock/truth", post(truth_handler))
        .fallback(echo)
        .with_state(stats)
}

/// Any other path: describes the request it got (method, path, query, headers, body size and hash), so
/// tests can see exactly what a pass-through delivered. `/v1/mock-status/NNN` answers with that status.
async fn echo(State(stats): State<Arc<Stats>>, req: axum::extract::Request) -> Response {
    use sha2::Digest;
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "mock: body too large").into_response();
    };
    let path = parts.uri.path().to_owned();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?))))
        .collect();
    let seen = json!({"method": parts.method.as_str(), "path": path, "query": parts.uri.query(),
        "headers": headers, "body_bytes": body.len(), "body_sha256": hex::encode(sha2::Sha256::digest(&body))});
    observe(&stats, &path, &parts.headers, &seen);
    let status = path
        .strip_prefix("/v1/mock-status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if status != StatusCode::OK {
        let format = if parts.headers.contains_key("anthropic-version") {
            Format::Anthropic
        } else {
            Format::OpenAi
        };
        return error_response(format, status.as_u16(), "mock: the status asked for", None);
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-request-id"), "req_mock_echo"),
        ],
        seen.to_string(),
    )
        .into_response()
}

/// `POST /v1/responses`: OpenAI's Responses API, plain or streamed, echoing the last user text.
async fn openai_responses(State(stats): State<Arc<Stats>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, d, guard) = match prelude(&stats, Format::OpenAi, "/v1/responses", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // `input` is a string or a list of messages; either way the answer echoes the last user text.
    let as_chat = match req.get("input") {
        Some(Value::String(s)) => json!({"messages": [{"role": "user", "content": s}]}),
        Some(Value::Array(items)) => json!({"messages": items
            .iter()
            .map(|m| {
                let content = match &m["content"] {
                    Value::Array(parts) => json!(parts.iter().filter_map(|p| p.get("text").cloned()).map(|t| json!({"text": t})).collect::<Vec<_>>()),
                    other => other.clone(),
                };
                json!({"role": m["role"], "content": content})
            })
            .collect::<Vec<_>>()}),
        _ => json!({"messages": []}),
    };
    let a = answer(&stats, Format::OpenAi, &as_chat, model_of(&as_chat), body.len());
    let model = req.get("model").and_then(Value::as_str).unwrap_or("mock").to_owned();
    let id = format!("resp_mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let cached = d.cached.min(a.prompt_tokens);
    let usage = json!({
        "input_tokens": a.prompt_tokens, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": a.completion_tokens + d.reasoning, "output_tokens_details": {"reasoning_tokens": d.reasoning},
        "total_tokens": a.prompt_tokens + a.completion_tokens + d.reasoning,
    });
    let item = json!({"id": "msg_mock1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": a.text, "annotations": []}]});
    let mut response = json!({"id": id, "object": "response", "created_at": 1, "status": "completed",
        "model": model, "output": [item.clone()], "parallel_tool_calls": true, "tool_choice": "auto", "tools": []});
    if !d.no_usage {
        response["usage"] = usage;
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let ev = |v: Value| format!("event: {}\ndata: {}\n\n", v["type"].as_str().unwrap_or(""), v);
        let mut started = response.clone();
        started["status"] = json!("in_progress");
        started["output"] = json!([]);
        started.as_object_mut().map(|o| o.remove("usage"));
        // The event sequence OpenAI sends: the item and its part open, text deltas, then each closes.
        let mut events = vec![
            json!({"type": "response.created", "response": started}),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": "msg_mock1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": "msg_mock1", "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
        ];
        for w in words(&a.text) {
            events.push(
                json!({"type": "response.output_text.delta", "item_id": "msg_mock1", "output_index": 0,
                "content_index": 0, "delta": w, "logprobs": []}),
            );
        }
        events.push(
            json!({"type": "response.output_text.done", "item_id": "msg_mock1", "output_index": 0,
            "content_index": 0, "text": a.text, "logprobs": []}),
        );
        events.push(
            json!({"type": "response.content_part.done", "item_id": "msg_mock1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": a.text, "annotations": []}}),
        );
        events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
        events.push(json!({"type": "response.completed", "response": response}));
        let frames = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["sequence_number"] = json!(i);
                ev(e)
            })
            .collect();
        return sse(frames, &d, guard);
    }
    json_response(&response, &d, guard)
}

/// `POST /v1/messages/count_tokens`: Anthropic's token counting, with the mock's own count.
async fn anthropic_count_tokens(State(stats): State<Arc<Stats>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, d, guard) = match prelude(&stats, Format::Anthropic, "/v1/messages/count_tokens", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let a = answer(&stats, Format::Anthropic, &req, model_of(&req), body.len());
    json_response(&json!({"input_tokens": a.prompt_tokens}), &d, guard)
}

async fn stats_handler(State(stats): State<Arc<Stats>>) -> Response {
    axum::Json(json!({"requests": stats.requests(), "cancelled": stats.cancelled(), "completed": stats.completed()}))
        .into_response()
}

/// `POST /mock/accuracy {"model": "cheap", "accuracy": 0.5}`: changes a labelled model's accuracy while
/// running, to degrade a deployed replacement on purpose.
async fn accuracy_handler(State(stats): State<Arc<Stats>>, body: Bytes) -> Response {
    let Some(labeller) = &stats.labeller else {
        return (StatusCode::BAD_REQUEST, "mock: started without --labels").into_response();
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(model), Some(p)) = (
        v.get("model").and_then(Value::as_str),
        v.get("accuracy").and_then(Value::as_f64),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "mock: expected {\"model\": ..., \"accuracy\": ...}",
        )
            .into_response();
    };
    let mut l = labeller.write().unwrap_or_else(|p| p.into_inner());
    *l = std::mem::take(&mut *l).accuracy(model, p);
    axum::Json(json!({"model": model, "accuracy": p})).into_response()
}

/// `POST /mock/truth {"prompt": "..."}`: the true answer to an example of the labelled data set, so a
/// benchmark can score what the gateway served against the truth.
async fn truth_handler(State(stats): State<Arc<Stats>>, body: Bytes) -> Response {
    let Some(labeller) = &stats.labeller else {
        return (StatusCode::BAD_REQUEST, "mock: started without --labels or --routellm").into_response();
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(prompt) = v.get("prompt").and_then(Value::as_str) else {
        return (StatusCode::BAD_REQUEST, "mock: expected {\"prompt\": ...}").into_response();
    };
    let l = labeller.read().unwrap_or_else(|p| p.into_inner());
    axum::Json(json!({"truth": l.truth(prompt)})).into_response()
}

async fn requests_handler(State(stats): State<Arc<Stats>>) -> Response {
    axum::Json(json!(stats.seen())).into_response()
}

async fn models() -> Response {
    axum::Json(
        json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}),
    )
    .into_response()
}

fn observe(stats: &Arc<Stats>, path: &str, headers: &HeaderMap, body: &Value) {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    if stats.record.load(Ordering::Relaxed) {
        let headers = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut seen = stats.seen.lock().unwrap();
        if seen.len() >= 1000 {
            seen.remove(0);
        }
        seen.push(Seen {
            path: path.to_owned(),
            headers,
            body: body.clone(),
        });
    }
}

fn error_response(format: Format, status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let body = match format {
        Format::OpenAi => json!({"error": {"message": message, "type": "mock_error", "param": null, "code": null}}),
        Format::Anthropic => {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                401 => "authentication_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Format::Gemini => json!({"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// What every format's handler shares: parse, record, apply directives. `Err` is the response to send.
async fn prelude(
    stats: &Arc<Stats>,
    format: Format,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Value, Directives, Inflight), Response> {
    // Created first, so a client that leaves during a delay or a hang counts as a cancellation.
    let guard = Inflight {
        stats: stats.clone(),
        done: false,
    };
    let fail = |guard: Inflight, resp: Response| {
        guard.finish();
        resp
    };
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let resp = error_response(format, 400, "mock: request body is not JSON", None);
        return Err(fail(guard, resp));
    };
    observe(stats, path, headers, &json);
    let text = std::str::from_utf8(body).unwrap_or("");
    let d = if text.contains("[[mock:") {
        Directives::parse(text)
    } else {
        Directives::default()
    };
    let key = headers
        .get("x-api-key")
        .or_else(|| headers.get("x-goog-api-key"))
        .or_else(|| headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.ends_with("bad-key") {
        return Err(fail(
            guard,
            error_response(
                format,
                401,
                &format!("mock: invalid API key {}", key.trim_start_matches("Bearer ")),
                None,
            ),
        ));
    }
    if let Some(ms) = d.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if d.hang {
        std::future::pending::<()>().await;
    }
    if let Some((times, key)) = &d.fail_times {
        let mut counters = stats.fail_counters.lock().unwrap();
        let c = counters.entry(key.clone()).or_insert(0);
        *c += 1;
        if *c <= *times {
            drop(counters);
            let resp = error_response(
                format,
                d.status.unwrap_or(503),
                "mock: transient failure",
                d.retry_after,
            );
            return Err(fail(guard, resp));
        }
    } else if let Some(status) = d.status {
        let resp = error_response(format, status, "mock: injected failure", d.retry_after);
        return Err(fail(guard, resp));
    }
    if d.garbage {
        let resp = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "this is not json",
        )
            .into_response();
        return Err(fail(guard, resp));
    }
    Ok((json, d, guard))
}

/// The last user text of a request in any format, with directives removed.
fn last_user_text(format: Format, body: &Value) -> String {
    let text_of = |c: &Value| -> String {
        match c {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    let raw = match format {
        Format::OpenAi | Format::Anthropic => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default(),
        Format::Gemini => body
            .get("contents")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().rev().find(|c| c["role"] == "user"))
            .map(|c| text_of(&c["parts"]))
            .unwrap_or_default(),
    };
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(i) = rest.find("[[mock:") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("]]").map(|j| &rest[i + j + 2..]).unwrap_or("");
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// The system prompt of a request in any format, with its parts joined.
fn system_text(format: Format, body: &Value) -> String {
    let text_of = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    match format {
        Format::OpenAi => body
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter(|m| m["role"] == "system" || m["role"] == "developer")
                    .map(|m| text_of(&m["content"]))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        Format::Anthropic => body.get("system").map(text_of).unwrap_or_default(),
        Format::Gemini => body
            .pointer("/systemInstruction/parts")
            .map(text_of)
            .unwrap_or_default(),
    }
}

/// A prompt that offers its answers (`… one of: lost_card, card_arrival or top_up.`) is answered, as a model
/// would, with one of them: the same one for the same user turn.
fn offered_answer(format: Format, body: &Value, user: &str) -> Option<String> {
    let system = system_text(format, body);
    let prompt = format!("{system}\n{user}");
    let start = prompt.find("one of:")? + "one of:".len();
    let list = prompt[start..].split(['\n', '.']).next()?;
    let options: Vec<&str> = list
        .split(',')
        .flat_map(|o| o.split(" or "))
        .map(|o| o.trim().trim_start_matches("or ").trim())
        .filter(|o| !o.is_empty())
        .collect();
    if options.len() < 2 || options.iter().any(|o| o.split_whitespace().count() > 3) {
        return None;
    }
    // FNV-1a: stable across runs and platforms, unlike the standard hasher.
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Some(options[(hash % options.len() as u64) as usize].to_owned())
}

/// What the mock model decided to say.
struct Answer {
    text: String,
    /// The log-probability of each answer token, for a request that asks for them.
    logprob: f64,
    /// A tool call: name and JSON arguments.
    tool: Option<(String, Value)>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

fn model_of(body: &Value) -> &str {
    body.get("model").and_then(Value::as_str).unwrap_or("")
}

/// `model` is the one asked for: the labeller judges answers by model.
fn answer(stats: &Stats, format: Format, body: &Value, model: &str, raw_len: usize) -> Answer {
    let user = last_user_text(format, body);
    if let Some(text) = stats
        .recorded
        .as_ref()
        .and_then(|r| r.answer(model, &system_text(format, body), &user))
    {
        return Answer {
            text: text.to_owned(),
            logprob: -0.05,
            tool: None,
            prompt_tokens: (raw_len as u64 / 4).max(1),
            completion_tokens: (text.split_whitespace().count() as u64).max(1),
        };
    }
    if let Some(label) = stats.labeller.as_ref().and_then(|l| {
        let l = l.read().unwrap_or_else(|p| p.into_inner());
        l.judge(&user)
            .map(|j| (j.to_owned(), -0.01))
            .or_else(|| l.answer_with_logprob(model, &user))
    }) {
        let (label, logprob) = label;
        // A word a token, as for the other answers: a worded answer is longer than a one-word label.
        let completion_tokens = (label.split_whitespace().count() as u64).max(1);
        return Answer {
            text: label,
            logprob,
            tool: None,
            prompt_tokens: (raw_len as u64 / 4).max(1),
            completion_tokens,
        };
    }
    if let Some(label) = offered_answer(format, body, &user) {
        return Answer {
            completion_tokens: (label.split_whitespace().count() as u64).max(1),
            text: label,
            logprob: -0.05,
            tool: None,
            prompt_tokens: (raw_len as u64 / 4).max(1),
        };
    }
    let json_mode = match format {
        Format::OpenAi => body
            .pointer("/response_format/type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text"),
        Format::Gemini => {
            body.pointer("/generationConfig/responseMimeType")
                .and_then(Value::as_str)
                == Some("application/json")
        }
        Format::Anthropic => body.get("system").is_some_and(|s| s.to_string().contains("JSON")),
    };
    let tool = first_tool(format, body).filter(|_| !last_is_tool_result(format, body));
    let text = if tool.is_some() {
        String::new()
    } else if json_mode {
        json!({"echo": user}).to_string()
    } else {
        let echo = format!("Echo: {}", user.chars().take(400).collect::<String>());
        // Like a real model, stop at the output cap (counting a word as a token).
        let cap = match format {
            Format::OpenAi => body.get("max_completion_tokens").or_else(|| body.get("max_tokens")),
            Format::Anthropic => body.get("max_tokens"),
            Format::Gemini => body.pointer("/generationConfig/maxOutputTokens"),
        };
        match cap.and_then(Value::as_u64) {
            Some(n) => echo
                .split_inclusive(' ')
                .take(n.max(1) as usize)
                .collect::<String>()
                .trim_end()
                .to_owned(),
            None => echo,
        }
    };
    let completion_tokens = text.split_whitespace().count() as u64 + if tool.is_some() { 8 } else { 0 };
    Answer {
        text,
        logprob: -0.05,
        tool,
        prompt_tokens: (raw_len as u64 / 4).max(1),
        completion_tokens: completion_tokens.max(1),
    }
}

fn first_tool(format: Format, body: &Value) -> Option<(String, Value)> {
    let (name, schema) = match format {
        Format::OpenAi => {
            if body.get("tool_choice").and_then(Value::as_str) == Some("none") {
                return None;
            }
            let t = body.get("tools")?.get(0)?;
            (
                t.pointer("/function/name")?.as_str()?,
                t.pointer("/function/parameters").cloned(),
            )
        }
        Format::Anthropic => {
            let t = body.get("tools")?.get(0)?;
            (t.get("name")?.as_str()?, t.get("input_schema").cloned())
        }
        Format::Gemini => {
            let d = body.pointer("/tools/0/functionDeclarations/0")?;
            (
                d.get("name")?.as_str()?,
                d.get("parametersJsonSchema").or_else(|| d.get("parameters")).cloned(),
            )
        }
    };
    // Arguments that satisfy the schema's required string/number/boolean properties.
    let mut args = serde_json::Map::new();
    if let Some(props) = schema
        .as_ref()
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (k, p) in props {
            let v = match p.get("type").and_then(Value::as_str) {
                Some("number") | Some("integer") => json!(1),
                Some("boolean") => json!(true),
                _ => json!("mock"),
            };
            args.insert(k.clone(), v);
        }
    }
    Some((name.to_owned(), Value::Object(args)))
}

fn last_is_tool_result(format: Format, body: &Value) -> bool {
    match format {
        Format::OpenAi => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool"),
        Format::Anthropic => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_array())
            .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result")),
        Format::Gemini => body
            .get("contents")
            .and_then(Value::as_array)
            .and_then(|c| c.last())
            .and_then(|c| c["parts"].as_array())
            .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some())),
    }
}

fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// Streams pre-rendered SSE frames, with optional pacing; notices a client that goes away.
fn sse(frames: Vec<String>, d: &Directives, guard: Inflight) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let delay = d.chunk_delay_ms;
    let truncate = d.truncate;
    tokio::spawn(async move {
        let n = if truncate { frames.len() / 2 } else { frames.len() };
        for f in frames.into_iter().take(n) {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return drop(guard);
            }
        }
        guard.finish();
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_response(v: &Value, d: &Directives, guard: Inflight) -> Response {
    let mut s = v.to_string();
    if d.truncate {
        s.truncate(s.len() / 2);
    }
    guard.finish();
    ([(header::CONTENT_TYPE, "application/json")], s).into_response()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn openai_chat(State(stats): State<Arc<Stats>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, d, guard) = match prelude(&stats, Format::OpenAi, "/v1/chat/completions", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let a = answer(&stats, Format::OpenAi, &req, model_of(&req), body.len());
    let model = req.get("model").and_then(Value::as_str).unwrap_or("mock").to_owned();
    let id = format!("chatcmpl-mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let cached = d.cached.min(a.prompt_tokens);
    let usage = json!({
        "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens + d.reasoning,
        "total_tokens": a.prompt_tokens + a.completion_tokens + d.reasoning,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": d.reasoning},
    });
    let finish = if a.tool.is_some() { "tool_calls" } else { "stop" };
    let tool_call = a.tool.as_ref().map(|(name, args)| {
        json!({"id": "call_mock1", "type": "function", "function": {"name": name, "arguments": args.to_string()}})
    });
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let chunk = |delta: Value, finish: Option<&str>| {
            format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        if let Some((name, args)) = &a.tool {
            let args = args.to_string();
            let (a1, a2) = args.split_at(args.len() / 2);
            frames.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock1", "type": "function", "function": {"name": name, "arguments": a1}}]}), None));
            frames.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": a2}}]}),
                None,
            ));
        } else {
            for w in words(&a.text) {
                frames.push(chunk(json!({"content": w}), None));
            }
        }
        frames.push(chunk(json!({}), Some(finish)));
        if req.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) && !d.no_usage {
            frames.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage})
            ));
        }
        frames.push("data: [DONE]\n\n".into());
        return sse(frames, &d, guard);
    }
    let mut message =
        json!({"role": "assistant", "content": if a.tool.is_some() { Value::Null } else { json!(a.text) }});
    if let Some(tc) = tool_call {
        message["tool_calls"] = json!([tc]);
    }
    let logprobs = if req.get("logprobs").and_then(Value::as_bool) == Some(true) {
        let tokens: Vec<Value> = words(&a.text)
            .iter()
            .map(|w| json!({"token": w, "logprob": a.logprob, "bytes": null, "top_logprobs": []}))
            .collect();
        json!({"content": tokens, "refusal": null})
    } else {
        Value::Null
    };
    let mut resp = json!({"id": id, "object": "chat.completion", "created": 1, "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}]});
    if !d.no_usage {
        resp["usage"] = usage;
    }
    json_response(&resp, &d, guard)
}

async fn anthropic_messages(State(stats): State<Arc<Stats>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, d, guard) = match prelude(&stats, Format::Anthropic, "/v1/messages", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if headers.get("anthropic-version").is_none() {
        return error_response(Format::Anthropic, 400, "anthropic-version header is required", None);
    }
    let a = answer(&stats, Format::Anthropic, &req, model_of(&req), body.len());
    let model = req.get("model").and_then(Value::as_str).unwrap_or("mock").to_owned();
    let id = format!("msg_mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let cached = d.cached.min(a.prompt_tokens);
    let input = a.prompt_tokens - cached;
    let stop = if a.tool.is_some() { "tool_use" } else { "end_turn" };
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let ev = |v: Value| format!("event: {}\ndata: {}\n\n", v["type"].as_str().unwrap_or(""), v);
        let start_usage = if d.no_usage {
            json!({})
        } else {
            json!({"input_tokens": input, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0, "output_tokens": 1})
        };
        let mut frames = vec![ev(
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": start_usage}}),
        )];
        frames.push(ev(json!({"type": "ping"})));
        if let Some((name, args)) = &a.tool {
            frames.push(ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}})));
            let args = args.to_string();
            let (a1, a2) = args.split_at(args.len() / 2);
            for part in [a1, a2] {
                frames.push(ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
        } else {
            frames.push(ev(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for w in words(&a.text) {
                frames.push(ev(
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
                ));
            }
        }
        frames.push(ev(json!({"type": "content_block_stop", "index": 0})));
        let usage = if d.no_usage {
            json!({})
        } else {
            json!({"output_tokens": a.completion_tokens})
        };
        frames.push(ev(
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage}),
        ));
        frames.push(ev(json!({"type": "message_stop"})));
        return sse(frames, &d, guard);
    }
    let content = match &a.tool {
        Some((name, args)) => json!([{"type": "tool_use", "id": "toolu_mock1", "name": name, "input": args}]),
        None => json!([{"type": "text", "text": a.text}]),
    };
    let mut resp = json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop, "stop_sequence": null});
    if !d.no_usage {
        resp["usage"] = json!({"input_tokens": input, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0, "output_tokens": a.completion_tokens});
    }
    json_response(&resp, &d, guard)
}

async fn gemini(
    State(stats): State<Arc<Stats>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1beta/models/{action}");
    let (req, d, guard) = match prelude(&stats, Format::Gemini, &path, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((model, verb)) = action.split_once(':') else {
        return error_response(Format::Gemini, 404, "mock: unknown action", None);
    };
    if verb == "batchEmbedContents" {
        let n = req.get("requests").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": vector(&format!("{i}"))})).collect();
        return json_response(&json!({"embeddings": embeddings}), &d, guard);
    }
    if let Err(message) = check_thought_signatures(&req) {
        guard.finish();
        return error_response(Format::Gemini, 400, &message, None);
    }
    // Gemini names the model in the path.
    let a = answer(&stats, Format::Gemini, &req, model, body.len());
    let cached = d.cached.min(a.prompt_tokens);
    let mut usage = json!({"promptTokenCount": a.prompt_tokens, "candidatesTokenCount": a.completion_tokens,
        "totalTokenCount": a.prompt_tokens + a.completion_tokens + d.reasoning});
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    if d.reasoning > 0 {
        usage["thoughtsTokenCount"] = json!(d.reasoning);
    }
    let response_id = format!("mock{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let part = match &a.tool {
        Some((name, args)) => {
            json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": format!("{SIGNATURE_PREFIX}{response_id}")})
        }
        None => json!({"text": a.text}),
    };
    if verb == "streamGenerateContent" {
        let mut frames = Vec::new();
        let chunks: Vec<Value> = match &a.tool {
            Some(_) => vec![part],
            None => words(&a.text).into_iter().map(|w| json!({"text": w})).collect(),
        };
        let last = chunks.len() - 1;
        for (i, p) in chunks.into_iter().enumerate() {
            let mut c = json!({"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}],
                "modelVersion": model, "responseId": response_id});
            if i == last {
                c["candidates"][0]["finishReason"] = json!("STOP");
                if !d.no_usage {
                    c["usageMetadata"] = usage.clone();
                }
            }
            frames.push(format!("data: {c}\r\n\r\n"));
        }
        return sse(frames, &d, guard);
    }
    let mut resp = json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "modelVersion": model, "responseId": response_id});
    if req
        .pointer("/generationConfig/responseLogprobs")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let chosen: Vec<Value> = words(&a.text)
            .iter()
            .map(|w| json!({"token": w, "logProbability": a.logprob}))
            .collect();
        resp["candidates"][0]["logprobsResult"] = json!({"chosenCandidates": chosen, "topCandidates": []});
    }
    if !d.no_usage {
        resp["usageMetadata"] = usage;
    }
    json_response(&resp, &d, guard)
}

/// The thought signatures this mock gives its function calls.
const SIGNATURE_PREFIX: &str = "bW9jay1zaWduYXR1cmU=";

/// Gemini 3's check: each model turn that calls functions carries, on its first call, the thought signature
/// Gemini gave it, or the placeholder Google documents for calls another model made.
fn check_thought_signatures(req: &Value) -> Result<(), String> {
    let turns = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    for (i, turn) in turns.enumerate().filter(|(_, t)| t["role"] == "model") {
        let parts = turn.get("parts").and_then(Value::as_array).into_iter().flatten();
        let Some((j, first)) = parts.enumerate().find(|(_, p)| p.get("functionCall").is_some()) else {
            continue;
        };
        match first.get("thoughtSignature").and_then(Value::as_str) {
            Some(s) if s.starts_with(SIGNATURE_PREFIX) || s == "skip_thought_signature_validator" => {}
            Some(s) => return Err(format!("Corrupted thought signature `{s}` at contents[{i}].parts[{j}]")),
            None => {
                return Err(format!(
                    "Function call is missing a thought_signature in functionCall parts, position contents[{i}].parts[{j}]"
                ));
            }
        }
    }
    Ok(())
}

fn vector(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (0..8).map(|i| (((h >> (i * 8)) & 0xff) as f32 / 255.0) - 0.5).collect()
}

async fn openai_embeddings(State(stats): State<Arc<Stats>>, headers: HeaderMap, body: Bytes) -> Response {
    let (req, d, guard) = match prelude(&stats, Format::OpenAi, "/v1/embeddings", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
            .collect(),
        _ => return error_response(Format::OpenAi, 400, "mock: `input` is required", None),
    };
    let tokens: u64 = inputs.iter().map(|s| s.split_whitespace().count() as u64).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": vector(s)}))
        .collect();
    let resp = json!({"object": "list", "data": data, "model": req.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    json_response(&resp, &d, guard)
}

/// A bare reverse proxy: every request goes to `base` + its path, body and response copied as they are.
/// It parses nothing and records nothing: the floor any gateway pays for one more HTTP hop.
pub async fn forward(listener: TcpListener, base: String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let app = Router::new().fallback(move |req: axum::extract::Request| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let (parts, body) = req.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let uri = format!("{base}{}", parts.uri.path());
            let Ok(out) = hyper::Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
            else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            match client.request(out).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    match body.collect().await {
                        Ok(b) => Response::from_parts(parts, Body::from(b.to_bytes())),
                        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                    }
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    });
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, app).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse() {
        let d =
            Directives::parse("hi [[mock:status=429]] [[mock:retry_after=2]] [[mock:fail_times=2:abc]] [[mock:hang]]");
        assert_eq!(d.status, Some(429));
        assert_eq!(d.retry_after, Some(2));
        assert_eq!(d.fail_times, Some((2, "abc".into())));
        assert!(d.hang);
        assert!(!d.garbage);
    }

    #[test]
    fn user_text_drops_directives() {
        let body = json!({"messages": [{"role": "user", "content": "hello [[mock:delay_ms=5]] world"}]});
        assert_eq!(last_user_text(Format::OpenAi, &body), "hello  world");
    }

    #[test]
    fn a_prompt_that_offers_answers_gets_one_of_them() {
        let ask = |system: &str, user: &str| {
            let body = json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]});
            offered_answer(Format::OpenAi, &body, user)
        };
        let system = "Classify the message into one of: lost_card, card_arrival or top_up. Reply with the label.";
        let a = ask(system, "I lost my card").unwrap();
        assert!(["lost_card", "card_arrival", "top_up"].contains(&a.as_str()), "{a}");
        assert_eq!(
            ask(system, "I lost my card").unwrap(),
            a,
            "the same turn, the same answer"
        );
        let all: std::collections::HashSet<_> = (0..40).filter_map(|i| ask(system, &format!("q{i}"))).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(
            ask("Answer kindly.", "Pick one of: tea, coffee"),
            Some(ask("x", "Pick one of: tea, coffee").unwrap())
        );
        assert_eq!(ask("Reply kindly.", "hello"), None);
        assert_eq!(
            ask("Say one of: a long sentence with many words, or another", "q"),
            None
        );
        let anthropic =
            json!({"system": [{"type": "text", "text": system}], "messages": [{"role": "user", "content": "x"}]});
        assert!(offered_answer(Format::Anthropic, &anthropic, "x").is_some());
    }
}
