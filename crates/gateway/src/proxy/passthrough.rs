//! Every other `/v1/` endpoint (OpenAI's Responses API, files, batches, moderations, audio; Anthropic's
//! token counting and batches ...) goes untouched to a provider that speaks the client's own API, so
//! changing `base_url` breaks none of a client's calls. Each call is logged; where the answer reports usage
//! in a shape LeanLM knows (chat, Responses, Anthropic), with its tokens and cost.
//!
//! The provider is the one serving the body's `model` where it names a known model of the client's kind
//! (an alias is rewritten to its upstream name), else the provider named after the client's kind
//! (`openai`, `anthropic`). Bodies other than JSON (file uploads) stream through unread.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use leanlm_cost::{Price, cost_usd};
use leanlm_store::CallStatus;
use leanlm_wire::{ClientFormat, ErrorKind, ProviderKind, Usage, WireError};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    HEADER_CALL_ID, HEADER_COST, HEADER_MODEL, HEADER_PROVIDER, Recorder, body_text, format_cost, read_body,
    unfinished, usage_of_object,
};
use crate::config::ProviderConfig;
use crate::server::AppState;
use crate::upstream::{
    StreamRedactor, UpstreamError, describe_error_body, describe_reqwest, redact, redact_bytes, status_of,
};

/// The most of an answer read before it is passed on: a JSON answer up to this size is read whole, so its
/// cost can go in a header and its body in the log; anything larger streams through.
const WHOLE_LIMIT: usize = 1 << 20;

/// Only the part of a request body that picks the provider.
#[derive(serde::Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

/// The client's body: read whole (JSON), or streamed through unread.
enum Outgoing {
    Read(Bytes),
    Streamed(Body),
}

/// Where a call goes and how it is priced.
struct Route {
    provider: Arc<ProviderConfig>,
    /// The model the gateway reports as served, and its upstream name.
    model: Option<(String, String)>,
    price: Option<Price>,
}

