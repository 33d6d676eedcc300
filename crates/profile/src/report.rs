//! A task's profile over a window of its calls: volume, spend, token and latency percentiles, errors,
//! models, duplicates, distinct answers, and its type with the reasons.

use std::collections::{BTreeMap, HashSet};

use leanlm_core::{CallRecord, CallStats, CallStatus};
use leanlm_wire::anthropic::MessagesRequest;
use leanlm_wire::openai::{ChatRequest, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{CallSignals, TypeVerdict, classify, mask};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

impl Percentiles {
    /// The p50 and p95 of some values (nearest rank); `None` for none.
    pub fn of(values: Vec<f64>) -> Option<Percentiles> {
        percentiles(values)
    }
}

fn percentiles(mut v: Vec<f64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some(Percentiles {
        p50: at(0.5),
        p95: at(0.95),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskProfile {
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub spend_usd: f64,
    pub input_tokens: Option<Percentiles>,
    pub output_tokens: Option<Percentiles>,
    pub latency_ms: Option<Percentiles>,
    /// Calls per served model.
    pub models: BTreeMap<String, u64>,
    /// Share of calls whose request exactly repeats an earlier one in the window (cache potential).
    pub duplicate_share: f64,
    /// Distinct answers among the calls whose answer was logged.
    pub distinct_outputs: u64,
    /// The masked template the task was recognised by, from its latest call.
    pub template: Option<String>,
    #[serde(rename = "type")]
    pub verdict: Option<TypeVerdict>,
    /// What the task would cost on the cheapest catalogued model that can do its work.
    pub savings: Option<Savings>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Savings {
    /// What the work needs from a model (tools, a JSON schema, a context window).
    pub needs: Vec<String>,
    pub cheapest_model: String,
    /// The window's calls priced on that model, every input token uncached.
    pub cost_usd: f64,
    /// Spend minus that cost: the gap between what is paid and what the work could cost.
    pub savings_usd: f64,
    /// That gap per 30-day month, the one savings figure every view shows (`leanlm_core::money::Monthly`).
    pub monthly_savings_usd: f64,
    /// Days of traffic `monthly_savings_usd` extrapolates from.
    pub basis_days: f64,
}

/// A model a task could move to: one this deployment routes to and allows as a replacement.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub name: String,
    pub price: leanlm_cost::Price,
    pub caps: leanlm_cost::Capabilities,
}

/// Prices the task's token volume on every offered model (every model of the bundled price table when
/// `offers` is `None`) that supports what the task uses and keeps the cheapest. An upper bound on what a
/// cheaper model could save, before any quality check.
fn savings(
    stats: &[CallStats],
    signals: &[CallSignals],
    spend: f64,
    offers: Option<&[Offer]>,
    now_ms: i64,
) -> Option<Savings> {
    use leanlm_cost::{ModelKind, PriceTable};
    let priced: Vec<(u64, u64)> = stats
        .iter()
        .filter_map(|s| Some((s.input_tokens?, s.output_tokens.unwrap_or(0))))
        .collect();
    if priced.is_empty() {
        return None;
    }
    let embeddings = signals.iter().any(|s| s.embeddings);
    let tools = signals.iter().any(|s| s.tools_offered);
    let schema = signals.iter().any(|s| s.schema_requested);
    let images = signals.iter().any(|s| s.images);
    let longest = priced.iter().map(|p| p.0 + p.1).max().unwrap_or(0);
    let mut needs = vec![format!("context of {longest} tokens")];
    if tools {
        needs.push("tools".into());
    }
    if schema {
        needs.push("JSON schema output".into());
    }
    if images {
        needs.push("image input".into());
    }
    if embeddings {
        needs.push("embeddings".into());
    }
    let kind = if embeddings {
        ModelKind::Embedding
    } else {
        ModelKind::Chat
    };
    let table;
    let models: Vec<(&str, leanlm_cost::Price, leanlm_cost::Capabilities)> = match offers {
        Some(o) => o.iter().map(|o| (o.name.as_str(), o.price, o.caps)).collect(),
        None => {
            table = PriceTable::active();
            table.models().into_iter().map(|(n, e)| (n, e.price, e.caps)).collect()
        }
    };
    let (model, cost) = models
        .into_iter()
        .filter(|(_, _, caps)| {
            caps.kind == kind
                && caps.context >= longest
                && (!tools || caps.tools)
                && (!schema || caps.json_schema)
                && (!images || caps.vision)
        })
        .map(|(name, price, _)| {
            let cost: f64 = priced
                .iter()
                .map(|(i, o)| (*i as f64 * price.input + *o as f64 * price.output) / 1_000_000.0)
                .sum();
            (name, cost)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let first = stats.iter().map(|s| s.started_at_ms).min().unwrap_or(now_ms);
    let monthly = leanlm_core::money::Monthly::since(first, now_ms);
    Some(Savings {
        needs,
        cheapest_model: model.to_owned(),
        cost_usd: cost,
        savings_usd: spend - cost,
        monthly_savings_usd: (spend - cost) * monthly.factor,
        basis_days: monthly.basis_days,
    })
}

/// Profiles a task from the numbers of its calls and a sample of whole calls (for typing). Its savings are
/// priced on `offers`, the models it may move to (`None`: every model of the bundled price table), and
/// projected to a month as seen at `now_ms`.
pub fn profile(
    stats: &[CallStats],
    samples: &[CallRecord],
    chat_origin: bool,
    offers: Option<&[Offer]>,
    now_ms: i64,
) -> TaskProfile {
    let calls = stats.len() as u64;
    let errors = stats.iter().filter(|s| s.status != CallStatus::Ok).count() as u64;
    let mut models = BTreeMap::new();
    for s in stats {
        if let Some(m) = &s.served_model {
            *models.entry(m.clone()).or_insert(0) += 1;
        }
    }
    let mut seen = HashSet::new();
    let mut hashed = 0u64;
    let mut dups = 0u64;
    for h in stats.iter().filter_map(|s| s.request_hash.as_ref()) {
        hashed += 1;
        if !seen.insert(h) {
            dups += 1;
        }
    }
    let outputs: HashSet<&String> = stats.iter().filter_map(|s| s.output_hash.as_ref()).collect();
    let ok: Vec<&CallStats> = stats.iter().filter(|s| s.status == CallStatus::Ok).collect();
    let signals: Vec<CallSignals> = samples.iter().filter_map(signals_of).collect();
    let template = samples.first().and_then(instructions);
    let verdict = (!signals.is_empty() || chat_origin)
        .then(|| classify(template.as_deref().unwrap_or(""), chat_origin, &signals));
    let spend_usd: f64 = stats.iter().filter_map(|s| s.cost_usd).sum();
    TaskProfile {
        calls,
        errors,
        error_rate: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
        spend_usd,
        input_tokens: percentiles(ok.iter().filter_map(|s| s.input_tokens).map(|t| t as f64).collect()),
        output_tokens: percentiles(ok.iter().filter_map(|s| s.output_tokens).map(|t| t as f64).collect()),
        latency_ms: percentiles(ok.iter().map(|s| s.latency_ms).collect()),
        models,
        duplicate_share: if hashed == 0 { 0.0 } else { dups as f64 / hashed as f64 },
        distinct_outputs: outputs.len() as u64,
        template,
        verdict,
        savings: savings(stats, &signals, spend_usd, offers, now_ms),
    }
}

/// The masked system prompt and first user turn of a logged call.
fn instructions(call: &CallRecord) -> Option<String> {
    let body = call.request_body.as_deref()?;
    let shape = match call.client_format.as_str() {
        "anthropic" => {
            let r = MessagesRequest::parse(body.as_bytes()).ok()?;
            (
                r.system.as_ref().map(|s| s.text()).unwrap_or_default(),
                r.messages.first().map(|m| m.content.text()),
            )
        }
        _ => {
            let r = ChatRequest::parse(body.as_bytes()).ok()?;
            let system: Vec<String> = r
                .messages
                .iter()
                .filter(|m| matches!(m.role, Role::System | Role::Developer))
                .filter_map(|m| m.content.as_ref().map(|c| c.text()))
                .collect();
            let user = r
                .messages
                .iter()
                .find(|m| m.role == Role::User)
                .and_then(|m| m.content.as_ref().map(|c| c.text()));
            (system.join("\n\n"), user)
        }
    };
    let user = shape.1.map(|u| mask::skeleton(&u)).filter(|u| mask::is_template(u));
    let text = [Some(mask::instructions_skeleton(&shape.0)), user]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>();
    (!text.is_empty()).then(|| text.join("\n\n"))
}

/// What typing needs from one logged call.
fn signals_of(call: &CallRecord) -> Option<CallSignals> {
    let request: Value = serde_json::from_str(call.request_body.as_deref()?).ok()?;
    let response: Value = call
        .response_body
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let turns = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .count()
        })
        .unwrap_or(0) as u32;
    let tool_called = response
        .pointer("/choices/0/message/tool_calls")
        .is_some_and(|t| !t.is_null())
        || response.get("content").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        });
    let usage = call.usage.unwrap_or_default();
    // The last user turn's text: the material a summary condenses (a system prompt or a history is not).
    let user_chars = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .map(|c| match c {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|t| t.chars().count())
                .sum(),
            _ => 0,
        })
        .unwrap_or(0) as u64;
    Some(CallSignals {
        user_chars,
        embeddings: call.endpoint == "embeddings",
        turns,
        json_requested: request
            .get("response_format")
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text"),
        schema_requested: request.pointer("/response_format/type").and_then(Value::as_str) == Some("json_schema"),
        tools_offered: request.get("tools").is_some_and(|t| !t.is_null()),
        images: has_images(&request),
        tool_called,
        input_tokens: usage.prompt_tokens(),
        output_tokens: usage.output_tokens,
        output: leanlm_wire::output_text(&response),
    })
}

/// True when a request sends an image: an OpenAI `image_url` part or an Anthropic `image` block.
fn has_images(request: &Value) -> bool {
    request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|part| {
            matches!(
                part.get("type").and_then(Value::as_str),
                Some("image_url" | "image" | "input_image")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two days after the test calls' time 0: their savings are projected to a month from two days.
    const NOW: i64 = 2 * leanlm_core::money::DAY_MS;

    fn stat(input: u64, output: u64, cost: f64) -> CallStats {
        CallStats {
            started_at_ms: 0,
            served_model: Some("gpt-4o".into()),
            status: CallStatus::Ok,
            input_tokens: Some(input),
            output_tokens: Some(output),
            cost_usd: Some(cost),
            latency_ms: 1.0,
            request_hash: None,
            output_hash: None,
        }
    }

    #[test]
    fn savings_use_the_cheapest_model_that_can_do_the_work() {
        // 1,000 calls of 1,000 input and 10 output tokens, paid at gpt-4o prices: $2.60.
        let stats: Vec<_> = (0..1000).map(|_| stat(1000, 10, 0.0026)).collect();
        let plain = vec![CallSignals::default()];
        let s = savings(&stats, &plain, 2.6, None, NOW).unwrap();
        // The cheapest chat model in the table for this mix: Llama 3.1 8B on Groq at $0.05 / $0.08 per million.
        assert_eq!(s.cheapest_model, "llama-3.1-8b-instant");
        assert!((s.cost_usd - (1000.0 * (1000.0 * 0.05 + 10.0 * 0.08) / 1e6)).abs() < 1e-9);
        assert!((s.savings_usd - (2.6 - s.cost_usd)).abs() < 1e-9);
        assert_eq!(s.basis_days, 2.0);
        assert!(
            (s.monthly_savings_usd - 15.0 * s.savings_usd).abs() < 1e-9,
            "two days are a fifteenth of a month"
        );
        // Among the models this deployment offers, only those: not a model it cannot route to.
        let table = leanlm_cost::PriceTable::bundled();
        let offer = |name: &str| {
            let e = table.lookup(name).unwrap();
            Offer {
                name: name.into(),
                price: e.price,
                caps: e.caps,
            }
        };
        let offers = [offer("gpt-4o-mini"), offer("gpt-4o")];
        let s = savings(&stats, &plain, 2.6, Some(&offers), NOW).unwrap();
        assert_eq!(s.cheapest_model, "gpt-4o-mini");
        assert!(
            savings(&stats, &plain, 2.6, Some(&[]), NOW).is_none(),
            "nothing offered, no savings claimed"
        );

        // Needing tools and a schema rules out models without them; a long context rules out small windows.
        let tools = vec![CallSignals {
            tools_offered: true,
            schema_requested: true,
            ..Default::default()
        }];
        let s = savings(&stats, &tools, 2.6, None, NOW).unwrap();
        let e = leanlm_cost::PriceTable::bundled().lookup(&s.cheapest_model).unwrap();
        assert!(e.caps.tools && e.caps.json_schema, "{}", s.cheapest_model);
        let images = vec![CallSignals {
            images: true,
            ..Default::default()
        }];
        let s = savings(&stats, &images, 2.6, None, NOW).unwrap();
        assert!(s.needs.contains(&"image input".to_owned()));
        let e = leanlm_cost::PriceTable::bundled().lookup(&s.cheapest_model).unwrap();
        assert!(e.caps.vision, "{}", s.cheapest_model);
        assert_ne!(s.cheapest_model, "llama-3.1-8b-instant");
        assert!(has_images(
            &serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
        ));
        assert!(!has_images(
            &serde_json::json!({"messages": [{"role": "user", "content": "no image"}]})
        ));
        let long: Vec<_> = (0..10).map(|_| stat(300_000, 10, 1.0)).collect();
        let s = savings(&long, &plain, 10.0, None, NOW).unwrap();
        assert!(
            leanlm_cost::PriceTable::bundled()
                .lookup(&s.cheapest_model)
                .unwrap()
                .caps
                .context
                >= 300_010
        );
        assert!(savings(&[], &plain, 0.0, None, NOW).is_none());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((p.p50, p.p95), (51.0, 95.0));
        assert!(percentiles(vec![]).is_none());
    }
}
