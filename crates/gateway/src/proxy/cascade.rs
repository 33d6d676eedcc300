//! A cascade's cheap stages on the request path, one at a time. The stage's model answers in full, never
//! streamed (a client must not see an answer that may be withdrawn); the task's cascade judges it; an
//! accepted answer is served (replayed as the client's event stream when it asked for one), anything else
//! escalates and the call goes on to the next stage, or to the strong model, which streams as usual. Each
//! stage's cost and outcome are logged with the call, and its cost is part of the call's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use leanlm_core::StageOutcome;
use leanlm_core::transcript::answer_text;
use leanlm_route::cascade::TaskCascade;
use leanlm_store::{CallStatus, StageRecord};
use leanlm_wire::{ClientFormat, ProviderKind, Usage};
use serde_json::Value;

use super::{
    HEADER_COST, Ingress, Recorder, as_sse, body_text, estimate_usage, format_cost, success_headers, to_client,
    usage_of,
};
use crate::route::Target;
use crate::server::AppState;
use crate::upstream::{self, ClientAuth, Operation};

/// How the client asked: what an accepted answer must look like.
pub(super) struct Stage {
    pub format: ClientFormat,
    pub stream: bool,
    pub wants_usage: bool,
}

/// One whole answer of the cheap model.
struct Answer {
    target: Target,
    /// In the client's format.
    body: Value,
    text: String,
    usage: Usage,
    estimated: bool,
    cost: Option<f64>,
    logprobs: Option<Vec<f64>>,
    headers: reqwest::header::HeaderMap,
    attempts: u32,
}

