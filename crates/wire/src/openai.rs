//! The OpenAI Chat Completions wire format, the hub of every translation.
//!
//! Request types keep every field they do not name in `extra`, so a request served by an
//! OpenAI-compatible upstream reaches it with all its fields, known to LeanLM or not.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Usage, WireError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: a plain string or a list of typed parts (`text`, `image_url`, ...).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::one_or_many::deserialize(
            d,
            "a string or an array of content parts",
            Content::Text,
            Content::Parts,
        )
    }
}

impl Content {
    /// The text of the content, parts joined; non-text parts are skipped.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A tool the model may call. Function tools are what every provider takes. Any other kind (OpenAI's
/// `custom` tools, say) is kept as sent: an OpenAI-compatible upstream gets it unchanged, and a
/// translation to another provider refuses it by name rather than dropping it.
#[derive(Debug, Clone)]
pub enum Tool {
    Function(FunctionDef),
    Other(Map<String, Value>),
}

impl Tool {
    /// The function this tool declares, or an error naming `tools[index]` for a provider that takes
    /// function tools only.
    pub fn function_for(&self, index: usize, provider: &str) -> Result<&FunctionDef, WireError> {
        match self {
            Tool::Function(f) => Ok(f),
            Tool::Other(o) => Err(WireError::invalid(format!(
                "invalid field `tools[{index}]`: a `{}` tool cannot be sent to {provider} models; only `function` tools translate",
                type_of(o)
            ))),
        }
    }
}

fn type_of(o: &Map<String, Value>) -> &str {
    o.get("type").and_then(Value::as_str).unwrap_or("untyped")
}

impl Serialize for Tool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Tool::Function(f) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", "function")?;
                m.serialize_entry("function", f)?;
                m.end()
            }
            Tool::Other(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Tool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut o = Map::deserialize(d)?;
        match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let f = o
                    .remove("function")
                    .ok_or_else(|| D::Error::missing_field("function"))?;
                FunctionDef::deserialize(f)
                    .map(Tool::Function)
                    .map_err(|e| D::Error::custom(format_args!("`function`: {e}")))
            }
            Some(_) => Ok(Tool::Other(o)),
            None => Err(D::Error::missing_field("type")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What an OpenAI `tool_choice` asks, read once for every translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// Only these tools may be called (a named function, or `allowed_tools`); `required`: one must be.
    Only {
        names: Vec<&'a str>,
        required: bool,
    },
}

impl<'a> ToolChoice<'a> {
    /// Reads a `tool_choice` for a provider other than OpenAI's kind, which names it in errors: a choice it
    /// cannot express (a `custom` tool) is refused, as a malformed one is.
    pub fn parse(v: &'a Value, provider: &str) -> Result<ToolChoice<'a>, WireError> {
        let bad = |why: String| WireError::invalid(format!("invalid field `tool_choice`: {why}"));
        let function_name = |f: &'a Value, at: &str| {
            f.pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("`{at}function.name` is missing")))
        };
        match v {
            Value::String(s) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                other => Err(bad(format!("`{other}` is not `auto`, `none` or `required`"))),
            },
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("function") => Ok(ToolChoice::Only {
                    names: vec![function_name(v, "")?],
                    required: true,
                }),
                Some("allowed_tools") => {
                    let allowed = o.get("allowed_tools").unwrap_or(&Value::Null);
                    let required = match allowed.get("mode").and_then(Value::as_str) {
                        Some("required") => true,
                        Some("auto") | None => false,
                        Some(other) => {
                            return Err(bad(format!(
                                "`allowed_tools.mode` `{other}` is not `auto` or `required`"
                            )));
                        }
                    };
                    let names = allowed
                        .get("tools")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad("`allowed_tools.tools` must be a list of tools".into()))?
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match t.get("type").and_then(Value::as_str) {
                            Some("function") => function_name(t, &format!("allowed_tools.tools[{i}].")),
                            other => Err(bad(format!(
                                "a `{}` tool cannot be sent to {provider} models; only `function` tools translate",
                                other.unwrap_or("untyped")
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(ToolChoice::Only { names, required })
                }
                other => Err(bad(format!(
                    "a `{}` tool choice cannot be sent to {provider} models",
                    other.unwrap_or("untyped")
                ))),
            },
            Value::Null => Ok(ToolChoice::Auto),
            _ => Err(bad("must be a string or an object".into())),
        }
    }

    /// Whether a tool of this name may be offered to the model at all.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            ToolChoice::Only { names, .. } => names.contains(&name),
            _ => true,
        }
    }
}

