//! The validation report: what was decided, by which rule, on what evidence. Stored as JSON, rendered as
//! Markdown for humans.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

pub use leanlm_profile::Percentiles;

use crate::stats::Rate;

/// Which rule decided the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The agreement interval's lower end cleared the bound.
    AgreementClears,
    /// The agreement interval's upper end fell under the bound.
    AgreementBelow,
    /// Hard failures (invalid JSON, unknown labels, refusals) passed their own bound.
    HardFailures,
    /// The sample ran out with the bound inside the interval.
    Inconclusive,
    /// The cost cap stopped the replay before the evidence decided.
    CostCap,
    /// Too many replays failed for the rest to be trusted.
    ReplayErrors,
    /// The scorer agreed where a stronger check says the answers differ, often enough that the candidate
    /// could be under the bound.
    ScorerUnreliable,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AgreementClears => "agreement_clears",
            Rule::AgreementBelow => "agreement_below",
            Rule::HardFailures => "hard_failures",
            Rule::Inconclusive => "inconclusive",
            Rule::CostCap => "cost_cap",
            Rule::ReplayErrors => "replay_errors",
            Rule::ScorerUnreliable => "scorer_unreliable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    pub rule: Rule,
    pub reason: String,
}

/// How far a cheap scorer (similarity, regex) can be trusted on this task, measured before its agreement
/// is: its false agreements, found by the judge on a sample of the pairs it said agree, or, without a judge,
/// on reference answers with one fact changed (taken from another request's answer), which should not agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerCheck {
    /// `judge:MODEL`, or `answers with one fact changed`.
    pub against: String,
    pub checked: u64,
    pub false_agreements: u64,
    /// With the judge: the share of the scorer's agreements the judge rejects. Without: the share of
    /// changed answers the scorer says agree with the original.
    pub false_agreement_rate: f64,
    /// How much of the measured agreement may be false: subtracted from its lower end before the bound.
    pub inflation: f64,
    /// The scorer to use instead when this one cannot be trusted.
    pub suggest: String,
}

/// A learned replacement (router, cascade) against a random router that sends the same share of the same
/// calls to the cheap model: the learned one earns its complexity only where it is better than that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chance {
    /// The share of calls the learned replacement served with a cheap model.
    pub cheap_share: f64,
    pub agreement: f64,
    /// Expected agreement of the random router at the same share, from the cheap model's agreement on every
    /// sampled call (the ones the learned replacement kept from it were replayed on it too).
    pub random_agreement: f64,
    /// The cheap model's agreement on the calls the learned replacement gave it, and on the others.
    pub cheap_agreement_on_kept: f64,
    pub cheap_agreement_on_others: f64,
    pub cost_per_call_usd: Option<f64>,
    pub random_cost_per_call_usd: Option<f64>,
    /// True when the learned replacement picks the cheap model's calls better than chance (one-sided
    /// two-proportion test at 95%).
    pub better_than_chance: bool,
}

/// What a validation spent on one purpose (`validation`: the candidate's replays, `control`: the reference
/// replayed on itself, `judge`: judge calls) and model. `spend --by purpose` reads these from the reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendEntry {
    pub purpose: String,
    pub model: String,
    pub calls: u64,
    pub usd: f64,
}

/// One answer next to the reference, for the report's failing examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub call_id: String,
    /// The request's last user turn, shortened.
    pub input: String,
    pub reference: String,
    pub candidate: String,
    /// What the scorer saw.
    pub note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub task_id: String,
    pub task_name: String,
    /// The replacement's SPEC, e.g. `model:gpt-4o-mini`.
    pub candidate: String,
    /// The models that served the sampled calls, with counts.
    pub reference_models: BTreeMap<String, u64>,
    pub scorer: String,
    pub created_at_ms: i64,
    pub verdict: Verdict,
    /// Usable logged calls of the task (successful, with both bodies, not used for training).
    pub available_calls: u64,
    /// Calls sampled; the verdict may have needed fewer (`scored`).
    pub sample_size: u64,
    /// Where the evidence was looked at, and the per-look confidence that keeps the overall one.
    pub looks: Vec<usize>,
    pub per_look_confidence: f64,
    pub seed: u64,
    /// Calls replayed and scored before the verdict was decided.
    pub scored: u64,
    /// Replays that failed at the provider: counted, never scored.
    pub replay_errors: u64,
    pub agreement: Rate,
    /// The reference replayed against its own logged answers: how consistent the reference itself is.
    pub control: Option<Rate>,
    /// For a cheap scorer with a judge at hand: how often it reached the judge's verdict on the control run's
    /// pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_vs_judge: Option<Rate>,
    /// How far the scorer was trusted, for the cheap scorers (similarity, regex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer_check: Option<ScorerCheck>,
    /// For a router or cascade: the comparison with a random router at the same share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<Chance>,
    /// The agreement the candidate had to clear, and where it came from.
    pub bound: f64,
    pub bound_rule: String,
    pub hard_failures: BTreeMap<String, u64>,
    pub hard_failure_rate: f64,
    pub hard_failure_bound: f64,
    pub reference_cost_per_call_usd: Option<f64>,
    pub candidate_cost_per_call_usd: Option<f64>,
    pub reference_latency_ms: Option<Percentiles>,
    pub candidate_latency_ms: Option<Percentiles>,
    /// The task's monthly volume at the candidate's price instead of the reference's.
    pub monthly_calls: f64,
    /// Net of the audits' cost (`monthly_audit_cost_usd`); the validation's own cost is apart, once.
    pub projected_monthly_savings_usd: Option<f64>,
    #[serde(default)]
    pub monthly_audit_cost_usd: Option<f64>,
    /// What the validation itself cost: candidate, control and judge calls.
    pub validation_cost_usd: f64,
    /// That cost by purpose and model.
    #[serde(default)]
    pub spend: Vec<SpendEntry>,
    pub duration_ms: f64,
    pub failures: Vec<Example>,
    /// A few replay error messages.
    pub errors: Vec<String>,
    /// Every scored call's outcome: the training data of a learned router. Stored apart from the report.
    #[serde(skip)]
    pub outcomes: Vec<CallOutcome>,
}