/// Serves a `/v1/` path LeanLM has no handler of its own for.
pub(crate) async fn passthrough(
    app: Arc<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = if headers.contains_key("anthropic-version") {
        ClientFormat::Anthropic
    } else {
        ClientFormat::OpenAi
    };
    let kind = match format {
        ClientFormat::OpenAi => ProviderKind::OpenAi,
        ClientFormat::Anthropic => ProviderKind::Anthropic,
    };
    let path = uri.path();
    let endpoint = path.trim_start_matches("/v1/");
    let mut rec = Recorder::new(&app, format, endpoint, &headers);
    rec.rec().task = None;

    // A JSON body is read (within the size limit) to find its model; anything else streams through unread.
    let (outgoing, model) = if content_type_is(&headers, "application/json") {
        let bytes = match read_body(&headers, body, app.config.max_body_bytes).await {
            Ok(b) => b,
            Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
        };
        let model = serde_json::from_slice::<ModelOnly>(&bytes).ok().and_then(|m| m.model);
        (Outgoing::Read(bytes), model)
    } else {
        (Outgoing::Streamed(body), None)
    };
    let route = match choose(&app, kind, model.as_deref()) {
        Ok(r) => r,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    let outgoing = match (outgoing, &route.model, &model) {
        (Outgoing::Read(bytes), Some((_, upstream)), Some(asked)) if upstream != asked => {
            Outgoing::Read(rename(&bytes, upstream).unwrap_or(bytes))
        }
        (o, _, _) => o,
    };
    {
        let r = rec.rec();
        r.requested_model = model.clone().unwrap_or_default();
        r.provider = Some(route.provider.name.clone());
        if let Some((served, upstream)) = &route.model {
            r.served_model = Some(served.clone());
            r.upstream_model = Some(upstream.clone());
        }
        if app.config.log_bodies
            && let Outgoing::Read(b) = &outgoing
        {
            r.request_body = Some(body_text(b));
        }
    }

    let provider = route.provider.clone();
    let url = match upstream_url(&provider, &uri) {
        Ok(u) => u,
        Err(e) => return rec.fail(format, 400, e, CallStatus::ClientError),
    };
    let read = matches!(outgoing, Outgoing::Read(_));
    let upstream_headers = match outgoing_headers(&headers, &provider, read) {
        Ok(h) => h,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    let body = match outgoing {
        Outgoing::Read(b) => reqwest::Body::from(b),
        Outgoing::Streamed(b) => reqwest::Body::wrap_stream(b.into_data_stream()),
    };
    let request = app.http().request(method, url).headers(upstream_headers).body(body);
    let started = Instant::now();
    let sent = tokio::time::timeout(provider.timeout, request.send()).await;
    let mut waited = started.elapsed();
    rec.rec().attempts = 1;
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let provider = provider.name.clone();
            let (status, err) = UpstreamError::Connect {
                provider,
                message: describe_reqwest(&e),
            }
            .to_client();
            return rec.fail(format, status, err, CallStatus::UpstreamError);
        }
        Err(_) => {
            let (status, err) = UpstreamError::Timeout {
                provider: provider.name.clone(),
                after: provider.timeout,
            }
            .to_client();
            return rec.fail(format, status, err, CallStatus::UpstreamError);
        }
    };

    let status = response.status();
    let mut head = Response::builder().status(status);
    for (name, value) in response.headers() {
        if !hop_by_hop(name) {
            head = head.header(name, value);
        }
    }
    let sse = content_type_is(response.headers(), "text/event-stream");
    // Errors are read whole whatever their type, so a gateway-owned key quoted in one can be redacted.
    let whole = (content_type_is(response.headers(), "application/json") || !status.is_success())
        && response.content_length().is_none_or(|n| n <= WHOLE_LIMIT as u64);
    let mut chunks = response.bytes_stream();

    // A JSON answer (or an error) is read whole where it is small enough: its cost then goes in a header,
    // and its body (where bodies are kept) in the log.
    let mut read = Vec::new();
    if whole {
        let t0 = Instant::now();
        let complete = loop {
            match tokio::time::timeout(provider.timeout, chunks.next()).await {
                Ok(Some(Ok(c))) => {
                    read.extend_from_slice(&c);
                    if read.len() > WHOLE_LIMIT {
                        break false;
                    }
                }
                Ok(None) => break true,
                Ok(Some(Err(e))) => {
                    let (status, err) = unfinished(&provider, Some(e));
                    return rec.fail(format, status, err, CallStatus::UpstreamError);
                }
                Err(_) => {
                    let (status, err) = unfinished(&provider, None);
                    return rec.fail(format, status, err, CallStatus::UpstreamError);
                }
            }
        };
        waited += t0.elapsed();
        if complete {
            rec.rec().overhead_us = Some(rec.overhead_us(waited));
            let key = provider.api_key.as_ref();
            let usage = serde_json::from_slice::<Value>(&read)
                .ok()
                .and_then(|v| usage_in(kind, &v));
            settle(&mut rec, &route, usage);
            let cost = rec.rec().cost_usd;
            let body = if status.is_success() {
                redact_bytes(Bytes::from(read), key)
            } else {
                // The upstream's own error, in the client's own format already; a gateway-owned key in it
                // is neither the client's to see nor the log's to keep.
                rec.rec().error = Some(describe_error_body(&provider, status.as_u16(), &read, key));
                Bytes::from(redact(&String::from_utf8_lossy(&read), key))
            };
            if app.config.log_bodies {
                rec.rec().response_body = Some(body_text(&body));
            }
            let mut resp = head.body(Body::from(body)).unwrap_or_else(|_| bad_gateway());
            // The body may have been redacted: its length is the one it has now.
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            our_headers(&mut resp, &rec, &route);
            if let Some(c) = cost
                && let Ok(v) = HeaderValue::from_str(&format_cost(c))
            {
                resp.headers_mut().insert(HeaderName::from_static(HEADER_COST), v);
            }
            let call_status = if status.is_success() {
                CallStatus::Ok
            } else {
                CallStatus::UpstreamError
            };
            rec.log(call_status, status.as_u16());
            return resp;
        }
    }

    // Anything else streams through as it comes; the call is logged when it ends, however it ends.
    rec.rec().overhead_us = Some(rec.overhead_us(waited));
    rec.rec().stream = sse;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(32);
    let mut resp = head
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| bad_gateway());
    our_headers(&mut resp, &rec, &route);
    let first = Bytes::from(read);
    tokio::spawn(pump(rec, route, kind, status, sse, first, chunks, tx));
    resp
}

