//! The Anthropic Messages wire format and its translation to and from the OpenAI hub.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::media::{self, untranslatable};
use crate::openai::{self, ChatMessage, ChatRequest, Content, ResponseFormat, Role};
use crate::{Usage, WireError};

/// Anthropic requires `max_tokens`; OpenAI does not. This is what a translated request gets when the
/// client gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: MessageRole,
    pub content: Blocks,
}

/// A string, or a list of content blocks (`text`, `image`, `tool_use`, `tool_result`, ...).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Blocks {
    Text(String),
    List(Vec<Value>),
}

impl<'de> Deserialize<'de> for Blocks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::one_or_many::deserialize(d, "a string or an array of content blocks", Blocks::Text, Blocks::List)
    }
}

pub type System = Blocks;

impl Blocks {
    pub fn text(&self) -> String {
        match self {
            Blocks::Text(s) => s.clone(),
            Blocks::List(blocks) => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn into_list(self) -> Vec<Value> {
        match self {
            Blocks::Text(s) => vec![json!({"type": "text", "text": s})],
            Blocks::List(v) => v,
        }
    }
}

impl MessagesRequest {
    /// Parses and checks a client's request body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let req: MessagesRequest = crate::parse_json(body)?;
        if req.model.trim().is_empty() {
            return Err(WireError::invalid("`model` must not be empty"));
        }
        if req.messages.is_empty() {
            return Err(WireError::invalid("`messages` must contain at least one message"));
        }
        if req.max_tokens == 0 {
            return Err(WireError::invalid("`max_tokens` must be at least 1"));
        }
        Ok(req)
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Translates into the OpenAI hub format.
    pub fn into_openai(self) -> Result<ChatRequest, WireError> {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = self.system {
            messages.push(message(Role::System, Some(Content::Text(system.text()))));
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            match m.role {
                MessageRole::User => user_to_openai(m.content, i, &mut messages)?,
                MessageRole::Assistant => messages.push(assistant_to_openai(m.content, i)?),
            }
        }
        let tools = self
            .tools
            .map(|tools| tools.iter().enumerate().map(|(i, t)| tool_to_openai(i, t)).collect())
            .transpose()?;
        let mut parallel_tool_calls = None;
        let tool_choice = self
            .tool_choice
            .map(|tc| {
                if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                    parallel_tool_calls = Some(false);
                }
                Ok(match tc.get("type").and_then(Value::as_str) {
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => {
                        let name = tc.get("name").and_then(Value::as_str).ok_or_else(|| {
                            WireError::invalid("invalid field `tool_choice`: a `tool` choice needs `name`")
                        })?;
                        json!({"type": "function", "function": {"name": name}})
                    }
                    Some("auto") | None => json!("auto"),
                    Some(other) => {
                        return Err(WireError::invalid(format!(
                            "invalid field `tool_choice`: `{other}` is not `auto`, `any`, `tool` or `none`"
                        )));
                    }
                })
            })
            .transpose()?;
        let stream = self.stream.unwrap_or(false);
        Ok(ChatRequest {
            model: self.model,
            messages,
            stream: stream.then_some(true),
            stream_options: stream.then(|| openai::StreamOptions {
                include_usage: Some(true),
                extra: Map::new(),
            }),
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format: None,
            max_tokens: Some(self.max_tokens),
            max_completion_tokens: None,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop_sequences.map(openai::Stop::Many),
            n: None,
            user: self
                .metadata
                .as_ref()
                .and_then(|m| m.get("user_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            extra: Map::new(),
        })
    }
}

fn message(role: Role, content: Option<Content>) -> ChatMessage {
    ChatMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

/// An Anthropic tool as an OpenAI function tool. Server tools (`web_search_20250305`, `bash_20250124`, ...)
/// run at Anthropic, so no other provider can serve them.
fn tool_to_openai(i: usize, t: &Value) -> Result<openai::Tool, WireError> {
    if let Some(kind) = t.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(WireError::invalid(format!(
            "invalid field `tools[{i}]`: `{kind}` is a tool that Anthropic runs itself; only Anthropic models can serve it"
        )));
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| WireError::invalid(format!("invalid field `tools[{i}].name`: missing")))?;
    Ok(openai::Tool::Function(openai::FunctionDef {
        name: name.to_owned(),
        description: t.get("description").and_then(Value::as_str).map(str::to_owned),
        parameters: t.get("input_schema").cloned(),
        extra: Map::new(),
    }))
}

/// The text of a `tool_result`'s content. OpenAI tool messages carry text only, so an image in a tool
/// result is refused rather than lost.
fn tool_result_text(b: &Value, message: usize, block: usize) -> Result<String, WireError> {
    match b.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    other => {
                        return Err(untranslatable(
                            message,
                            block,
                            format!(
                                "a tool result with a `{}` block cannot be sent to this model, whose tool results are text only",
                                other.unwrap_or("untyped")
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(untranslatable(
            message,
            block,
            "`content` must be a string or an array of blocks",
        )),
    }
}

/// An Anthropic `document` block as OpenAI content parts: a PDF as an inline `file`, plain text as text.
fn document_to_openai(b: &Value, message: usize, block: usize) -> Result<Vec<Value>, WireError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("application/pdf");
            let data = src.get("data").and_then(Value::as_str).unwrap_or("");
            let filename = b.get("title").and_then(Value::as_str).unwrap_or("document.pdf");
            Ok(vec![
                json!({"type": "file", "file": {"filename": filename, "file_data": format!("data:{media};base64,{data}")}}),
            ])
        }
        Some("text") => Ok(vec![
            json!({"type": "text", "text": src.get("data").and_then(Value::as_str).unwrap_or("")}),
        ]),
        Some("content") => Ok(match src.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(parts)) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .map(|p| json!({"type": "text", "text": p.get("text")}))
                .collect(),
            _ => vec![],
        }),
        other => Err(untranslatable(
            message,
            block,
            format!(
                "a document from a `{}` source cannot be sent to this model; send it inline (`base64` or `text`)",
                other.unwrap_or("missing")
            ),
        )),
    }
}

fn user_to_openai(content: Blocks, index: usize, out: &mut Vec<ChatMessage>) -> Result<(), WireError> {
    let blocks = match content {
        Blocks::Text(s) => {
            out.push(message(Role::User, Some(Content::Text(s))));
            return Ok(());
        }
        Blocks::List(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("tool_result") => {
                let text = tool_result_text(b, index, j)?;
                let mut m = message(Role::Tool, Some(Content::Text(text)));
                m.tool_call_id = b.get("tool_use_id").and_then(Value::as_str).map(str::to_owned);
                out.push(m);
            }
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text")})),
            Some("image") => {
                let src = b.get("source").unwrap_or(&Value::Null);
                let url = match (
                    src.get("type").and_then(Value::as_str),
                    src.get("url").and_then(Value::as_str),
                ) {
                    (Some("base64"), _) => format!(
                        "data:{};base64,{}",
                        src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    (Some("url"), Some(url)) => url.to_owned(),
                    (kind, _) => {
                        return Err(untranslatable(
                            index,
                            j,
                            format!(
                                "an image from a `{}` source cannot be sent to this model; send it inline (`base64`) or by `url`",
                                kind.unwrap_or("missing")
                            ),
                        ));
                    }
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("document") => parts.extend(document_to_openai(b, index, j)?),
            other => {
                return Err(untranslatable(
                    index,
                    j,
                    format!(
                        "a `{}` block cannot be sent to this model; text, image, document and tool_result blocks translate",
                        other.unwrap_or("untyped")
                    ),
                ));
            }
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
                Content::Text(only["text"].as_str().unwrap_or("").to_owned())
            }
            _ => Content::Parts(parts),
        };
        out.push(message(Role::User, Some(content)));
    }
    Ok(())
}

fn assistant_to_openai(content: Blocks, index: usize) -> Result<ChatMessage, WireError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in content.into_list().into_iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let name = b.get("name").and_then(Value::as_str).ok_or_else(|| {
                    WireError::invalid(format!(
                        "invalid field `messages[{index}].content`: tool_use without name"
                    ))
                })?;
                calls.push(openai::ToolCall::Function(openai::FunctionToolCall::new(
                    b.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                    openai::FunctionCall {
                        name: name.to_owned(),
                        arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    },
                )));
            }
            // Reasoning is signed for the model that wrote it; no other model can read it back.
            Some("thinking") | Some("redacted_thinking") => {}
            other => {
                return Err(untranslatable(
                    index,
                    j,
                    format!(
                        "a `{}` block cannot be sent to this model; text, tool_use and thinking blocks translate",
                        other.unwrap_or("untyped")
                    ),
                ));
            }
        }
    }
    let mut m = message(
        Role::Assistant,
        (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
    );
    m.tool_calls = (!calls.is_empty()).then_some(calls);
    Ok(m)
}

