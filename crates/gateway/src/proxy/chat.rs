//! The chat request path (`POST /v1/chat/completions`, `POST /v1/messages`) as a pipeline.
//!
//! The request is read and parsed once into a [`Call`]: its format, typed request, task, the chain of
//! models that may serve it, its policy, and the cache key material. Then the stages run in order, each a
//! function of the call that either answers it or lets it go on:
//!
//! ```text
//! read → identify → resolve → policy      (Call::read: refusals travel with `?`)
//!      → exact cache → semantic cache → cascade → upstream → answer and record
//! ```
//!
//! A new stage (compression, a local model, a budget check) is one more function and one more line in
//! [`chat`]; the others do not change. The [`Recorder`] logs the call exactly once, whichever stage ends it.
//!
//! The call lives in one heap allocation and the stages borrow it and the recorder: moving them by value
//! from stage to stage copied ~2 KB several times per call (+14k instructions per request under callgrind,
//! mostly `memcpy`, against the single function this pipeline replaced).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use leanlm_core::{CacheOutcome, Replacement};
use leanlm_deploy::Policy;
use leanlm_profile::Shape;
use leanlm_route::cascade::Chain;
use leanlm_store::{CallStatus, TaskRef};
use leanlm_wire::anthropic::MessagesRequest;
use leanlm_wire::openai::ChatRequest;
use leanlm_wire::{ClientFormat, WireError};
use serde_json::Value;

use super::{
    CacheWrite, Ingress, Recorder, Served, apply_policy, body_text, cache_hit, cascade, client_auth, explicit_task,
    read_body, stream, task_ref, unary_response,
};
use crate::cache::{Directive, Key};
use crate::route::Target;
use crate::semantic::{Lookup, Pending};
use crate::server::AppState;
use crate::upstream::{self, Operation, status_of};

/// A chat call as the stages see it: the request parsed once, and what earlier stages decided.
pub(super) struct Call {
    format: ClientFormat,
    headers: HeaderMap,
    /// The body as the client sent it: sent upstream untouched where formats and model agree.
    bytes: Bytes,
    ingress: Ingress,
    /// The body as JSON, parsed on first use by the stages that read it as a tree (a router's or a
    /// cascade's transcript, the semantic cache's conversation): at most once per call.
    json: OnceLock<Option<Value>>,
    stream: bool,
    /// An OpenAI client that asked for usage in its stream (Anthropic clients always get it).
    wants_usage: bool,
    directive: Directive,
    /// The models that may serve the call, in order: a replacement's first where its policy says so, then
    /// the requested model's chain with its fallbacks.
    chain: Vec<Target>,
    /// A cascade that serves this call: its cheap stages answer first.
    cascade: Option<Arc<Chain>>,
    /// A `cache:semantic` policy, which switches the semantic cache on for the task.
    semantic_policy: Option<Arc<Policy>>,
    /// The exact cache's key and TTL, where the request may be cached.
    exact: Option<(Key, std::time::Duration)>,
    /// The client credential's scope of the caches, where its key is what authorises the call.
    scope: Option<[u8; 32]>,
    /// A would-be semantic hit to verify against the upstream's answer.
    semantic: Option<Pending>,
}

/// Why a call is refused before any upstream sees it: a client error, answered in the client's format.
pub(super) struct Refused {
    status: u16,
    error: WireError,
}

