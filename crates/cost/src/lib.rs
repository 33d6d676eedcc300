//! What a call costs: a bundled, dated price table, exact cost from the provider's own usage accounting,
//! and local token counts for the rare upstream that reports none.

mod prices;
pub mod tokens;

pub use prices::{Capabilities, Host, ModelKind, Price, PriceEntry, PriceError, PriceTable};

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