/// Translates an OpenAI hub request into an Anthropic Messages request body.
pub fn from_openai(req: ChatRequest) -> Result<Value, WireError> {
    if req.n.unwrap_or(1) > 1 {
        return Err(WireError::invalid(
            "`n` greater than 1 is not supported by Anthropic models",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(MessageRole, Vec<Value>)> = Vec::new();
    let mut push = |role: MessageRole, blocks: Vec<Value>| match messages.last_mut() {
        // Anthropic wants roles to alternate: merge consecutive turns of one role.
        Some((last, b)) if *last == role => b.extend(blocks),
        _ => messages.push((role, blocks)),
    };
    for (i, m) in req.messages.into_iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.push(m.content.map(|c| c.text()).unwrap_or_default()),
            Role::User => push(MessageRole::User, content_to_blocks(m.content, i)?),
            Role::Tool | Role::Function => push(
                MessageRole::User,
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.unwrap_or_default(),
                    "content": m.content.map(|c| c.text()).unwrap_or_default(),
                })],
            ),
            Role::Assistant => {
                let mut blocks: Vec<Value> = content_to_blocks(m.content, i)?
                    .into_iter()
                    .filter(|b| b.get("text").and_then(Value::as_str) != Some(""))
                    .collect();
                for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
                    let tc = tc.function_for(i, j, "Anthropic")?;
                    let input: Value = serde_json::from_str(&tc.function.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": tc.id, "name": tc.function.name, "input": input}));
                }
                push(MessageRole::Assistant, blocks);
            }
        }
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            system.push("Respond with a single valid JSON object and nothing else.".into())
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => system.push(format!(
            "Respond with a single valid JSON object and nothing else. It must conform to this JSON schema:\n{}",
            json_schema.schema.clone().unwrap_or(json!({}))
        )),
        _ => {}
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    body.insert(
        "max_tokens".into(),
        json!(
            req.max_completion_tokens
                .or(req.max_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS)
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    if let Some(t) = req.temperature {
        // OpenAI's range is 0..=2, Anthropic's 0..=1.
        body.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = req.stop {
        body.insert("stop_sequences".into(), json!(stop.into_vec()));
    }
    let (choice, offered) = openai::function_tools(req.tools.as_deref(), req.tool_choice.as_ref(), "Anthropic")?;
    if req.tools.is_some() {
        let tools = offered
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "description": f.description.as_deref().unwrap_or_default(),
                    "input_schema": f.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let mut tool_choice = choice.map(|c| match c {
        openai::ToolChoice::Auto => json!({"type": "auto"}),
        openai::ToolChoice::None => json!({"type": "none"}),
        openai::ToolChoice::Required => json!({"type": "any"}),
        openai::ToolChoice::Only { names, required: true } if names.len() == 1 => {
            json!({"type": "tool", "name": names[0]})
        }
        openai::ToolChoice::Only { required, .. } => json!({"type": if required { "any" } else { "auto" }}),
    });
    if req.parallel_tool_calls == Some(false) && body.contains_key("tools") {
        let tc = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        tc["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(tc) = tool_choice {
        body.insert("tool_choice".into(), tc);
    }
    if let Some(user) = req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream == Some(true) {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// OpenAI content as Anthropic blocks. A part Anthropic has no block for is refused by name, never dropped:
/// a model answering without the audio or file it was sent would look like a worse model, not an error.
fn content_to_blocks(content: Option<Content>, index: usize) -> Result<Vec<Value>, WireError> {
    let parts = match content {
        None => return Ok(vec![]),
        Some(Content::Text(s)) => return Ok(vec![json!({"type": "text", "text": s})]),
        Some(Content::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str);
        out.push(match kind {
            Some("text") => json!({"type": "text", "text": p.get("text")}),
            Some("refusal") => json!({"type": "text", "text": p.get("refusal")}),
            Some("image_url") => {
                let url = p
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| untranslatable(index, j, "an `image_url` part needs `image_url.url`"))?;
                match media::parse_data_url(url) {
                    Some((media, data)) => {
                        json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                    }
                    None => json!({"type": "image", "source": {"type": "url", "url": url}}),
                }
            }
            Some("file") => {
                let f = media::openai_file(p).map_err(|why| untranslatable(index, j, why))?;
                file_to_block(&f).map_err(|why| untranslatable(index, j, why))?
            }
            _ => {
                return Err(untranslatable(
                    index,
                    j,
                    format!(
                        "a `{}` part cannot be sent to Anthropic models; text, image_url and file parts translate",
                        kind.unwrap_or("untyped")
                    ),
                ));
            }
        });
    }
    Ok(out)
}

/// An inline file as the Anthropic block for its media type: PDFs and plain text as documents, images as
/// images.
fn file_to_block(f: &media::InlineFile<'_>) -> Result<Value, String> {
    let mut block = match f.media_type {
        "application/pdf" => {
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": f.data}})
        }
        "text/plain" => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f.data)
                .map_err(|e| format!("`file.file_data` is not valid base64: {e}"))?;
            let text = String::from_utf8(bytes).map_err(|_| "a `text/plain` file must be UTF-8".to_owned())?;
            json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}})
        }
        m if m.starts_with("image/") => {
            return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": m, "data": f.data}}));
        }
        m => {
            return Err(format!(
                "a `{m}` file cannot be sent to Anthropic models; PDF, plain text and image files can"
            ));
        }
    };
    if let Some(name) = f.filename {
        block["title"] = json!(name);
    }
    Ok(block)
}

