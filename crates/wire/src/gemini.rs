//! The Gemini `generateContent` wire format, reached through the OpenAI hub.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::media::{self, untranslatable};
use crate::openai::{self, ChatRequest, Content, ResponseFormat, Role, ToolChoice};
use crate::{Usage, WireError};

/// The thought signature Google documents for a function call that Gemini did not make (a history from
/// another model): it tells Gemini 3 to skip the check that would otherwise refuse the request.
pub const UNSIGNED_CALL: &str = "skip_thought_signature_validator";

/// Translates an OpenAI hub request into a Gemini `generateContent` body (the model goes in the URL).
pub fn from_openai(req: ChatRequest) -> Result<Value, WireError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini's function responses name the function; OpenAI's tool messages only carry the call id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut push = |role: &str, parts: Vec<Value>| {
        if parts.is_empty() {
            return;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(p) = last["parts"].as_array_mut() {
                    p.extend(parts)
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    };
    for (i, m) in req.messages.into_iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                system.push(json!({"text": m.content.map(|c| c.text()).unwrap_or_default()}))
            }
            Role::User => push("user", content_parts(m.content, i)?),
            Role::Assistant => {
                let mut parts: Vec<Value> = content_parts(m.content, i)?
                    .into_iter()
                    .filter(|p| p.get("text").and_then(Value::as_str) != Some(""))
                    .collect();
                let calls = m
                    .tool_calls
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(j, tc)| tc.function_for(i, j, "Gemini"))
                    .collect::<Result<Vec<_>, WireError>>()?;
                // Gemini 3 refuses a function call in its history without the thought signature it came with.
                // One from a Gemini answer comes back in `extra_content`; a call another model made has none,
                // and Google's documented placeholder stands in for it on the step's first call.
                let signed = calls.iter().any(|c| c.thought_signature().is_some());
                for (j, tc) in calls.into_iter().enumerate() {
                    let args: Value = serde_json::from_str(&tc.function.arguments).unwrap_or_else(|_| json!({}));
                    call_names.insert(tc.id.clone(), tc.function.name.clone());
                    let mut part = json!({"functionCall": {"name": tc.function.name, "args": args}});
                    match tc.thought_signature() {
                        Some(sig) => part["thoughtSignature"] = json!(sig),
                        None if j == 0 && !signed => part["thoughtSignature"] = json!(UNSIGNED_CALL),
                        None => {}
                    }
                    parts.push(part);
                }
                push("model", parts);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.unwrap_or_default();
                let name = m.name.or_else(|| call_names.get(&id).cloned()).unwrap_or(id);
                let text = m.content.map(|c| c.text()).unwrap_or_default();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"result": text}),
                };
                push(
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let mut generation = Map::new();
    if let Some(t) = req.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        generation.insert("topP".into(), json!(p));
    }
    if let Some(n) = req.max_completion_tokens.or(req.max_tokens) {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(stop) = req.stop {
        generation.insert("stopSequences".into(), json!(stop.into_vec()));
    }
    if let Some(n) = req.n.filter(|n| *n > 1) {
        // A translated stream carries one choice; the others would be lost.
        if req.stream == Some(true) {
            return Err(WireError::invalid(
                "`n` greater than 1 cannot be streamed from Gemini models; ask without `stream`",
            ));
        }
        generation.insert("candidateCount".into(), json!(n));
    }
    // Token log-probabilities: a cascade's confidence signal, as OpenAI's `logprobs` / `top_logprobs` ask.
    if req.extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        generation.insert("responseLogprobs".into(), json!(true));
        if let Some(n) = req.extra.get("top_logprobs").and_then(Value::as_u64).filter(|n| *n > 0) {
            generation.insert("logprobs".into(), json!(n));
        }
    }
    // OpenAI fields without a typed slot in the hub that Gemini has a counterpart for.
    for (openai, gemini) in [
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = req.extra.get(openai).filter(|v| v.is_number()) {
            generation.insert(gemini.into(), v.clone());
        }
    }
    match req.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
            if let Some(s) = json_schema.schema {
                generation.insert("responseJsonSchema".into(), s);
            }
        }
        _ => {}
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    let (choice, offered) = openai::function_tools(req.tools.as_deref(), req.tool_choice.as_ref(), "Gemini")?;
    if req.tools.is_some() {
        let decls: Vec<Value> = offered
            .iter()
            .map(|f| {
                let mut d = json!({"name": f.name});
                if let Some(desc) = &f.description {
                    d["description"] = json!(desc);
                }
                if let Some(p) = &f.parameters {
                    d["parametersJsonSchema"] = p.clone();
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = choice {
        let cfg = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Only { names, required: true } => json!({"mode": "ANY", "allowedFunctionNames": names}),
            ToolChoice::Only { required: false, .. } => json!({"mode": "AUTO"}),
        };
        body.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
    }
    Ok(Value::Object(body))
}

/// OpenAI content as Gemini parts. A part Gemini has no counterpart for is refused by name, never dropped.
fn content_parts(content: Option<Content>, index: usize) -> Result<Vec<Value>, WireError> {
    let parts = match content {
        None => return Ok(vec![]),
        Some(Content::Text(s)) => return Ok(vec![json!({"text": s})]),
        Some(Content::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str);
        out.push(match kind {
            Some("text") => json!({"text": p.get("text")}),
            Some("refusal") => json!({"text": p.get("refusal")}),
            Some("image_url") => {
                let url = p
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| untranslatable(index, j, "an `image_url` part needs `image_url.url`"))?;
                match media::parse_data_url(url) {
                    Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                    None => json!({"fileData": {"fileUri": url}}),
                }
            }
            Some("file") => {
                let f = media::openai_file(p).map_err(|why| untranslatable(index, j, why))?;
                json!({"inlineData": {"mimeType": f.media_type, "data": f.data}})
            }
            Some("input_audio") => {
                let (mime, data) = media::openai_audio(p).map_err(|why| untranslatable(index, j, why))?;
                json!({"inlineData": {"mimeType": mime, "data": data}})
            }
            _ => {
                return Err(untranslatable(
                    index,
                    j,
                    format_args!(
                        "a `{}` part cannot be sent to Gemini models; text, image_url, file and input_audio parts translate",
                        kind.unwrap_or("untyped")
                    ),
                ));
            }
        });
    }
    Ok(out)
}

/// Maps a Gemini `finishReason` onto OpenAI's `finish_reason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// The text and function calls of one candidate; thought parts are left out.
pub(crate) fn candidate_parts(candidate: &Value, call_offset: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = p.get("functionCall") {
            let idx = call_offset + calls.len();
            let mut call = json!({
                "index": idx,
                "id": fc.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("call_{idx}")),
                "type": "function",
                "function": {"name": fc.get("name"), "arguments": fc.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into())},
            });
            // Where Google's own OpenAI-compatible API puts it, so the client sends it back with the call.
            if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                call["extra_content"] = json!({"google": {"thought_signature": sig}});
            }
            calls.push(call);
        }
    }
    (text, calls)
}

