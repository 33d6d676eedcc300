//! Price lists in LiteLLM's layout (`model_prices_and_context_window.json`), the one the field keeps up to
//! date: a JSON object from model name to per-token costs, context and capabilities. Entries of providers
//! LeanLM serves become price-table entries; the rest (Bedrock, Vertex, Azure, image models…) are counted
//! and skipped.

use serde::Deserialize;
use serde_json::Value;

use crate::prices::{Capabilities, Host, ModelKind, Price, PriceEntry, PriceError};
use leanlm_wire::ProviderKind;

/// What an import found.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Model name (as clients send it: no `groq/` prefix) and its entry, sorted by name.
    pub models: Vec<(String, PriceEntry)>,
    /// Entries of providers or modes LeanLM does not serve, or without a price.
    pub skipped: usize,
}

/// One entry as LiteLLM writes it; everything else in it is ignored.
#[derive(Deserialize)]
struct Raw {
    litellm_provider: Option<String>,
    mode: Option<String>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
    cache_creation_input_token_cost: Option<f64>,
    input_cost_per_token_above_200k_tokens: Option<f64>,
    output_cost_per_token_above_200k_tokens: Option<f64>,
    cache_read_input_token_cost_above_200k_tokens: Option<f64>,
    max_input_tokens: Option<f64>,
    max_tokens: Option<f64>,
    supports_function_calling: Option<bool>,
    supports_response_schema: Option<bool>,
    supports_vision: Option<bool>,
}

/// The API and host behind a LiteLLM provider name, and the prefix its model names carry there.
fn served_by(provider: &str) -> Option<(ProviderKind, Host, &'static str)> {
    Some(match provider {
        "openai" | "text-completion-openai" => (ProviderKind::OpenAi, Host::OpenAi, ""),
        "anthropic" => (ProviderKind::Anthropic, Host::Anthropic, ""),
        "gemini" => (ProviderKind::Gemini, Host::Gemini, "gemini/"),
        "groq" => (ProviderKind::OpenAi, Host::Groq, "groq/"),
        "together_ai" => (ProviderKind::OpenAi, Host::Together, "together_ai/"),
        "deepseek" => (ProviderKind::OpenAi, Host::DeepSeek, "deepseek/"),
        "mistral" => (ProviderKind::OpenAi, Host::Mistral, "mistral/"),
        _ => return None,
    })
}