/// How one replayed call scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub call_id: String,
    pub agreed: bool,
    pub hard: Option<String>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn usd(x: Option<f64>) -> String {
    x.map(leanlm_core::money::usd).unwrap_or_else(|| "unknown".into())
}

fn cell(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = one_line.chars().take(160).collect();
    let short = if one_line.chars().count() > 160 {
        format!("{short}…")
    } else {
        short
    };
    short.replace('|', "\\|")
}

impl Report {
    /// A Markdown rendering for people: verdict first, then the numbers, then the failing examples.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.verdict.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "# Validation {}: {verdict}\n", self.id);
        let _ = writeln!(
            s,
            "Task **{}** (`{}`), candidate `{}`, scorer `{}`.\n",
            self.task_name, self.task_id, self.candidate, self.scorer
        );
        let _ = writeln!(
            s,
            "**{verdict}** ({}): {}\n",
            self.verdict.rule.as_str(),
            self.verdict.reason
        );
        let a = &self.agreement;
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(
            s,
            "| Agreement | {} ({} of {}), {} interval {} – {} |",
            pct(a.rate),
            a.successes,
            a.n,
            crate::stats::confidence_label(a.confidence),
            pct(a.low),
            pct(a.high)
        );
        match &self.control {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "| Control (reference vs itself) | {} ({} of {}) |",
                    pct(c.rate),
                    c.successes,
                    c.n
                );
            }
            None => {
                let _ = writeln!(s, "| Control (reference vs itself) | not run |");
            }
        }
        let _ = writeln!(s, "| Bound | {} ({}) |", pct(self.bound), self.bound_rule);
        if let Some(c) = &self.chance {
            let _ = writeln!(
                s,
                "| Against chance | {} of calls on the cheap model; agreement {} against {} for a random split at that share, cost per call {} against {}: {} |",
                pct(c.cheap_share),
                pct(c.agreement),
                pct(c.random_agreement),
                usd(c.cost_per_call_usd),
                usd(c.random_cost_per_call_usd),
                if c.better_than_chance {
                    "better than chance"
                } else {
                    "no better than chance: a fixed split would do as well"
                }
            );
        }
        if let Some(c) = &self.control_vs_judge {
            let _ = writeln!(
                s,
                "| Scorer against the judge on the control | same verdict on {} of {} ({}) |",
                c.successes,
                c.n,
                pct(c.rate)
            );
        }
        if let Some(c) = &self.scorer_check {
            let _ = writeln!(
                s,
                "| Scorer check | against {}: {} false agreements of {} checked ({}); up to {} of the agreement may be false |",
                c.against,
                c.false_agreements,
                c.checked,
                pct(c.false_agreement_rate),
                pct(c.inflation)
            );
        }
        let hard: Vec<String> = self.hard_failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "| Hard failures | {} (bound {}){} |",
            pct(self.hard_failure_rate),
            pct(self.hard_failure_bound),
            if hard.is_empty() {
                String::new()
            } else {
                format!(": {}", hard.join(", "))
            }
        );
        let _ = writeln!(
            s,
            "| Sample | {} scored of {} sampled ({} usable logged calls), looks at {:?} at {} each, seed {} |",
            self.scored,
            self.sample_size,
            self.available_calls,
            self.looks,
            crate::stats::confidence_label(self.per_look_confidence),
            self.seed
        );
        let _ = writeln!(s, "| Replay errors | {} |", self.replay_errors);
        let _ = writeln!(
            s,
            "| Cost per call | candidate {} vs reference {} |",
            usd(self.candidate_cost_per_call_usd),
            usd(self.reference_cost_per_call_usd)
        );
        let lat = |p: &Option<Percentiles>| match p {
            Some(p) => format!("p50 {:.0} ms, p95 {:.0} ms", p.p50, p.p95),
            None => "unknown".into(),
        };
        let _ = writeln!(
            s,
            "| Latency | candidate {} vs reference {} |",
            lat(&self.candidate_latency_ms),
            lat(&self.reference_latency_ms)
        );
        let _ = writeln!(
            s,
            "| Projected monthly savings | {} ({:.0} calls a month; net of {} of audits) |",
            usd(self.projected_monthly_savings_usd),
            self.monthly_calls,
            usd(self.monthly_audit_cost_usd)
        );
        let _ = writeln!(
            s,
            "| This validation cost | {} in {:.1} s |",
            usd(Some(self.validation_cost_usd)),
            self.duration_ms / 1000.0
        );
        if !self.failures.is_empty() {
            let _ = writeln!(
                s,
                "\n## Disagreements\n\n| Call | Input | Reference | Candidate | Why |\n|---|---|---|---|---|"
            );
            for f in &self.failures {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} |",
                    f.call_id,
                    cell(&f.input),
                    cell(&f.reference),
                    cell(&f.candidate),
                    cell(&f.note)
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n## Replay errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {}", cell(e));
            }
        }
        s
    }
}
