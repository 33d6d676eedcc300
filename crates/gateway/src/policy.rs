//! Deployment policies at run time: the snapshot the request path reads, the online checks (shadow and
//! audit answers scored off the hot path), and the sync thread that reloads policies from the store, writes
//! online evidence, and rolls back or promotes on it.
//!
//! The request path does one atomic load and one hash lookup per call; it never locks or touches the
//! store. Every gateway instance sharing a store syncs once a second, so a change made anywhere (the CLI,
//! the admin API, another instance's automatic rollback) is everywhere within about a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use leanlm_control::policy::{load, write};
use leanlm_core::{Action, CheckKind};
use leanlm_deploy::{Decision, Evidence, Policy, Stage};
use leanlm_route::cascade::Chain;
use leanlm_store::{OnlineScore, Store, StoreError};
use leanlm_validate::Replay;
use leanlm_validate::score::{self, TaskContext};
use serde_json::Value;

use crate::replay::Replayer;
use crate::unix_ms;

pub use leanlm_control::policy::SYNC_INTERVAL;
/// Once evidence arrives, how long to gather more before syncing: a busy gateway syncs about ten times a
/// second, not once per call.
const GATHER: Duration = Duration::from_millis(100);
/// Online scores waiting for the sync thread; beyond it new ones are dropped (and counted).
const QUEUE: usize = 100_000;

/// The policies, and the learned routers and cascades of the active `router:` and `cascade:` ones.
#[derive(Default)]
struct Snapshot {
    policies: HashMap<String, Arc<Policy>>,
    routers: HashMap<String, Arc<leanlm_route::TaskRouter>>,
    cascades: HashMap<String, Arc<Chain>>,
}

/// What the request path needs: the current policies, and where online work goes.
pub struct PolicyRuntime {
    snapshot: Arc<ArcSwap<Snapshot>>,
    scores: crate::queue::Sender<OnlineScore>,
    /// Answers shadow and audit requests: the gateway's own request path, logging nothing.
    replayer: Replayer,
}

/// Which second opinion a call gets, off the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The reference served; ask the replacement.
    Shadow,
    /// The replacement served; ask the reference.
    Audit,
}

/// A call whose answer is to be checked once it is complete.
pub struct OnlineJob {
    pub policy: Arc<Policy>,
    /// The model that answers for the replacement on this call (a router's pick, for `router:`).
    pub replacement: String,
    pub check: Option<Check>,
    /// The model the client asked for: the reference.
    pub reference: String,
    /// Set when the replacement served: its failures count against it.
    pub served_by_replacement: bool,
    /// For a `cascade:` policy: the cascade, whose shadow checks judge the cheap answer as it would serve.
    pub cascade: Option<Arc<Chain>>,
}

impl PolicyRuntime {
    /// The active policy of a task, if any: one atomic load and one lookup.
    pub fn get(&self, task: &str) -> Option<Arc<Policy>> {
        self.snapshot
            .load()
            .policies
            .get(task)
            .filter(|p| p.stage.is_active())
            .cloned()
    }

    /// The learned router an active `router:` policy of the task serves with.
    pub fn router(&self, task: &str) -> Option<Arc<leanlm_route::TaskRouter>> {
        self.snapshot.load().routers.get(task).cloned()
    }

    /// The trained cascade an active `cascade:` policy of the task serves with.
    pub fn cascade(&self, task: &str) -> Option<Arc<Chain>> {
        self.snapshot.load().cascades.get(task).cloned()
    }

    fn push(&self, score: OnlineScore) {
        if self.scores.try_send(score).is_err() {
            metrics::counter!("leanlm_online_scores_dropped_total").increment(1);
        }
    }

