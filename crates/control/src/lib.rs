//! The control plane: what a person (through the CLI or the admin API) or, later, the optimizer asks of the
//! store. Task profiles and rankings, candidates, deployment changes (deploy, promote, roll back), the caches'
//! overview and clears, time series for charts, and log import. No HTTP and no serving: the gateway's admin API maps
//! [`ControlError`] to a status once, and the CLI prints it.

pub mod cache;
pub mod import;
pub mod optimizer;
pub mod policy;
pub mod prices;
pub mod savings;
pub mod series;
pub mod tasks;

use leanlm_store::StoreError;

/// Why a control-plane operation did not happen. The admin API answers 404, 409, 400 and 500 for them.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// What was named does not exist: a task, a policy, a validation.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state refuses it: a name several tasks share, a replacement that
    /// is not validated or not trained, a policy that changed meanwhile, a stage that cannot be promoted.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a value out of range, a missing reason.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<leanlm_deploy::ChangeError> for ControlError {
    fn from(e: leanlm_deploy::ChangeError) -> ControlError {
        use leanlm_deploy::ChangeError as C;
        let message = e.to_string();
        match e {
            C::NoPolicy(_) => ControlError::NotFound(message),
            C::NotValidated { .. } | C::CannotPromote(_) => ControlError::Conflict(message),
            C::NotServable(_) | C::OutOfRange { .. } | C::BadStage => ControlError::Invalid(message),
        }
    }
}

/// Unix milliseconds now: policy changes, clears, import times.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A call for the tests of this crate: gpt-4o, 1,000 tokens in and 10 out at its price, with bodies.
#[cfg(test)]
pub(crate) mod testing {
    use leanlm_core::{CallRecord, CallStatus, ClientFormat, Origin, TaskRef, Usage};