impl From<WireError> for Refused {
    fn from(error: WireError) -> Refused {
        Refused {
            status: status_of(error.kind),
            error,
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
    let mut call = match Call::read(&app, &mut rec, format, headers, body).await {
        Ok(call) => call,
        Err(r) => return rec.fail(format, r.status, r.error, CallStatus::ClientError),
    };
    if let Some(hit) = exact_cache(&app, &rec, &mut call).await {
        return call.answer(&app, rec, hit);
    }
    if let Some(hit) = semantic_cache(&app, &rec, &mut call).await {
        return call.answer(&app, rec, hit);
    }
    rec.rec().cache = Some(if call.exact.is_some() {
        CacheOutcome::Miss
    } else {
        CacheOutcome::Bypass
    });
    if call.cascade.is_some() {
        rec = match cascade(&app, rec, &call).await {
            Ok(served) => return served,
            Err(escalated) => escalated,
        };
    }
    upstream(app, rec, call).await
}

impl Call {
    /// Reads, parses, identifies the task, resolves the model and applies the task's policy.
    async fn read(
        app: &Arc<AppState>,
        rec: &mut Recorder,
        format: ClientFormat,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Box<Call>, Refused> {
        let bytes = read_body(&headers, body, app.config.max_body_bytes).await?;
        if app.config.log_bodies {
            rec.rec().request_body = Some(body_text(&bytes));
        }
        let ingress = match format {
            ClientFormat::OpenAi => Ingress::OpenAi(ChatRequest::parse(&bytes)?),
            ClientFormat::Anthropic => Ingress::Anthropic(MessagesRequest::parse(&bytes)?),
        };
        rec.rec().requested_model = ingress.model().to_owned();
        let task = identify(app, &headers, &ingress)?;
        let policy = app.policies.as_ref().and_then(|p| p.get(&task.id));
        // A `cache:semantic` policy switches the semantic cache on for its task; it serves no model itself.
        let (policy, semantic_policy) = match policy {
            Some(p) if p.replacement == Replacement::SemanticCache => (None, Some(p)),
            other => (other, None),
        };
        rec.rec().task = Some(task);
        let stream = ingress.is_stream();
        rec.rec().stream = stream;
        super::requested_timeout(&headers)?;
        let directive = Directive::from_headers(&headers).map_err(|m| Refused {
            status: 400,
            error: WireError::invalid(m),
        })?;
        let mut call = Box::new(Call {
            format,
            wants_usage: match &ingress {
                Ingress::OpenAi(r) => r.wants_stream_usage(),
                Ingress::Anthropic(_) => true,
            },
            chain: app.routes.resolve(ingress.model())?,
            headers,
            bytes,
            ingress,
            json: OnceLock::new(),
            stream,
            directive,
            cascade: None,
            semantic_policy,
            exact: None,
            scope: None,
            semantic: None,
        });
        if let Some(policy) = policy {
            let chain = std::mem::take(&mut call.chain);
            (call.chain, call.cascade) = apply_policy(app, rec, policy, &call, chain).await?;
        }
        // The model it will go to first: a call the client abandons before any answer is logged with it.
        if let Some(first) = call.chain.first() {
            rec.set_target(first);
        }
        Ok(call)
    }

    /// The body as JSON (`None` if it is not an object the stages can read), parsed once.
    pub(super) fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(&self.bytes).ok())
            .as_ref()
    }

    pub(super) fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    /// The task's id and name, once identified.
    fn task<'a>(&self, rec: &'a Recorder) -> Option<(&'a str, &'a str)> {
        rec.rec
            .as_ref()
            .and_then(|r| r.task.as_ref())
            .map(|t| (t.id.as_str(), t.name.as_str()))
    }

    /// Answers from a cache.
    fn answer(&self, app: &AppState, rec: Recorder, hit: Served) -> Response {
        cache_hit(app, rec, self.format, hit, self.stream, self.wants_usage)
    }
}

/// The task the client named, else the one its template belongs to.
fn identify(app: &AppState, headers: &HeaderMap, ingress: &Ingress) -> Result<TaskRef, WireError> {
    Ok(match ingress {
        Ingress::OpenAi(r) => explicit_task(&app.tasks, headers, r.extra.get("metadata"))?
            .unwrap_or_else(|| task_ref(app.tasks.identify(&Shape::from_openai("chat", r)))),
        Ingress::Anthropic(r) => explicit_task(&app.tasks, headers, None)?
            .unwrap_or_else(|| task_ref(app.tasks.identify(&Shape::from_anthropic("chat", r)))),
    })
}