    /// Records what a finished call says about its policy, and starts its second opinion.
    pub fn finished(
        self: &Arc<Self>,
        job: OnlineJob,
        call_id: &str,
        format: leanlm_core::ClientFormat,
        record: &leanlm_store::CallRecord,
        app: &Arc<crate::AppState>,
    ) {
        let format = format.as_str();
        let ok = record.status == leanlm_store::CallStatus::Ok;
        if job.served_by_replacement {
            // A replacement that failed upstream, or that the chain had to fall back from, counts as an
            // error; a request the client got wrong, or gave up on, says nothing about it.
            let replacement = job.replacement.as_str();
            let error = match record.status {
                leanlm_store::CallStatus::Ok => Some(record.served_model.as_deref() != Some(replacement)),
                leanlm_store::CallStatus::UpstreamError => Some(true),
                leanlm_store::CallStatus::ClientError | leanlm_store::CallStatus::ClientClosed => None,
            };
            if let Some(error) = error {
                self.push(OnlineScore {
                    task_id: job.policy.task_id.clone(),
                    version: job.policy.version,
                    at_ms: unix_ms(),
                    kind: CheckKind::Served,
                    agreed: None,
                    error,
                    cost_usd: None,
                    call_id: Some(call_id.to_owned()),
                    note: record.error.clone(),
                    model: Some(job.replacement.clone()),
                    scorer: None,
                    billed_model: None,
                });
            }
        }
        let (Some(check), true) = (job.check, ok) else { return };
        // An audit asks the reference again. A call the reference itself answered (a router's or a cascade's
        // pick of the strong model, a fallback to it) needs none: asking again would pay for the same answer.
        if check == Check::Audit && record.served_model.as_deref() == Some(job.reference.as_str()) {
            return;
        }
        let (Some(request), Some(response)) = (record.request_body.clone(), record.response_body.clone()) else {
            return;
        };
        let other = match check {
            Check::Shadow => job.replacement.clone(),
            Check::Audit => job.reference.clone(),
        };
        let this = self.clone();
        let format = format.to_owned();
        let call_id = call_id.to_owned();
        let replacement = job.replacement.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let (Check::Shadow, Some(cascade)) = (check, job.cascade.clone()) {
            let app = app.clone();
            handle.spawn(async move {
                let score = this
                    .shadow_cascade(&app, &job, &cascade, &format, &call_id, &request, &response)
                    .await;
                if let Some(score) = score {
                    this.push(score);
                }
            });
            return;
        }
        // Parsing the bodies and everything after happens off the response path.
        handle.spawn(async move {
            let (Ok(request), Ok(response)) = (
                serde_json::from_str::<Value>(&request),
                serde_json::from_str::<Value>(&response),
            ) else {
                return;
            };
            let answer = leanlm_wire::output_text(&response);
            let body = leanlm_validate::run::replay_body(&request, &other);
            let result = this.replayer.complete(&format, body).await;
            let policy = &job.policy;
            let score = match (result, check) {
                (Ok(reply), _) => {
                    let (reference, candidate) = match check {
                        Check::Shadow => (answer.as_str(), reply.text.as_str()),
                        Check::Audit => (reply.text.as_str(), answer.as_str()),
                    };
                    let s = score::score(&policy.scorer, reference, candidate, &TaskContext::default());
                    OnlineScore {
                        task_id: policy.task_id.clone(),
                        version: policy.version,
                        at_ms: unix_ms(),
                        kind: if check == Check::Shadow {
                            CheckKind::Shadow
                        } else {
                            CheckKind::Audit
                        },
                        agreed: Some(s.agree),
                        error: false,
                        cost_usd: reply.cost_usd,
                        call_id: Some(call_id),
                        note: (!s.agree).then_some(s.note),
                        model: Some(replacement),
                        scorer: Some(policy.scorer.to_string()),
                        billed_model: Some(reply.model.clone()),
                    }
                }
                // The replacement failed to answer a shadow request: an error against it.
                (Err(e), Check::Shadow) => OnlineScore {
                    task_id: policy.task_id.clone(),
                    version: policy.version,
                    at_ms: unix_ms(),
                    kind: CheckKind::Shadow,
                    agreed: None,
                    error: true,
                    cost_usd: None,
                    call_id: Some(call_id),
                    note: Some(e),
                    model: Some(replacement),
                    scorer: Some(policy.scorer.to_string()),
                    billed_model: None,
                },
                // The reference failed to re-answer: no evidence either way.
                (Err(e), Check::Audit) => {
                    tracing::warn!(task = %policy.task_id, error = %e, "audit request to the reference failed");
                    return;
                }
            };
            this.push(score);
        });
    }
}

