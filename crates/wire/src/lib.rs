//! Wire formats spoken by LeanLM: the OpenAI Chat Completions and Anthropic Messages APIs on the client
//! side, and OpenAI, Anthropic and Gemini on the upstream side.
//!
//! Everything here is pure data and translation, with no I/O, so that the gateway's request path can be
//! tested exhaustively without a network. The OpenAI chat format is the hub: every translation goes
//! through it, so N formats need 2N translations rather than N².

pub mod anthropic;
pub mod error;
pub mod gemini;
mod media;
mod one_or_many;
pub mod openai;
pub mod path;
pub mod stream;

pub use error::{ErrorKind, WireError};
pub use leanlm_core::{ClientFormat, ProviderKind, Usage};

/// Seconds since the Unix epoch, for the `created` fields of synthesised responses.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The answer's text in a response of either client format (an OpenAI `chat.completion` or an Anthropic
/// message): message text, then tool calls as `name(arguments)`.
pub fn output_text(resp: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = String::new();
    if let Some(choice) = resp.pointer("/choices/0/message") {
        if let Some(t) = choice.get("content").and_then(Value::as_str) {
            out.push_str(t);
        }
        for tc in choice.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let name = tc.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
            let args = tc.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
            out.push_str(&format!("{name}({args})"));
        }
    } else if let Some(blocks) = resp.get("content").and_then(Value::as_array) {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                out.push_str(t);
            } else if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                out.push_str(&format!(
                    "{name}({})",
                    b.get("input").map(Value::to_string).unwrap_or_default()
                ));
            }
        }
    }
    out.trim().to_owned()
}

/// [`output_text`] of a response body that is still text, without building its JSON tree: the call log hashes
/// every answer this way, and a typed pass that skips what it does not need costs a fraction of a `Value`.
/// `None` where the body is not JSON. Bodies of an unexpected shape take the `Value` path, so the text is
/// always what [`output_text`] gives.
pub fn output_text_of(body: &str) -> Option<String> {
    if let Ok(view) = serde_json::from_str::<view::Response>(body) {
        return Some(view.text());
    }
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .map(|v| output_text(&v))
}

/// Borrowed views of the parts of a response that [`output_text`] reads. Any field of another type than
/// these fails the parse, and the caller falls back to the general path.
mod view {
    use std::borrow::Cow;

    use serde::{Deserialize, Deserializer};

    /// A field that may be absent (`None`), `null` (`Some(None)`) or a value: `output_text` treats a
    /// `null` message as present and a `null` tool input as the text `null`.
    fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    #[derive(Deserialize)]
    pub(super) struct Response<'a> {
        #[serde(default, borrow)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(default, borrow)]
        content: Option<Vec<Block<'a>>>,
    }

    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow, deserialize_with = "present")]
        message: Option<Option<Message<'a>>>,
    }

    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(default, borrow)]
        content: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }

    #[derive(Deserialize)]
    struct ToolCall<'a> {
        #[serde(default, borrow)]
        function: Option<Function<'a>>,
    }

    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        arguments: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(default, borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(default, borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default, deserialize_with = "present")]
        input: Option<Option<serde_json::Value>>,
    }

    impl Response<'_> {
        pub(super) fn text(&self) -> String {
            let mut out = String::new();
            if let Some(message) = self
                .choices
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| c.message.as_ref())
            {
                if let Some(m) = message {
                    out.push_str(m.content.as_deref().unwrap_or(""));
                    for tc in m.tool_calls.iter().flatten() {
                        let f = tc.function.as_ref();
                        let name = f.and_then(|f| f.name.as_deref()).unwrap_or("");
                        let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or("");
                        out.push_str(&format!("{name}({args})"));
                    }
                }
            } else {
                for b in self.content.iter().flatten() {
                    if let Some(t) = &b.text {
                        out.push_str(t);
                    } else if b.kind.as_deref() == Some("tool_use") {
                        let name = b.name.as_deref().unwrap_or("");
                        let input = match &b.input {
                            None => String::new(),
                            Some(None) => "null".to_owned(),
                            Some(Some(v)) => v.to_string(),
                        };
                        out.push_str(&format!("{name}({input})"));
                    }
                }
            }
            out.trim().to_owned()
        }
    }
}