/// Translates a Gemini response into an OpenAI `chat.completion`.
pub fn response_to_openai(resp: &Value, model: &str) -> Value {
    let choices: Vec<Value> = resp
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let (text, mut calls) = candidate_parts(c, 0);
            calls.iter_mut().for_each(|c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("index");
                }
            });
            let finish = finish_reason(c.get("finishReason").and_then(Value::as_str).unwrap_or("STOP"), !calls.is_empty());
            let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            json!({"index": c.get("index").and_then(Value::as_u64).unwrap_or(i as u64), "message": message, "logprobs": logprobs_to_openai(c), "finish_reason": finish})
        })
        .collect();
    let usage = resp
        .get("usageMetadata")
        .and_then(Usage::from_gemini)
        .unwrap_or_default();
    json!({
        "id": resp.get("responseId").and_then(Value::as_str).map(|s| format!("chatcmpl-{s}")).unwrap_or_else(|| "chatcmpl-gemini".into()),
        "object": "chat.completion",
        "created": crate::unix_now(),
        "model": resp.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
        "usage": usage.to_openai(),
    })
}

/// The first candidate's token log-probabilities, where the request asked for them: what
/// [`crate::output_logprobs`] reads from an OpenAI answer, without translating the whole response.
pub fn output_logprobs(resp: &Value) -> Option<Vec<f64>> {
    crate::token_logprobs(
        resp.pointer("/candidates/0/logprobsResult/chosenCandidates")?,
        "logProbability",
    )
}