/// Maps Anthropic's `stop_reason` onto OpenAI's `finish_reason`.
pub fn stop_to_finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Translates an Anthropic message response into an OpenAI `chat.completion`.
pub fn response_to_openai(resp: &Value) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in resp.get("content").and_then(Value::as_array).into_iter().flatten() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id"),
                "type": "function",
                "function": {"name": b.get("name"), "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into())},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = stop_to_finish_reason(resp.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn"));
    let usage = resp.get("usage").and_then(Usage::from_anthropic).unwrap_or_default();
    json!({
        "id": resp.get("id"),
        "object": "chat.completion",
        "created": crate::unix_now(),
        "model": resp.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_openai(),
    })
}

/// Translates an OpenAI `chat.completion` into an Anthropic message response.
pub fn response_from_openai(resp: &Value) -> Value {
    let choice = resp
        .get("choices")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut content = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let f = tc.get("function").cloned().unwrap_or(Value::Null);
        let input: Value = f
            .get("arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": tc.get("id"), "name": f.get("name"), "input": input}));
    }
    let stop = openai::finish_to_stop_reason(choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop"));
    let usage = resp.get("usage").and_then(Usage::from_openai).unwrap_or_default();
    json!({
        "id": resp.get("id"),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    })
}

/// Replays a whole message as the events of a stream (for cached answers).
pub fn message_to_events(msg: &Value) -> Vec<Value> {
    let mut start = msg.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["stop_sequence"] = Value::Null;
    let mut out = vec![json!({"type": "message_start", "message": start})];
    for (i, b) in msg
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let mut open = b.clone();
                open["input"] = json!({});
                out.push(json!({"type": "content_block_start", "index": i, "content_block": open}));
                let input = b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into());
                out.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": input}}));
            }
            _ => {
                out.push(
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                );
                let text = b.get("text").cloned().unwrap_or(json!(""));
                out.push(
                    json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}}),
                );
            }
        }
        out.push(json!({"type": "content_block_stop", "index": i}));
    }
    out.push(json!({"type": "message_delta",
        "delta": {"stop_reason": msg.get("stop_reason"), "stop_sequence": msg.get("stop_sequence")},
        "usage": msg.get("usage").cloned().unwrap_or(json!({}))}));
    out.push(json!({"type": "message_stop"}));
    out
}

