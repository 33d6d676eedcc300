//! Streaming translation: upstream SSE events in, client SSE events out.
//!
//! Each translator is a small state machine fed one parsed event at a time; the gateway owns the I/O.
//! Output values are OpenAI `chat.completion.chunk`s or Anthropic events (whose `type` is also the SSE
//! event name), depending on the client.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::{ClientFormat, ProviderKind, Usage, anthropic, gemini, openai};

/// Follows an upstream stream's usage accounting and whether it ended properly.
#[derive(Debug)]
pub struct UsageTracker {
    kind: ProviderKind,
    usage: Option<Usage>,
    complete: bool,
}

impl UsageTracker {
    pub fn new(kind: ProviderKind) -> Self {
        UsageTracker {
            kind,
            usage: None,
            complete: false,
        }
    }

    /// Observes one parsed upstream event.
    pub fn observe(&mut self, event: &Value) {
        match self.kind {
            ProviderKind::OpenAi => {
                if let Some(u) = event.get("usage").and_then(Usage::from_openai) {
                    self.usage = Some(u);
                }
                let finished = event
                    .get("choices")
                    .and_then(|c| c.get(0))
                    .and_then(|c| c.get("finish_reason"))
                    .is_some_and(|f| !f.is_null());
                self.complete |= finished;
            }
            ProviderKind::Anthropic => match event.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    self.usage = event.pointer("/message/usage").and_then(Usage::from_anthropic);
                }
                Some("message_delta") => {
                    if let Some(u) = event.get("usage").filter(|u| Usage::from_anthropic(u).is_some()) {
                        self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                    }
                }
                Some("message_stop") => self.complete = true,
                _ => {}
            },
            ProviderKind::Gemini => {
                if let Some(u) = event.get("usageMetadata").and_then(Usage::from_gemini) {
                    self.usage = Some(u);
                }
                let finished = event
                    .get("candidates")
                    .and_then(|c| c.get(0))
                    .and_then(|c| c.get("finishReason"))
                    .is_some_and(|f| !f.is_null());
                self.complete |= finished;
            }
        }
    }

    /// The OpenAI `[DONE]` sentinel.
    pub fn observe_done(&mut self) {
        self.complete = true;
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the upstream signalled a proper end, as opposed to the connection just closing.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// Translates a stream between an upstream format and a client format that differ.
#[derive(Debug)]
pub enum Translator {
    AnthropicToOpenAi(AnthropicToOpenAi),
    GeminiToOpenAi(GeminiToOpenAi),
    OpenAiToAnthropic(OpenAiToAnthropic),
    GeminiToAnthropic(GeminiToOpenAi, OpenAiToAnthropic),
}

impl Translator {
    /// `None` when the client and the upstream speak the same format and events pass through.
    pub fn new(upstream: ProviderKind, client: ClientFormat, model: &str, include_usage: bool) -> Option<Self> {
        match (upstream, client) {
            (ProviderKind::OpenAi, ClientFormat::OpenAi) | (ProviderKind::Anthropic, ClientFormat::Anthropic) => None,
            (ProviderKind::Anthropic, ClientFormat::OpenAi) => Some(Translator::AnthropicToOpenAi(
                AnthropicToOpenAi::new(model, include_usage),
            )),
            (ProviderKind::Gemini, ClientFormat::OpenAi) => {
                Some(Translator::GeminiToOpenAi(GeminiToOpenAi::new(model, include_usage)))
            }
            (ProviderKind::OpenAi, ClientFormat::Anthropic) => {
                Some(Translator::OpenAiToAnthropic(OpenAiToAnthropic::new(model)))
            }
            (ProviderKind::Gemini, ClientFormat::Anthropic) => Some(Translator::GeminiToAnthropic(
                GeminiToOpenAi::new(model, true),
                OpenAiToAnthropic::new(model),
            )),
        }
    }

    pub fn push(&mut self, event: &Value, out: &mut Vec<Value>) {
        match self {
            Translator::AnthropicToOpenAi(t) => t.push(event, out),
            Translator::GeminiToOpenAi(t) => t.push(event, out),
            Translator::OpenAiToAnthropic(t) => t.push(event, out),
            Translator::GeminiToAnthropic(g, a) => {
                let mut mid = Vec::new();
                g.push(event, &mut mid);
                mid.iter().for_each(|c| a.push(c, out));
            }
        }
    }

    /// Called once the upstream stream has ended.
    pub fn finish(&mut self, out: &mut Vec<Value>) {
        match self {
            Translator::AnthropicToOpenAi(_) => {}
            Translator::GeminiToOpenAi(t) => t.finish(out),
            Translator::OpenAiToAnthropic(t) => t.finish(out),
            Translator::GeminiToAnthropic(g, a) => {
                let mut mid = Vec::new();
                g.finish(&mut mid);
                mid.iter().for_each(|c| a.push(c, out));
                a.finish(out);
            }
        }
    }
}

#[derive(Debug)]
pub struct AnthropicToOpenAi {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    tool_slots: HashMap<u64, usize>,
    usage: Usage,
}

impl AnthropicToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        AnthropicToOpenAi {
            id: "chatcmpl-leanlm".into(),
            model: model.into(),
            created: crate::unix_now(),
            include_usage,
            tool_slots: HashMap::new(),
            usage: Usage::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        openai::chunk(&self.id, &self.model, self.created, delta, finish)
    }

    pub fn push(&mut self, ev: &Value, out: &mut Vec<Value>) {
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(id) = ev.pointer("/message/id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(m) = ev.pointer("/message/model").and_then(Value::as_str) {
                    self.model = m.to_owned();
                }
                if let Some(u) = ev.pointer("/message/usage").and_then(Usage::from_anthropic) {
                    self.usage = u;
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            Some("content_block_start") => {
                let block = ev.get("content_block").cloned().unwrap_or(Value::Null);
                let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let slot = self.tool_slots.len();
                        self.tool_slots.insert(index, slot);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": slot, "id": block.get("id"), "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""}}]}),
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = ev.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => out.push(self.chunk(json!({"content": delta.get("text")}), None)),
                    Some("input_json_delta") => {
                        let slot = self.tool_slots.get(&index).copied().unwrap_or(0);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": slot, "function": {"arguments": delta.get("partial_json")}}]}),
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = ev.get("usage") {
                    self.usage.merge_anthropic(u);
                }
                let stop = ev
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(self.chunk(json!({}), Some(anthropic::stop_to_finish_reason(stop))));
            }
            Some("message_stop") if self.include_usage => {
                out.push(openai::usage_chunk(&self.id, &self.model, self.created, &self.usage));
            }
            Some("error") => out.push(json!({"error": ev.get("error")})),
            _ => {}
        }
    }
}