/// The answer's token log-probabilities in an OpenAI `chat.completion` (`choices[0].logprobs.content`),
/// when the request asked for them and the provider returned them.
pub fn output_logprobs(resp: &serde_json::Value) -> Option<Vec<f64>> {
    token_logprobs(resp.pointer("/choices/0/logprobs/content")?, "logprob")
}

/// The finite `key` of each token in a list, or `None` where there is none.
pub(crate) fn token_logprobs(tokens: &serde_json::Value, key: &str) -> Option<Vec<f64>> {
    let out: Vec<f64> = tokens
        .as_array()?
        .iter()
        .filter_map(|t| t.get(key)?.as_f64())
        .filter(|l| l.is_finite())
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Parses a JSON body into `T`, reporting the path of the first bad field (`messages[2].role: ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    // Tracking the path costs about half again the parse on every request; only a bad body needs it, so it
    // is parsed a second time, with the path, to say where it is bad.
    if let Ok(parsed) = serde_json::from_slice(body) {
        return Ok(parsed);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            WireError::invalid(format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            WireError::invalid(format!("invalid request body: {inner}"))
        } else {
            WireError::invalid(format!("invalid field `{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn log_probabilities_are_read_where_present() {
        let v = json!({"choices": [{"message": {"content": "hi there"}, "logprobs": {"content": [
            {"token": "hi", "logprob": -0.01, "bytes": null, "top_logprobs": []},
            {"token": " there", "logprob": -1.5, "bytes": null, "top_logprobs": []}
        ]}}]});
        assert_eq!(super::output_logprobs(&v), Some(vec![-0.01, -1.5]));
        let none = json!({"choices": [{"message": {"content": "hi"}, "logprobs": null}]});
        assert_eq!(super::output_logprobs(&none), None);
        assert_eq!(super::output_logprobs(&json!({"content": []})), None);
    }

    #[test]
    fn the_typed_answer_text_is_the_general_one_whatever_the_shape() {
        let bodies = [
            json!({"choices": [{"message": {"role": "assistant", "content": "  card_arrival\n"}}], "usage": {"prompt_tokens": 3}}),
            json!({"choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "function": {"arguments": "{}"}},
                {"id": "c3"}
            ]}}]}),
            json!({"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]}),
            json!({"choices": [{"message": null}], "content": [{"text": "not read"}]}),
            json!({"choices": [{"index": 0}], "content": [{"type": "text", "text": "read"}]}),
            json!({"choices": [], "content": [{"type": "text", "text": "é \"quoted\""}]}),
            json!({"choices": null}),
            json!({"content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"b": 1, "a": [true, null]}},
                {"type": "tool_use", "name": "nothing", "input": null},
                {"type": "tool_use", "name": "absent"},
                {"type": "image"}]}),
            // Shapes the typed pass refuses, answered by the general path.
            json!({"choices": [{"message": {"content": [{"type": "text", "text": "parts"}]}}]}),
            json!({"choices": [{"message": "odd"}]}),
            json!({"choices": [1, 2]}),
            json!({"choices": "odd", "content": [{"text": 5, "type": "tool_use", "name": "n", "input": 1}]}),
            json!({"content": "a plain string"}),
            json!({"content": [{"type": "tool_use", "name": 7}]}),
            json!([1, 2, 3]),
            json!("text"),
        ];
        for b in &bodies {
            let text = b.to_string();
            assert_eq!(super::output_text_of(&text), Some(super::output_text(b)), "{text}");
        }
        assert_eq!(
            super::output_text_of(r#"{"choices": [{"message": {"content": "x"}}], "choices": []}"#),
            Some(super::output_text(&serde_json::from_str(r#"{"choices": []}"#).unwrap())),
            "a repeated key counts once, as in a JSON value (the last wins)"
        );
        assert_eq!(super::output_text_of("{not json"), None);
        assert_eq!(super::output_text_of(""), None);
    }
}
