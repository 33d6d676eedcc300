//! Deployment policies. Each task has at most one: which replacement, at which stage, on what share of its
//! traffic, audited how often, held to which quality bound. The gateway reads policies from an in-memory
//! snapshot; this crate decides, from a policy and a random draw, how one call is served, and, from the
//! online evidence, when a policy rolls back or moves up a stage. No I/O.

use std::fmt;
use std::str::FromStr;

use leanlm_core::stats::wilson;
use leanlm_core::{Replacement, ScorerSpec};
use serde::{Deserialize, Serialize};

/// Where a replacement stands for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Traffic is only recorded.
    Observe,
    /// The reference serves; the replacement answers a sample off the hot path, and is scored.
    Shadow,
    /// The replacement serves a share; the reference re-answers a sample of those calls (the audit).
    Canary,
    /// The replacement serves everything, with a small audit sample kept.
    Live,
    /// The replacement failed its bound online; the reference serves again.
    RolledBack,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Observe => "observe",
            Stage::Shadow => "shadow",
            Stage::Canary => "canary",
            Stage::Live => "live",
            Stage::RolledBack => "rolled_back",
        }
    }

    /// True when evidence is being gathered and judged.
    pub fn is_active(self) -> bool {
        matches!(self, Stage::Shadow | Stage::Canary | Stage::Live)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "observe" => Stage::Observe,
            "shadow" => Stage::Shadow,
            "canary" => Stage::Canary,
            "live" => Stage::Live,
            "rolled_back" | "rolled-back" => Stage::RolledBack,
            other => {
                return Err(format!(
                    "unknown stage `{other}`; expected observe, shadow, canary, live or rolled_back"
                ));
            }
        })
    }
}

/// A task's policy, one version of it. Every change makes a new version; calls record the version that
/// served them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub task_id: String,
    pub version: u64,
    pub stage: Stage,
    pub replacement: Replacement,
    /// In canary, the share of calls the replacement serves.
    pub share: f64,
    /// In shadow, the share of calls the replacement also answers; in canary and live, the share of
    /// replacement-served calls the reference re-answers.
    pub audit_rate: f64,
    /// The online agreement the replacement must keep: by default the bound its passing validation cleared.
    pub bound: f64,
    /// The bound was given when deploying; otherwise a validation found at promotion sets it.
    #[serde(default)]
    pub bound_given: bool,
    /// The highest share of replacement failures (errors, fallbacks to the reference) allowed.
    pub error_bound: f64,
    pub scorer: ScorerSpec,
    /// Scored calls before any automatic decision.
    pub min_samples: u64,
    /// Move up a stage by itself when the online evidence clears the bound.
    pub auto_promote: bool,
    /// The passing validation that allowed going past shadow.
    pub validation_id: Option<String>,
    /// Why a stage was forced without a passing validation.
    pub forced: Option<String>,
    pub updated_at_ms: i64,
}

/// Defaults for a new policy.
pub const DEFAULT_CANARY_SHARE: f64 = 0.1;
pub const DEFAULT_AUDIT_RATE: f64 = 0.1;
pub const DEFAULT_BOUND: f64 = 0.95;
pub const DEFAULT_ERROR_BOUND: f64 = 0.05;
pub const DEFAULT_MIN_SAMPLES: u64 = 20;

/// How one call is served under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The reference serves; `shadow` asks the replacement too, off the hot path.
    Reference { shadow: bool },
    /// The replacement serves; `audit` asks the reference too, off the hot path.
    Replacement { audit: bool },
}

impl Policy {
    /// The model the replacement serves with, for kinds the gateway can route today.
    pub fn replacement_model(&self) -> Option<&str> {
        match &self.replacement {
            Replacement::Model { model } => Some(model),
            _ => None,
        }
    }

    /// Decides how a call is served from two uniform draws in [0, 1).
    pub fn route(&self, serve_draw: f64, audit_draw: f64) -> Route {
        match self.stage {
            Stage::Observe | Stage::RolledBack => Route::Reference { shadow: false },
            Stage::Shadow => Route::Reference {
                shadow: audit_draw < self.audit_rate,
            },
            Stage::Canary if serve_draw >= self.share => Route::Reference { shadow: false },
            Stage::Canary | Stage::Live => Route::Replacement {
                audit: audit_draw < self.audit_rate,
            },
        }
    }

    /// The stage a promotion leads to.
    pub fn next_stage(&self) -> Option<Stage> {
        match self.stage {
            Stage::Shadow => Some(Stage::Canary),
            Stage::Canary => Some(Stage::Live),
            _ => None,
        }
    }
}

/// Online evidence for one policy version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Answers of both models scored against each other.
    pub scored: u64,
    pub agreed: u64,
    /// Calls the replacement was asked to answer (served, shadowed), and how many it failed.
    pub attempts: u64,
    pub errors: u64,
}

/// What the evidence says to do with a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Keep,
    Rollback { reason: String },
    Promote { to: Stage, reason: String },
}

/// Confidence of the online intervals.
pub const ONLINE_CONFIDENCE: f64 = 0.95;

