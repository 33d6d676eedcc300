//! Local token counts, used only when an upstream reports no usage; such figures are marked estimated.
//!
//! OpenAI's tokenizers are exact offline (tiktoken's rank files are compiled in). No tokenizer is published
//! for Claude 3+ or Gemini, so their counts are estimates with o200k.

use leanlm_wire::openai::{ChatRequest, Tool, ToolCall};
use tiktoken_rs::CoreBPE;

/// Message framing overhead of the chat format, per message and per reply.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_REPLY: u64 = 3;

fn encoder(model: &str) -> &'static CoreBPE {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4-") || m == "gpt-4" || m.starts_with("gpt-3.5") || m.starts_with("text-embedding") {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

/// Tokens in a piece of text for the given model.
pub fn count_text(model: &str, text: &str) -> u64 {
    encoder(model).encode_ordinary(text).len() as u64
}

/// Prompt tokens of a chat request: message texts, tool-call arguments and framing.
pub fn count_prompt(model: &str, req: &ChatRequest) -> u64 {
    let bpe = encoder(model);
    let mut n = TOKENS_PER_REPLY;
    for m in &req.messages {
        n += TOKENS_PER_MESSAGE;
        if let Some(c) = &m.content {
            n += bpe.encode_ordinary(&c.text()).len() as u64;
        }
        for tc in m.tool_calls.iter().flatten() {
            match tc {
                ToolCall::Function(c) => {
                    n += bpe.encode_ordinary(&c.function.name).len() as u64;
                    n += bpe.encode_ordinary(&c.function.arguments).len() as u64;
                }
                ToolCall::Other(o) => {
                    n += bpe.encode_ordinary(&serde_json::to_string(o).unwrap_or_default()).len() as u64
                }
            }
        }
    }
    for t in req.tools.iter().flatten() {
        let schema = match t {
            Tool::Function(f) => serde_json::to_string(f),
            Tool::Other(o) => serde_json::to_string(o),
        };
        n += bpe.encode_ordinary(&schema.unwrap_or_default()).len() as u64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_tiktoken_reference_values() {
        // "hello world" is 2 tokens in both cl100k and o200k.
        assert_eq!(count_text("gpt-4o", "hello world"), 2);
        assert_eq!(count_text("gpt-3.5-turbo", "hello world"), 2);
        let req =
            ChatRequest::parse(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#).unwrap();
        assert_eq!(count_prompt("gpt-4o", &req), 2 + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY);
    }
}