/// Moves an answer to the client as it arrives, reading usage from server-sent events on the way.
#[allow(clippy::too_many_arguments)] // the call's parts, handed on once to the task that moves it
async fn pump(
    mut rec: Recorder,
    route: Route,
    kind: ProviderKind,
    status: StatusCode,
    sse: bool,
    first: Bytes,
    mut chunks: impl Stream<Item = reqwest::Result<Bytes>> + Unpin,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let idle = route.provider.stream_idle_timeout;
    let mut events = SseUsage::new(kind);
    let mut redactor = StreamRedactor::new(route.provider.api_key.as_ref());
    let mut next = (!first.is_empty()).then_some(first);
    loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(c))) => c,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let msg = format!("upstream `{}` broke off mid-answer: {e}", route.provider.name);
                    return end(rec, &route, events.usage, CallStatus::UpstreamError, 502, Some(msg));
                }
                Err(_) => {
                    let msg = format!(
                        "upstream `{}` sent nothing for {}s",
                        route.provider.name,
                        idle.as_secs()
                    );
                    return end(rec, &route, events.usage, CallStatus::UpstreamError, 504, Some(msg));
                }
            },
        };
        if rec.rec().ttft_ms.is_none() {
            let ttft = rec.elapsed_ms();
            rec.rec().ttft_ms = Some(ttft);
        }
        // A key split across two pieces is caught too: the redactor holds back what could be its start.
        let chunk = redactor.push(chunk);
        if chunk.is_empty() {
            continue;
        }
        if sse {
            events.push(&chunk);
        }
        // The client went away: dropping the recorder logs the call as closed by the client, and dropping
        // the upstream's stream cancels it.
        if tx.send(Ok(chunk)).await.is_err() {
            return;
        }
    }
    let rest = redactor.finish();
    if !rest.is_empty() {
        if sse {
            events.push(&rest);
        }
        if tx.send(Ok(rest)).await.is_err() {
            return;
        }
    }
    let (call_status, error) = if status.is_success() {
        (CallStatus::Ok, None)
    } else {
        (
            CallStatus::UpstreamError,
            Some(format!("upstream `{}` answered HTTP {status}", route.provider.name)),
        )
    };
    end(rec, &route, events.usage, call_status, status.as_u16(), error)
}

fn end(
    mut rec: Recorder,
    route: &Route,
    usage: Option<Usage>,
    status: CallStatus,
    http_status: u16,
    error: Option<String>,
) {
    settle(&mut rec, route, usage);
    rec.rec().error = error;
    rec.log(status, http_status);
}

fn settle(rec: &mut Recorder, route: &Route, usage: Option<Usage>) {
    if let Some(u) = usage {
        let r = rec.rec();
        r.usage = Some(u);
        r.cost_usd = route.price.map(|p| cost_usd(&u, &p));
    }
}

