//! Streaming responses: upstream SSE in, client SSE out, translated where the formats differ.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use leanlm_store::CallStatus;
use leanlm_wire::stream::{Translator, UsageTracker};
use leanlm_wire::{ClientFormat, ErrorKind, ProviderKind, WireError, anthropic, openai};
use serde_json::Value;
use tokio::sync::mpsc;

use super::CacheWrite;
use super::{Ingress, Recorder, estimate_usage, format_cost, success_headers};
use crate::route::Target;
use crate::server::AppState;
use crate::upstream::Sent;
use leanlm_core::transcript::answer_text_delta;

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

pub(super) fn sse_frame(buf: &mut Vec<u8>, format: ClientFormat, event: Option<&str>, data: &str) {
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

#[allow(clippy::too_many_arguments)] // the call's parts, handed on once to the task that pumps it
pub(super) fn stream_response(
    app: Arc<AppState>,
    mut rec: Recorder,
    format: ClientFormat,
    target: Target,
    sent: Sent,
    wants_usage: bool,
    ingress: Ingress,
    cache_key: CacheWrite,
) -> Response {
    rec.rec().overhead_us = Some(rec.overhead_us(sent.waited));
    let upstream_headers = sent.response.headers().clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(32);
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    success_headers(&mut resp, rec.rec(), &target, &upstream_headers);
    tokio::spawn(pump(
        app,
        rec,
        format,
        target.clone(),
        sent.response,
        wants_usage,
        ingress,
        cache_key,
        tx,
    ));
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
    cache_key: CacheWrite,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let kind = target.provider.kind;
    let idle = target.provider.stream_idle_timeout;
    let mut events = response.bytes_stream().eventsource();
    let mut tracker = UsageTracker::new(kind);
    let mut translator = Translator::new(kind, format, &target.model, wants_usage);
    let mut acc = match (app.config.log_bodies || cache_key.wanted(), format) {
        (false, _) => Accumulator::Off,
        (true, ClientFormat::OpenAi) => Accumulator::OpenAi(Default::default()),
        (true, ClientFormat::Anthropic) => Accumulator::Anthropic(Default::default()),
    };
    let mut out: Vec<Value> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut error: Option<String> = None;
    let mut upstream_reported_error = false;
    // The answer's text, kept only until usage arrives, for a local count if it never does.
    let mut streamed_text = String::new();

    loop {
        let next = tokio::select! {
            // The client went away: the call is logged as closed, with what was streamed priced, and
            // dropping `events` cancels upstream.
            _ = tx.closed() => return abandoned(rec, &target, &ingress, &tracker, &streamed_text),
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
            Ok(Some(Ok(mut ev))) => {
                // An event, error events included, never carries the gateway's key on.
                if let Some(k) = target.provider.api_key.as_ref()
                    && k.expose().len() >= 8
                    && ev.data.contains(k.expose())
                {
                    ev.data = ev.data.replace(k.expose(), "[REDACTED]");
                }
                ev
            }
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
        if streamed_text.len() < 1 << 20 && tracker.usage().is_none() {
            streamed_text.push_str(&answer_text_delta(kind, &v));
        }
        if !buf.is_empty() && tx.send(Ok(Bytes::from(std::mem::take(&mut buf)))).await.is_err() {
            return abandoned(rec, &target, &ingress, &tracker, &streamed_text);
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
        None => (estimate_usage(&target, &ingress, &streamed_text), true),
    };
    rec.settle(&target, usage, estimated);
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
    let assembled = acc.finish();
    if let (true, Some(body), None) = (cache_key.wanted(), &assembled, &error) {
        // The answer is cached whole and non-streaming, with its usage, to replay in either shape.
        let mut v: Value = serde_json::from_str(body).unwrap_or_default();
        if format == ClientFormat::OpenAi {
            v["usage"] = usage.to_openai();
        }
        let cost = target.price.map(|p| leanlm_cost::cost_usd(&usage, &p));
        let id = rec.id();
        cache_key.write(&app, Bytes::from(v.to_string()), cost, &target, &id);
    }
    rec.rec().response_body = if app.config.log_bodies { assembled } else { None };
    match error {
        Some(e) => {
            rec.rec().error = Some(e);
            rec.log(CallStatus::UpstreamError, 200);
        }
        None => rec.log(CallStatus::Ok, 200),
    }
}

/// Logs a stream its client abandoned: the provider bills what it generated, so the tokens streamed so
/// far are priced (from the usage, where it came; else counted, and marked estimated).
fn abandoned(mut rec: Recorder, target: &Target, ingress: &Ingress, tracker: &UsageTracker, streamed: &str) {
    let (usage, estimated) = match tracker.usage() {
        Some(u) => (u, false),
        None => (estimate_usage(target, ingress, streamed), true),
    };
    rec.settle(target, usage, estimated);
    rec.rec().error = Some("the client closed the stream before it was complete".into());
    rec.log(CallStatus::ClientClosed, 499);
}