    pub(crate) fn call(id: &str, task: &str, at_ms: i64) -> CallRecord {
        CallRecord {
            id: id.into(),
            started_at_ms: at_ms,
            endpoint: "chat.completions".into(),
            client_format: ClientFormat::OpenAi,
            client_key_id: None,
            task: Some(TaskRef {
                id: task.into(),
                name: format!("{task}-name"),
                origin: Origin::Template,
                absorbs: Default::default(),
            }),
            requested_model: "gpt-4o".into(),
            served_model: Some("gpt-4o".into()),
            provider: Some("openai".into()),
            upstream_model: Some("gpt-4o".into()),
            stream: false,
            status: CallStatus::Ok,
            http_status: 200,
            error: None,
            usage: Some(Usage {
                input_tokens: 1000,
                output_tokens: 10,
                ..Default::default()
            }),
            cost_usd: Some(0.0026),
            cost_estimated: false,
            latency_ms: 10.0,
            ttft_ms: None,
            overhead_us: None,
            attempts: 1,
            request_body: Some(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"q"}]}"#.into()),
            response_body: Some(r#"{"choices":[{"message":{"role":"assistant","content":"a"}}]}"#.into()),
            cache: None,
            cost_avoided_usd: None,
            policy: None,
            stages: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use leanlm_core::{CallRecord, Origin, Replacement, TaskRef};
    use leanlm_deploy::Stage;
    use leanlm_store::Store;

    use crate::policy::{self, DeployRequest};
    use crate::{ControlError, cache, tasks};

    fn call(id: &str, task: &str, name: &str) -> CallRecord {
        CallRecord {
            task: Some(TaskRef {
                id: task.into(),
                name: name.into(),
                origin: Origin::Template,
                absorbs: Default::default(),
            }),
            usage: None,
            cost_usd: Some(0.001),
            request_body: None,
            response_body: None,
            ..crate::testing::call(id, task, crate::unix_ms())
        }
    }

    /// Two tasks that share a name, one with a call of its own.
    fn store() -> Store {
        let mut s = Store::open("sqlite::memory:").unwrap();
        s.insert_batch(&[call("c1", "t_a", "intents"), call("c2", "t_b", "intents")])
            .unwrap();
        s
    }

    fn request(task: &str, stage: Stage) -> DeployRequest {
        DeployRequest::new(
            task,
            Replacement::Model {
                model: "gpt-4o-mini".into(),
            },
            stage,
            "test",
        )
    }

    #[test]
    fn tasks_are_found_by_id_or_unique_name() {
        let s = store();
        assert_eq!(tasks::find(&s, "t_a").unwrap().id, "t_a");
        assert!(matches!(tasks::find(&s, "nope"), Err(ControlError::NotFound(m)) if m.contains("nope")));
        assert!(matches!(tasks::find(&s, "intents"), Err(ControlError::Conflict(m)) if m.contains("2 tasks")));
        assert!(matches!(
            tasks::by_id(&s, "t_none", None),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(tasks::rename(&s, "t_a", "  "), Err(ControlError::Invalid(_))));
        assert!(matches!(
            tasks::rename(&s, "t_none", "x"),
            Err(ControlError::NotFound(_))
        ));
        tasks::rename(&s, "t_a", "labels").unwrap();
        assert_eq!(tasks::find(&s, "labels").unwrap().id, "t_a");
    }

    #[test]
    fn policy_changes_say_what_refused_them() {
        let mut s = store();
        let kind = |e: ControlError| match e {
            ControlError::NotFound(_) => "not found",
            ControlError::Conflict(_) => "conflict",
            ControlError::Invalid(_) => "invalid",
            ControlError::Store(_) => "store",
        };
        let err = |r: Result<leanlm_deploy::Policy, ControlError>| kind(r.unwrap_err());
        assert_eq!(
            err(policy::deploy(&mut s, request("t_none", Stage::Shadow))),
            "not found"
        );
        assert_eq!(err(policy::deploy(&mut s, request("t_a", Stage::Canary))), "conflict");
        assert_eq!(err(policy::deploy(&mut s, request("t_a", Stage::Live))), "invalid");
        let mut bad = request("t_a", Stage::Shadow);
        bad.bound = Some(1.5);
        assert_eq!(err(policy::deploy(&mut s, bad)), "invalid");
        assert_eq!(err(policy::promote(&mut s, "t_a", None, None, "test")), "not found");
        assert_eq!(err(policy::rollback(&mut s, "t_a", "why", "test")), "not found");

        let deployed = policy::deploy(&mut s, request("t_a", Stage::Shadow)).unwrap();
        assert_eq!((deployed.version, deployed.stage), (1, Stage::Shadow));
        assert_eq!(err(policy::promote(&mut s, "t_a", None, None, "test")), "conflict");
        assert_eq!(err(policy::rollback(&mut s, "t_a", " ", "test")), "invalid");
        let rolled = policy::rollback(&mut s, "t_a", "testing", "test").unwrap();
        assert_eq!((rolled.version, rolled.stage), (2, Stage::RolledBack));
        let audit = s.policy_audit(Some("t_a"), 10).unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["rollback", "deploy"]);
    }

    /// Stores a passing validation of `gpt-4o-mini` for task `t_a` at `bound`.
    fn validated(s: &Store, bound: f64) {
        s.insert_validation(&leanlm_store::ValidationRow {
            id: "val_1".into(),
            task_id: "t_a".into(),
            candidate: "model:gpt-4o-mini".into(),
            passed: true,
            created_at_ms: 1,
            report: serde_json::json!({"scorer": "label", "bound": bound}).to_string(),
        })
        .unwrap();
    }

    #[test]
    fn a_policy_keeps_the_bound_its_validation_cleared() {
        let mut s = store();
        validated(&s, 0.9);
        let canary = policy::deploy(&mut s, request("t_a", Stage::Canary)).unwrap();
        assert_eq!((canary.bound, canary.validation_id.as_deref()), (0.9, Some("val_1")));
        let mut given = request("t_a", Stage::Canary);
        given.bound = Some(0.97);
        assert_eq!(policy::deploy(&mut s, given).unwrap().bound, 0.97, "a bound given wins");

        // Deployed to shadow before any validation: the validation found at promotion sets the bound.
        let mut s = store();
        assert_eq!(
            policy::deploy(&mut s, request("t_a", Stage::Shadow)).unwrap().bound,
            0.95
        );
        validated(&s, 0.9);
        let promoted = policy::promote(&mut s, "t_a", Some(0.5), None, "test").unwrap();
        assert_eq!((promoted.stage, promoted.bound), (Stage::Canary, 0.9));
    }

    #[test]
    fn going_live_needs_evidence_or_a_reason() {
        let mut s = store();
        validated(&s, 0.9);
        let canary = policy::deploy(&mut s, request("t_a", Stage::Canary)).unwrap();
        let err = policy::promote(&mut s, "t_a", None, None, "test").unwrap_err();
        assert!(
            matches!(&err, ControlError::Conflict(m) if m.contains("0 of 0 scored") && m.contains("--force")),
            "{err}"
        );
        // Evidence that clears the bound: 60 of 60 agreed.
        let scores: Vec<leanlm_store::OnlineScore> = (0..60)
            .map(|i| leanlm_store::OnlineScore {
                task_id: "t_a".into(),
                version: canary.version,
                at_ms: i,
                kind: leanlm_core::CheckKind::Audit,
                agreed: Some(true),
                error: false,
                cost_usd: None,
                call_id: None,
                note: None,
                model: None,
                scorer: None,
                billed_model: None,
            })
            .collect();
        s.insert_online(&scores).unwrap();
        let live = policy::promote(&mut s, "t_a", None, None, "test").unwrap();
        assert_eq!(live.stage, Stage::Live);

        // Thin evidence, forced with a reason: allowed and recorded.
        let mut s = store();
        validated(&s, 0.9);
        policy::deploy(&mut s, request("t_a", Stage::Canary)).unwrap();
        let live = policy::promote(&mut s, "t_a", None, Some("deadline".into()), "test").unwrap();
        assert_eq!(live.stage, Stage::Live);
        assert_eq!(
            s.policy_audit(Some("t_a"), 1).unwrap()[0].reason.as_deref(),
            Some("forced: deadline")
        );
    }

    #[test]
    fn a_cache_clear_names_its_task() {
        let mut s = store();
        assert!(matches!(
            cache::clear(&mut s, Some("nope")),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            cache::clear(&mut s, Some("intents")),
            Err(ControlError::Conflict(_))
        ));
        let cleared = cache::clear(&mut s, Some("t_a")).unwrap();
        assert_eq!(cleared.task.as_deref(), Some("t_a"));
        assert_eq!(cache::clear(&mut s, None).unwrap().task, None);
    }
}