/// The provider for a call: the one serving the body's model where it is a known model of the client's
/// kind, else the client kind's default provider.
fn choose(app: &AppState, kind: ProviderKind, model: Option<&str>) -> Result<Route, WireError> {
    if let Some(name) = model
        && let Ok(chain) = app.routes.resolve(name)
        && let Some(t) = chain.into_iter().next()
    {
        if t.provider.kind != kind {
            return Err(WireError::invalid(format!(
                "this endpoint is passed through untranslated, and model `{name}` is served by `{}`, a provider \
                 of kind {}, which does not speak the {} API",
                t.provider.name,
                t.provider.kind.as_str(),
                kind.as_str(),
            )));
        }
        return Ok(Route {
            provider: t.provider,
            model: Some((t.model, t.upstream_model)),
            price: t.price,
        });
    }
    let provider = app.routes.default_provider(kind).ok_or_else(|| {
        WireError::new(
            ErrorKind::NotFound,
            format!(
                "no provider of kind {} is configured to pass this endpoint to",
                kind.as_str()
            ),
        )
    })?;
    Ok(Route {
        provider,
        model: model.map(|m| (m.to_owned(), m.to_owned())),
        price: None,
    })
}

/// The body with its `model` renamed to the upstream's name for it; `None` if it is not a JSON object.
fn rename(body: &[u8], upstream: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?
        .insert("model".into(), Value::String(upstream.to_owned()));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The provider's URL for the client's path and query. An OpenAI-kind `base_url` ends in its version
/// (`https://api.openai.com/v1`); an Anthropic one does not.
fn upstream_url(provider: &ProviderConfig, uri: &Uri) -> Result<reqwest::Url, WireError> {
    let path = leanlm_wire::path::checked(uri.path())?;
    let suffix = match provider.kind {
        ProviderKind::OpenAi => path.strip_prefix("/v1").unwrap_or(path),
        _ => path,
    };
    let mut url = format!("{}{suffix}", provider.base_url.trim_end_matches('/'));
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    reqwest::Url::parse(&url).map_err(|e| WireError::invalid(format!("`{path}` cannot be passed on: {e}")))
}

/// The client's headers as the upstream should see them: hop-by-hop headers, LeanLM's own, expectations
/// and compression negotiation dropped, and the client's key replaced by the provider's where the gateway has one.
fn outgoing_headers(
    headers: &HeaderMap,
    provider: &ProviderConfig,
    read: bool,
) -> Result<reqwest::header::HeaderMap, WireError> {
    let owned_key = provider.api_key.as_ref();
    let mut out = reqwest::header::HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let n = name.as_str();
        let auth = name == header::AUTHORIZATION || n == "x-api-key" || n == "x-goog-api-key";
        let skip = hop_by_hop(name)
            || name == header::HOST
            || name == header::ACCEPT_ENCODING
            // `Expect: 100-continue` was answered by the gateway's own server when it read the body.
            || name == header::EXPECT
            // A body read in full may have been rewritten: its length is set anew.
            || (read && name == header::CONTENT_LENGTH)
            || n.starts_with("x-leanlm-")
            || (auth && owned_key.is_some());
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(k) = owned_key {
        let bad = || {
            WireError::new(
                ErrorKind::Authentication,
                "the API key contains characters not allowed in a header",
            )
        };
        let (name, value) = match provider.kind {
            ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), k.expose().to_owned()),
            ProviderKind::Gemini => (HeaderName::from_static("x-goog-api-key"), k.expose().to_owned()),
            ProviderKind::OpenAi => (header::AUTHORIZATION, format!("Bearer {}", k.expose())),
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| bad())?;
        v.set_sensitive(true);
        out.insert(name, v);
    }
    if provider.kind == ProviderKind::Anthropic && !out.contains_key("anthropic-version") {
        out.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        );
    }
    Ok(out)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
}

fn our_headers(resp: &mut Response, rec: &Recorder, route: &Route) {
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put(HEADER_CALL_ID, &rec.id());
    put(HEADER_PROVIDER, &route.provider.name);
    if let Some((served, _)) = &route.model {
        put(HEADER_MODEL, served);
    }
}

fn bad_gateway() -> Response {
    StatusCode::BAD_GATEWAY.into_response()
}

