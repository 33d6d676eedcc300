//! The optimizer's plan: for each task, in order of what it could save, the next thing worth doing within
//! the team's guardrails — validate the cheapest promising candidate, or why nothing is done. `leanlm
//! optimize --plan` prints it; the optimizer that acts on it validates, deploys to shadow and lets the
//! online rules promote (issue 26: the acting loop is the next step).

use leanlm_core::money::MONTH_MS;
use leanlm_deploy::Stage;
use leanlm_store::{Store, TaskRow};
use leanlm_validate::CatalogModel;
use serde::Serialize;

use crate::{ControlError, tasks, unix_ms};

/// The most logged calls a validation replays, and the reference's replays for its control run: the
/// defaults of `leanlm validate`, which a plan's cost estimate assumes.
const SAMPLE: f64 = 400.0;
const CONTROL: f64 = 50.0;

/// What the team allows the optimizer to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Tasks never touched, by id or name.
    pub exclude: Vec<String>,
    /// Only these tasks, by id or name (empty: every task).
    pub only: Vec<String>,
    /// Calls a task needs in the last 30 days before the optimizer acts on it.
    pub min_calls: u64,
    /// The most a plan may spend on validations, in USD.
    pub budget_usd: Option<f64>,
    /// How long a failed validation keeps its candidate out of the plan.
    pub retry_after_ms: i64,
}

impl Default for Guardrails {
    fn default() -> Guardrails {
        Guardrails {
            exclude: Vec::new(),
            only: Vec::new(),
            min_calls: 100,
            budget_usd: None,
            retry_after_ms: 7 * 86_400_000,
        }
    }
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub task_id: String,
    pub task_name: String,
    pub action: Action,
    /// The candidate to validate (a replacement SPEC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// What the validation would cost: the sample on the candidate and the control run on the reference.
    pub estimated_validation_usd: f64,
    /// What the candidate would save a month if it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected_monthly_savings_usd: Option<f64>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Validate the candidate; on a pass, deploy it to shadow.
    Validate,
    /// Nothing to do on this task now.
    Skip,
}

/// The plan over every task, most savings first.
pub fn plan(store: &Store, catalog: &[CatalogModel], guard: &Guardrails) -> Result<Vec<Step>, ControlError> {
    let now = unix_ms();
    let offers = tasks::offers(catalog);
    let ranked = tasks::ranked(store, Some(now - MONTH_MS), &offers)?;
    let policies = crate::policy::load(store)?;
    let mut spent = 0.0;
    let mut steps = Vec::new();
    for (task, _) in ranked {
        let skip = |reason: String| Step {
            task_id: task.id.clone(),
            task_name: task.name.clone(),
            action: Action::Skip,
            candidate: None,
            estimated_validation_usd: 0.0,
            projected_monthly_savings_usd: None,
            reason,
        };
        let named = |list: &[String]| list.iter().any(|k| *k == task.id || *k == task.name);
        if !guard.only.is_empty() && !named(&guard.only) {
            continue;
        }
        if named(&guard.exclude) {
            steps.push(skip("excluded by the guardrails ([optimizer] exclude)".into()));
            continue;
        }
        if task.calls < guard.min_calls {
            steps.push(skip(format!(
                "{} calls in the last 30 days; the optimizer acts from {}",
                task.calls, guard.min_calls
            )));
            continue;
        }
        if let Some(p) = policies.iter().find(|p| p.task_id == task.id) {
            match p.stage {
                Stage::RolledBack => {
                    steps.push(skip(format!(
                        "{} was rolled back: the optimizer leaves this task until a person deploys again",
                        p.replacement
                    )));
                    continue;
                }
                Stage::Shadow | Stage::Canary | Stage::Live => {
                    steps.push(skip(format!(
                        "{} is already deployed ({}); its online rules decide what comes next",
                        p.replacement, p.stage
                    )));
                    continue;
                }
                Stage::Observe => {}
            }
        }
        let step = next_candidate(store, catalog, &task, guard, now)?;
        let step = match step {
            Ok(mut s) => {
                if let Some(budget) = guard.budget_usd
                    && spent + s.estimated_validation_usd > budget
                {
                    s.action = Action::Skip;
                    s.reason = format!(
                        "its validation (~{}) would take the plan past its budget of {} ({} planned before it)",
                        leanlm_core::money::usd(s.estimated_validation_usd),
                        leanlm_core::money::usd(budget),
                        leanlm_core::money::usd(spent)
                    );
                } else {
                    spent += s.estimated_validation_usd;
                }
                s
            }
            Err(reason) => skip(reason),
        };
        steps.push(step);
    }
    Ok(steps)
}

