//! Deployment changes: deploy a replacement to shadow or canary, promote it, roll it back, each a new
//! policy version with its audit entry. The gateway's policy runtime reads what is written here (and writes
//! its own automatic rollbacks and promotions through [`write`]).

use leanlm_core::stats::wilson;
use leanlm_core::{Action, Replacement, ScorerSpec};
use leanlm_deploy::{Policy, Stage};
use leanlm_store::{AuditRow, OnlineCounts, PolicyRow, Store, StoreError};
use serde_json::Value;

use crate::{ControlError, unix_ms};

/// How often each gateway reloads policies and judges the online evidence: a change written here reaches
/// every gateway on the store within about this long.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn changed_meanwhile() -> ControlError {
    ControlError::Conflict("the task's policy changed meanwhile; look at `leanlm policies` and try again".into())
}

/// Reads every stored policy.
pub fn load(store: &Store) -> Result<Vec<Policy>, StoreError> {
    Ok(store
        .policies()?
        .into_iter()
        .filter_map(|row| match serde_json::from_str::<Policy>(&row.policy) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(task = %row.task_id, error = %e, "unreadable stored policy ignored");
                None
            }
        })
        .collect())
}

/// Stores a new policy version with its audit entry; `false` if the stored version moved meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn write(
    store: &mut Store,
    policy: &Policy,
    expected: Option<u64>,
    actor: &str,
    action: Action,
    from: Option<Stage>,
    reason: Option<&str>,
    evidence: Option<&OnlineCounts>,
) -> Result<bool, StoreError> {
    let row = PolicyRow {
        task_id: policy.task_id.clone(),
        version: policy.version,
        policy: serde_json::to_string(policy).unwrap_or_default(),
        updated_at_ms: policy.updated_at_ms,
    };
    let audit = AuditRow {
        task_id: policy.task_id.clone(),
        version: policy.version,
        at_ms: policy.updated_at_ms,
        actor: actor.to_owned(),
        action,
        from_stage: from.map(|s| s.as_str().to_owned()),
        to_stage: policy.stage.as_str().to_owned(),
        reason: reason.map(str::to_owned),
        evidence: evidence.and_then(|e| serde_json::to_string(e).ok()),
    };
    store.write_policy(&row, expected, &audit)
}

/// A request to deploy a replacement for a task.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub task_id: String,
    pub replacement: Replacement,
    pub stage: Stage,
    pub share: Option<f64>,
    pub audit_rate: Option<f64>,
    pub bound: Option<f64>,
    pub error_bound: Option<f64>,
    pub min_samples: Option<u64>,
    pub auto_promote: bool,
    pub scorer: Option<ScorerSpec>,
    /// Go past shadow without a passing validation, for this reason.
    pub force: Option<String>,
    /// Who asks: `cli:<user>`, `api`.
    pub actor: String,
}

impl DeployRequest {
    /// A request with every setting at its default (share, audit rate, bounds and scorer from the stage and
    /// the passing validation; no automatic promotion; nothing forced).
    pub fn new(task_id: impl Into<String>, replacement: Replacement, stage: Stage, actor: impl Into<String>) -> Self {
        DeployRequest {
            task_id: task_id.into(),
            replacement,
            stage,
            share: None,
            audit_rate: None,
            bound: None,
            error_bound: None,
            min_samples: None,
            auto_promote: false,
            scorer: None,
            force: None,
            actor: actor.into(),
        }
    }
}

fn current(store: &Store, task: &str) -> Result<Option<Policy>, StoreError> {
    Ok(load(store)?.into_iter().find(|p| p.task_id == task))
}

/// A passing validation of a replacement, as a policy takes it.
struct Validated {
    id: String,
    /// The scorer it judged with (empty if its report does not say).
    scorer: String,
    /// The agreement bound it cleared.
    bound: Option<f64>,
}

/// The latest passing validation of this replacement for this task.
fn passing_validation(store: &Store, task: &str, replacement: &str) -> Result<Option<Validated>, StoreError> {
    Ok(store
        .validations(Some(task), 1000)?
        .into_iter()
        .find(|v| v.passed && v.candidate == replacement)
        .map(|v| {
            let report = serde_json::from_str::<Value>(&v.report).unwrap_or_default();
            Validated {
                id: v.id,
                scorer: report
                    .get("scorer")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                bound: report
                    .get("bound")
                    .and_then(Value::as_f64)
                    .filter(|b| (0.0..=1.0).contains(b)),
            }
        }))
}