/// The exact cache: a repeated request is answered from memory (or Redis). Sets the call's cache key.
async fn exact_cache(app: &AppState, rec: &Recorder, call: &mut Call) -> Option<Served> {
    call.scope = super::credential_scope(&call.chain[0], &call.headers);
    call.exact = app.cache.key(
        call.directive,
        call.format,
        &call.chain[0],
        &call.bytes,
        call.ingress.temperature() == Some(0.0),
        call.task(rec),
        call.scope.as_ref(),
    );
    if let Some((k, _)) = &call.exact
        && call.directive != Directive::Refresh
        && let Some(hit) = app.cache.get(k).await
    {
        let served = Served {
            body: hit.body,
            cost_usd: hit.cost_usd,
            model: hit.model,
            provider: hit.provider,
            kind: CacheOutcome::Hit,
            similarity: None,
        };
        return Some(served);
    }
    None
}

/// The semantic cache: a similar request in the same context is answered where the task's false-hit bound
/// allows; otherwise a would-be hit is kept, to be verified against the upstream's answer.
async fn semantic_cache(app: &AppState, rec: &Recorder, call: &mut Call) -> Option<Served> {
    let (Some(s), Some(task), Some((_, ttl))) = (&app.semantic, call.task(rec), &call.exact) else {
        return None;
    };
    if call.directive == Directive::Refresh {
        return None;
    }
    let governed = call.semantic_policy.as_ref().map(|p| {
        let serve = matches!(p.route(rand::random(), 1.0), leanlm_deploy::Route::Replacement { .. });
        (serve, &p.scorer)
    });
    let probe = s.probe(
        task,
        governed,
        Some(*ttl),
        call.format,
        &call.chain[0],
        call.scope.as_ref(),
        || call.json(),
    )?;
    match s.lookup(&app.routes, &app.http(), probe).await {
        Lookup::Hit(hit) => Some(Served {
            body: hit.body,
            cost_usd: hit.cost_usd,
            model: hit.model,
            provider: hit.provider,
            kind: CacheOutcome::SemanticHit,
            similarity: Some(hit.similarity),
        }),
        Lookup::Pending(p) => {
            call.semantic = Some(p);
            None
        }
        Lookup::Skipped => None,
    }
}

/// A cascade's cheap stages, each in turn: the first answer accepted is served (`Ok`); otherwise the call,
/// with what the stages cost, goes on to the strong model (`Err`).
async fn cascade(app: &Arc<AppState>, mut rec: Recorder, call: &Call) -> Result<Response, Recorder> {
    let Some(chain) = &call.cascade else {
        return Err(rec);
    };
    let stage = cascade::Stage {
        format: call.format,
        stream: call.stream,
        wants_usage: call.wants_usage,
    };
    let auth = client_auth(&call.headers);
    let mut prompt = None;
    for (_, step) in chain.asked() {
        rec = match stage.run(app, rec, step, call, &auth, &mut prompt).await {
            Ok(served) => return Ok(served),
            Err(escalated) => escalated,
        };
    }
    Err(rec)
}

/// The upstream: the chain with retries and fallbacks, then the answer, streamed or whole, recorded and
/// cached.
async fn upstream(app: Arc<AppState>, mut rec: Recorder, call: Box<Call>) -> Response {
    let Call {
        format,
        headers,
        bytes,
        ingress,
        stream,
        wants_usage,
        chain,
        exact,
        semantic,
        ..
    } = *call;
    let auth = client_auth(&headers);
    let op = Operation::Chat { stream };
    let sent = upstream::send(&app.http(), &chain, &app.config.retry, rec.deadline, |target| {
        upstream::prepare(target, op, ingress.body_for(target, &bytes)?, &auth)
    })
    .await;
    let sent = match sent {
        Ok(s) => s,
        Err(failed) => return rec.upstream_failed(format, &chain, failed),
    };
    // An answer is cached under the model asked for only if that model gave it, not a fallback.
    let key = CacheWrite {
        exact: exact.filter(|_| sent.target == 0),
        semantic: semantic.filter(|_| sent.target == 0),
    };
    let target = chain[sent.target].clone();
    rec.set_target(&target);
    rec.rec().attempts = sent.attempts;
    if stream {
        stream::stream_response(app, rec, format, target, sent, wants_usage, ingress, key)
    } else {
        unary_response(app, rec, format, target, sent, ingress, key).await
    }
}
