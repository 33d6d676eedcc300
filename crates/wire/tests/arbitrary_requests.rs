//! Translation never panics, whatever a client sends: seed requests of every shape the translators handle,
//! mutated at random (a subtree replaced by a value of another type), go through every translation. Each
//! either translates or is refused with an error.

use leanlm_wire::anthropic::{self, MessagesRequest};
use leanlm_wire::gemini;
use leanlm_wire::openai::ChatRequest;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use serde_json::{Value, json};

/// A seeded generator, so a failure names a round that reproduces it.
struct Rng(StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n.max(1))
    }
}

fn openai_seeds() -> Vec<Value> {
    vec![
        json!({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [
            {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}, "extra_content": {"google": {"thought_signature": "s"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\":true}"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "stop": ["X"], "temperature": 1.5, "max_completion_tokens": 20, "logprobs": true, "top_logprobs": 2, "seed": 3, "stream": true}),
        json!({"model": "m", "n": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "custom", "custom": {"name": "exec"}}], "tool_choice": "required", "parallel_tool_calls": false}),
    ]
}

fn anthropic_seeds() -> Vec<Value> {
    vec![
        json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}],
            "tools": [{"type": "web_search_20250305", "name": "w"}], "tool_choice": {"type": "any"}}),
        json!({"model": "c", "max_tokens": 10, "system": [{"type": "text", "text": "s"}], "stream": true,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}]}]}),
    ]
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => json!(rng.below(3) == 0),
        2 => json!(rng.below(5) as i64 - 2),
        3 => json!(-1.5e300),
        4 => json!(
            [
                "function", "custom", "text", "image", "file", "tool", "any", "data:x", ""
            ][rng.below(9)]
        ),
        5 => json!([]),
        6 => json!({}),
        _ => json!([{"type": "text"}, {"type": "function", "function": {}}]),
    }
}

/// Replaces one subtree, chosen by walking down from the root, with a random value.
fn mutate(v: &mut Value, rng: &mut Rng) {
    // Mostly deep: the leaves are where the translators read a field of an expected type.
    let descend = rng.below(8) != 0;
    match v {
        Value::Object(o) if descend && !o.is_empty() => {
            let key = o.keys().nth(rng.below(o.len())).cloned().unwrap_or_default();
            if let Some(child) = o.get_mut(&key) {
                return mutate(child, rng);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len());
            return mutate(&mut a[i], rng);
        }
        _ => {}
    }
    *v = random_value(rng);
}

fn translate_openai(body: &[u8]) {
    if let Ok(req) = ChatRequest::parse(body) {
        let _ = anthropic::from_openai(req.clone());
        let _ = gemini::from_openai(req.clone());
        let _ = serde_json::to_vec(&req);
    }
}

fn translate_anthropic(body: &[u8]) {
    if let Ok(req) = MessagesRequest::parse(body)
        && let Ok(hub) = req.into_openai()
    {
        let bytes = serde_json::to_vec(&hub).unwrap();
        translate_openai(&bytes);
    }
}

#[test]
fn mutated_requests_translate_or_are_refused_without_panicking() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for round in 0..100_000 {
        let openai = round % 2 == 0;
        let seeds = if openai { openai_seeds() } else { anthropic_seeds() };
        let mut v = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut v, &mut rng);
        }
        let body = serde_json::to_vec(&v).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            if openai {
                translate_openai(&body)
            } else {
                translate_anthropic(&body)
            }
        });
        assert!(outcome.is_ok(), "round {round} panicked on {v}");
    }
}

/// Upstream answers of a broken shape translate back without panicking too.
#[test]
fn mutated_answers_translate_without_panicking() {
    let seeds = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}, {"functionCall": {"name": "f", "args": {}},
            "thoughtSignature": "s"}]}, "finishReason": "STOP", "logprobsResult": {"chosenCandidates": [{"token": "a", "logProbability": -1.0}],
            "topCandidates": [{"candidates": [{"token": "a", "logProbability": -1.0}]}]}}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
        json!({"id": "m", "type": "message", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}),
    ];
    let mut rng = Rng::new(42);
    for round in 0..20_000 {
        let mut v = seeds[round % 2].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut v, &mut rng);
        }
        let outcome = std::panic::catch_unwind(|| {
            let o = gemini::response_to_openai(&v, "g");
            let _ = anthropic::response_from_openai(&o);
            let _ = anthropic::response_to_openai(&v);
            let _ = gemini::blocked_reason(&v);
            let _ = leanlm_wire::output_text(&o);
        });
        assert!(outcome.is_ok(), "round {round} panicked on {v}");
    }
}