impl Stage {
    /// Serves this stage's answer (`Ok`), or hands the call back to go on to the next stage or the strong
    /// model (`Err`). `prompt` carries the prompt's features from stage to stage.
    pub(super) async fn run(
        &self,
        app: &Arc<AppState>,
        mut rec: Recorder,
        cascade: &TaskCascade,
        call: &super::chat::Call,
        auth: &ClientAuth,
        prompt: &mut Option<Vec<f32>>,
    ) -> Result<Response, Recorder> {
        let ingress = call.ingress();
        let started = Instant::now();
        let setup = &cascade.setup;
        let quiet = ingress.whole();
        // The cheap stages spend the call's own deadline: the strong model gets what they leave.
        let deadline = rec.deadline;
        let first = self.ask(app, &setup.cheap, &quiet, auth, setup.logprobs, None, deadline);
        let (first, second) = if setup.samples > 1 {
            let temperature = leanlm_validate::run::SECOND_SAMPLE_TEMPERATURE;
            let second = self.ask(app, &setup.cheap, &quiet, auth, false, Some(temperature), deadline);
            let (a, b) = tokio::join!(first, second);
            (a, b.ok())
        } else {
            (first.await, None)
        };
        let waited = started.elapsed();
        let mut stage = StageRecord {
            model: setup.cheap.clone(),
            cost_usd: None,
            latency_ms: waited.as_secs_f64() * 1000.0,
            outcome: StageOutcome::Failed,
            score: None,
            note: None,
        };
        let first = match first {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(model = %setup.cheap, error = %e, "cascade: the cheap model did not answer; escalating");
                metrics::counter!("leanlm_cascade_total", "outcome" => "failed").increment(1);
                stage.note = Some(e);
                rec.prior_wait += waited;
                rec.rec().stages.push(stage);
                return Err(rec);
            }
        };
        let second_cost = second.as_ref().and_then(|s| s.cost).unwrap_or(0.0);
        stage.cost_usd = first.cost.map(|c| c + second_cost);
        let decision = crate::cascade::judge(
            app,
            cascade,
            call.json(),
            prompt,
            &first.text,
            first.logprobs.as_deref(),
            second.as_ref().map(|s| s.text.as_str()),
        )
        .await;
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cascade: could not judge the cheap answer; escalating");
                metrics::counter!("leanlm_cascade_total", "outcome" => "failed").increment(1);
                stage.note = Some(e);
                rec.prior_cost += stage.cost_usd.unwrap_or(0.0);
                rec.prior_wait += started.elapsed();
                rec.rec().stages.push(stage);
                return Err(rec);
            }
        };
        let (outcome, note) = crate::cascade::outcome(&decision);
        metrics::counter!("leanlm_cascade_total", "outcome" => outcome.as_str()).increment(1);
        stage.outcome = outcome;
        stage.note = note;
        stage.score = decision.score();
        rec.prior_wait += started.elapsed();
        if !decision.accepted() {
            rec.prior_cost += stage.cost_usd.unwrap_or(0.0);
            rec.rec().stages.push(stage);
            return Err(rec);
        }
        rec.rec().stages.push(stage);
        Ok(self.serve(app, rec, first, second_cost))
    }

    /// Asks the cheap model for a whole answer; `logprobs` asks for token log-probabilities (of
    /// OpenAI-compatible and Gemini providers), `temperature` draws at least that hot, by `deadline`.
    #[allow(clippy::too_many_arguments)] // one question's parts, each named at the two calls
    async fn ask(
        &self,
        app: &AppState,
        model: &str,
        ingress: &Ingress,
        auth: &ClientAuth,
        logprobs: bool,
        temperature: Option<f64>,
        deadline: std::time::Instant,
    ) -> Result<Answer, String> {
        let chain = app.routes.resolve(model).map_err(|e| e.message)?;
        // OpenAI-compatible and Gemini providers return them, whatever the client's format (training and
        // validation replays ask the same way: `leanlm_validate::run::cheap_samples`).
        let sent = upstream::send(&app.http(), &chain, &app.config.retry, deadline, |target| {
            let mut body = ingress.translated_body_for(target)?;
            let logprobs = logprobs && target.provider.kind != ProviderKind::Anthropic;
            if logprobs || temperature.is_some() {
                let mut v: Value = serde_json::from_slice(&body)
                    .map_err(|e| leanlm_wire::WireError::invalid(format!("re-reading the request: {e}")))?;
                // Gemini keeps sampling settings in `generationConfig`, the others at the top.
                let gemini = target.provider.kind == ProviderKind::Gemini;
                let settings = match v.as_object_mut() {
                    Some(o) if gemini => o
                        .entry("generationConfig")
                        .or_insert_with(|| Value::Object(Default::default()))
                        .as_object_mut(),
                    o => o,
                };
                if let Some(at) = settings {
                    if logprobs {
                        let key = if gemini { "responseLogprobs" } else { "logprobs" };
                        at.insert(key.into(), Value::Bool(true));
                    }
                    if let Some(t) = temperature {
                        let now = at.get("temperature").and_then(Value::as_f64).unwrap_or(0.0);
                        at.insert("temperature".into(), serde_json::json!(now.max(t)));
                    }
                }
                body = serde_json::to_vec(&v)
                    .map_err(|e| leanlm_wire::WireError::invalid(format!("encoding the request: {e}")))?;
            }
            upstream::prepare(target, Operation::Chat { stream: false }, Bytes::from(body), auth)
        })
        .await
        .map_err(|f| f.error.to_client().1.message)?;
        let target = chain[sent.target].clone();
        let attempts = sent.attempts;
        let done = super::read_answer(sent, &target).await.map_err(|(_, e)| e.message)?;
        let kind = target.provider.kind;
        let v: Value =
            serde_json::from_slice(&done.body).map_err(|e| super::not_json(&target, &e, &done.body).message)?;
        let logprobs = match kind {
            ProviderKind::OpenAi => leanlm_wire::output_logprobs(&v),
            ProviderKind::Gemini => leanlm_wire::gemini::output_logprobs(&v),
            ProviderKind::Anthropic => None,
        };
        let (usage, estimated) = match usage_of(kind, &v) {
            Some(u) => (u, false),
            None => (estimate_usage(&target, ingress, &answer_text(kind, &v)), true),
        };
        let body = to_client(kind, self.format, v, &target);
        Ok(Answer {
            text: leanlm_wire::output_text(&body),
            cost: target.price.map(|p| leanlm_cost::cost_usd(&usage, &p)),
            body,
            usage,
            estimated,
            logprobs,
            headers: done.headers,
            attempts,
            target,
        })
    }

    /// Serves an accepted cheap answer and logs the call.
    fn serve(&self, app: &AppState, mut rec: Recorder, answer: Answer, second_cost: f64) -> Response {
        let Answer {
            target,
            mut body,
            usage,
            estimated,
            headers,
            attempts,
            ..
        } = answer;
        // The client asked for no log-probabilities: the ones the cascade asked for stay with LeanLM.
        if let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices {
                if let Some(o) = c.as_object_mut()
                    && o.contains_key("logprobs")
                {
                    o.insert("logprobs".into(), Value::Null);
                }
            }
        }
        rec.set_target(&target);
        rec.rec().attempts = attempts;
        rec.prior_cost += second_cost;
        rec.settle(&target, usage, estimated);
        let text = body.to_string();
        if app.config.log_bodies {
            rec.rec().response_body = Some(body_text(text.as_bytes()));
        }
        rec.rec().overhead_us = Some(rec.overhead_us(Duration::ZERO));
        if let Some(job) = rec.online.as_mut() {
            // The cheap model served by design: not a fallback, so not an error of the replacement.
            job.replacement = target.model.clone();
        }
        let mut resp = if self.stream {
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                as_sse(self.format, &body, self.wants_usage),
            )
                .into_response()
        } else {
            ([(header::CONTENT_TYPE, "application/json")], text).into_response()
        };
        success_headers(&mut resp, rec.rec(), &target, &headers);
        if let Some(c) = rec.rec().cost_usd
            && let Ok(v) = HeaderValue::from_str(&format_cost(c))
        {
            resp.headers_mut().insert(HeaderName::from_static(HEADER_COST), v);
        }
        rec.log(CallStatus::Ok, 200);
        resp
    }
}
