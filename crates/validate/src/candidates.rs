//! Which replacements apply to a task, and what each would save a month, before any quality check.

use std::collections::BTreeSet;

use leanlm_core::money::MONTH_MS;
use leanlm_core::{CallStats, CallStatus};
use leanlm_cost::{Capabilities, ModelKind, Price};
use serde::Serialize;

use crate::replacement::Replacement;

/// A model a deployment may use, as the catalog knows it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogModel {
    /// The name clients and replacements use.
    pub name: String,
    pub provider: String,
    pub price: Option<Price>,
    /// From the price table; `None` for models it does not know (self-hosted, fine-tuned).
    pub caps: Option<Capabilities>,
    /// Marked as a possible replacement (`[catalog] allow`).
    pub allowed: bool,
}

/// What a task's calls use that a replacement must support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Needs {
    pub tools: bool,
    /// Structured output against a JSON schema.
    pub schema: bool,
    /// Image input.
    pub vision: bool,
}

impl Needs {
    /// Reads the needs a task profile lists (`tools`, `JSON schema output`, `image input`).
    pub fn from_profile(needs: &[String]) -> Needs {
        let has = |what: &str| needs.iter().any(|n| n.contains(what));
        Needs {
            tools: has("tools"),
            schema: has("JSON schema"),
            vision: has("image input"),
        }
    }
}

/// What a task's traffic looks like, for pricing replacements.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskUsage {
    /// Calls in the last 30 days, scaled up when the log covers less than that.
    pub calls_per_month: f64,
    pub mean_input_tokens: f64,
    pub mean_output_tokens: f64,
    pub cost_per_call_usd: f64,
    /// The models serving the task now.
    pub models: BTreeSet<String>,
    /// The largest prompt plus answer seen.
    pub longest_tokens: u64,
    pub needs: Needs,
    /// Calls that repeat an earlier request exactly.
    pub duplicate_share: f64,
    /// How long the traffic behind the projection spans, in hours (a month at most). Under a day, the
    /// monthly figures scale it as if it were a whole day, and say so.
    pub observed_hours: f64,
}

impl TaskUsage {
    /// A note for figures projected from less than a day of traffic, which a day's cycle can move a lot.
    pub fn thin_evidence(&self) -> Option<String> {
        (self.observed_hours < 24.0 && self.calls_per_month > 0.0).then(|| {
            format!(
                "projected from {:.1} hours of traffic, counted as a day: the monthly figures are rough until a day \
                 or more is logged",
                self.observed_hours
            )
        })
    }
}

impl TaskUsage {
    /// Measures a task's last 30 days (before `now_ms`) from its calls' numbers.
    pub fn from_stats(stats: &[CallStats], now_ms: i64, needs: Needs) -> TaskUsage {
        let since = now_ms - MONTH_MS;
        let recent: Vec<&CallStats> = stats
            .iter()
            .filter(|s| s.started_at_ms >= since && s.status == CallStatus::Ok)
            .collect();
        if recent.is_empty() {
            return TaskUsage::default();
        }
        let first = recent.iter().map(|s| s.started_at_ms).min().unwrap_or(now_ms);
        // A log younger than a month is scaled up, but never from less than a day.
        let monthly = leanlm_core::money::Monthly::since(first, now_ms);
        let n = recent.len() as f64;
        let mut seen = std::collections::HashSet::new();
        let duplicates = recent
            .iter()
            .filter_map(|s| s.request_hash.as_ref())
            .filter(|h| !seen.insert(*h))
            .count();
        TaskUsage {
            calls_per_month: n * monthly.factor,
            mean_input_tokens: recent.iter().map(|s| s.input_tokens.unwrap_or(0) as f64).sum::<f64>() / n,
            mean_output_tokens: recent.iter().map(|s| s.output_tokens.unwrap_or(0) as f64).sum::<f64>() / n,
            cost_per_call_usd: recent.iter().filter_map(|s| s.cost_usd).sum::<f64>() / n,
            models: recent.iter().filter_map(|s| s.served_model.clone()).collect(),
            longest_tokens: recent
                .iter()
                .map(|s| s.input_tokens.unwrap_or(0) + s.output_tokens.unwrap_or(0))
                .max()
                .unwrap_or(0),
            needs,
            duplicate_share: duplicates as f64 / n,
            observed_hours: monthly.basis_days * 24.0,
        }
    }
}

/// One applicable replacement, priced.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub replacement: Replacement,
    /// The replacement's SPEC, for `leanlm validate --candidate`.
    pub spec: String,
    pub monthly_cost_usd: Option<f64>,
    /// The task's monthly spend now minus with the replacement, before any quality check.
    pub monthly_savings_usd: Option<f64>,
    pub why: String,
    /// False for kinds this version cannot validate or deploy yet.
    pub available: bool,
}