#[derive(Debug)]
pub struct GeminiToOpenAi {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    calls: usize,
    usage: Usage,
}

impl GeminiToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        GeminiToOpenAi {
            id: "chatcmpl-gemini".into(),
            model: model.into(),
            created: crate::unix_now(),
            include_usage,
            started: false,
            calls: 0,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        openai::chunk(&self.id, &self.model, self.created, delta, finish)
    }

    pub fn push(&mut self, ev: &Value, out: &mut Vec<Value>) {
        if let Some(u) = ev.get("usageMetadata").and_then(Usage::from_gemini) {
            self.usage = u;
        }
        if !self.started {
            self.started = true;
            if let Some(id) = ev.get("responseId").and_then(Value::as_str) {
                self.id = format!("chatcmpl-{id}");
            }
            if let Some(m) = ev.get("modelVersion").and_then(Value::as_str) {
                self.model = m.to_owned();
            }
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(e) = ev.get("error") {
            out.push(json!({"error": {"message": e.get("message"), "type": "api_error"}}));
            return;
        }
        let Some(c) = ev.get("candidates").and_then(|c| c.get(0)) else {
            return;
        };
        let (text, calls) = gemini::candidate_parts(c, self.calls);
        if !text.is_empty() {
            let mut chunk = self.chunk(json!({"content": text}), None);
            if c.get("logprobsResult").is_some() {
                chunk["choices"][0]["logprobs"] = gemini::logprobs_to_openai(c);
            }
            out.push(chunk);
        }
        if !calls.is_empty() {
            self.calls += calls.len();
            out.push(self.chunk(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            out.push(self.chunk(json!({}), Some(gemini::finish_reason(reason, self.calls > 0))));
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Value>) {
        if self.include_usage {
            out.push(openai::usage_chunk(&self.id, &self.model, self.created, &self.usage));
        }
    }
}

#[derive(Debug)]
pub struct OpenAiToAnthropic {
    model: String,
    started: bool,
    finished: bool,
    next_block: usize,
    /// The index and kind of the content block currently open.
    open: Option<(usize, OpenBlock)>,
    stop_reason: &'static str,
    usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Tool(u64),
}

impl OpenAiToAnthropic {
    pub fn new(model: &str) -> Self {
        OpenAiToAnthropic {
            model: model.into(),
            started: false,
            finished: false,
            next_block: 0,
            open: None,
            stop_reason: "end_turn",
            usage: Usage::default(),
        }
    }

    fn start(&mut self, id: &str, model: Option<&str>, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = model {
            self.model = m.to_owned();
        }
        out.push(json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }}));
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some((index, _)) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn open(&mut self, kind: OpenBlock, block: Value, out: &mut Vec<Value>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        out.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        index
    }

    pub fn push(&mut self, chunk: &Value, out: &mut Vec<Value>) {
        if let Some(e) = chunk.get("error") {
            out.push(json!({"type": "error", "error": {"type": "api_error", "message": e.get("message")}}));
            return;
        }
        let id = chunk
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("msg_leanlm")
            .to_owned();
        self.start(&id, chunk.get("model").and_then(Value::as_str), out);
        if let Some(u) = chunk.get("usage").and_then(Usage::from_openai) {
            self.usage = u;
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(t) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some((i, OpenBlock::Text)) => i,
                    _ => self.open(OpenBlock::Text, json!({"type": "text", "text": ""}), out),
                };
                out.push(
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            for tc in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let slot = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
                let index = match self.open {
                    Some((i, OpenBlock::Tool(s))) if s == slot => i,
                    _ => self.open(
                        OpenBlock::Tool(slot),
                        json!({"type": "tool_use", "id": tc.get("id"), "name": tc.pointer("/function/name"), "input": {}}),
                        out,
                    ),
                };
                if let Some(args) = tc
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    out.push(json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}));
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = openai::finish_to_stop_reason(f);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<Value>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start("msg_leanlm", None, out);
        self.close(out);
        out.push(json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": self.usage.to_anthropic()}));
        out.push(json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Translator, events: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        events.iter().for_each(|e| t.push(e, &mut out));
        t.finish(&mut out);
        out
    }

    fn anthropic_events() -> Vec<Value> {
        vec![
            json!({"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":12,"output_tokens":1}}}),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}),
            json!({"type":"content_block_stop","index":0}),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu_1","name":"f","input":{}}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}),
            json!({"type":"content_block_stop","index":1}),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}),
            json!({"type":"message_stop"}),
        ]
    }

    #[test]
    fn anthropic_stream_becomes_openai_chunks() {
        let mut t = Translator::new(ProviderKind::Anthropic, ClientFormat::OpenAi, "m", true).unwrap();
        let out = run(&mut t, &anthropic_events());
        let mut acc = openai::StreamAccumulator::default();
        out.iter().for_each(|c| acc.push(c));
        let done = acc.finish();
        assert_eq!(done["id"], "msg_1");
        assert_eq!(done["choices"][0]["message"]["content"], "Hi ");
        assert_eq!(
            done["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(done["usage"]["completion_tokens"], 9);
        assert_eq!(done["usage"]["prompt_tokens"], 12);
    }

    #[test]
    fn openai_stream_becomes_anthropic_events_and_round_trips() {
        // Anthropic -> OpenAI -> Anthropic keeps text, tool input, stop reason and usage.
        let mut a2o = Translator::new(ProviderKind::Anthropic, ClientFormat::OpenAi, "m", true).unwrap();
        let chunks = run(&mut a2o, &anthropic_events());
        let mut o2a = Translator::new(ProviderKind::OpenAi, ClientFormat::Anthropic, "m", true).unwrap();
        let events = run(&mut o2a, &chunks);
        let mut acc = anthropic::StreamAccumulator::default();
        events.iter().for_each(|e| acc.push(e));
        let msg = acc.finish();
        assert_eq!(msg["content"][0]["text"], "Hi ");
        assert_eq!(msg["content"][1]["input"]["a"], 1);
        assert_eq!(msg["stop_reason"], "tool_use");
        assert_eq!(msg["usage"]["output_tokens"], 9);
        assert_eq!(msg["usage"]["input_tokens"], 12);
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types.first(), Some(&"message_start"));
        assert_eq!(types.last(), Some(&"message_stop"));
        assert_eq!(types.iter().filter(|t| **t == "content_block_start").count(), 2);
        assert_eq!(types.iter().filter(|t| **t == "content_block_stop").count(), 2);
    }

    #[test]
    fn gemini_stream_log_probabilities_reach_openai_clients() {
        let mut t = GeminiToOpenAi::new("g", false);
        let mut out = Vec::new();
        t.push(
            &json!({"candidates":[{"content":{"role":"model","parts":[{"text":"yes"}]},
                "logprobsResult":{"chosenCandidates":[{"token":"yes","logProbability":-0.5}]}}]}),
            &mut out,
        );
        t.push(
            &json!({"candidates":[{"content":{"role":"model","parts":[{"text":"!"}]}}]}),
            &mut out,
        );
        assert_eq!(out[1]["choices"][0]["logprobs"]["content"][0]["logprob"], -0.5);
        assert!(out[2]["choices"][0]["logprobs"].is_null());
    }

    #[test]
    fn gemini_stream_reaches_both_client_formats() {
        let events = vec![
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"modelVersion":"gemini-2.5-flash"}),
            json!({"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP"}],
                   "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}),
        ];
        let mut t = Translator::new(ProviderKind::Gemini, ClientFormat::OpenAi, "g", true).unwrap();
        let mut acc = openai::StreamAccumulator::default();
        run(&mut t, &events).iter().for_each(|c| acc.push(c));
        let done = acc.finish();
        assert_eq!(done["choices"][0]["message"]["content"], "Hello");
        assert_eq!(done["usage"]["total_tokens"], 6);

        let mut t = Translator::new(ProviderKind::Gemini, ClientFormat::Anthropic, "g", false).unwrap();
        let mut acc = anthropic::StreamAccumulator::default();
        run(&mut t, &events).iter().for_each(|e| acc.push(e));
        let msg = acc.finish();
        assert_eq!(msg["content"][0]["text"], "Hello");
        assert_eq!(msg["usage"]["output_tokens"], 2);
    }

    #[test]
    fn usage_tracker_knows_a_complete_stream() {
        let mut t = UsageTracker::new(ProviderKind::Anthropic);
        anthropic_events()[..9].iter().for_each(|e| t.observe(e));
        assert!(!t.is_complete(), "no message_stop yet: a truncated stream");
        t.observe(&anthropic_events()[9]);
        assert!(t.is_complete());
        assert_eq!(t.usage().unwrap().output_tokens, 9);
        assert!(Translator::new(ProviderKind::OpenAi, ClientFormat::OpenAi, "m", false).is_none());
    }
}