/// Deploys a replacement to shadow or canary, as a new policy version.
pub fn deploy(store: &mut Store, req: DeployRequest) -> Result<Policy, ControlError> {
    let task = store
        .tasks(None)?
        .into_iter()
        .find(|t| t.id == req.task_id)
        .ok_or_else(|| ControlError::NotFound(format!("no task with id `{}`; see `leanlm tasks`", req.task_id)))?;
    let spec = req.replacement.to_string();
    match &req.replacement {
        Replacement::Router { cheap, .. } if store.router(&task.id, &spec)?.is_none() => {
            return Err(ControlError::Conflict(format!(
                "no `{spec}` router is trained for task {}: run `leanlm train-router --task {} --cheap {cheap}`",
                task.id, task.id
            )));
        }
        r @ Replacement::Cascade { strong, .. } if store.router(&task.id, &spec)?.is_none() => {
            return Err(ControlError::Conflict(format!(
                "no `{spec}` cascade is trained for task {}: run `leanlm train-cascade --task {} --cheap {} \
                 --strong {strong}`",
                task.id,
                task.id,
                r.cascade_stages().join(",")
            )));
        }
        _ => {}
    }
    let validation = passing_validation(store, &task.id, &spec)?;
    let share = req.share.unwrap_or(if req.stage == Stage::Canary {
        leanlm_deploy::DEFAULT_CANARY_SHARE
    } else {
        0.0
    });
    let audit_rate = req.audit_rate.unwrap_or(leanlm_deploy::DEFAULT_AUDIT_RATE);
    leanlm_deploy::check_deploy(
        &task.id,
        &req.replacement,
        req.stage,
        share,
        audit_rate,
        validation.as_ref().map(|v| v.id.as_str()),
        req.force.as_deref(),
    )?;
    for (what, v) in [("--bound", req.bound), ("--error-bound", req.error_bound)] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            return Err(ControlError::Invalid(format!(
                "{what} must be between 0 and 1, not {v}"
            )));
        }
    }
    let scorer = match (req.scorer, &validation) {
        (Some(s), _) => s,
        (None, Some(v)) if !v.scorer.is_empty() => v.scorer.parse().map_err(ControlError::Invalid)?,
        _ => {
            let profile = crate::tasks::profile(store, &task, None)?;
            ScorerSpec::for_task(
                profile.verdict.as_ref().map(|v| v.kind),
                profile.verdict.as_ref().is_some_and(|v| v.values),
            )
        }
    };
    let before = current(store, &task.id)?;
    let policy = Policy {
        task_id: task.id.clone(),
        version: before.as_ref().map_or(1, |p| p.version + 1),
        stage: req.stage,
        replacement: req.replacement,
        share,
        audit_rate,
        bound: req
            .bound
            .or(validation.as_ref().and_then(|v| v.bound))
            .unwrap_or(leanlm_deploy::DEFAULT_BOUND),
        bound_given: req.bound.is_some(),
        error_bound: req.error_bound.unwrap_or(leanlm_deploy::DEFAULT_ERROR_BOUND),
        scorer,
        min_samples: req.min_samples.unwrap_or(leanlm_deploy::DEFAULT_MIN_SAMPLES).max(1),
        auto_promote: req.auto_promote,
        validation_id: validation.map(|v| v.id),
        forced: req.force.filter(|f| !f.trim().is_empty()),
        updated_at_ms: unix_ms(),
    };
    let reason = match (&policy.validation_id, &policy.forced) {
        (Some(v), _) => format!("validated by {v}"),
        (None, Some(f)) => format!("forced: {f}"),
        (None, None) => "shadow needs no validation".to_owned(),
    };
    let written = write(
        store,
        &policy,
        before.as_ref().map(|p| p.version),
        &req.actor,
        Action::Deploy,
        before.as_ref().map(|p| p.stage),
        Some(&reason),
        None,
    )?;
    if !written {
        return Err(changed_meanwhile());
    }
    Ok(policy)
}