fn per_million(p: f64) -> String {
    if p >= 1.0 {
        format!("${p:.2}")
    } else {
        format!("${p:.3}")
    }
}

/// The replacements that apply to a task, most savings first.
pub fn candidates(task: &TaskUsage, catalog: &[CatalogModel]) -> Vec<Candidate> {
    let monthly = task.cost_per_call_usd * task.calls_per_month;
    let mut out = Vec::new();
    for m in catalog.iter().filter(|m| m.allowed && !task.models.contains(&m.name)) {
        let mut reasons = Vec::new();
        if let Some(c) = &m.caps {
            if c.kind != ModelKind::Chat
                || (task.needs.tools && !c.tools)
                || (task.needs.schema && !c.json_schema)
                || (task.needs.vision && !c.vision)
                || c.context < task.longest_tokens
            {
                continue;
            }
            if task.needs.tools {
                reasons.push("supports tools".to_owned());
            }
            if task.needs.schema {
                reasons.push("supports JSON schema output".to_owned());
            }
            if task.needs.vision {
                reasons.push("reads images".to_owned());
            }
            reasons.push(format!(
                "a {}k context holds the longest call ({} tokens)",
                c.context / 1000,
                task.longest_tokens
            ));
        } else {
            reasons.push("capabilities unknown (not in the price table): validation will tell".to_owned());
        }
        let cost = m.price.map(|p| {
            task.calls_per_month * (task.mean_input_tokens * p.input + task.mean_output_tokens * p.output) / 1e6
        });
        match (&m.price, cost) {
            (Some(p), Some(c)) => {
                if c >= monthly {
                    continue;
                }
                reasons.push(format!(
                    "{} in / {} out per million tokens",
                    per_million(p.input),
                    per_million(p.output)
                ));
            }
            _ => reasons.push("no price known: savings cannot be projected".to_owned()),
        }
        let replacement = Replacement::Model { model: m.name.clone() };
        out.push(Candidate {
            spec: replacement.to_string(),
            replacement,
            monthly_cost_usd: cost,
            monthly_savings_usd: cost.map(|c| monthly - c),
            why: reasons.join("; "),
            available: true,
        });
    }
    if task.duplicate_share > 0.0 {
        let saved = monthly * task.duplicate_share;
        out.push(Candidate {
            replacement: Replacement::ExactCache,
            spec: Replacement::ExactCache.to_string(),
            monthly_cost_usd: Some(monthly - saved),
            monthly_savings_usd: Some(saved),
            why: format!(
                "{:.1}% of calls repeat an earlier request exactly; switch it on with [cache.tasks] (validation replays only models in this version)",
                task.duplicate_share * 100.0
            ),
            available: false,
        });
    }
    // The cheapest applicable model and the current one make a router (trained from the cheap model's
    // validation and online outcomes) or a cascade (trained on the cheap model's answers to logged calls).
    if let (Some(cheap), Some(strong)) = (
        out.iter()
            .filter(|c| matches!(c.replacement, Replacement::Model { .. }))
            .max_by(|a, b| {
                a.monthly_savings_usd
                    .unwrap_or(f64::MIN)
                    .total_cmp(&b.monthly_savings_usd.unwrap_or(f64::MIN))
            })
            .and_then(|c| match &c.replacement {
                Replacement::Model { model } => Some(model.clone()),
                _ => None,
            }),
        task.models.iter().next().cloned(),
    ) {
        let router = Replacement::Router {
            cheap: cheap.clone(),
            strong: strong.clone(),
        };
        out.push(Candidate {
            spec: router.to_string(),
            why: format!(
                "serves each call on {cheap} or {strong}, as a router learned from {cheap}'s outcomes predicts; \
                 validate {cheap} with --full-sample, then `leanlm train-router --cheap {cheap}`; savings depend on \
                 the share kept cheap"
            ),
            replacement: router,
            monthly_cost_usd: None,
            monthly_savings_usd: None,
            available: true,
        });
        let why = format!(
            "asks {cheap} first and escalates the answers a learned acceptance score doubts to {strong}; \
             `leanlm train-cascade --cheap {cheap}` first; savings depend on the share accepted"
        );
        let cascade = Replacement::Cascade {
            cheap,
            then: Vec::new(),
            strong,
        };
        out.push(Candidate {
            spec: cascade.to_string(),
            why,
            replacement: cascade,
            monthly_cost_usd: None,
            monthly_savings_usd: None,
            available: true,
        });
    }
    out.sort_by(|a, b| {
        b.available.cmp(&a.available).then(
            b.monthly_savings_usd
                .unwrap_or(f64::MIN)
                .total_cmp(&a.monthly_savings_usd.unwrap_or(f64::MIN)),
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use leanlm_core::money::DAY_MS;

    fn stat(at: i64, input: u64, output: u64, cost: f64, hash: &str) -> CallStats {
        CallStats {
            started_at_ms: at,
            served_model: Some("gpt-4o".into()),
            status: CallStatus::Ok,
            input_tokens: Some(input),
            output_tokens: Some(output),
            cost_usd: Some(cost),
            latency_ms: 100.0,
            request_hash: Some(hash.into()),
            output_hash: None,
        }
    }

    fn model(name: &str, input: f64, output: f64, tools: bool) -> CatalogModel {
        CatalogModel {
            name: name.into(),
            provider: "openai".into(),
            price: Some(Price {
                input,
                output,
                ..Price::default()
            }),
            caps: Some(Capabilities {
                kind: ModelKind::Chat,
                context: 128_000,
                tools,
                json_schema: true,
                vision: true,
            }),
            allowed: true,
        }
    }

    #[test]
    fn usage_scales_a_short_log_to_a_month_and_counts_repeats() {
        let now = 10 * DAY_MS;
        // 100 calls over the last two days, one in five a repeat; one failed call that does not count.
        let mut stats: Vec<_> = (0..100)
            .map(|i| stat(now - 2 * DAY_MS + i * 1000, 1000, 10, 0.0026, &format!("h{}", i % 80)))
            .collect();
        stats.push(CallStats {
            status: CallStatus::UpstreamError,
            ..stat(now - 1, 5, 5, 0.0, "x")
        });
        let u = TaskUsage::from_stats(&stats, now, Needs::default());
        assert!((u.calls_per_month - 1500.0).abs() < 1.0, "{}", u.calls_per_month);
        assert!((u.duplicate_share - 0.2).abs() < 1e-9);
        assert_eq!(u.longest_tokens, 1010);
        assert!((u.cost_per_call_usd - 0.0026).abs() < 1e-12);
        assert!((u.observed_hours - 48.0).abs() < 0.1, "{}", u.observed_hours);
        assert_eq!(u.thin_evidence(), None);
        // Two hours of traffic are counted as a day, and the projection says so.
        let recent: Vec<_> = (0..100)
            .map(|i| stat(now - 2 * 3_600_000 + i * 1000, 1000, 10, 0.0026, &format!("r{i}")))
            .collect();
        let u = TaskUsage::from_stats(&recent, now, Needs::default());
        assert!((u.calls_per_month - 3000.0).abs() < 1.0, "{}", u.calls_per_month);
        assert!(
            u.thin_evidence().unwrap().contains("2.0 hours"),
            "{:?}",
            u.thin_evidence()
        );
    }

    #[test]
    fn cheaper_capable_allowed_models_are_priced_and_ranked() {
        let task = TaskUsage {
            calls_per_month: 10_000.0,
            mean_input_tokens: 1000.0,
            mean_output_tokens: 10.0,
            cost_per_call_usd: 0.0026,
            models: ["gpt-4o".to_owned()].into(),
            longest_tokens: 2000,
            needs: Needs {
                tools: true,
                schema: false,
                vision: true,
            },
            duplicate_share: 0.1,
            observed_hours: 720.0,
        };
        let blocked = model("tiny", 0.01, 0.01, false);
        let mut blind = model("blind", 0.01, 0.01, true);
        blind.caps.as_mut().unwrap().vision = false;
        let mut not_allowed = model("cheapest", 0.001, 0.001, true);
        not_allowed.allowed = false;
        let catalog = vec![
            model("gpt-4o", 2.5, 10.0, true),
            model("gpt-4o-mini", 0.15, 0.6, true),
            model("pricier", 5.0, 20.0, true),
            blocked,
            blind,
            not_allowed,
        ];
        let c = candidates(&task, &catalog);
        let specs: Vec<&str> = c.iter().map(|c| c.spec.as_str()).collect();
        assert_eq!(specs[0], "model:gpt-4o-mini", "{specs:?}");
        assert!(!specs.contains(&"model:pricier") && !specs.contains(&"model:tiny"));
        assert!(!specs.contains(&"model:blind"), "the task sends images");
        assert!(!specs.contains(&"model:cheapest") && !specs.contains(&"model:gpt-4o"));
        // 10,000 calls of 1,000 + 10 tokens at $0.15 / $0.60: $1.56 a month against $26.
        let mini = &c[0];
        assert!((mini.monthly_cost_usd.unwrap() - 1.56).abs() < 1e-9);
        assert!((mini.monthly_savings_usd.unwrap() - 24.44).abs() < 1e-9);
        assert!(mini.why.contains("supports tools"), "{}", mini.why);
        let cache = c.iter().find(|c| c.spec == "cache:exact").unwrap();
        assert!((cache.monthly_savings_usd.unwrap() - 2.6).abs() < 1e-9);
        assert!(c.iter().any(|c| c.spec == "cascade:gpt-4o-mini,gpt-4o" && c.available));
        assert!(c.iter().any(|c| c.spec == "router:gpt-4o-mini,gpt-4o" && c.available));
    }
}