/// Rebuilds a whole message from the events of an Anthropic stream, for the call log.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    message: Option<Value>,
    blocks: Vec<Value>,
    partial_json: Vec<String>,
}

impl StreamAccumulator {
    pub fn push(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => self.message = event.get("message").cloned(),
            Some("content_block_start") => {
                self.blocks
                    .push(event.get("content_block").cloned().unwrap_or(Value::Null));
                self.partial_json.push(String::new());
            }
            Some("content_block_delta") => {
                let (Some(block), Some(delta)) = (self.blocks.last_mut(), event.get("delta")) else {
                    return;
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = format!(
                            "{}{}",
                            block["text"].as_str().unwrap_or(""),
                            delta.get("text").and_then(Value::as_str).unwrap_or("")
                        );
                        block["text"] = json!(t);
                    }
                    Some("input_json_delta") => {
                        if let Some(p) = self.partial_json.last_mut() {
                            p.push_str(delta.get("partial_json").and_then(Value::as_str).unwrap_or(""));
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                if let (Some(block), Some(json)) = (self.blocks.last_mut(), self.partial_json.last())
                    && !json.is_empty()
                {
                    block["input"] = serde_json::from_str(json).unwrap_or(Value::String(json.clone()));
                }
            }
            Some("message_delta") => {
                if let Some(m) = self.message.as_mut() {
                    if let Some(d) = event.get("delta") {
                        m["stop_reason"] = d.get("stop_reason").cloned().unwrap_or(Value::Null);
                        m["stop_sequence"] = d.get("stop_sequence").cloned().unwrap_or(Value::Null);
                    }
                    if let (Some(u), Some(mu)) = (event.get("usage").and_then(Value::as_object), m.get_mut("usage")) {
                        for (k, v) in u {
                            mu[k] = v.clone();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    pub fn finish(self) -> Value {
        let mut m = self
            .message
            .unwrap_or_else(|| json!({"type": "message", "role": "assistant"}));
        m["content"] = Value::Array(self.blocks);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_request_translates_to_openai() {
        let req = MessagesRequest::parse(
            br#"{"model":"claude-x","max_tokens":100,"system":"be brief","stream":true,
            "stop_sequences":["END"],
            "tools":[{"name":"get_weather","description":"w","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},
            "messages":[{"role":"user","content":"weather?"},
              {"role":"assistant","content":[{"type":"text","text":"checking"},{"type":"tool_use","id":"tu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"tu_1","content":"sunny"},{"type":"text","text":"thanks"}]}]}"#,
        )
        .unwrap();
        let o = serde_json::to_value(req.into_openai().unwrap()).unwrap();
        assert_eq!(o["messages"][0]["role"], "system");
        assert_eq!(o["messages"][0]["content"], "be brief");
        assert_eq!(
            o["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(o["messages"][3]["role"], "tool");
        assert_eq!(o["messages"][3]["tool_call_id"], "tu_1");
        assert_eq!(o["messages"][4]["content"], "thanks");
        assert_eq!(
            o["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(o["tool_choice"], "required");
        assert_eq!(o["parallel_tool_calls"], false);
        assert_eq!(o["stop"][0], "END");
        assert_eq!(o["stream_options"]["include_usage"], true);
        assert_eq!(o["max_tokens"], 100);
    }

    #[test]
    fn openai_request_translates_to_anthropic() {
        let req = ChatRequest::parse(
            br#"{"model":"gpt","temperature":1.5,"stop":"X","response_format":{"type":"json_object"},
            "messages":[{"role":"system","content":"sys"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"},{"role":"user","content":"and?"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
        )
        .unwrap();
        let a = from_openai(req).unwrap();
        assert!(a["system"].as_str().unwrap().starts_with("sys"));
        assert!(a["system"].as_str().unwrap().contains("JSON"));
        assert_eq!(a["temperature"], 1.0);
        assert_eq!(a["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(a["messages"][0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(a["messages"][1]["content"][0]["input"]["x"], 1);
        // The tool result and the next user turn merge into one user message.
        assert_eq!(a["messages"][2]["content"][0]["type"], "tool_result");
        assert_eq!(a["messages"][2]["content"][1]["text"], "and?");
        assert_eq!(a["tool_choice"]["name"], "f");
        assert_eq!(a["stop_sequences"][0], "X");
    }

    #[test]
    fn files_translate_and_what_cannot_is_refused_by_name() {
        let req = |content: &str| {
            ChatRequest::parse(format!(r#"{{"model":"m","messages":[{{"role":"user","content":"q"}},{{"role":"user","content":{content}}}]}}"#).as_bytes())
                .unwrap()
        };
        let a = from_openai(req(
            r#"[{"type":"file","file":{"filename":"r.pdf","file_data":"data:application/pdf;base64,JVBERi0="}},
                {"type":"file","file":{"filename":"n.txt","file_data":"data:text/plain;base64,aGVsbG8="}},
                {"type":"file","file":{"file_data":"data:image/jpeg;base64,/9j/"}}]"#,
        ))
        .unwrap();
        let blocks = &a["messages"][0]["content"];
        assert_eq!(
            blocks[1],
            json!({"type": "document", "title": "r.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
        );
        assert_eq!(
            blocks[2]["source"],
            json!({"type": "text", "media_type": "text/plain", "data": "hello"})
        );
        assert_eq!(blocks[3]["type"], "image");
        assert_eq!(blocks[3]["source"]["media_type"], "image/jpeg");

        for (content, says) in [
            (
                r#"[{"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}}]"#,
                "`input_audio` part",
            ),
            (r#"[{"type":"file","file":{"file_id":"file-abc"}}]"#, "file_id"),
            (
                r#"[{"type":"file","file":{"file_data":"data:application/zip;base64,UEsD"}}]"#,
                "application/zip",
            ),
            (
                r#"[{"type":"file","file":{"file_data":"data:text/plain;base64,!!"}}]"#,
                "base64",
            ),
            (r#"[{"type":"text","text":"a"},{"type":"video"}]"#, "`video`"),
        ] {
            let e = from_openai(req(content)).unwrap_err();
            assert!(e.message.contains("messages[1].content["), "{content}: {}", e.message);
            assert!(e.message.contains(says), "{content}: {}", e.message);
        }
        let custom = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","custom":{"name":"exec"}}]}"#,
        )
        .unwrap();
        assert!(from_openai(custom).unwrap_err().message.contains("`tools[0]`"));
        let call = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{"name":"exec","input":"1"}}]}]}"#,
        )
        .unwrap();
        assert!(
            from_openai(call)
                .unwrap_err()
                .message
                .contains("messages[1].tool_calls[0]")
        );
    }

    #[test]
    fn anthropic_documents_translate_and_what_cannot_is_refused_by_name() {
        let parse = |blocks: &str| {
            MessagesRequest::parse(
                format!(r#"{{"model":"c","max_tokens":9,"messages":[{{"role":"user","content":{blocks}}}]}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        let o = serde_json::to_value(
            parse(
                r#"[{"type":"document","title":"r.pdf","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}},
                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain words"}},
                {"type":"text","text":"summarise","cache_control":{"type":"ephemeral"}}]"#,
            )
            .into_openai()
            .unwrap(),
        )
        .unwrap();
        let parts = &o["messages"][0]["content"];
        assert_eq!(
            parts[0],
            json!({"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBE"}})
        );
        assert_eq!(parts[1], json!({"type": "text", "text": "plain words"}));
        assert_eq!(parts[2]["text"], "summarise");

        for (blocks, says) in [
            (
                r#"[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]"#,
                "`url` source",
            ),
            (
                r#"[{"type":"search_result","source":"s","title":"t","content":[]}]"#,
                "`search_result` block",
            ),
            (
                r#"[{"type":"image","source":{"type":"file","file_id":"file_1"}}]"#,
                "`file` source",
            ),
            (
                r#"[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{}}]}]"#,
                "`image` block",
            ),
        ] {
            let e = parse(blocks).into_openai().unwrap_err();
            assert!(e.message.contains("messages[0].content[0]"), "{blocks}: {}", e.message);
            assert!(e.message.contains(says), "{blocks}: {}", e.message);
        }
        let server_tool = MessagesRequest::parse(
            br#"{"model":"c","max_tokens":9,"messages":[{"role":"user","content":"x"}],
            "tools":[{"name":"f","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}]}"#,
        )
        .unwrap();
        let e = server_tool.into_openai().unwrap_err();
        assert!(
            e.message.contains("`tools[1]`") && e.message.contains("web_search_20250305"),
            "{}",
            e.message
        );
        // Reasoning from an earlier answer is left behind; its text and calls are not.
        let thought = MessagesRequest::parse(
            br#"{"model":"c","max_tokens":9,"messages":[{"role":"user","content":"x"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"hi"}]},
            {"role":"user","content":"y"}]}"#,
        )
        .unwrap();
        let o = serde_json::to_value(thought.into_openai().unwrap()).unwrap();
        assert_eq!(o["messages"][1]["content"], "hi");
    }

    #[test]
    fn tool_choices_translate_both_ways() {
        let req = |choice: &str| {
            ChatRequest::parse(
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tool_choice":{choice},
                "tools":[{{"type":"function","function":{{"name":"a"}}}},{{"type":"function","function":{{"name":"b"}}}}]}}"#)
                .as_bytes(),
            )
            .unwrap()
        };
        let names = |a: &Value| {
            a["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].clone())
                .collect::<Vec<_>>()
        };
        let a = from_openai(req(r#"{"type":"allowed_tools","allowed_tools":{"mode":"required","tools":[{"type":"function","function":{"name":"b"}}]}}"#)).unwrap();
        assert_eq!(a["tool_choice"], json!({"type": "tool", "name": "b"}));
        assert_eq!(names(&a), [json!("b")]);
        let a = from_openai(req(r#"{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[{"type":"function","function":{"name":"a"}}]}}"#)).unwrap();
        assert_eq!(a["tool_choice"], json!({"type": "auto"}));
        assert_eq!(names(&a), [json!("a")]);
        let a = from_openai(req(r#""required""#)).unwrap();
        assert_eq!(a["tool_choice"], json!({"type": "any"}));
        assert_eq!(names(&a).len(), 2);
        let e = from_openai(req(r#"{"type":"function"}"#)).unwrap_err();
        assert!(e.message.contains("function.name"), "{}", e.message);

        let back = |choice: &str| {
            MessagesRequest::parse(
                format!(r#"{{"model":"c","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],"tool_choice":{choice}}}"#)
                    .as_bytes(),
            )
            .unwrap()
            .into_openai()
        };
        let o = serde_json::to_value(back(r#"{"type":"tool","name":"a"}"#).unwrap()).unwrap();
        assert_eq!(o["tool_choice"], json!({"type": "function", "function": {"name": "a"}}));
        assert!(back(r#"{"type":"tool"}"#).unwrap_err().message.contains("needs `name`"));
        assert!(
            back(r#"{"type":"sometimes"}"#)
                .unwrap_err()
                .message
                .contains("`sometimes`")
        );
    }

    #[test]
    fn n_above_one_is_refused() {
        let req = ChatRequest::parse(br#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(from_openai(req).unwrap_err().message.contains("`n`"));
    }

    #[test]
    fn responses_translate_both_ways() {
        let a = json!({"id":"msg_1","type":"message","role":"assistant","model":"claude",
            "content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"tu","name":"f","input":{"q":1}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}});
        let o = response_to_openai(&a);
        assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"q":1}"#
        );
        assert_eq!(o["usage"]["prompt_tokens"], 15);
        assert_eq!(o["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
        let back = response_from_openai(&o);
        assert_eq!(back["stop_reason"], "tool_use");
        assert_eq!(back["content"][0]["text"], "Let me check.");
        assert_eq!(back["content"][1]["input"]["q"], 1);
        assert_eq!(back["usage"]["input_tokens"], 10);
        assert_eq!(back["usage"]["cache_read_input_tokens"], 5);
    }

    #[test]
    fn a_message_replays_as_events_and_back() {
        let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 4, "output_tokens": 6}});
        let mut acc = StreamAccumulator::default();
        message_to_events(&msg).iter().for_each(|e| acc.push(e));
        assert_eq!(acc.finish(), msg);
    }

    #[test]
    fn missing_max_tokens_is_named() {
        let e = MessagesRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.message.contains("max_tokens"), "{}", e.message);
    }
}