impl PolicyRuntime {
    /// A cascade's shadow check: each cheap stage answers as the cascade would ask it, in turn, until the
    /// cascade accepts one, and what it would have served is scored against the reference's answer. A call
    /// no stage accepts would have been answered by the strong model; when that is the reference, it agrees.
    #[allow(clippy::too_many_arguments)]
    async fn shadow_cascade(
        &self,
        app: &crate::AppState,
        job: &OnlineJob,
        chain: &Chain,
        format: &str,
        call_id: &str,
        request: &str,
        response: &str,
    ) -> Option<OnlineScore> {
        let (request, response) = (
            serde_json::from_str::<Value>(request).ok()?,
            serde_json::from_str::<Value>(response).ok()?,
        );
        let policy = &job.policy;
        let mut score = OnlineScore {
            task_id: policy.task_id.clone(),
            version: policy.version,
            at_ms: unix_ms(),
            kind: CheckKind::Shadow,
            agreed: None,
            error: false,
            cost_usd: None,
            call_id: Some(call_id.to_owned()),
            note: None,
            // Not the cheap model's name: these outcomes are the cascade's, not the cheap model's own.
            model: Some(policy.replacement.to_string()),
            scorer: Some(policy.scorer.to_string()),
            // A chain's stages are several models; their costs are summed under the chain's name.
            billed_model: Some(policy.replacement.to_string()),
        };
        let reference = leanlm_wire::output_text(&response);
        let (mut last, mut prompt) = (None, None);
        for (_, cascade) in chain.asked() {
            let setup = &cascade.setup;
            let sampled = leanlm_validate::run::cheap_samples(
                &self.replayer,
                format,
                &request,
                &setup.cheap,
                setup.logprobs,
                usize::from(setup.samples),
            )
            .await;
            // A second sample that fails leaves the first to be judged alone.
            let (first, second) = match sampled {
                Ok((first, second)) => (first, second.and_then(Result::ok)),
                Err(e) => {
                    score.error = true;
                    score.note = Some(format!("{}: {e}", setup.cheap));
                    return Some(score);
                }
            };
            let spent = first.cost_usd.unwrap_or(0.0) + second.as_ref().and_then(|s| s.cost_usd).unwrap_or(0.0);
            *score.cost_usd.get_or_insert(0.0) += spent;
            let decision = crate::cascade::judge(
                app,
                cascade,
                Some(&request),
                &mut prompt,
                &first.text,
                first.logprobs.as_deref(),
                second.as_ref().map(|s| s.text.as_str()),
            )
            .await;
            match decision {
                Ok(d) if d.accepted() => {
                    let s = score::score(&policy.scorer, &reference, &first.text, &TaskContext::default());
                    score.agreed = Some(s.agree);
                    score.note = (!s.agree).then(|| format!("{}: {}", setup.cheap, s.note));
                    return Some(score);
                }
                Ok(d) => last = Some(d),
                Err(e) => {
                    tracing::warn!(task = %policy.task_id, error = %e, "cascade shadow: could not judge the cheap answer");
                    return None;
                }
            }
        }
        score.agreed = Some(chain.strong() == job.reference);
        score.note = last.map(|d| format!("escalated ({})", crate::cascade::outcome(&d).0));
        Some(score)
    }
}

fn snapshot_of(store: &Store, policies: Vec<Policy>) -> Result<Snapshot, StoreError> {
    let (mut routers, mut cascades) = (HashMap::new(), HashMap::new());
    for p in policies.iter().filter(|p| p.stage.is_active()) {
        let what = match p.replacement {
            leanlm_core::Replacement::Router { .. } => "router",
            leanlm_core::Replacement::Cascade { .. } => "cascade",
            _ => continue,
        };
        let Some(json) = store.router(&p.task_id, &p.replacement.to_string())? else {
            tracing::error!(task = %p.task_id, what, "nothing trained is stored for the policy; the reference serves");
            continue;
        };
        let loaded = if what == "router" {
            serde_json::from_str::<leanlm_route::TaskRouter>(&json).map(|r| {
                routers.insert(p.task_id.clone(), Arc::new(r));
            })
        } else {
            serde_json::from_str::<Chain>(&json).map(|c| {
                cascades.insert(p.task_id.clone(), Arc::new(c));
            })
        };
        if let Err(e) = loaded {
            tracing::error!(task = %p.task_id, what, error = %e, "unreadable stored model; the reference serves");
        }
    }
    Ok(Snapshot {
        policies: policies.into_iter().map(|p| (p.task_id.clone(), Arc::new(p))).collect(),
        routers,
        cascades,
    })
}

