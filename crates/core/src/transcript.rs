//! One reading of chat requests and answers as text, for everything that compares, embeds, judges or counts
//! them: judges and routers read a request's transcript, the semantic cache its conversation (the last user
//! turn apart from what came before), the call log counts an answer's tokens when the upstream reported none.

use serde_json::Value;

use crate::ProviderKind;

/// A chat request (OpenAI or Anthropic) as text, `role: text` per turn: what judges read and routers embed.
pub fn transcript(request: &Value) -> String {
    let mut out = String::new();
    if let Some(system) = request.get("system") {
        out.push_str(&format!("system: {}\n", text_lossy(system)));
    }
    for m in request.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        out.push_str(&format!("{role}: {}\n", text_lossy(&m["content"])));
    }
    out.chars().take(8000).collect()
}

/// A message's content as text, whatever it holds: its text parts joined, anything else as JSON. Lossy,
/// where [`content_text`] refuses content that is not text.
pub fn text_lossy(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The text of a message's content, or `None` when it holds anything but text.
pub fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(p.get("text")?.as_str()?.to_owned()),
                    // Tool calls and results are text in JSON.
                    Some("tool_use" | "tool_result") => out.push(p.to_string()),
                    _ => return None,
                }
            }
            Some(out.join("\n"))
        }
        _ => None,
    }
}

/// A chat request as the semantic cache compares it.
pub struct Conversation {
    /// Everything before the last user turn, system prompt included, and anything after it (a prefill), as
    /// `role: text` lines.
    pub context: String,
    /// The lines of `context` that are not the conversation: the system prompt (and system or developer turns)
    /// and a prefill.
    pub preamble: String,
    pub last: String,
}

/// A chat request (OpenAI or Anthropic) as the semantic cache compares it. `None` when there is no user turn
/// or a turn is not text.
pub fn conversation(request: &Value) -> Option<Conversation> {
    let messages = request.get("messages")?.as_array()?;
    let last = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let mut context = Vec::new();
    let mut preamble = Vec::new();
    if let Some(system) = request.get("system") {
        let line = format!("system: {}", content_text(system)?);
        preamble.push(line.clone());
        context.push(line);
    }
    for m in &messages[..last] {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let mut text = content_text(m.get("content").unwrap_or(&Value::Null))?;
        if let Some(calls) = m.get("tool_calls") {
            text.push_str(&calls.to_string());
        }
        let line = format!("{role}: {text}");
        if matches!(role, "system" | "developer") {
            preamble.push(line.clone());
        }
        context.push(line);
    }
    // Anything after the last user turn (an assistant prefill) shapes the answer too.
    for m in &messages[last + 1..] {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let line = format!("{role}: {}", content_text(m.get("content").unwrap_or(&Value::Null))?);
        preamble.push(line.clone());
        context.push(line);
    }
    let text = content_text(messages[last].get("content").unwrap_or(&Value::Null))?;
    if text.trim().is_empty() {
        return None;
    }
    Some(Conversation {
        context: context.join("\n"),
        preamble: preamble.join("\n"),
        last: text,
    })
}

/// Everything the model wrote in a response, for local token counting.
pub fn answer_text(kind: ProviderKind, v: &Value) -> String {
    let mut out = String::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s {
            out.push_str(s);
        }
    };
    match kind {
        ProviderKind::OpenAi => {
            for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
                add(c.pointer("/message/content").and_then(Value::as_str));
                for tc in c
                    .pointer("/message/tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(tc.pointer("/function/arguments").and_then(Value::as_str));
                }
            }
        }
        ProviderKind::Anthropic => {
            for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
                add(b.get("text").and_then(Value::as_str));
                if let Some(i) = b.get("input") {
                    add(Some(&i.to_string()));
                }
            }
        }
        ProviderKind::Gemini => {
            for p in v
                .pointer("/candidates/0/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add(p.get("text").and_then(Value::as_str));
            }
        }
    }
    out
}

/// The text of one upstream stream event, for local counting when usage never arrives.
pub fn answer_text_delta(kind: ProviderKind, v: &Value) -> String {
    match kind {
        ProviderKind::OpenAi => v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        ProviderKind::Anthropic => v
            .pointer("/delta/text")
            .or_else(|| v.pointer("/delta/partial_json"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        ProviderKind::Gemini => answer_text(kind, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_conversation_splits_into_context_and_last_turn() {
        let c = conversation(&json!({"messages": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": "cancel it"},
            {"role": "assistant", "content": "Which order?"},
            {"role": "user", "content": [{"type": "text", "text": "order 7"}]},
            {"role": "assistant", "content": "Order"}
        ]}))
        .unwrap();
        assert_eq!(c.last, "order 7");
        assert_eq!(
            c.context,
            "system: Classify.\nuser: cancel it\nassistant: Which order?\nassistant: Order"
        );
        assert_eq!(c.preamble, "system: Classify.\nassistant: Order");
        let c = conversation(&json!({"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(
            (c.context.as_str(), c.preamble.as_str(), c.last.as_str()),
            ("system: Be brief.", "system: Be brief.", "hi")
        );
        assert!(
            conversation(
                &json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
            )
            .is_none(),
            "images are never compared"
        );
        assert!(conversation(&json!({"messages": [{"role": "assistant", "content": "x"}]})).is_none());
    }

    #[test]
    fn a_transcript_reads_both_client_formats() {
        let openai = json!({"messages": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": [{"type": "text", "text": "card"}, {"type": "image_url", "image_url": {"url": "x"}}]}
        ]});
        assert_eq!(transcript(&openai), "system: Classify.\nuser: card\n");
        let anthropic = json!({"system": "Classify.", "messages": [{"role": "user", "content": "card"}]});
        assert_eq!(transcript(&anthropic), "system: Classify.\nuser: card\n");
    }

    #[test]
    fn answer_text_reads_each_provider() {
        let openai =
            json!({"choices": [{"message": {"content": "a", "tool_calls": [{"function": {"arguments": "{}"}}]}}]});
        assert_eq!(answer_text(ProviderKind::OpenAi, &openai), "a{}");
        let anthropic = json!({"content": [{"type": "text", "text": "b"}]});
        assert_eq!(answer_text(ProviderKind::Anthropic, &anthropic), "b");
        let gemini = json!({"candidates": [{"content": {"parts": [{"text": "c"}]}}]});
        assert_eq!(answer_text(ProviderKind::Gemini, &gemini), "c");
        let delta = json!({"choices": [{"delta": {"content": "d"}}]});
        assert_eq!(answer_text_delta(ProviderKind::OpenAi, &delta), "d");
    }
}