/// Reads a LiteLLM price list. Fails only when the text is not a JSON object; an entry it cannot use is
/// skipped and counted, and a price that is negative or not a number fails with the model named.
pub fn parse(text: &str) -> Result<Imported, PriceError> {
    let all: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| PriceError::Import {
        message: format!("not a LiteLLM price list (a JSON object of models): {e}"),
    })?;
    let per_million = |v: Option<f64>| v.map(|v| v * 1_000_000.0);
    let mut models = Vec::new();
    let mut skipped = 0;
    for (key, value) in all {
        // `sample_spec` documents the layout; objects that do not parse as an entry are not entries.
        let Ok(raw) = serde_json::from_value::<Raw>(value) else {
            skipped += 1;
            continue;
        };
        let served = raw.litellm_provider.as_deref().and_then(served_by);
        let kind = match raw.mode.as_deref() {
            Some("chat") | Some("completion") | Some("responses") => Some(ModelKind::Chat),
            Some("embedding") => Some(ModelKind::Embedding),
            _ => None,
        };
        let (Some((provider, host, prefix)), Some(kind), Some(input), Some(output)) =
            (served, kind, raw.input_cost_per_token, raw.output_cost_per_token)
        else {
            skipped += 1;
            continue;
        };
        let name = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
        // A path-like key of another route (`openai/gpt-4o` under provider openai) is the same model.
        if name.is_empty() || name.contains('/') && host == Host::OpenAi {
            skipped += 1;
            continue;
        }
        let above = raw.input_cost_per_token_above_200k_tokens.is_some();
        let price = Price {
            input: input * 1_000_000.0,
            output: output * 1_000_000.0,
            cached_input: per_million(raw.cache_read_input_token_cost),
            cache_write: per_million(raw.cache_creation_input_token_cost),
            above_tokens: above.then_some(200_000),
            input_above: per_million(raw.input_cost_per_token_above_200k_tokens),
            cached_input_above: per_million(raw.cache_read_input_token_cost_above_200k_tokens),
            output_above: per_million(raw.output_cost_per_token_above_200k_tokens),
        };
        price.validate().map_err(|message| PriceError::Invalid {
            model: key.clone(),
            message,
        })?;
        let context = raw.max_input_tokens.or(raw.max_tokens).unwrap_or(0.0);
        let caps = Capabilities {
            kind,
            context: if context.is_finite() && context > 0.0 {
                context as u64
            } else {
                0
            },
            tools: raw.supports_function_calling.unwrap_or(false),
            json_schema: raw.supports_response_schema.unwrap_or(false),
            vision: raw.supports_vision.unwrap_or(false),
        };
        models.push((
            name,
            PriceEntry {
                provider,
                host,
                price,
                caps,
            },
        ));
    }
    models.sort_by(|a, b| a.0.cmp(&b.0));
    models.dedup_by(|a, b| a.0 == b.0);
    Ok(Imported { models, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries in LiteLLM's layout, as its file writes them (values from its entries for these models).
    const SAMPLE: &str = r#"{
        "sample_spec": {"max_tokens": "LEGACY parameter", "input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers", "mode": "one of: chat, embedding, completion"},
        "gpt-4o-mini": {"max_input_tokens": 128000, "max_output_tokens": 16384, "input_cost_per_token": 1.5e-07,
            "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 7.5e-08, "litellm_provider": "openai",
            "mode": "chat", "supports_function_calling": true, "supports_response_schema": true, "supports_vision": true},
        "claude-3-5-haiku-20241022": {"max_input_tokens": 200000, "input_cost_per_token": 8e-07, "output_cost_per_token": 4e-06,
            "cache_creation_input_token_cost": 1e-06, "cache_read_input_token_cost": 8e-08, "litellm_provider": "anthropic",
            "mode": "chat", "supports_function_calling": true},
        "gemini/gemini-2.5-pro": {"max_input_tokens": 1048576, "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
            "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "litellm_provider": "gemini", "mode": "chat", "supports_function_calling": true, "supports_vision": true},
        "groq/llama-3.1-8b-instant": {"max_input_tokens": 128000, "input_cost_per_token": 5e-08, "output_cost_per_token": 8e-08,
            "litellm_provider": "groq", "mode": "chat"},
        "text-embedding-3-small": {"max_input_tokens": 8191, "input_cost_per_token": 2e-08, "output_cost_per_token": 0.0,
            "litellm_provider": "openai", "mode": "embedding"},
        "bedrock/anthropic.claude-3-haiku": {"input_cost_per_token": 2.5e-07, "output_cost_per_token": 1.25e-06,
            "litellm_provider": "bedrock", "mode": "chat"},
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04}
    }"#;

    #[test]
    fn entries_of_served_providers_become_prices_per_million() {
        let got = parse(SAMPLE).unwrap();
        let names: Vec<&str> = got.models.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "claude-3-5-haiku-20241022",
                "gemini-2.5-pro",
                "gpt-4o-mini",
                "llama-3.1-8b-instant",
                "text-embedding-3-small"
            ]
        );
        assert_eq!(got.skipped, 3, "the spec, Bedrock and an image model");
        let get = |n: &str| got.models.iter().find(|m| m.0 == n).unwrap().1;
        let mini = get("gpt-4o-mini");
        assert!((mini.price.input - 0.15).abs() < 1e-9 && (mini.price.output - 0.6).abs() < 1e-9);
        assert!((mini.price.cached_input.unwrap() - 0.075).abs() < 1e-9);
        assert_eq!(mini.caps.context, 128_000);
        assert!(mini.caps.tools && mini.caps.json_schema && mini.caps.vision);
        let pro = get("gemini-2.5-pro");
        assert_eq!((pro.provider, pro.host), (ProviderKind::Gemini, Host::Gemini));
        assert_eq!(pro.price.above_tokens, Some(200_000));
        assert!((pro.price.output_above.unwrap() - 15.0).abs() < 1e-9);
        let llama = get("llama-3.1-8b-instant");
        assert_eq!((llama.provider, llama.host), (ProviderKind::OpenAi, Host::Groq));
        assert_eq!(get("text-embedding-3-small").caps.kind, ModelKind::Embedding);
        assert!((get("claude-3-5-haiku-20241022").price.cache_write.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_bad_file_or_price_is_refused_with_the_reason() {
        let e = parse("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("not a LiteLLM price list"), "{e}");
        let e = parse(r#"{"m": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": -1.0, "output_cost_per_token": 1.0}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`m`") && e.contains("non-negative"), "{e}");
    }
}