/// A candidate's `logprobsResult` as OpenAI's `logprobs` (`null` where the request asked for none).
pub(crate) fn logprobs_to_openai(candidate: &Value) -> Value {
    let Some(result) = candidate.get("logprobsResult") else {
        return Value::Null;
    };
    let token = |t: &Value| {
        json!({"token": t.get("token").and_then(Value::as_str).unwrap_or(""),
            "logprob": t.get("logProbability").and_then(Value::as_f64).unwrap_or(0.0), "bytes": null})
    };
    let top = result.get("topCandidates").and_then(Value::as_array);
    let content: Vec<Value> = result
        .get("chosenCandidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, chosen)| {
            let mut t = token(chosen);
            let alternatives = top
                .and_then(|top| top.get(i))
                .and_then(|c| c.get("candidates"))
                .and_then(Value::as_array);
            t["top_logprobs"] = Value::Array(alternatives.into_iter().flatten().map(token).collect());
            t
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A Gemini response with no candidates was blocked; this says why, for the client's error.
pub fn blocked_reason(resp: &Value) -> Option<String> {
    let has_candidates = resp
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if has_candidates {
        return None;
    }
    let reason = resp
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
        .unwrap_or("no candidates returned");
    Some(format!("Gemini returned no answer: {reason}"))
}

/// Translates an OpenAI embeddings request into Gemini's `batchEmbedContents` body.
pub fn embeddings_from_openai(req: &Value, model: &str) -> Result<Value, WireError> {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => {
            return Err(WireError::invalid(
                "invalid field `input`: Gemini embeddings take a string or an array of strings",
            ));
        }
    };
    let requests: Vec<Value> = inputs
        .into_iter()
        .map(|t| json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}}))
        .collect();
    Ok(json!({"requests": requests}))
}