/// The cheapest candidate to validate on `task` that saves something and has not failed lately, or why
/// there is none.
fn next_candidate(
    store: &Store,
    catalog: &[CatalogModel],
    task: &TaskRow,
    guard: &Guardrails,
    now: i64,
) -> Result<Result<Step, String>, ControlError> {
    let (usage, list) = tasks::candidates_for(store, catalog, task)?;
    if list.is_empty() {
        return Ok(Err(
            "no cheaper replacement applies (allow models under [catalog] allow)".into(),
        ));
    }
    let validations = store.validations(Some(&task.id), 500)?;
    let replayable = store.replayable_calls(&task.id, "")?.len() as f64;
    let sample = replayable.min(SAMPLE);
    let reference_per_call = usage.cost_per_call_usd;
    let mut options = Vec::new();
    let mut held = Vec::new();
    for c in list.iter().filter(|c| c.available) {
        let Some(saves) = c.monthly_savings_usd.filter(|s| *s > 0.0) else {
            continue;
        };
        if let Some(failed) = validations
            .iter()
            .find(|v| v.candidate == c.spec && !v.passed && now - v.created_at_ms < guard.retry_after_ms)
        {
            held.push(format!(
                "{} failed its validation {} ago",
                c.spec,
                ago(now - failed.created_at_ms)
            ));
            continue;
        }
        if validations.iter().any(|v| v.candidate == c.spec && v.passed) {
            held.push(format!("{} passed already: deploy it (`leanlm deploy`)", c.spec));
            continue;
        }
        let per_call = match (c.monthly_cost_usd, usage.calls_per_month) {
            (Some(cost), calls) if calls > 0.0 => cost / calls,
            _ => reference_per_call,
        };
        let estimate = sample * per_call + CONTROL.min(sample) * reference_per_call;
        options.push((estimate, saves, c));
    }
    // Cheapest to prove first; among equals, the one that saves more.
    options.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let Some((estimate, saves, c)) = options.first() else {
        return Ok(Err(if held.is_empty() {
            "no candidate saves anything on this task".into()
        } else {
            held.join("; ")
        }));
    };
    let mut reason = format!(
        "the cheapest of {} candidate{} to prove; {}",
        options.len(),
        if options.len() == 1 { "" } else { "s" },
        c.why
    );
    if !held.is_empty() {
        reason.push_str(&format!(" (not: {})", held.join("; ")));
    }
    Ok(Ok(Step {
        task_id: task.id.clone(),
        task_name: task.name.clone(),
        action: Action::Validate,
        candidate: Some(c.spec.clone()),
        estimated_validation_usd: *estimate,
        projected_monthly_savings_usd: Some(*saves),
        reason,
    }))
}