/// The tool choice of a request and the function tools to offer, for a provider that takes function tools
/// only (named in errors). The tools an `allowed_tools` choice leaves out are not offered: neither Anthropic
/// nor Gemini (unless a call is required) can restrict a call to some of the tools it is shown.
pub fn function_tools<'a>(
    tools: Option<&'a [Tool]>,
    tool_choice: Option<&'a Value>,
    provider: &str,
) -> Result<(Option<ToolChoice<'a>>, Vec<&'a FunctionDef>), WireError> {
    let choice = tool_choice.map(|tc| ToolChoice::parse(tc, provider)).transpose()?;
    let mut offered = Vec::new();
    for (i, t) in tools.into_iter().flatten().enumerate() {
        let f = t.function_for(i, provider)?;
        if choice.as_ref().is_none_or(|c| c.allows(&f.name)) {
            offered.push(f);
        }
    }
    Ok((choice, offered))
}

/// A call an assistant message made. Function calls are what every provider takes; any other kind
/// (a `custom` tool's call) is kept as sent, like [`Tool::Other`].
#[derive(Debug, Clone)]
pub enum ToolCall {
    Function(FunctionToolCall),
    Other(Map<String, Value>),
}

/// A call of a function tool.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionToolCall {
    pub id: String,
    pub function: FunctionCall,
    /// Fields besides these, kept as sent: Gemini's thought signature in `extra_content`, say.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl FunctionToolCall {
    pub fn new(id: String, function: FunctionCall) -> Self {
        FunctionToolCall {
            id,
            function,
            extra: Map::new(),
        }
    }

    /// The Gemini thought signature this call carries, where Google's OpenAI-compatible convention
    /// (`extra_content.google.thought_signature`) put one.
    pub fn thought_signature(&self) -> Option<&str> {
        self.extra
            .get("extra_content")?
            .get("google")?
            .get("thought_signature")?
            .as_str()
    }
}

impl ToolCall {
    /// The function call, or an error naming `messages[message].tool_calls[index]` for a provider that
    /// takes function calls only.
    pub fn function_for(&self, message: usize, index: usize, provider: &str) -> Result<&FunctionToolCall, WireError> {
        match self {
            ToolCall::Function(c) => Ok(c),
            ToolCall::Other(o) => Err(WireError::invalid(format!(
                "invalid field `messages[{message}].tool_calls[{index}]`: a `{}` tool call cannot be sent to {provider} models; only `function` calls translate",
                type_of(o)
            ))),
        }
    }

    /// Whether this call carries `extra_content`, a field that strict OpenAI-compatible servers refuse.
    pub fn has_extra_content(&self) -> bool {
        matches!(self, ToolCall::Function(c) if c.extra.contains_key("extra_content"))
    }
}

impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ToolCall::Function(c) => {
                let mut m = s.serialize_map(Some(3 + c.extra.len()))?;
                m.serialize_entry("id", &c.id)?;
                m.serialize_entry("type", "function")?;
                m.serialize_entry("function", &c.function)?;
                for (k, v) in &c.extra {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            ToolCall::Other(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut o = Map::deserialize(d)?;
        // A call without `type` is a function call, as OpenAI's own API reads it.
        match o.get("type").map(|t| t.as_str()) {
            None | Some(Some("function")) => {
                o.remove("type");
                FunctionToolCall::deserialize(Value::Object(o))
                    .map(ToolCall::Function)
                    .map_err(D::Error::custom)
            }
            Some(_) => Ok(ToolCall::Other(o)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::one_or_many::deserialize(d, "a string or an array of strings", Stop::One, Stop::Many)
    }
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

impl ChatRequest {
    /// Parses and checks a client's request body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let req: ChatRequest = crate::parse_json(body)?;
        if req.model.trim().is_empty() {
            return Err(WireError::invalid("`model` must not be empty"));
        }
        if req.messages.is_empty() {
            return Err(WireError::invalid("`messages` must contain at least one message"));
        }
        for (i, m) in req.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.is_none() {
                return Err(WireError::invalid(format!(
                    "invalid field `messages[{i}]`: a `tool` message needs `tool_call_id`"
                )));
            }
        }
        Ok(req)
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a final usage chunk in its stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Whether an assistant tool call carries `extra_content`: Gemini's thought signatures, which Google's
    /// OpenAI-compatible API needs back and strict OpenAI-compatible servers refuse.
    pub fn has_tool_call_extra_content(&self) -> bool {
        self.messages
            .iter()
            .flat_map(|m| m.tool_calls.iter().flatten())
            .any(ToolCall::has_extra_content)
    }

    /// Removes `extra_content` from every tool call.
    pub fn strip_tool_call_extra_content(&mut self) {
        for c in self.messages.iter_mut().flat_map(|m| m.tool_calls.iter_mut().flatten()) {
            if let ToolCall::Function(c) = c {
                c.extra.remove("extra_content");
            }
        }
    }

    /// The output token cap, whichever field carried it.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// Maps an OpenAI `finish_reason` onto Anthropic's `stop_reason`.
pub fn finish_to_stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A `chat.completion.chunk` with the given delta.
pub fn chunk(id: &str, model: &str, created: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
    })
}

/// The final usage-only chunk of a stream with `include_usage`.
pub fn usage_chunk(id: &str, model: &str, created: u64, usage: &Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.to_openai(),
    })
}

