//! `leanlm optimize`: one pass of the loop over every task, within guardrails. With `--plan` it prints what
//! it would do and does nothing; without, it validates each planned candidate (cheapest to prove first,
//! within the budget) and deploys a passing one to shadow with automatic promotion, as actor `optimizer`.
//! A failed validation is stored, which keeps its candidate out of the next plans for `--retry-days`.

use anyhow::Context;
use leanlm_control::optimizer::{Action, Guardrails, Step, plan};
use leanlm_control::policy::DeployRequest;
use leanlm_deploy::Stage;

use crate::StoreArgs;
use crate::show::money;

#[derive(clap::Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print the plan and do nothing.
    #[arg(long)]
    plan: bool,
    /// The most to spend on validations in this pass, in USD (default: [optimizer] budget_usd; none).
    #[arg(long)]
    budget: Option<f64>,
    /// Only these tasks (id or name); every task when none is given.
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Never these tasks (id or name), besides [optimizer] exclude.
    #[arg(long)]
    exclude: Vec<String>,
    /// Calls a task needs in the last 30 days before the optimizer acts on it (default: [optimizer]
    /// min_calls, 100).
    #[arg(long)]
    min_calls: Option<u64>,
    /// Days a failed validation keeps its candidate out of the plan (default: [optimizer] retry_after_days, 7).
    #[arg(long)]
    retry_days: Option<f64>,
    #[arg(long)]
    json: bool,
}

/// The optimizer's name in the policy log.
const ACTOR: &str = "optimizer";

pub fn run(mut a: OptimizeArgs) -> anyhow::Result<()> {
    if let Some(b) = a.budget {
        anyhow::ensure!(b.is_finite() && b > 0.0, "--budget must be a positive amount of USD");
    }
    if let Some(r) = a.retry_days {
        anyhow::ensure!(
            r.is_finite() && r >= 0.0,
            "--retry-days must be a number of days, 0 or more"
        );
    }
    // The flags over the config's [optimizer] guardrails.
    let config = a.store.config()?;
    let settings = &config.optimizer;
    a.budget = a.budget.or(settings.budget_usd);
    let retry_days = a.retry_days.unwrap_or(settings.retry_after_days);
    a.retry_days = Some(retry_days);
    let guard = Guardrails {
        exclude: settings.exclude.iter().chain(&a.exclude).cloned().collect(),
        only: a.tasks.clone(),
        min_calls: a.min_calls.unwrap_or(settings.min_calls),
        budget_usd: a.budget,
        retry_after_ms: (retry_days * 86_400_000.0) as i64,
    };
    let store = a.store.open()?;
    let catalog = leanlm_gateway::route::catalog(&config);
    let steps = plan(&store, &catalog, &guard)?;
    drop(store);
    if a.plan {
        return print_plan(&steps, a.json);
    }
    let mut spent = 0.0;
    let mut done = Vec::new();
    for first in steps {
        // Cheapest first until one passes: after a failure (now stored), the task is planned again.
        let mut step = first;
        let mut tried = std::collections::HashSet::new();
        loop {
            // Each candidate once a pass, even where failures are kept out for no time at all.
            if !step.candidate.as_ref().is_none_or(|c| tried.insert(c.clone())) {
                break;
            }
            match attempt(&a, &step, &mut spent, &mut done)? {
                Outcome::Failed => {
                    let config = a.store.config()?;
                    let again = Guardrails {
                        only: vec![step.task_id.clone()],
                        budget_usd: a.budget.map(|b| (b - spent).max(0.0)),
                        ..guard.clone()
                    };
                    let store = a.store.open()?;
                    match plan(&store, &leanlm_gateway::route::catalog(&config), &again)?
                        .into_iter()
                        .next()
                    {
                        Some(next) => step = next,
                        None => break,
                    }
                }
                Outcome::Deployed | Outcome::Skipped => break,
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"spent_usd": spent, "steps": done}))?
        );
    } else {
        println!("Spent {} on validations.", money(spent));
    }
    Ok(())
}

enum Outcome {
    Skipped,
    Failed,
    Deployed,
}

