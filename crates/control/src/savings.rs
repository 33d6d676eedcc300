//! What the loop saved: for every call a replacement or a cache served instead of the model the client
//! asked for, what that model would have cost. Exact where an audit re-asked the reference for the call,
//! and for cache hits (the cache priced what it avoided); otherwise the call's own prompt at the reference's
//! price and the task's recent reference answer length (marked estimated).

use std::collections::BTreeMap;

use leanlm_core::CacheOutcome;
use leanlm_core::money::{DAY_MS, MONTH_MS, Monthly};
use leanlm_cost::PriceTable;
use leanlm_store::{ServedInstead, Span, Store};
use serde::Serialize;

use crate::{ControlError, unix_ms};

/// How savings are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavingsBy {
    Task,
    /// Exact cache, semantic cache, or the replacement model.
    Technique,
    /// UTC day.
    Day,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavingsRow {
    pub key: String,
    /// Calls served instead of the reference.
    pub calls: u64,
    pub spend_usd: f64,
    /// What the reference would have cost on the same calls.
    pub would_have_usd: f64,
    pub saved_usd: f64,
    /// Calls whose reference cost is estimated (no audit, no cache record).
    pub estimated_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Savings {
    pub rows: Vec<SavingsRow>,
    pub total: SavingsRow,
    /// The saved total per 30-day month, projected from `basis_days` of it.
    pub monthly_run_rate_usd: f64,
    pub basis_days: f64,
}

/// Savings over a window, grouped by `by`.
pub fn savings(store: &Store, span: Span, by: SavingsBy, names: bool) -> Result<Savings, ControlError> {
    let served = store.served_instead(span)?;
    let now = span.until_ms.map_or_else(unix_ms, |u| u.min(unix_ms()));
    let lengths = store.reference_output_tokens(now - MONTH_MS)?;
    let task_names = if names { store.task_names()? } else { Default::default() };
    let table = PriceTable::active();
    let mut rows: BTreeMap<String, SavingsRow> = BTreeMap::new();
    let mut total = row("total");
    for c in &served {
        let (would, estimated) = reference_cost(c, table, &lengths);
        let key = match by {
            SavingsBy::Task => c
                .task
                .as_deref()
                .map(|t| task_names.get(t).cloned().unwrap_or_else(|| t.to_owned()))
                .unwrap_or_else(|| "-".into()),
            SavingsBy::Technique => match c.cache {
                Some(CacheOutcome::Hit) => "exact cache".into(),
                Some(CacheOutcome::SemanticHit) => "semantic cache".into(),
                _ => format!("replacement: {}", c.served_model),
            },
            SavingsBy::Day => leanlm_cost::civil(c.at_ms.div_euclid(DAY_MS)),
        };
        for r in [rows.entry(key.clone()).or_insert_with(|| row(&key)), &mut total] {
            r.calls += 1;
            r.spend_usd += c.cost_usd;
            r.would_have_usd += would;
            r.saved_usd += would - c.cost_usd;
            r.estimated_calls += u64::from(estimated);
        }
    }
    // From the first call served instead, as a task's savings potential counts from its first call.
    let first = served.first().map_or(now, |c| c.at_ms);
    let monthly = Monthly::since(first, now);
    let mut rows: Vec<SavingsRow> = rows.into_values().collect();
    if by != SavingsBy::Day {
        rows.sort_by(|a, b| b.saved_usd.total_cmp(&a.saved_usd).then(a.key.cmp(&b.key)));
    }
    Ok(Savings {
        monthly_run_rate_usd: if served.is_empty() {
            0.0
        } else {
            total.saved_usd * monthly.factor
        },
        basis_days: monthly.basis_days,
        rows,
        total,
    })
}

fn row(key: &str) -> SavingsRow {
    SavingsRow {
        key: key.to_owned(),
        calls: 0,
        spend_usd: 0.0,
        would_have_usd: 0.0,
        saved_usd: 0.0,
        estimated_calls: 0,
    }
}

/// What the reference would have cost on a call, and whether that is an estimate.
fn reference_cost(
    c: &ServedInstead,
    table: &PriceTable,
    lengths: &std::collections::HashMap<String, f64>,
) -> (f64, bool) {
    if let Some(avoided) = c.cost_avoided_usd.filter(|_| c.cache.is_some()) {
        return (c.cost_usd + avoided, false);
    }
    if let Some(audited) = c.audited_reference_usd {
        return (audited, false);
    }
    let Some(price) = table.lookup(&c.reference_model).map(|e| e.price) else {
        // Unpriced reference: nothing is claimed.
        return (c.cost_usd, true);
    };
    let output = c
        .task
        .as_ref()
        .and_then(|t| lengths.get(t).copied())
        .or(c.output_tokens.map(|t| t as f64))
        .unwrap_or(0.0);
    let cost = (c.input_tokens as f64 * price.input + output * price.output) / 1_000_000.0;
    (cost, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leanlm_core::{CallRecord, PolicyTag, Role, Usage};

    fn call(id: &str, at: i64, model: &str, output: u64, cost: f64) -> CallRecord {
        let mut c = crate::testing::call(id, "t1", at);
        c.served_model = Some(model.into());
        c.upstream_model = Some(model.into());
        c.usage = Some(Usage {
            input_tokens: 1000,
            output_tokens: output,
            ..Default::default()
        });
        c.cost_usd = Some(cost);
        c
    }

    /// Known traffic, checked to the cent and below: two reference calls set the answer length (20 tokens),
    /// two replacement calls (one audited), one exact-cache hit.
    #[test]
    fn savings_are_what_the_reference_would_have_cost_less_what_was_paid() {
        let mut s = Store::open("sqlite::memory:").unwrap();
        let now = unix_ms();
        let at = now - DAY_MS;
        let mut calls = vec![
            call("r1", at, "gpt-4o", 10, 0.0026),
            call("r2", at + 1, "gpt-4o", 30, 0.0028),
        ];
        for (id, i) in [("p1", 2), ("p2", 3)] {
            let mut c = call(id, at + i, "gpt-4o-mini", 5, 0.00018);
            c.policy = Some(PolicyTag {
                version: 1,
                role: Role::Replacement,
            });
            calls.push(c);
        }
        let mut hit = call("h1", at + 4, "gpt-4o", 0, 0.0);
        hit.cache = Some(CacheOutcome::Hit);
        hit.cost_avoided_usd = Some(0.0027);
        calls.push(hit);
        s.insert_batch(&calls).unwrap();
        // An audit re-asked gpt-4o for p2: its reference cost is known exactly.
        s.insert_online(&[leanlm_store::OnlineScore {
            task_id: "t1".into(),
            version: 1,
            at_ms: at + 5,
            kind: leanlm_core::CheckKind::Audit,
            agreed: Some(true),
            error: false,
            cost_usd: Some(0.0031),
            call_id: Some("p2".into()),
            note: None,
            model: Some("gpt-4o".into()),
            scorer: None,
            billed_model: Some("gpt-4o".into()),
        }])
        .unwrap();
        let got = savings(&s, Span::ALL, SavingsBy::Technique, true).unwrap();
        // p1: 1,000 in at $2.50 and 20 out (the reference's mean) at $10 per million = $0.0027, estimated.
        let p1 = 0.0027;
        let want_would = p1 + 0.0031 + 0.0027;
        let want_paid = 2.0 * 0.00018;
        assert_eq!(got.total.calls, 3);
        assert_eq!(got.total.estimated_calls, 1);
        assert!((got.total.would_have_usd - want_would).abs() < 1e-12, "{got:#?}");
        assert!((got.total.saved_usd - (want_would - want_paid)).abs() < 1e-12);
        let keys: Vec<&str> = got.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["replacement: gpt-4o-mini", "exact cache"]);
        // A day of it is a thirtieth of a month.
        assert!(
            (got.monthly_run_rate_usd - got.total.saved_usd * 30.0).abs() < 1e-9,
            "{got:#?}"
        );
        let by_task = savings(&s, Span::ALL, SavingsBy::Task, true).unwrap();
        assert_eq!(by_task.rows[0].key, "t1-name");
        // Outside the window, nothing.
        let later = Span {
            since_ms: Some(now),
            until_ms: None,
        };
        let none = savings(&s, later, SavingsBy::Day, false).unwrap();
        assert_eq!((none.total.calls, none.monthly_run_rate_usd), (0, 0.0));
    }
}