/// Replays a whole `chat.completion` as the chunks of a stream (for cached answers): the role, the text, the
/// tool calls, the finish reason, and the usage chunk if asked.
pub fn completion_to_chunks(resp: &Value, include_usage: bool) -> Vec<Value> {
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("chatcmpl-leanlm");
    let model = resp.get("model").and_then(Value::as_str).unwrap_or("");
    let created = resp.get("created").and_then(Value::as_u64).unwrap_or(0);
    let msg = resp.pointer("/choices/0/message").cloned().unwrap_or(Value::Null);
    let mut out = vec![chunk(
        id,
        model,
        created,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    if let Some(t) = msg.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        out.push(chunk(id, model, created, json!({"content": t}), None));
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = json!(i);
                c
            })
            .collect();
        out.push(chunk(id, model, created, json!({"tool_calls": calls}), None));
    }
    let finish = resp
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    out.push(chunk(id, model, created, json!({}), Some(finish)));
    if include_usage {
        let usage = resp.get("usage").and_then(Usage::from_openai).unwrap_or_default();
        out.push(usage_chunk(id, model, created, &usage));
    }
    out
}

/// Rebuilds a whole `chat.completion` from the chunks of a stream, for the call log.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    content: String,
    tool_calls: Vec<Value>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl StreamAccumulator {
    pub fn push(&mut self, chunk: &Value) {
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
            self.model = chunk.get("model").and_then(Value::as_str).map(str::to_owned);
            self.created = chunk.get("created").and_then(Value::as_u64);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(f.to_owned());
        }
        let Some(delta) = choice.get("delta") else { return };
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            self.content.push_str(t);
        }
        for tc in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let idx = tc.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            while self.tool_calls.len() <= idx {
                self.tool_calls
                    .push(json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}));
            }
            let slot = &mut self.tool_calls[idx];
            if let Some(id) = tc.get("id").and_then(Value::as_str) {
                slot["id"] = json!(id);
            }
            // A Gemini thought signature, which the answer's next turn needs back (cached answers too).
            if let Some(extra) = tc.get("extra_content") {
                slot["extra_content"] = extra.clone();
            }
            if let Some(f) = tc.get("function") {
                if let Some(n) = f.get("name").and_then(Value::as_str) {
                    let name = format!("{}{n}", slot["function"]["name"].as_str().unwrap_or(""));
                    slot["function"]["name"] = json!(name);
                }
                if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                    let args = format!("{}{a}", slot["function"]["arguments"].as_str().unwrap_or(""));
                    slot["function"]["arguments"] = json!(args);
                }
            }
        }
    }

    pub fn finish(self) -> Value {
        let mut message = json!({ "role": "assistant", "content": self.content });
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(self.tool_calls);
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish_reason }],
            "usage": self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","x_custom":1}],
            "seed":7,"logprobs":true,"stream_options":{"include_usage":true}}"#;
        let req = ChatRequest::parse(body).unwrap();
        assert!(req.wants_stream_usage());
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["seed"], 7);
        assert_eq!(back["logprobs"], true);
        assert_eq!(back["messages"][0]["x_custom"], 1);
        assert!(back.get("temperature").is_none(), "absent fields stay absent");
    }

    #[test]
    fn tools_of_other_kinds_pass_through_unchanged() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"run it"},
            {"role":"assistant","tool_calls":[{"id":"c1","type":"custom","custom":{"name":"exec","input":"print(1)"}},
              {"id":"c2","function":{"name":"f","arguments":"{}"},"extra_content":{"google":{"thought_signature":"sig"}}}]},
            {"role":"tool","tool_call_id":"c1","content":"1"}],
            "tools":[{"type":"custom","custom":{"name":"exec","format":{"type":"text"}}},
              {"type":"function","function":{"name":"f","strict":true}}]}"#;
        let req = ChatRequest::parse(body).unwrap();
        let back = serde_json::to_value(&req).unwrap();
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(back["tools"], sent["tools"]);
        assert_eq!(
            back["messages"][1]["tool_calls"][0],
            sent["messages"][1]["tool_calls"][0]
        );
        // A call without `type` is a function call, and says so once written out.
        assert_eq!(back["messages"][1]["tool_calls"][1]["type"], "function");
        assert_eq!(
            back["messages"][1]["tool_calls"][1]["extra_content"]["google"]["thought_signature"],
            "sig"
        );
        let e = req.tools.as_ref().unwrap()[0].function_for(0, "Anthropic").unwrap_err();
        assert!(
            e.message.contains("`tools[0]`") && e.message.contains("`custom`"),
            "{}",
            e.message
        );
        let calls = req.messages[1].tool_calls.as_ref().unwrap();
        let e = calls[0].function_for(1, 0, "Gemini").unwrap_err();
        assert!(e.message.contains("messages[1].tool_calls[0]"), "{}", e.message);
        assert_eq!(
            calls[1].function_for(1, 1, "Gemini").unwrap().thought_signature(),
            Some("sig")
        );

        let mut req = req;
        assert!(req.has_tool_call_extra_content());
        req.strip_tool_call_extra_content();
        assert!(!req.has_tool_call_extra_content());
        let back = serde_json::to_value(&req).unwrap();
        assert!(back["messages"][1]["tool_calls"][1].get("extra_content").is_none());
    }

    #[test]
    fn tool_choices_are_read_for_translation() {
        let parse = |v: Value| {
            ToolChoice::parse(&v, "Gemini")
                .map(|c| format!("{c:?}"))
                .map_err(|e| e.message)
        };
        assert_eq!(parse(json!("required")).unwrap(), "Required");
        assert_eq!(parse(json!(null)).unwrap(), "Auto");
        assert_eq!(
            parse(json!({"type": "function", "function": {"name": "f"}})).unwrap(),
            r#"Only { names: ["f"], required: true }"#
        );
        let allowed = json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]}});
        assert_eq!(
            parse(allowed).unwrap(),
            r#"Only { names: ["a", "b"], required: false }"#
        );
        for (bad, says) in [
            (json!("sometimes"), "`sometimes`"),
            (json!({"type": "function"}), "function.name"),
            (
                json!({"type": "custom", "custom": {"name": "exec"}}),
                "`custom` tool choice cannot be sent to Gemini",
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}),
                "allowed_tools.tools",
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "always", "tools": []}}),
                "`always`",
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"tools": [{"type": "function", "function": {}}]}}),
                "allowed_tools.tools[0].function.name",
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"tools": [{"type": "custom"}]}}),
                "`custom` tool cannot",
            ),
            (json!(3), "string or an object"),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert!(e.contains("`tool_choice`") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_tools_name_the_field() {
        let e = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("tools[0]") && e.message.contains("function"),
            "{}",
            e.message
        );
        let e = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"description":"d"}}]}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("tools[0]") && e.message.contains("name"),
            "{}",
            e.message
        );
        let e = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"function":{}}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("type"), "{}", e.message);
        let e = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f"}}]}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("messages[0].tool_calls[0]"), "{}", e.message);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = ChatRequest::parse(br#"{"model":"m"}"#).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"model":"m","messages":[{"role":"bot","content":"x"}]}"#).unwrap_err();
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"model":"m","messages":"hi"}"#).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"model":"m","messages":[],"temperature":"hot"}"#).unwrap_err();
        assert!(e.message.contains("temperature"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert!(e.message.contains("at least one"), "{}", e.message);
        let e = ChatRequest::parse(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn a_completion_replays_as_a_stream_and_back() {
        let resp = json!({"id": "c9", "model": "m", "created": 5, "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}});
        let chunks = completion_to_chunks(&resp, true);
        let mut acc = StreamAccumulator::default();
        chunks.iter().for_each(|c| acc.push(c));
        let back = acc.finish();
        assert_eq!(back["choices"][0]["message"]["content"], "hi");
        assert_eq!(back["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"]["prompt_tokens"], 3);
        assert!(
            completion_to_chunks(&resp, false)
                .iter()
                .all(|c| c.get("usage").is_none())
        );
    }

    #[test]
    fn accumulator_rebuilds_text_and_tool_calls() {
        let mut acc = StreamAccumulator::default();
        acc.push(&chunk(
            "c1",
            "m",
            1,
            json!({"role": "assistant", "content": "Hel"}),
            None,
        ));
        acc.push(&chunk("c1", "m", 1, json!({"content": "lo"}), None));
        acc.push(&chunk(
            "c1", "m", 1,
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""},
                "extra_content": {"google": {"thought_signature": "s"}}}]}),
            None,
        ));
        acc.push(&chunk(
            "c1",
            "m",
            1,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Some("tool_calls"),
        ));
        let done = acc.finish();
        assert_eq!(done["choices"][0]["message"]["content"], "Hello");
        assert_eq!(
            done["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            done["choices"][0]["message"]["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
            "s"
        );
    }
}
