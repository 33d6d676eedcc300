//! What a call costs: a bundled, dated price table, exact cost from the provider's own usage accounting,
//! and local token counts for the rare upstream that reports none.

pub mod litellm;
mod prices;
pub mod tokens;

pub use prices::{Capabilities, Host, ModelKind, Price, PriceEntry, PriceError, PriceTable, STALE_AFTER_DAYS};

/// Days from 1970-01-01 to a `YYYY-MM-DD` date (proleptic Gregorian), or `None` if it is not one.
pub fn days_since_epoch(date: &str) -> Option<i64> {
    let mut parts = date.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    civil(secs.div_euclid(86_400))
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
pub fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// How many days old the prices of `table` are today, when its dates read as dates.
pub fn age_days(table: &PriceTable) -> Option<i64> {
    Some(days_since_epoch(&today())? - days_since_epoch(table.newest())?)
}

use leanlm_wire::Usage;

/// The cost of a call in USD, from its usage and the model's price.
pub fn cost_usd(usage: &Usage, price: &Price) -> f64 {
    let long = price.above_tokens.is_some_and(|t| usage.prompt_tokens() > t);
    let pick = |base: f64, above: Option<f64>| if long { above.unwrap_or(base) } else { base };
    let input = pick(price.input, price.input_above);
    let cached = pick(price.cached_input.unwrap_or(price.input), price.cached_input_above);
    let write = price.cache_write.unwrap_or(price.input);
    let output = pick(price.output, price.output_above);
    (usage.input_tokens as f64 * input
        + usage.cached_input_tokens as f64 * cached
        + usage.cache_write_tokens as f64 * write
        + usage.output_tokens as f64 * output)
        / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_count_days_both_ways() {
        assert_eq!(days_since_epoch("1970-01-01"), Some(0));
        assert_eq!(days_since_epoch("2000-03-01"), Some(11_017));
        assert_eq!(civil(11_017), "2000-03-01");
        for d in [-1000, 0, 59, 365, 10_956, 20_500, 30_000] {
            assert_eq!(days_since_epoch(&civil(d)), Some(d));
        }
        assert_eq!(days_since_epoch("2025-13-01"), None);
        assert_eq!(days_since_epoch("yesterday"), None);
        assert!(today().starts_with("20"));
    }

    #[test]
    fn imported_prices_replace_bundled_ones_and_carry_their_date() {
        let bundled = PriceTable::bundled();
        let mut entry = *bundled.lookup("gpt-4o-mini").unwrap();
        entry.price.input = 0.123;
        let t = bundled.with_imported(&[("gpt-4o-mini".into(), entry, "2099-01-02".into())]);
        assert!((t.lookup("gpt-4o-mini").unwrap().price.input - 0.123).abs() < 1e-12);
        assert_eq!(t.dated("gpt-4o-mini"), "2099-01-02");
        assert_eq!(t.dated("gpt-4o"), bundled.as_of);
        assert_eq!(
            bundled.dated("claude-haiku-4-5"),
            "2026-12-08",
            "checked against Anthropic's page"
        );
        assert_eq!(t.newest(), "2099-01-02");
        assert!(age_days(&t).unwrap() < 0, "a date in the future is not stale");
        assert!(age_days(bundled).unwrap() > 0);
    }

    fn price(model: &str) -> Price {
        PriceTable::bundled().lookup(model).unwrap().price
    }

    /// Known usage payloads of each provider, reconciled to the cent (and finer) by hand.
    #[test]
    fn openai_usage_with_cache_and_reasoning() {
        // gpt-4o: 10,000 prompt tokens of which 8,000 cached, 1,500 completion.
        let u = Usage::from_openai(&json!({"prompt_tokens": 10000, "completion_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 8000}}))
        .unwrap();
        // 2,000 × $2.50 + 8,000 × $1.25 + 1,500 × $10 per million = 0.005 + 0.010 + 0.015
        assert!((cost_usd(&u, &price("gpt-4o")) - 0.030).abs() < 1e-12);

        // o4-mini: reasoning tokens are inside completion_tokens and billed once, as output.
        let u = Usage::from_openai(&json!({"prompt_tokens": 1000, "completion_tokens": 5000,
            "completion_tokens_details": {"reasoning_tokens": 4500}}))
        .unwrap();
        // 1,000 × $1.10 + 5,000 × $4.40 per million = 0.0011 + 0.022
        assert!((cost_usd(&u, &price("o4-mini-2025-04-16")) - 0.0231).abs() < 1e-12);
    }

    #[test]
    fn anthropic_usage_with_cache_write_and_read() {
        let u = Usage::from_anthropic(&json!({"input_tokens": 50, "cache_creation_input_tokens": 10000,
            "cache_read_input_tokens": 20000, "output_tokens": 400}))
        .unwrap();
        // claude-sonnet-4-5: 50 × $3 + 10,000 × $3.75 + 20,000 × $0.30 + 400 × $15 per million
        // = 0.00015 + 0.0375 + 0.006 + 0.006 = 0.04965
        assert!((cost_usd(&u, &price("claude-sonnet-4-5-20250929")) - 0.04965).abs() < 1e-12);
    }

    #[test]
    fn gemini_usage_with_thoughts_and_long_context_tier() {
        let u = Usage::from_gemini(&json!({"promptTokenCount": 1000, "candidatesTokenCount": 200,
            "thoughtsTokenCount": 800}))
        .unwrap();
        // gemini-2.5-flash: 1,000 × $0.30 + 1,000 × $2.50 per million = 0.0003 + 0.0025
        assert!((cost_usd(&u, &price("gemini-2.5-flash")) - 0.0028).abs() < 1e-12);

        let u = Usage::from_gemini(&json!({"promptTokenCount": 250000, "candidatesTokenCount": 1000})).unwrap();
        // gemini-2.5-pro above 200k prompt tokens: 250,000 × $2.50 + 1,000 × $15 per million
        assert!((cost_usd(&u, &price("gemini-2.5-pro")) - 0.64).abs() < 1e-12);
    }

    #[test]
    fn deepseek_cache_hits_are_cheaper() {
        let u = Usage::from_openai(&json!({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000,
            "prompt_tokens_details": {"cached_tokens": 500_000}}))
        .unwrap();
        // 500k × $0.28 + 500k × $0.028 + 1M × $0.42 per million = 0.14 + 0.014 + 0.42
        assert!((cost_usd(&u, &price("deepseek-chat")) - 0.574).abs() < 1e-12);
    }
}