/// Moves a policy up a stage: shadow → canary (at `share`) → live.
pub fn promote(
    store: &mut Store,
    task: &str,
    share: Option<f64>,
    force: Option<String>,
    actor: &str,
) -> Result<Policy, ControlError> {
    let before = current(store, task)?.ok_or(leanlm_deploy::ChangeError::NoPolicy("promote"))?;
    let to = before
        .next_stage()
        .ok_or(leanlm_deploy::ChangeError::CannotPromote(before.stage))?;
    let mut next = before.clone();
    if before.stage == Stage::Shadow && before.validation_id.is_none() {
        let spec = before.replacement.to_string();
        match passing_validation(store, task, &spec)? {
            Some(v) => {
                if !before.bound_given
                    && let Some(bound) = v.bound
                {
                    next.bound = bound;
                }
                next.validation_id = Some(v.id);
            }
            None if force.as_deref().is_some_and(|f| !f.trim().is_empty()) => next.forced = force.clone(),
            None => {
                return Err(leanlm_deploy::ChangeError::NotValidated {
                    task: task.to_owned(),
                    replacement: spec,
                }
                .into());
            }
        }
    }
    next.version += 1;
    next.stage = to;
    next.share = match to {
        Stage::Live => 1.0,
        _ => share.unwrap_or(leanlm_deploy::DEFAULT_CANARY_SHARE),
    };
    if !(0.0..=1.0).contains(&next.share) {
        return Err(ControlError::Invalid("--share must be between 0 and 1".into()));
    }
    next.updated_at_ms = unix_ms();
    let counts = store.online_counts(task, before.version)?;
    let forced = force.as_deref().is_some_and(|f| !f.trim().is_empty());
    if to == Stage::Live && !forced {
        // Live serves every call: the canary's own evidence must show the replacement holds the bound.
        let agreement = wilson(counts.agreed, counts.scored, leanlm_deploy::ONLINE_CONFIDENCE);
        if counts.scored < before.min_samples || agreement.low < before.bound {
            return Err(ControlError::Conflict(format!(
                "the canary's evidence does not show the replacement holds the {:.1}% bound: {} of {} scored answers \
                 agreed ({:.0}% interval {:.1}%–{:.1}%; at least {} scored answers needed); let the canary run longer, \
                 or --force \"reason\"",
                before.bound * 100.0,
                counts.agreed,
                counts.scored,
                leanlm_deploy::ONLINE_CONFIDENCE * 100.0,
                agreement.low * 100.0,
                agreement.high * 100.0,
                before.min_samples,
            )));
        }
    }
    let reason = force.map(|f| format!("forced: {f}"));
    let written = write(
        store,
        &next,
        Some(before.version),
        actor,
        Action::Promote,
        Some(before.stage),
        reason.as_deref(),
        Some(&counts),
    )?;
    if !written {
        return Err(changed_meanwhile());
    }
    Ok(next)
}

/// Sends a task back to its reference, recording why.
pub fn rollback(store: &mut Store, task: &str, reason: &str, actor: &str) -> Result<Policy, ControlError> {
    if reason.trim().is_empty() {
        return Err(ControlError::Invalid("say why: --reason \"...\"".into()));
    }
    let before = current(store, task)?.ok_or(leanlm_deploy::ChangeError::NoPolicy("roll back"))?;
    let mut next = before.clone();
    next.version += 1;
    next.stage = Stage::RolledBack;
    next.updated_at_ms = unix_ms();
    let counts = store.online_counts(task, before.version)?;
    let written = write(
        store,
        &next,
        Some(before.version),
        actor,
        Action::Rollback,
        Some(before.stage),
        Some(reason),
        Some(&counts),
    )?;
    if !written {
        return Err(changed_meanwhile());
    }
    Ok(next)
}

/// Every policy with its online evidence, for listings.
pub fn overview(store: &Store) -> Result<Vec<(Policy, OnlineCounts)>, StoreError> {
    load(store)?
        .into_iter()
        .map(|p| {
            let c = store.online_counts(&p.task_id, p.version)?;
            Ok((p, c))
        })
        .collect()
}
