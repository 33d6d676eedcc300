//! Token usage as each provider accounts for it, normalised so cost is one formula.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Billable token counts of one call.
///
/// The buckets do not overlap: `input_tokens` excludes cached reads and cache writes, so that
/// cost = Σ bucket × its price. `output_tokens` includes `reasoning_tokens` (they are billed as output);
/// `reasoning_tokens` is kept for reporting only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

impl Usage {
    /// All prompt-side tokens, cached or not.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cached_input_tokens + self.cache_write_tokens
    }

    /// From an OpenAI `usage` object. `prompt_tokens` includes cached tokens; `completion_tokens` includes
    /// reasoning tokens.
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let prompt = u(usage, &["prompt_tokens"])?;
        let completion = u(usage, &["completion_tokens"]).unwrap_or(0);
        let cached = u(usage, &["prompt_tokens_details", "cached_tokens"])
            .unwrap_or(0)
            .min(prompt);
        Some(Usage {
            input_tokens: prompt - cached,
            cached_input_tokens: cached,
            cache_write_tokens: 0,
            output_tokens: completion,
            reasoning_tokens: u(usage, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        })
    }

    /// From an OpenAI Responses API `usage` object: `input_tokens` includes cached tokens, `output_tokens`
    /// includes reasoning tokens.
    pub fn from_openai_responses(usage: &Value) -> Option<Usage> {
        let input = u(usage, &["input_tokens"])?;
        let cached = u(usage, &["input_tokens_details", "cached_tokens"])
            .unwrap_or(0)
            .min(input);
        Some(Usage {
            input_tokens: input - cached,
            cached_input_tokens: cached,
            cache_write_tokens: 0,
            output_tokens: u(usage, &["output_tokens"]).unwrap_or(0),
            reasoning_tokens: u(usage, &["output_tokens_details", "reasoning_tokens"]).unwrap_or(0),
        })
    }

    /// From an Anthropic `usage` object, where the three input buckets are already disjoint.
    pub fn from_anthropic(usage: &Value) -> Option<Usage> {
        let input = u(usage, &["input_tokens"]);
        let output = u(usage, &["output_tokens"]);
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            cached_input_tokens: u(usage, &["cache_read_input_tokens"]).unwrap_or(0),
            cache_write_tokens: u(usage, &["cache_creation_input_tokens"]).unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            reasoning_tokens: 0,
        })
    }

    /// Merges a later Anthropic streaming `usage` (from `message_delta`) into the one from `message_start`:
    /// fields present in the later one are cumulative totals and win.
    pub fn merge_anthropic(&mut self, later: &Value) {
        if let Some(n) = u(later, &["input_tokens"]) {
            self.input_tokens = n;
        }
        if let Some(n) = u(later, &["cache_read_input_tokens"]) {
            self.cached_input_tokens = n;
        }
        if let Some(n) = u(later, &["cache_creation_input_tokens"]) {
            self.cache_write_tokens = n;
        }
        if let Some(n) = u(later, &["output_tokens"]) {
            self.output_tokens = n;
        }
    }

    /// From a Gemini `usageMetadata` object. `promptTokenCount` includes cached content; thinking tokens
    /// (`thoughtsTokenCount`) are billed as output but not included in `candidatesTokenCount`.
    pub fn from_gemini(meta: &Value) -> Option<Usage> {
        let prompt = u(meta, &["promptTokenCount"])?;
        let cached = u(meta, &["cachedContentTokenCount"]).unwrap_or(0).min(prompt);
        let thoughts = u(meta, &["thoughtsTokenCount"]).unwrap_or(0);
        // Tool-use prompt tokens (code execution, search results) are billed as input.
        let tool_prompt = u(meta, &["toolUsePromptTokenCount"]).unwrap_or(0);
        Some(Usage {
            input_tokens: prompt - cached + tool_prompt,
            cached_input_tokens: cached,
            cache_write_tokens: 0,
            output_tokens: u(meta, &["candidatesTokenCount"]).unwrap_or(0) + thoughts,
            reasoning_tokens: thoughts,
        })
    }

    /// As an OpenAI `usage` object.
    pub fn to_openai(&self) -> Value {
        let prompt = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output_tokens,
            "total_tokens": prompt + self.output_tokens,
            "prompt_tokens_details": { "cached_tokens": self.cached_input_tokens },
            "completion_tokens_details": { "reasoning_tokens": self.reasoning_tokens },
        })
    }

    /// As an Anthropic `usage` object.
    pub fn to_anthropic(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_usage_splits_cached_tokens() {
        let u = Usage::from_openai(&json!({
            "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 192}
        }))
        .unwrap();
        assert_eq!(u.input_tokens, 86);
        assert_eq!(u.cached_input_tokens, 1920);
        assert_eq!(u.output_tokens, 300);
        assert_eq!(u.reasoning_tokens, 192);
        assert_eq!(u.prompt_tokens(), 2006);
    }

    #[test]
    fn anthropic_usage_keeps_disjoint_buckets_and_merges_stream_totals() {
        let mut u = Usage::from_anthropic(&json!({
            "input_tokens": 21, "cache_creation_input_tokens": 188086,
            "cache_read_input_tokens": 0, "output_tokens": 1
        }))
        .unwrap();
        u.merge_anthropic(&json!({"output_tokens": 393}));
        assert_eq!(u.input_tokens, 21);
        assert_eq!(u.cache_write_tokens, 188086);
        assert_eq!(u.output_tokens, 393);
    }

    #[test]
    fn gemini_usage_bills_thoughts_as_output() {
        let u = Usage::from_gemini(&json!({
            "promptTokenCount": 1000, "cachedContentTokenCount": 600,
            "candidatesTokenCount": 50, "thoughtsTokenCount": 200, "totalTokenCount": 1250
        }))
        .unwrap();
        assert_eq!(u.input_tokens, 400);
        assert_eq!(u.cached_input_tokens, 600);
        assert_eq!(u.output_tokens, 250);
        assert_eq!(u.reasoning_tokens, 200);
    }

    #[test]
    fn missing_usage_is_none() {
        assert!(Usage::from_openai(&json!({})).is_none());
        assert!(Usage::from_anthropic(&json!({})).is_none());
        assert!(Usage::from_gemini(&json!(null)).is_none());
    }
}