/// How many of the latest scored answers the rollback rule looks at: a regression after a long good run
/// must not hide behind the good run's numbers.
pub const RECENT_WINDOW: usize = 200;

/// Rolls back when, over the recent window, even the upper end of the agreement's interval is under the
/// bound, or the low end of the error rate's is over its bound; promotes (when allowed) when the lower end
/// of the whole version's agreement clears the bound and the recent window does not say otherwise.
pub fn decide(policy: &Policy, recent: &Evidence, total: &Evidence) -> Decision {
    if !policy.stage.is_active() {
        return Decision::Keep;
    }
    match rollback(policy, recent) {
        Decision::Keep => {}
        roll => return roll,
    }
    if total.scored < policy.min_samples || !policy.auto_promote {
        return Decision::Keep;
    }
    let a = wilson(total.agreed, total.scored, ONLINE_CONFIDENCE);
    match policy.next_stage() {
        Some(to) if a.low >= policy.bound => Decision::Promote {
            to,
            reason: format!(
                "online agreement {:.1}% ({} of {}), interval {:.1}%–{:.1}%: its lower end clears the {:.1}% bound",
                a.rate * 100.0,
                total.agreed,
                total.scored,
                a.low * 100.0,
                a.high * 100.0,
                policy.bound * 100.0
            ),
        },
        _ => Decision::Keep,
    }
}

fn rollback(policy: &Policy, e: &Evidence) -> Decision {
    if e.attempts >= policy.min_samples {
        let err = wilson(e.errors, e.attempts, ONLINE_CONFIDENCE);
        if err.low > policy.error_bound {
            return Decision::Rollback {
                reason: format!(
                    "the replacement failed {} of {} calls ({:.1}%, interval {:.1}%–{:.1}%), over the {:.1}% error bound",
                    e.errors,
                    e.attempts,
                    err.rate * 100.0,
                    err.low * 100.0,
                    err.high * 100.0,
                    policy.error_bound * 100.0
                ),
            };
        }
    }
    if e.scored < policy.min_samples {
        return Decision::Keep;
    }
    let a = wilson(e.agreed, e.scored, ONLINE_CONFIDENCE);
    let interval = format!(
        "recent online agreement {:.1}% ({} of {}), interval {:.1}%–{:.1}%",
        a.rate * 100.0,
        e.agreed,
        e.scored,
        a.low * 100.0,
        a.high * 100.0
    );
    if a.high < policy.bound {
        return Decision::Rollback {
            reason: format!(
                "{interval}: its upper end is under the {:.1}% bound",
                policy.bound * 100.0
            ),
        };
    }
    if policy.auto_promote
        && a.low >= policy.bound
        && let Some(to) = policy.next_stage()
    {
        return Decision::Promote {
            to,
            reason: format!(
                "{interval}: its lower end clears the {:.1}% bound",
                policy.bound * 100.0
            ),
        };
    }
    Decision::Keep
}