/// Translates a Gemini `batchEmbedContents` response into an OpenAI embeddings response.
pub fn embeddings_to_openai(resp: &Value, model: &str) -> Value {
    let data: Vec<Value> = resp
        .get("embeddings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.get("values")}))
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_translation_covers_tools_and_json() {
        let req = ChatRequest::parse(
            br#"{"model":"gemini","max_tokens":50,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
            "messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"},
            {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"lookup","arguments":"{\"k\":2}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"plain text"}],
            "tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}],"tool_choice":"required"}"#,
        )
        .unwrap();
        let g = from_openai(req).unwrap();
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(g["contents"][1]["role"], "model");
        assert_eq!(g["contents"][1]["parts"][0]["functionCall"]["args"]["k"], 2);
        assert_eq!(g["contents"][2]["parts"][0]["functionResponse"]["name"], "lookup");
        assert_eq!(
            g["contents"][2]["parts"][0]["functionResponse"]["response"]["result"],
            "plain text"
        );
        assert_eq!(g["generationConfig"]["maxOutputTokens"], 50);
        assert!(g["generationConfig"].get("seed").is_none());
        assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
    }

    #[test]
    fn several_choices_are_asked_for_whole_answers_only() {
        let req = |stream: bool| {
            ChatRequest::parse(
                format!(r#"{{"model":"g","n":3,"stream":{stream},"messages":[{{"role":"user","content":"x"}}]}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(
            from_openai(req(false)).unwrap()["generationConfig"]["candidateCount"],
            3
        );
        assert!(from_openai(req(true)).unwrap_err().message.contains("`n`"));
    }

    #[test]
    fn thought_signatures_go_to_the_client_and_come_back() {
        let r = json!({"candidates":[{"content":{"role":"model","parts":[
            {"functionCall":{"name":"f","args":{}},"thoughtSignature":"SIG1"},{"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}]});
        let o = response_to_openai(&r, "x");
        let calls = o["choices"][0]["message"]["tool_calls"].clone();
        assert_eq!(calls[0]["extra_content"]["google"]["thought_signature"], "SIG1");
        assert!(
            calls[1].get("extra_content").is_none(),
            "only the part that had one gets one"
        );
        let history = |calls: &Value| {
            let body = json!({"model": "g", "messages": [{"role": "user", "content": "go"},
                {"role": "assistant", "content": null, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_0", "content": "1"}]});
            from_openai(ChatRequest::parse(body.to_string().as_bytes()).unwrap()).unwrap()
        };
        let g = history(&calls);
        assert_eq!(g["contents"][1]["parts"][0]["thoughtSignature"], "SIG1");
        assert!(g["contents"][1]["parts"][1].get("thoughtSignature").is_none());
        // Calls another model made carry none: the first gets Google's placeholder.
        let foreign = json!([{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]);
        let g = history(&foreign);
        assert_eq!(g["contents"][1]["parts"][0]["thoughtSignature"], UNSIGNED_CALL);
        assert!(g["contents"][1]["parts"][1].get("thoughtSignature").is_none());
    }

    #[test]
    fn allowed_tools_restrict_by_name_or_by_what_is_offered() {
        let req = |mode: &str| {
            ChatRequest::parse(
                format!(r#"{{"model":"g","messages":[{{"role":"user","content":"x"}}],
                "tool_choice":{{"type":"allowed_tools","allowed_tools":{{"mode":"{mode}","tools":[{{"type":"function","function":{{"name":"b"}}}}]}}}},
                "tools":[{{"type":"function","function":{{"name":"a"}}}},{{"type":"function","function":{{"name":"b"}}}}]}}"#)
                .as_bytes(),
            )
            .unwrap()
        };
        let g = from_openai(req("required")).unwrap();
        assert_eq!(
            g["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["b"]})
        );
        let g = from_openai(req("auto")).unwrap();
        assert_eq!(g["toolConfig"]["functionCallingConfig"], json!({"mode": "AUTO"}));
        assert_eq!(g["tools"][0]["functionDeclarations"], json!([{"name": "b"}]));
    }

    #[test]
    fn log_probabilities_are_asked_for_and_read_back() {
        let req = ChatRequest::parse(
            br#"{"model":"g","logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let g = from_openai(req).unwrap();
        assert_eq!(g["generationConfig"]["responseLogprobs"], true);
        assert_eq!(g["generationConfig"]["logprobs"], 2);
        let plain = ChatRequest::parse(br#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(from_openai(plain).unwrap().get("generationConfig").is_none());

        let r = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "yes no"}]}, "finishReason": "STOP",
            "logprobsResult": {"chosenCandidates": [{"token": "yes", "logProbability": -0.25}, {"token": " no", "logProbability": -1.5}],
                "topCandidates": [{"candidates": [{"token": "yes", "logProbability": -0.25}, {"token": "no", "logProbability": -2.0}]}]}}]});
        let o = response_to_openai(&r, "g");
        assert_eq!(crate::output_logprobs(&o), Some(vec![-0.25, -1.5]));
        assert_eq!(output_logprobs(&r), crate::output_logprobs(&o));
        let first = &o["choices"][0]["logprobs"]["content"][0];
        assert_eq!(first["top_logprobs"][1]["token"], "no");
        assert_eq!(o["choices"][0]["logprobs"]["content"][1]["top_logprobs"], json!([]));
        let none = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]});
        assert!(response_to_openai(&none, "g")["choices"][0]["logprobs"].is_null());
        assert_eq!(output_logprobs(&none), None);
    }

    #[test]
    fn media_parts_translate_and_the_rest_is_refused_by_name() {
        let req = |content: &str| {
            ChatRequest::parse(
                format!(r#"{{"model":"g","messages":[{{"role":"user","content":{content}}}]}}"#).as_bytes(),
            )
            .unwrap()
        };
        let sampled = ChatRequest::parse(
            br#"{"model":"g","seed":7,"presence_penalty":0.5,"frequency_penalty":-0.5,"logit_bias":{"1":2},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let g = from_openai(sampled).unwrap();
        assert_eq!(
            g["generationConfig"],
            json!({"seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5})
        );
        let g = from_openai(req(
            r#"[{"type":"file","file":{"filename":"r.pdf","file_data":"data:application/pdf;base64,JVBE"}},
                {"type":"input_audio","input_audio":{"data":"SUQz","format":"mp3"}}]"#,
        ))
        .unwrap();
        assert_eq!(
            g["contents"][0]["parts"][0],
            json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}})
        );
        assert_eq!(
            g["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}})
        );
        let e = from_openai(req(r#"[{"type":"file","file":{"file_id":"file-1"}}]"#)).unwrap_err();
        assert!(
            e.message.contains("messages[0].content[0]") && e.message.contains("file_id"),
            "{}",
            e.message
        );
        let e = from_openai(req(r#"[{"type":"hologram"}]"#)).unwrap_err();
        assert!(e.message.contains("`hologram`"), "{}", e.message);
        let custom = ChatRequest::parse(
            br#"{"model":"g","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","custom":{"name":"exec"}}]}"#,
        )
        .unwrap();
        assert!(from_openai(custom).unwrap_err().message.contains("Gemini"));
    }

    #[test]
    fn response_translation_skips_thoughts_and_maps_calls() {
        let r = json!({"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"Hi"},{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-flash","responseId":"abc"});
        let o = response_to_openai(&r, "x");
        assert_eq!(o["choices"][0]["message"]["content"], "Hi");
        assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1}"#
        );
        assert_eq!(o["usage"]["completion_tokens"], 8);
        assert_eq!(o["model"], "gemini-2.5-flash");
        assert!(blocked_reason(&r).is_none());
        assert!(
            blocked_reason(&json!({"promptFeedback":{"blockReason":"SAFETY"}}))
                .unwrap()
                .contains("SAFETY")
        );
    }
}