/// Does one step of the plan: validates its candidate, and deploys it to shadow when it passes.
fn attempt(a: &OptimizeArgs, s: &Step, spent: &mut f64, done: &mut Vec<serde_json::Value>) -> anyhow::Result<Outcome> {
    let (Action::Validate, Some(candidate)) = (s.action, &s.candidate) else {
        if !a.json {
            println!("{} ({}): nothing to do: {}", s.task_name, s.task_id, s.reason);
        }
        done.push(serde_json::json!({"task": s.task_id, "action": "skip", "reason": s.reason}));
        return Ok(Outcome::Skipped);
    };
    let left = a.budget.map(|b| b - *spent);
    if left.is_some_and(|l| l < s.estimated_validation_usd) {
        if !a.json {
            println!("{} ({}): the budget is spent", s.task_name, s.task_id);
        }
        done.push(serde_json::json!({"task": s.task_id, "action": "skip", "reason": "the budget is spent"}));
        return Ok(Outcome::Skipped);
    }
    if !a.json {
        println!(
            "{} ({}): validating {candidate} (~{}; would save {} a month)",
            s.task_name,
            s.task_id,
            money(s.estimated_validation_usd),
            s.projected_monthly_savings_usd.map(money).unwrap_or_else(|| "-".into())
        );
    }
    let args = crate::validate::ValidateArgs {
        task: s.task_id.clone(),
        candidate: candidate.clone(),
        sample: 400,
        control: 50,
        scorer: None,
        judge_model: None,
        bound: 0.95,
        absolute_bound: None,
        hard_bound: 0.01,
        // The budget caps the validation itself, not only the plan's estimate.
        max_cost: left,
        concurrency: 8,
        seed: None,
        dry_run: false,
        full_sample: false,
        json: false,
        quiet: true,
    };
    let passed = crate::validate::validate(&a.store, args)
        .with_context(|| format!("validating {candidate} on {}", s.task_id))?;
    let mut store = a.store.open()?;
    let latest = store
        .validations(Some(&s.task_id), 1)?
        .into_iter()
        .next()
        .context("the validation was not stored")?;
    let report: leanlm_validate::Report = serde_json::from_str(&latest.report).context("reading the stored report")?;
    *spent += report.validation_cost_usd;
    if !passed {
        if !a.json {
            println!(
                "  FAIL: {} (kept out for {} days)",
                report.verdict.reason,
                a.retry_days.unwrap_or_default()
            );
        }
        done.push(
            serde_json::json!({"task": s.task_id, "action": "validated", "candidate": candidate,
            "passed": false, "validation": latest.id, "reason": report.verdict.reason}),
        );
        return Ok(Outcome::Failed);
    }
    let request = DeployRequest {
        auto_promote: true,
        ..DeployRequest::new(
            s.task_id.clone(),
            candidate.parse().map_err(anyhow::Error::msg)?,
            Stage::Shadow,
            ACTOR,
        )
    };
    let policy = leanlm_control::policy::deploy(&mut store, request)?;
    if !a.json {
        println!(
            "  PASS: {}; deployed to shadow (v{}): its online evidence promotes it through canary to live",
            report.verdict.reason, policy.version
        );
    }
    done.push(
        serde_json::json!({"task": s.task_id, "action": "deployed", "candidate": candidate,
        "passed": true, "validation": latest.id, "stage": "shadow", "version": policy.version}),
    );
    Ok(Outcome::Deployed)
}

fn print_plan(steps: &[Step], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(steps)?);
        return Ok(());
    }
    let mut t = crate::show::table(["task", "do", "candidate", "validation ~", "saves / month", "why"]);
    for s in steps {
        t.add_row([
            format!("{} ({})", s.task_name, s.task_id),
            match s.action {
                Action::Validate => "validate".into(),
                Action::Skip => "-".into(),
            },
            s.candidate.clone().unwrap_or_else(|| "-".into()),
            if s.action == Action::Validate {
                money(s.estimated_validation_usd)
            } else {
                "-".into()
            },
            s.projected_monthly_savings_usd.map(money).unwrap_or_else(|| "-".into()),
            s.reason.clone(),
        ]);
    }
    println!("{t}");
    let total: f64 = steps.iter().map(|s| s.estimated_validation_usd).sum();
    println!(
        "The plan would spend about {} on validations; each passing candidate goes to shadow and is promoted by its \
         online evidence. Nothing was done (--plan).",
        money(total)
    );
    Ok(())
}