fn ago(ms: i64) -> String {
    let hours = ms as f64 / 3_600_000.0;
    if hours < 48.0 {
        format!("{hours:.0} hours")
    } else {
        format!("{:.0} days", hours / 24.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leanlm_core::{CallRecord, Replacement};
    use leanlm_store::ValidationRow;

    fn call(i: usize, task: &str) -> CallRecord {
        crate::testing::call(&format!("{task}-{i}"), task, unix_ms() - 86_400_000 + i as i64)
    }

    fn model(name: &str, input: f64, output: f64) -> CatalogModel {
        CatalogModel {
            name: name.into(),
            provider: "openai".into(),
            price: Some(leanlm_cost::Price {
                input,
                output,
                ..Default::default()
            }),
            caps: None,
            allowed: true,
        }
    }

    /// Three tasks: a busy one, a quiet one, one excluded by name.
    fn store() -> Store {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let mut calls: Vec<CallRecord> = (0..300).map(|i| call(i, "t_busy")).collect();
        calls.extend((0..20).map(|i| call(i, "t_quiet")));
        calls.extend((0..200).map(|i| call(i, "t_secret")));
        s.insert_batch(&calls).unwrap();
        s
    }

    fn catalog() -> Vec<CatalogModel> {
        vec![
            model("gpt-4o", 2.5, 10.0),
            model("small", 0.15, 0.6),
            model("tiny", 0.05, 0.4),
        ]
    }

    fn guard() -> Guardrails {
        Guardrails {
            exclude: vec!["t_secret-name".into()],
            ..Guardrails::default()
        }
    }

    fn step<'a>(plan: &'a [Step], task: &str) -> &'a Step {
        plan.iter().find(|s| s.task_id == task).unwrap()
    }

    #[test]
    fn the_cheapest_candidate_to_prove_is_planned_within_the_guardrails() {
        let s = store();
        let plan = plan(&s, &catalog(), &guard()).unwrap();
        let busy = step(&plan, "t_busy");
        assert_eq!(busy.action, Action::Validate, "{busy:?}");
        assert_eq!(busy.candidate.as_deref(), Some("model:tiny"), "the cheaper to validate");
        // 300 replayable calls on tiny (1,000 in / 10 out at 0.05 / 0.4) and 50 control calls on gpt-4o.
        let want = 300.0 * (1000.0 * 0.05 + 10.0 * 0.4) / 1e6 + 50.0 * 0.0026;
        assert!((busy.estimated_validation_usd - want).abs() < 1e-9, "{busy:?}");
        assert!(busy.projected_monthly_savings_usd.unwrap() > 0.0);
        let quiet = step(&plan, "t_quiet");
        assert_eq!(quiet.action, Action::Skip);
        assert!(quiet.reason.contains("20 calls"), "{}", quiet.reason);
        assert!(step(&plan, "t_secret").reason.contains("excluded"));
        assert_eq!(plan[0].task_id, "t_busy", "most savings first");
    }

    #[test]
    fn a_failed_candidate_waits_a_passed_one_is_for_deploying_and_a_budget_caps_the_plan() {
        let s = store();
        let failed = |candidate: &str, passed: bool, ago_ms: i64| ValidationRow {
            id: format!("v-{candidate}-{passed}"),
            task_id: "t_busy".into(),
            candidate: candidate.into(),
            passed,
            created_at_ms: unix_ms() - ago_ms,
            report: "{}".into(),
        };
        s.insert_validation(&failed("model:tiny", false, 3_600_000)).unwrap();
        let plan1 = plan(&s, &catalog(), &guard()).unwrap();
        let busy = step(&plan1, "t_busy");
        assert_eq!(busy.candidate.as_deref(), Some("model:small"), "{busy:?}");
        assert!(
            busy.reason.contains("model:tiny failed its validation 1 hours ago"),
            "{}",
            busy.reason
        );
        // A failure older than the retry window no longer holds the candidate back.
        let patient = Guardrails {
            retry_after_ms: 60_000,
            ..guard()
        };
        assert_eq!(
            step(&plan(&s, &catalog(), &patient).unwrap(), "t_busy")
                .candidate
                .as_deref(),
            Some("model:tiny")
        );
        s.insert_validation(&failed("model:small", true, 1000)).unwrap();
        let busy = step(&plan(&s, &catalog(), &guard()).unwrap(), "t_busy").clone();
        assert_eq!(busy.action, Action::Skip);
        assert!(busy.reason.contains("passed already"), "{}", busy.reason);
        // A budget too small for any validation plans none.
        let s = store();
        let tight = Guardrails {
            budget_usd: Some(0.01),
            ..guard()
        };
        let busy = step(&plan(&s, &catalog(), &tight).unwrap(), "t_busy").clone();
        assert_eq!(busy.action, Action::Skip);
        assert!(busy.reason.contains("budget"), "{}", busy.reason);
    }

    #[test]
    fn a_deployed_or_rolled_back_task_is_left_alone() {
        let mut s = store();
        let req = crate::policy::DeployRequest::new(
            "t_busy",
            Replacement::Model { model: "tiny".into() },
            Stage::Shadow,
            "test",
        );
        crate::policy::deploy(&mut s, req).unwrap();
        let busy = step(&plan(&s, &catalog(), &guard()).unwrap(), "t_busy").clone();
        assert!(busy.reason.contains("already deployed (shadow)"), "{}", busy.reason);
        crate::policy::rollback(&mut s, "t_busy", "bad answers", "test").unwrap();
        let busy = step(&plan(&s, &catalog(), &guard()).unwrap(), "t_busy").clone();
        assert_eq!(busy.action, Action::Skip);
        assert!(busy.reason.contains("rolled back"), "{}", busy.reason);
        // Only the tasks asked for.
        let only = Guardrails {
            only: vec!["t_quiet".into()],
            ..guard()
        };
        let p = plan(&s, &catalog(), &only).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].task_id, "t_quiet");
    }
}