/// Usage in an answer of any shape LeanLM knows: chat completions and Responses (`usage`, or
/// `response.usage` in a Responses event), Anthropic messages (`usage`, or `message.usage`).
fn usage_in(kind: ProviderKind, v: &Value) -> Option<Usage> {
    let u = v
        .get("usage")
        .or_else(|| v.pointer("/response/usage"))
        .or_else(|| v.pointer("/message/usage"))?;
    usage_of_object(kind, u).or_else(|| {
        // The Responses API names its fields as Anthropic does, with OpenAI's details.
        (kind == ProviderKind::OpenAi)
            .then(|| Usage::from_openai_responses(u))
            .flatten()
    })
}

/// Follows a server-sent event stream for the usage it reports; the last report wins (a Responses stream
/// reports once, in `response.completed`).
struct SseUsage {
    kind: ProviderKind,
    line: Vec<u8>,
    usage: Option<Usage>,
}

impl SseUsage {
    fn new(kind: ProviderKind) -> SseUsage {
        SseUsage {
            kind,
            line: Vec::new(),
            usage: None,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                self.line_done();
            } else if self.line.len() < WHOLE_LIMIT {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self) {
        let line = std::mem::take(&mut self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        // Only events that mention usage are parsed.
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii())
            && let Some(u) = usage_in(self.kind, &v)
        {
            self.usage = Some(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_found_in_chat_responses_and_anthropic_shapes() {
        let chat = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4}}});
        let u = usage_in(ProviderKind::OpenAi, &chat).unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (6, 4, 5));

        let responses = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 3}}}});
        let u = usage_in(ProviderKind::OpenAi, &responses).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (12, 8, 7, 3)
        );

        let anthropic = json!({"usage": {"input_tokens": 9, "output_tokens": 2, "cache_read_input_tokens": 1}});
        let u = usage_in(ProviderKind::Anthropic, &anthropic).unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (9, 1, 2));

        assert!(usage_in(ProviderKind::OpenAi, &json!({"input_tokens": 3})).is_none());
    }

    #[test]
    fn sse_usage_survives_events_split_across_chunks() {
        let mut s = SseUsage::new(ProviderKind::OpenAi);
        let stream = "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\nevent: response.completed\n\
                      data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":11,\"output_tokens\":4}}}\n\n";
        for piece in stream.as_bytes().chunks(7) {
            s.push(piece);
        }
        let u = s.usage.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (11, 4));
    }

    #[test]
    fn urls_keep_the_path_after_the_providers_version_and_the_query() {
        let cfg = crate::config::Config::from_toml("t", "", &crate::config::Overrides::default(), &|_| None).unwrap();
        let uri: Uri = "/v1/files/file-1/content?limit=2".parse().unwrap();
        let openai = &cfg.providers["openai"];
        assert_eq!(
            upstream_url(openai, &uri).unwrap().as_str(),
            "https://api.openai.com/v1/files/file-1/content?limit=2"
        );
        let anthropic = &cfg.providers["anthropic"];
        let uri: Uri = "/v1/messages/count_tokens".parse().unwrap();
        assert_eq!(
            upstream_url(anthropic, &uri).unwrap().as_str(),
            "https://api.anthropic.com/v1/messages/count_tokens"
        );
    }

    #[test]
    fn a_gateway_key_replaces_the_clients_and_connection_headers_stay_behind() {
        let toml = "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-gateway-123456\"\n";
        let cfg = crate::config::Config::from_toml("t", toml, &crate::config::Overrides::default(), &|_| None).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-client"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        h.insert("openai-beta", HeaderValue::from_static("assistants=v2"));
        h.insert("x-leanlm-task", HeaderValue::from_static("t"));
        let out = outgoing_headers(&h, &cfg.providers["openai"], true).unwrap();
        assert_eq!(out[header::AUTHORIZATION], "Bearer sk-gateway-123456");
        assert_eq!(out["openai-beta"], "assistants=v2");
        for gone in ["connection", "host", "content-length", "x-leanlm-task"] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        // Streamed through unread, the body keeps the length the client gave it.
        let out = outgoing_headers(&h, &cfg.providers["openai"], false).unwrap();
        assert_eq!(out[header::CONTENT_LENGTH], "12");
    }
}
