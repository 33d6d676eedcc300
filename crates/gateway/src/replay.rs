//! Replaying logged calls for validation: through the gateway's own request path (translation, retries,
//! fallbacks, cost), in process, with the cache bypassed and nothing written to the call log, so a
//! validation's traffic never counts as the task's.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use leanlm_validate::{Replay, Reply};
use serde_json::Value;
use tower::ServiceExt;

use crate::config::Config;
use crate::server::AppState;

/// Sends chat requests through an in-process gateway that logs nothing.
#[derive(Clone)]
pub struct Replayer {
    router: Router,
    state: Arc<AppState>,
}

impl Replayer {
    pub fn new(config: Config) -> anyhow::Result<Replayer> {
        let state = Arc::new(AppState::new(
            config,
            leanlm_store::CallLog::discard(),
            Default::default(),
        )?);
        Ok(Replayer {
            router: crate::server::router(state.clone()),
            state,
        })
    }

    async fn send(&self, format: &str, body: Value) -> Result<Reply, String> {
        let path = match format {
            "anthropic" => "/v1/messages",
            "openai" => "/v1/chat/completions",
            other => return Err(format!("cannot replay a call logged in the `{other}` format")),
        };
        let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(crate::cache::HEADER_CACHE, "off")
            .body(Body::from(bytes))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let resp = self.router.clone().oneshot(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let cost = resp
            .headers()
            .get(crate::HEADER_COST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let json: Value =
            serde_json::from_slice(&body).map_err(|_| format!("HTTP {status}: the answer is not JSON"))?;
        if !status.is_success() {
            let message = json
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(format!("HTTP {}: {message}", status.as_u16()));
        }
        Ok(Reply {
            model,
            text: leanlm_wire::output_text(&json),
            cost_usd: cost,
            latency_ms,
            logprobs: leanlm_wire::output_logprobs(&json),
        })
    }
}

impl Replay for Replayer {
    fn complete(&self, format: &str, body: Value) -> impl Future<Output = Result<Reply, String>> + Send {
        let this = self.clone();
        let format = format.to_owned();
        async move {
            // In a task of its own: a validation scores answers on the task that awaits this one (a local
            // embedding model holds it for tens of milliseconds), and a reply's latency must be the
            // candidate's, not the time the scorer kept it waiting.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime
                    .spawn(async move { this.send(&format, body).await })
                    .await
                    .map_err(|e| format!("the replay stopped: {e}"))?,
                Err(_) => this.send(&format, body).await,
            }
        }
    }

    fn has_logprobs(&self, model: &str) -> bool {
        self.state.routes.resolve(model).is_ok_and(|chain| {
            chain
                .first()
                .is_some_and(|t| t.provider.kind != leanlm_wire::ProviderKind::Anthropic)
        })
    }
}