/// Starts the runtime: loads the policies and spawns the sync thread, which stops once the runtime is
/// dropped (after writing what is queued).
pub fn start(config: &crate::Config) -> anyhow::Result<Arc<PolicyRuntime>> {
    let mut store = Store::open(&config.store_url).context("opening the store for policies")?;
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot_of(&store, load(&store)?)?));
    let (tx, rx) = crate::queue::bounded(QUEUE);
    let shared = snapshot.clone();
    std::thread::Builder::new()
        .name("leanlm-policies".into())
        .spawn(move || {
            loop {
                let mut batch = Vec::new();
                let mut gone = match rx.recv_timeout(SYNC_INTERVAL) {
                    Ok(s) => {
                        batch.push(s);
                        false
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => true,
                };
                let until = std::time::Instant::now() + GATHER;
                while !gone
                    && !batch.is_empty()
                    && let Some(left) = until.checked_duration_since(std::time::Instant::now())
                {
                    match rx.recv_timeout(left) {
                        Ok(s) => batch.push(s),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => gone = true,
                    }
                }
                if let Err(e) = sync(&mut store, &shared, &batch) {
                    tracing::error!(error = %e, "policy sync failed");
                }
                if gone {
                    break;
                }
            }
        })
        .context("starting the policy thread")?;
    Ok(Arc::new(PolicyRuntime {
        snapshot,
        scores: tx,
        replayer: Replayer::new(config.clone())?,
    }))
}

/// One sync: write the new evidence, reload, judge each active policy, and publish the snapshot.
fn sync(store: &mut Store, snapshot: &ArcSwap<Snapshot>, batch: &[OnlineScore]) -> Result<(), StoreError> {
    if !batch.is_empty() {
        store.insert_online(batch)?;
    }
    let mut policies = load(store)?;
    for p in policies.iter_mut().filter(|p| p.stage.is_active()) {
        let evidence = |c: &leanlm_store::OnlineCounts| Evidence {
            scored: c.scored,
            agreed: c.agreed,
            attempts: c.attempts,
            errors: c.errors,
        };
        let recent = store.online_counts_recent(&p.task_id, p.version, leanlm_deploy::RECENT_WINDOW)?;
        let c = store.online_counts(&p.task_id, p.version)?;
        let (to, action, reason) = match leanlm_deploy::decide(p, &evidence(&recent), &evidence(&c)) {
            Decision::Keep => continue,
            Decision::Rollback { reason } => (Stage::RolledBack, Action::Rollback, reason),
            Decision::Promote { to, reason } => (to, Action::Promote, reason),
        };
        let mut next = p.clone();
        next.version += 1;
        next.stage = to;
        next.updated_at_ms = unix_ms();
        if to == Stage::Live {
            next.share = 1.0;
        }
        let written = write(
            store,
            &next,
            Some(p.version),
            "auto",
            action,
            Some(p.stage),
            Some(&reason),
            Some(&c),
        )?;
        if written {
            tracing::warn!(task = %p.task_id, from = %p.stage, to = %to, %reason, "policy changed automatically");
            metrics::counter!("leanlm_policy_changes_total", "action" => action.as_str()).increment(1);
            *p = next;
        }
    }
    let current = snapshot.load();
    // A new policy version reloads its router or cascade too (deploy again after retraining).
    let changed = policies.len() != current.policies.len()
        || policies
            .iter()
            .any(|p| current.policies.get(&p.task_id).is_none_or(|c| c.version != p.version));
    if changed {
        snapshot.store(Arc::new(snapshot_of(store, policies)?));
    }
    Ok(())
}
