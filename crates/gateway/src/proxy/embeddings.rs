//! `POST /v1/embeddings`, served by OpenAI-compatible and Gemini providers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use leanlm_cost::tokens;
use leanlm_store::CallStatus;
use leanlm_wire::{ClientFormat, ProviderKind, Usage, WireError, gemini};
use serde_json::Value;

use super::{Recorder, body_text, client_auth, not_json, read_answer, read_body};
use crate::server::AppState;
use crate::upstream::{self, Operation, status_of};

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(app: Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    let format = ClientFormat::OpenAi;
    let mut rec = Recorder::new(&app, format, "embeddings", &headers);
    let bytes = match read_body(&headers, body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return rec.fail(format, status_of(e.kind), e, CallStatus::ClientError),
    };
    if app.config.log_bodies {
        rec.rec().request_body = Some(body_text(&bytes));
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
    let named = match super::explicit_task(&app.tasks, &headers, None) {
        Ok(n) => n,
        Err(e) => return rec.fail(format, 400, e, CallStatus::ClientError),
    };
    rec.rec().task = Some(named.unwrap_or_else(|| super::task_ref(app.tasks.identify_embeddings(&model))));
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
    if let Err(e) = super::requested_timeout(&headers) {
        return rec.fail(format, 400, e, CallStatus::ClientError);
    }
    let sent = upstream::send(&app.http(), &chain, &app.config.retry, rec.deadline, |target| {
        let body = match target.provider.kind {
            ProviderKind::Gemini => gemini::embeddings_from_openai(&req, &target.upstream_model)?.to_string(),
            _ => {
                let mut r = req.clone();
                r["model"] = Value::String(target.upstream_model.clone());
                r.to_string()
            }
        };
        upstream::prepare(target, Operation::Embeddings, Bytes::from(body), &auth)
    })
    .await;
    let sent = match sent {
        Ok(s) => s,
        Err(failed) => return rec.upstream_failed(format, &chain, failed),
    };
    let target = chain[sent.target].clone();
    rec.set_target(&target);
    rec.rec().attempts = sent.attempts;
    let mut done = match read_answer(sent, &target).await {
        Ok(d) => d,
        Err((status, err)) => return rec.fail(format, status, err, CallStatus::UpstreamError),
    };
    let v: Value = match serde_json::from_slice(&done.body) {
        Ok(v) => v,
        Err(e) => {
            return rec.fail(
                format,
                502,
                not_json(&target, &e, &done.body),
                CallStatus::UpstreamError,
            );
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
    // The vectors themselves are large and reproducible: the log keeps their shape, not their values.
    let logged = app.config.log_bodies.then(|| {
        let data = out.get("data").and_then(Value::as_array);
        let dimensions = data
            .and_then(|d| d.first())
            .and_then(|e| e.get("embedding"))
            .and_then(Value::as_array);
        serde_json::json!({
            "object": "list",
            "embeddings": data.map(Vec::len).unwrap_or(0),
            "dimensions": dimensions.map(Vec::len),
            "usage": out.get("usage"),
        })
        .to_string()
    });
    done.body = out.to_string().into();
    rec.succeed(done, &target, usage, estimated, logged)
}