/// Why a requested change is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChangeError {
    #[error(
        "`{replacement}` has no passing validation for this task: run `leanlm validate --task {task} --candidate {replacement}`, or force it with a reason"
    )]
    NotValidated { task: String, replacement: String },
    #[error(
        "`{0}` replacements cannot be served yet: deploy a model (model:NAME), a trained router (router:CHEAP,STRONG) or cache:semantic"
    )]
    NotServable(&'static str),
    #[error("{what} must be between 0 and 1, not {value}")]
    OutOfRange { what: &'static str, value: f64 },
    #[error("the task has no policy to {0}; deploy one first")]
    NoPolicy(&'static str),
    #[error("a {0} policy cannot be promoted; promote goes shadow → canary → live")]
    CannotPromote(Stage),
    #[error("only shadow and canary can be deployed to directly; promote to go live")]
    BadStage,
}

/// Checks a deployment request: the stage, the shares, and that going past shadow has a passing validation
/// (or a reason to force it).
pub fn check_deploy(
    task: &str,
    replacement: &Replacement,
    stage: Stage,
    share: f64,
    audit_rate: f64,
    passing_validation: Option<&str>,
    forced: Option<&str>,
) -> Result<(), ChangeError> {
    if !matches!(
        replacement,
        Replacement::Model { .. }
            | Replacement::SemanticCache
            | Replacement::Router { .. }
            | Replacement::Cascade { .. }
    ) {
        return Err(ChangeError::NotServable(replacement.kind()));
    }
    if !matches!(stage, Stage::Shadow | Stage::Canary) {
        return Err(ChangeError::BadStage);
    }
    for (what, value) in [("the share", share), ("the audit rate", audit_rate)] {
        if !(0.0..=1.0).contains(&value) || value.is_nan() {
            return Err(ChangeError::OutOfRange { what, value });
        }
    }
    // The semantic cache validates itself: it serves a hit only while the false-hit rate measured on the
    // task's own traffic stays within its bound, so going past shadow needs no separate validation.
    let self_validating = *replacement == Replacement::SemanticCache;
    if stage > Stage::Shadow
        && !self_validating
        && passing_validation.is_none()
        && forced.is_none_or(|r| r.trim().is_empty())
    {
        return Err(ChangeError::NotValidated {
            task: task.to_owned(),
            replacement: replacement.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(stage: Stage) -> Policy {
        Policy {
            task_id: "t".into(),
            version: 1,
            stage,
            replacement: "cheap".parse().unwrap(),
            share: 0.25,
            audit_rate: 0.5,
            bound: 0.95,
            bound_given: false,
            error_bound: 0.05,
            scorer: ScorerSpec::Label,
            min_samples: 20,
            auto_promote: false,
            validation_id: None,
            forced: None,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn routes_follow_the_stage_share_and_audit_rate() {
        let shadow = policy(Stage::Shadow);
        assert_eq!(shadow.route(0.0, 0.4), Route::Reference { shadow: true });
        assert_eq!(shadow.route(0.0, 0.6), Route::Reference { shadow: false });
        let canary = policy(Stage::Canary);
        assert_eq!(canary.route(0.2, 0.4), Route::Replacement { audit: true });
        assert_eq!(canary.route(0.3, 0.4), Route::Reference { shadow: false });
        assert_eq!(
            policy(Stage::Live).route(0.99, 0.9),
            Route::Replacement { audit: false }
        );
        assert_eq!(
            policy(Stage::RolledBack).route(0.0, 0.0),
            Route::Reference { shadow: false }
        );
        // Over many draws the canary serves its share.
        let served = (0..10_000)
            .filter(|i| matches!(canary.route(*i as f64 / 10_000.0, 0.9), Route::Replacement { .. }))
            .count();
        assert_eq!(served, 2500);
    }

    #[test]
    fn evidence_rolls_back_keeps_or_promotes() {
        let p = policy(Stage::Canary);
        let e = |scored, agreed| Evidence {
            scored,
            agreed,
            attempts: scored,
            errors: 0,
        };
        let same = |ev: Evidence| decide(&p, &ev, &ev);
        assert_eq!(same(e(10, 0)), Decision::Keep, "too few samples to judge");
        assert!(matches!(same(e(40, 30)), Decision::Rollback { .. }));
        assert_eq!(same(e(100, 100)), Decision::Keep, "no promotion unless allowed");
        // A recent regression rolls back even after a long good run.
        assert!(matches!(
            decide(&p, &e(60, 40), &e(5000, 4980)),
            Decision::Rollback { .. }
        ));
        let auto = Policy {
            auto_promote: true,
            ..p.clone()
        };
        assert!(matches!(
            decide(&auto, &e(100, 100), &e(100, 100)),
            Decision::Promote { to: Stage::Live, .. }
        ));
        assert_eq!(
            decide(&auto, &e(40, 39), &e(40, 39)),
            Decision::Keep,
            "not enough to promote, not bad enough to roll back"
        );
        let errors = Evidence {
            scored: 0,
            agreed: 0,
            attempts: 50,
            errors: 10,
        };
        match decide(&p, &errors, &errors) {
            Decision::Rollback { reason } => assert!(reason.contains("error bound"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&policy(Stage::RolledBack), &e(100, 0), &e(100, 0)),
            Decision::Keep
        );
    }

    #[test]
    fn deployments_past_shadow_need_a_passing_validation_or_a_reason() {
        let r: Replacement = "cheap".parse().unwrap();
        assert!(check_deploy("t", &r, Stage::Shadow, 0.1, 0.1, None, None).is_ok());
        assert!(matches!(
            check_deploy("t", &r, Stage::Canary, 0.1, 0.1, None, None),
            Err(ChangeError::NotValidated { .. })
        ));
        assert!(check_deploy("t", &r, Stage::Canary, 0.1, 0.1, Some("val_1"), None).is_ok());
        assert!(
            check_deploy(
                "t",
                &r,
                Stage::Canary,
                0.1,
                0.1,
                None,
                Some("incident 42: provider outage")
            )
            .is_ok()
        );
        assert!(check_deploy("t", &r, Stage::Canary, 0.1, 0.1, None, Some("  ")).is_err());
        assert!(matches!(
            check_deploy("t", &r, Stage::Canary, 1.5, 0.1, Some("v"), None),
            Err(ChangeError::OutOfRange { .. })
        ));
        assert_eq!(
            check_deploy("t", &r, Stage::Live, 0.1, 0.1, Some("v"), None),
            Err(ChangeError::BadStage)
        );
        assert!(matches!(
            check_deploy(
                "t",
                &"cache:exact".parse().unwrap(),
                Stage::Shadow,
                0.1,
                0.1,
                None,
                None
            ),
            Err(ChangeError::NotServable(_))
        ));
        assert_eq!("rolled-back".parse::<Stage>().unwrap(), Stage::RolledBack);
        assert_eq!(
            check_deploy("t", &Replacement::SemanticCache, Stage::Canary, 0.5, 0.1, None, None),
            Ok(()),
            "the semantic cache gates its own hits on the task's traffic"
        );
    }
}
