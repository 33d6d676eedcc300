//! End-to-end tests of the gateway in-process against the mock upstream, over real HTTP on 127.0.0.1.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use leanlm_gateway::{Config, Gateway, Overrides};
use leanlm_mock::Mock;
use leanlm_store::{CallRecord, CallStatus, Store};
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Harness {
    mock: Mock,
    url: String,
    db: PathBuf,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    /// A gateway whose openai, anthropic and gemini providers all point at one mock. `openai` has a key
    /// configured; the others pass the client's key through. `MOCK` in `extra` is the mock's URL.
    async fn start(extra: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("leanlm-e2e-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        Harness::start_on(dir.join("calls.db"), extra).await
    }

    /// Like `start`, on the store at `db`: a restart, or another instance sharing it.
    async fn start_on(db: PathBuf, extra: &str) -> Harness {
        let mock = Mock::start().await.unwrap();
        let m = mock.url();
        let extra = extra.replace("MOCK", &m);
        let toml = format!(
            r#"
[store]
url = "sqlite://{db}"
{retry}
[providers.openai]
kind = "openai"
base_url = "{m}/v1"
api_key = "sk-configured-secret-0001"
timeout_secs = 2
[providers.anthropic]
kind = "anthropic"
base_url = "{m}"
timeout_secs = 2
[providers.gemini]
kind = "gemini"
base_url = "{m}"
timeout_secs = 2
stream_idle_timeout_secs = 1
{extra}
"#,
            db = db.display(),
            // A test that sets its own retry policy gives the whole section.
            retry = if extra.contains("[retry]") {
                ""
            } else {
                "[retry]\nmax_retries = 2\nbase_backoff_ms = 10\nmax_backoff_ms = 3000"
            },
        );
        let config = Config::from_toml("test.toml", &toml, &Overrides::default(), &|_| None).unwrap();
        let gateway = Gateway::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(gateway.serve(listener, async move {
            let _ = rx.await;
        }));
        Harness {
            mock,
            url,
            db,
            http: reqwest::Client::new(),
            stop: Some(tx),
            done: Some(done),
        }
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until the call log holds the call (writes are asynchronous by design).
    async fn call(&self, id: &str) -> CallRecord {
        let store = Store::open(&format!("sqlite://{}", self.db.display())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(c) = store.call(id).unwrap() {
                return c;
            }
            assert!(Instant::now() < deadline, "call {id} never reached the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) -> PathBuf {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap();
        self.db.clone()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Splits an SSE body into (event name, data) pairs, skipping comments.
fn sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .filter_map(|frame| {
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            data.map(|d| (event, d))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_passthrough_keeps_fields_and_records_exact_cost() {
    let h = Harness::start("").await;
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": user("hello [[mock:cached=8]]"), "seed": 42, "logit_bias": {"50256": -100}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-leanlm-call-id").to_owned();
    assert_eq!(header(&r, "x-leanlm-model"), "gpt-4o");
    assert_eq!(header(&r, "x-leanlm-provider"), "openai");
    let cost: f64 = header(&r, "x-leanlm-cost-usd").parse().unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: hello");
    assert_eq!(
        body["system_fingerprint"], "fp_mock",
        "the upstream body reaches the client unchanged"
    );

    let seen = h.mock.stats.last().unwrap();
    assert_eq!(seen.body["seed"], 42);
    assert_eq!(seen.body["logit_bias"]["50256"], -100);
    assert_eq!(seen.headers["authorization"], "Bearer sk-configured-secret-0001");

    let usage = &body["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap() as f64;
    let completion = usage["completion_tokens"].as_u64().unwrap() as f64;
    // gpt-4o: $2.50 input, $1.25 cached input, $10 output per million; 8 prompt tokens were cached.
    let expected = ((prompt - 8.0) * 2.5 + 8.0 * 1.25 + completion * 10.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");

    let call = h.call(&id).await;
    assert_eq!(call.status, CallStatus::Ok);
    assert_eq!(call.usage.unwrap().cached_input_tokens, 8);
    assert!((call.cost_usd.unwrap() - expected).abs() < 1e-12);
    assert!(!call.cost_estimated);
    assert!(call.request_body.unwrap().contains("\"seed\""));
    assert!(call.response_body.unwrap().contains("Echo: hello"));
    assert!(call.overhead_us.unwrap() > 0.0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streams_withhold_usage_unless_asked() {
    let h = Harness::start("").await;
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": user("one two")}),
        )
        .await;
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let text = r.text().await.unwrap();
    let frames = sse(&text);
    assert_eq!(frames.last().unwrap().1, "[DONE]");
    assert!(
        frames.iter().all(|(_, d)| !d.contains("\"usage\"")),
        "client did not ask for usage: {text}"
    );
    assert!(text.contains(": leanlm call_id="), "cost comment present");
    // The gateway asked the upstream for usage anyway, so the cost is exact.
    assert_eq!(
        h.mock.stats.last().unwrap().body["stream_options"]["include_usage"],
        true
    );
    let call = h.call(&id).await;
    assert!(!call.cost_estimated);
    assert!(call.cost_usd.unwrap() > 0.0);
    assert!(call.ttft_ms.is_some());
    assert!(call.response_body.unwrap().contains("Echo: one two"));

    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": user("x")}),
        )
        .await;
    let text = r.text().await.unwrap();
    let usage: Vec<Value> = sse(&text)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["choices"], json!([]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_reach_anthropic_and_gemini_with_tools() {
    let h = Harness::start("").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for model in ["claude-haiku-4-5", "gemini-2.5-flash"] {
        let r = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth("client-key-123")
            .json(&json!({"model": model, "messages": user("weather in Paris?"), "tools": tools}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let body: Value = r.json().await.unwrap();
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather", "{model}: {body}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["city"], "mock");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        let seen = h.mock.stats.last().unwrap();
        match model {
            "claude-haiku-4-5" => {
                assert_eq!(seen.headers["x-api-key"], "client-key-123", "client key passed through");
                assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
                assert_eq!(seen.body["tools"][0]["input_schema"]["required"][0], "city");
            }
            _ => {
                assert_eq!(seen.headers["x-goog-api-key"], "client-key-123");
                assert!(seen.path.ends_with(":generateContent"));
                assert_eq!(seen.body["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
            }
        }
        // Streaming with tools, too.
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": model, "stream": true, "messages": user("weather?"), "tools": tools}),
            )
            .await;
        let text = r.text().await.unwrap();
        let mut acc = leanlm_wire::openai::StreamAccumulator::default();
        for (_, d) in sse(&text) {
            if let Ok(v) = serde_json::from_str::<Value>(&d) {
                acc.push(&v);
            }
        }
        let done = acc.finish();
        assert_eq!(
            done["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather",
            "{model}: {text}"
        );
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_keep_what_each_provider_needs_as_a_conversation_moves() {
    let h = Harness::start("").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let follow_up = |call: &Value| {
        json!([{"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}])
    };
    let seen_call = |h: &Harness| h.mock.stats.last().unwrap().body["contents"][1]["parts"][0].clone();

    // The mock refuses a function call in the history without its thought signature, as Gemini 3 does.
    let unsigned = json!({"contents": [{"role": "user", "parts": [{"text": "q"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": 1}}}]}]});
    let direct = h
        .http
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            h.mock.url()
        ))
        .json(&unsigned)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 400);
    assert!(direct.text().await.unwrap().contains("thought_signature"));

    // Gemini's signature reaches the client where Google's OpenAI-compatible API puts it, unary and streamed.
    for stream in [false, true] {
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gemini-2.5-flash", "stream": stream, "messages": user("weather in Oslo?"), "tools": tools}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let call = if stream {
            let text = r.text().await.unwrap();
            let delta = sse(&text)
                .into_iter()
                .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
                .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
                .unwrap_or_else(|| panic!("no tool call in {text}"));
            json!({"id": delta["id"], "type": "function", "function": delta["function"], "extra_content": delta["extra_content"]})
        } else {
            let body: Value = r.json().await.unwrap();
            body["choices"][0]["message"]["tool_calls"][0].clone()
        };
        let sig = call["extra_content"]["google"]["thought_signature"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!sig.is_empty());
        // Sent back with the call, it goes upstream as the call's thought signature.
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gemini-2.5-flash", "messages": follow_up(&call), "tools": tools}),
            )
            .await;
        assert_eq!(r.status(), 200, "stream {stream}: {}", r.text().await.unwrap());
        assert_eq!(seen_call(&h)["thoughtSignature"], sig.as_str());

        // The same history moved to an OpenAI-compatible model loses the field, which strict servers refuse.
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-4o-mini", "messages": follow_up(&call), "tools": tools}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let sent = h.mock.stats.last().unwrap().body;
        assert!(
            sent["messages"][1]["tool_calls"][0].get("extra_content").is_none(),
            "{sent}"
        );
        assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["id"]);
    }

    // A conversation whose calls another model made reaches Gemini with Google's placeholder signature.
    let foreign = json!({"id": "call_gpt_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}});
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "messages": follow_up(&foreign), "tools": tools}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(seen_call(&h)["thoughtSignature"], leanlm_wire::gemini::UNSIGNED_CALL);
    // And so does one from an Anthropic client, whose tool_use blocks have nowhere to keep a signature.
    let r = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gemini-2.5-flash", "max_tokens": 50,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen_call(&h)["thoughtSignature"], leanlm_wire::gemini::UNSIGNED_CALL);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_content_that_cannot_translate_are_refused_by_name_not_dropped() {
    let h = Harness::start("").await;
    // OpenAI's custom tools reach an OpenAI-compatible upstream as sent.
    let custom = json!([{"type": "custom", "custom": {"name": "exec", "description": "Runs Python", "format": {"type": "text"}}}]);
    let history = json!([{"role": "user", "content": "print one"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "exec", "input": "print(1)"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"}]);
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": history, "tools": custom}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = h.mock.stats.last().unwrap().body;
    assert_eq!(sent["tools"], custom);
    assert_eq!(sent["messages"][1]["tool_calls"], history[1]["tool_calls"]);

    // Another provider cannot run them: a 400 naming the field, in the client's format, and a logged call.
    for model in ["claude-haiku-4-5", "gemini-2.5-flash"] {
        let before = h.mock.stats.requests();
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": model, "messages": user("x"), "tools": custom}),
            )
            .await;
        assert_eq!(r.status(), 400, "{model}");
        let id = header(&r, "x-leanlm-call-id").to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("`tools[0]`") && msg.contains("`custom`"), "{model}: {msg}");
        assert_eq!(h.mock.stats.requests(), before, "nothing was sent upstream");
        assert_eq!(h.call(&id).await.status, CallStatus::ClientError);
    }
    // Content a provider has no counterpart for is refused, not dropped from what the model sees.
    let audio = json!([{"role": "user", "content": [{"type": "text", "text": "what is said?"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]);
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-haiku-4-5", "messages": audio}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content[1]"),
        "{body}"
    );
    // Gemini takes audio, and a PDF goes to Anthropic as a document.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "messages": audio}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.mock.stats.last().unwrap().body["contents"][0]["parts"][1]["inlineData"]["mimeType"],
        "audio/wav"
    );
    let pdf = json!([{"role": "user", "content": [{"type": "file", "file": {"filename": "q3.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}},
        {"type": "text", "text": "summarise"}]}]);
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-haiku-4-5", "messages": pdf}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let doc = h.mock.stats.last().unwrap().body["messages"][0]["content"][0].clone();
    assert_eq!(doc["type"], "document");
    assert_eq!(doc["title"], "q3.pdf");

    // An Anthropic client's server tool runs only at Anthropic: passed through there, refused elsewhere.
    let server_tools = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]);
    for (model, status) in [
        ("claude-haiku-4-5", 200),
        ("gpt-4o-mini", 400),
        ("gemini-2.5-flash", 400),
    ] {
        let r = h
            .http
            .post(format!("{}/v1/messages", h.url))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "max_tokens": 50, "tools": server_tools, "messages": user("news?")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{model}");
        if status == 400 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("web_search_20250305"),
                "{body}"
            );
        } else {
            assert_eq!(h.mock.stats.last().unwrap().body["tools"], server_tools);
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_modes_reach_every_provider() {
    let h = Harness::start("").await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "echo", "schema": {"type": "object", "properties": {"echo": {"type": "string"}}}}});
    for model in ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"] {
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": model, "messages": user("hi"), "response_format": rf}),
            )
            .await;
        let body: Value = r.json().await.unwrap();
        let content: Value = serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["echo"], "hi", "{model}");
        let seen = h.mock.stats.last().unwrap().body;
        match model {
            "gpt-4o-mini" => assert_eq!(seen["response_format"], rf),
            "claude-haiku-4-5" => assert!(seen["system"].as_str().unwrap().contains("\"echo\"")),
            _ => assert_eq!(
                seen["generationConfig"]["responseJsonSchema"]["properties"]["echo"]["type"],
                "string"
            ),
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_pass_through_and_translate() {
    let h = Harness::start("").await;
    let req = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 64, "stream": stream, "system": "be brief",
            "messages": [{"role": "user", "content": "hi there"}], "metadata": {"user_id": "u1"}, "top_k": 5})
    };
    // Passthrough to Anthropic: fields LeanLM does not translate (top_k) arrive untouched.
    let r = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "ak-client")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&req("claude-sonnet-4-5", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Echo: hi there");
    let seen = h.mock.stats.last().unwrap();
    assert_eq!(seen.body["top_k"], 5);
    assert_eq!(seen.headers["anthropic-beta"], "prompt-caching-2024-07-31");

    // Streaming passthrough keeps Anthropic's events.
    let r = h.post("/v1/messages", req("claude-sonnet-4-5", true)).await;
    let text = r.text().await.unwrap();
    let events: Vec<String> = sse(&text).into_iter().filter_map(|(e, _)| e).collect();
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(events.last().map(String::as_str), Some("message_stop"));
    assert!(events.iter().any(|e| e == "ping"));

    // Anthropic client, OpenAI and Gemini upstreams, streaming and not.
    for model in ["gpt-4o-mini", "gemini-2.5-flash"] {
        let r = h.post("/v1/messages", req(model, false)).await;
        let id = header(&r, "x-leanlm-call-id").to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["content"][0]["text"], "Echo: hi there", "{model}: {body}");
        assert_eq!(body["stop_reason"], "end_turn");
        assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
        let call = h.call(&id).await;
        assert_eq!(call.client_format.as_str(), "anthropic");
        assert!(call.cost_usd.unwrap() > 0.0);

        let r = h.post("/v1/messages", req(model, true)).await;
        let text = r.text().await.unwrap();
        let mut acc = leanlm_wire::anthropic::StreamAccumulator::default();
        for (_, d) in sse(&text) {
            acc.push(&serde_json::from_str(&d).unwrap());
        }
        let msg = acc.finish();
        assert_eq!(msg["content"][0]["text"], "Echo: hi there", "{model}: {text}");
        assert_eq!(msg["stop_reason"], "end_turn");
        assert!(msg["usage"]["output_tokens"].as_u64().unwrap() > 0);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_fall_back() {
    let h = Harness::start(
        "[models.primary]\nprovider = \"openai\"\nupstream = \"gpt-4o\"\nfallbacks = [\"claude-haiku-4-5\"]\n",
    )
    .await;
    // Two transient failures, then success: three attempts on one model.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": user("x [[mock:fail_times=2:a]]")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let call = h.call(header(&r, "x-leanlm-call-id")).await;
    assert_eq!(call.attempts, 3);

    // 429 with Retry-After: 1 is waited for.
    let t0 = Instant::now();
    let r = h
        .post("/v1/chat/completions", json!({"model": "gpt-4o", "messages": user("x [[mock:fail_times=1:b]] [[mock:status=429]] [[mock:retry_after=1]]")}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(950), "{:?}", t0.elapsed());

    // Every model in the chain keeps failing (the directive travels with the request to the fallback too):
    // each is retried, then the last error reaches the client.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "primary", "messages": user("x [[mock:status=500]]")}),
        )
        .await;
    assert_eq!(r.status(), 500);
    let call = h.call(header(&r, "x-leanlm-call-id")).await;
    assert_eq!(call.attempts, 6, "3 attempts on each of two models");
    assert_eq!(call.status, CallStatus::UpstreamError);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_serves_when_the_primary_provider_is_down() {
    // The primary points at a closed port: connection refused, retried, then the fallback answers.
    let h = Harness::start(
        "[providers.dead]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [models.primary]\nprovider = \"dead\"\nupstream = \"gpt-4o\"\nfallbacks = [\"claude-haiku-4-5\"]\n",
    )
    .await;
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "primary", "messages": user("hello")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-leanlm-model"), "claude-haiku-4-5");
    assert_eq!(header(&r, "x-leanlm-provider"), "anthropic");
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: hello");
    let call = h.call(&id).await;
    assert_eq!(call.attempts, 4);
    assert_eq!(call.requested_model, "primary");
    assert_eq!(call.served_model.as_deref(), Some("claude-haiku-4-5"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_keep_status_and_message_in_the_clients_format() {
    let h = Harness::start("").await;
    // An OpenAI upstream's 400 reaches an Anthropic client as an Anthropic error, not retried.
    let r = h
        .post("/v1/messages", json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "[[mock:status=400]]"}]}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "mock: injected failure");
    // And an Anthropic 529 reaches an OpenAI client after retries, as an OpenAI error.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-haiku-4-5", "messages": user("[[mock:status=529]]")}),
        )
        .await;
    assert_eq!(r.status(), 529);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock: injected failure");
    assert_eq!(body["error"]["type"], "api_error");
    // A bad client key is the upstream's 401, not retried.
    let n = h.mock.stats.requests();
    let r = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "sk-live-bad-key")
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(h.mock.stats.requests(), n + 1);
    // The upstream echoed the key in its message; the client and the log get it scrubbed.
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert_eq!(msg, "mock: invalid API key [REDACTED]");
    assert!(!h.call(&id).await.error.unwrap().contains("sk-live-bad-key"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_give_clear_errors_and_logged_calls() {
    let h = Harness::start("").await;
    let cases = [
        ("[[mock:garbage]]", 502, "not valid JSON"),
        ("[[mock:truncate]]", 502, "not valid JSON"),
        ("[[mock:hang]]", 504, "did not answer within 2s"),
    ];
    for (directive, status, needle) in cases {
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-4o", "messages": user(directive)}),
            )
            .await;
        assert_eq!(r.status().as_u16(), status, "{directive}");
        let id = header(&r, "x-leanlm-call-id").to_owned();
        let body: Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{directive}: {msg}");
        let call = h.call(&id).await;
        assert_eq!(call.status, CallStatus::UpstreamError, "{directive}");
        assert_eq!(call.http_status, status);
    }
    // A stream cut off halfway ends with an error event, in each client format.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "messages": user("a b c d e f [[mock:truncate]]")}),
        )
        .await;
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let text = r.text().await.unwrap();
    let last = sse(&text).pop().unwrap();
    assert!(last.1.contains("ended the stream before it was complete"), "{text}");
    assert_eq!(h.call(&id).await.status, CallStatus::UpstreamError);
    let r = h
        .post("/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": "a b c d [[mock:truncate]]"}]}))
        .await;
    let text = r.text().await.unwrap();
    let last = sse(&text).pop().unwrap();
    assert_eq!(last.0.as_deref(), Some("error"), "{text}");
    // A stream that goes quiet hits the idle timeout (gemini's is 1s here).
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "stream": true, "messages": user("a b [[mock:chunk_delay_ms=1500]]")}),
        )
        .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("sent nothing for 1s"), "{text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_in_the_callers_format() {
    let h = Harness::start("[server]\nmax_body_bytes = 2048\n").await;
    let raw = |path: &str, body: &'static str| {
        h.http
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &'static str, u16, &str)> = vec![
        ("/v1/chat/completions", "{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", r#"{"model":"gpt-4o"}"#, 400, "messages"),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            400,
            "temperature",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#,
            404,
            "no-such-model",
        ),
        (
            "/v1/messages",
            r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "max_tokens",
        ),
        (
            "/v1/messages",
            r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"robot","content":"x"}]}"#,
            400,
            "messages[0].role",
        ),
    ];
    for (path, body, status, needle) in cases {
        let r = raw(path, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let id = header(&r, "x-leanlm-call-id").to_owned();
        let v: Value = r.json().await.unwrap();
        let msg = if path == "/v1/messages" {
            assert_eq!(v["type"], "error");
            v["error"]["message"].as_str().unwrap().to_owned()
        } else {
            v["error"]["message"].as_str().unwrap().to_owned()
        };
        assert!(msg.contains(needle), "{body}: {msg}");
        assert_eq!(h.call(&id).await.status, CallStatus::ClientError);
    }
    let big = json!({"model": "gpt-4o", "messages": user(&"x".repeat(4096))});
    let r = h.post("/v1/chat/completions", big).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("2048"));
    // n > 1 cannot be served by Anthropic.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "claude-haiku-4-5", "n": 2, "messages": user("x")}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // No upstream saw any of these.
    assert_eq!(h.mock.stats.requests(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_the_upstream_and_is_logged() {
    let h = Harness::start("").await;
    // Streaming: read the first event, then hang up.
    let mut r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "messages": user("a b c d e f g h [[mock:chunk_delay_ms=200]]")}),
        )
        .await;
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
    let call = h.call(&id).await;
    assert_eq!(call.status, CallStatus::ClientClosed);
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.mock.stats.cancelled() < 1 {
        assert!(Instant::now() < deadline, "the upstream stream was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Non-streaming: the client gives up while the upstream is still thinking.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let res = client
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&json!({"model": "gpt-4o", "messages": user("[[mock:delay_ms=1500]] slow")}))
        .send()
        .await;
    assert!(res.is_err());
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.mock.stats.cancelled() < 2 {
        assert!(Instant::now() < deadline, "the upstream request was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = h.shutdown().await;
    let calls = Store::open(&format!("sqlite://{}", db.display()))
        .unwrap()
        .calls(&leanlm_store::CallFilter {
            limit: 10,
            status: Some(CallStatus::ClientClosed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(calls.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_counted_locally_and_marked_estimated() {
    let h = Harness::start("").await;
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": user("count me [[mock:no_usage]]")}),
        )
        .await;
    assert_eq!(header(&r, "x-leanlm-cost-estimated"), "true");
    let call = h.call(header(&r, "x-leanlm-call-id")).await;
    assert!(call.cost_estimated);
    let u = call.usage.unwrap();
    assert!(u.input_tokens > 0 && u.output_tokens > 0, "{u:?}");
    let r = h
        .post("/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": "a b c [[mock:no_usage]]"}]}))
        .await;
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let text = r.text().await.unwrap();
    assert!(text.contains("estimated"), "{text}");
    assert!(h.call(&id).await.cost_estimated);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_models_health_and_metrics() {
    let h = Harness::start("").await;
    let r = h
        .post(
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let r = h
        .post(
            "/v1/embeddings",
            json!({"model": "gemini-embedding-001", "input": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let r = h
        .post("/v1/embeddings", json!({"model": "claude-haiku-4-5", "input": "x"}))
        .await;
    assert_eq!(r.status(), 400);
    let r = h
        .post("/v1/embeddings", json!({"model": "text-embedding-3-small"}))
        .await;
    assert_eq!(r.status(), 400);

    let models: Value = h
        .http
        .get(format!("{}/v1/models", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini")
    );
    let models: Value = h
        .http
        .get(format!("{}/v1/models", h.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["type"] == "model"));

    assert_eq!(
        h.http.get(format!("{}/healthz", h.url)).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        h.http.get(format!("{}/readyz", h.url)).send().await.unwrap().status(),
        200
    );
    let r = h.http.get(format!("{}/nope", h.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Counters move with calls (other tests share the process's recorder, so at least by this much).
    let scrape = || async {
        h.http
            .get(format!("{}/metrics", h.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let before = scrape().await;
    let mut provider = String::new();
    for i in 0..3 {
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-4o-mini", "messages": user(&format!("count me {i}"))}),
            )
            .await;
        assert_eq!(r.status(), 200);
        provider = header(&r, "x-leanlm-provider").to_owned();
    }
    let after = scrape().await;
    let requests = format!("leanlm_requests_total{{model=\"gpt-4o-mini\",provider=\"{provider}\",status=\"ok\"}}");
    assert!(
        value(&after, &requests) - value(&before, &requests) >= 3.0,
        "{requests}: {after}"
    );
    let input = "leanlm_tokens_total{model=\"gpt-4o-mini\",kind=\"input\"}";
    assert!(value(&after, input) > value(&before, input), "{input}: {after}");
    let spend = "leanlm_spend_usd_total{model=\"gpt-4o-mini\"}";
    assert!(value(&after, spend) > value(&before, spend), "{spend}: {after}");

    for name in [
        "leanlm_requests_total",
        "leanlm_tokens_total",
        "leanlm_spend_usd_total",
        "leanlm_gateway_overhead_seconds_bucket",
    ] {
        assert!(after.contains(name), "{name} missing from /metrics");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_log_and_secrets_never_reach_it() {
    let h = Harness::start("").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth("sk-client-secret-9999")
            .json(&json!({"model": "gpt-4o-mini", "messages": user(&format!("n{i}"))}))
            .send()
            .await
            .unwrap();
        ids.push(header(&r, "x-leanlm-call-id").to_owned());
    }
    let db = h.shutdown().await;
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let mut key_ids = std::collections::HashSet::new();
    for id in &ids {
        let c = store
            .call(id)
            .unwrap()
            .expect("every call is in the log after shutdown");
        key_ids.insert(c.client_key_id.unwrap());
    }
    drop(store);
    // One key, one id: a keyed hash at full length, not the plain SHA-256 a guessed key could be checked
    // against.
    assert_eq!(key_ids.len(), 1, "{key_ids:?}");
    let key_id = key_ids.into_iter().next().unwrap();
    let hex = key_id.strip_prefix("key_").unwrap();
    assert_eq!(hex.len(), 64, "{key_id}");
    use sha2::Digest;
    let plain = ::hex::encode(sha2::Sha256::digest(b"sk-client-secret-9999"));
    assert!(!plain.starts_with(&hex[..12]), "an unkeyed hash of the key");
    // A restart on the same store gives the same key the same id.
    let again = Harness::start_on(db.clone(), "").await;
    let r = again
        .http
        .post(format!("{}/v1/chat/completions", again.url))
        .bearer_auth("sk-client-secret-9999")
        .json(&json!({"model": "gpt-4o-mini", "messages": user("after a restart")}))
        .send()
        .await
        .unwrap();
    let c = again.call(header(&r, "x-leanlm-call-id")).await;
    assert_eq!(c.client_key_id.as_deref(), Some(key_id.as_str()));
    again.shutdown().await;
    // Neither the configured key nor the client's appears anywhere in the database files.
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("sk-configured-secret-0001"));
            assert!(!text.contains("sk-client-secret-9999"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mined_templates_survive_a_restart_and_reach_other_instances() {
    let greet = |name: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": format!("You are the assistant of {name}. Greet {name} warmly, then help.")},
            {"role": "user", "content": "hello"}]})
    };
    let route = |q: &str| json!({"model": "gpt-4o-mini", "messages": user(&format!("Which team should handle {q}? Answer with a team name."))});
    let h = Harness::start("").await;
    let mut task = String::new();
    for name in ["Amara", "Bo", "Carlos", "Dmitri", "Elif", "Fatima"] {
        task = header(&h.post("/v1/chat/completions", greet(name)).await, "x-leanlm-task").to_owned();
    }
    let db = h.shutdown().await;
    // After a restart, a new user's first call goes to the mined template's task.
    let a = Harness::start_on(db.clone(), "").await;
    assert_eq!(
        header(&a.post("/v1/chat/completions", greet("Gao")).await, "x-leanlm-task"),
        task
    );

    // Two instances on one store: what one mines, the other knows within a sync interval, on fewer
    // probes than it would need to mine the template itself.
    let b = Harness::start_on(db, "").await;
    let mut inline = String::new();
    for q in [
        "my card payment that was declined",
        "a top-up that never arrived",
        "the exchange rate I was charged abroad",
        "an unknown direct debit from last week",
        "a blocked PIN",
        "a refund that is still pending",
        "changing my address",
        "a surprise cash withdrawal fee",
        "the app crashing at login",
    ] {
        inline = header(&a.post("/v1/chat/completions", route(q)).await, "x-leanlm-task").to_owned();
    }
    assert_ne!(inline, "chat");
    let mut seen = Vec::new();
    for q in [
        "a stolen phone",
        "a frozen account",
        "a missing statement",
        "a wrong balance",
        "a lost PIN",
    ] {
        tokio::time::sleep(Duration::from_millis(900)).await;
        seen.push(header(&b.post("/v1/chat/completions", route(q)).await, "x-leanlm-task").to_owned());
        if seen.last() == Some(&inline) {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&inline), "{seen:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_assigned_a_task() {
    let h = Harness::start("").await;
    let classify = |q: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Classify the customer's message into one banking intent."},
            {"role": "user", "content": q}]})
    };
    let a = h.post("/v1/chat/completions", classify("I lost my card")).await;
    let b = h
        .post("/v1/chat/completions", classify("My top-up failed twice, why?"))
        .await;
    let task = header(&a, "x-leanlm-task").to_owned();
    assert!(task.starts_with("t_"), "{task}");
    assert_eq!(task, header(&b, "x-leanlm-task"), "one template, one task");
    // The same template through the Anthropic API is the same task.
    let c = h
        .post(
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 5,
            "system": "Classify the customer's message into one banking intent.",
            "messages": [{"role": "user", "content": "where is my card"}]}),
        )
        .await;
    assert_eq!(header(&c, "x-leanlm-task"), task);
    let d = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": user("Translate to French:\nhello")}),
        )
        .await;
    assert_ne!(header(&d, "x-leanlm-task"), task);
    // Named by the client: the header wins, then metadata.leanlm_task.
    let e = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-task", "invoice-extractor")
        .json(&classify("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&e, "x-leanlm-task"), "invoice-extractor");
    let mut named = classify("y");
    named["metadata"] = json!({"leanlm_task": "from-metadata"});
    let f = h.post("/v1/chat/completions", named).await;
    assert_eq!(header(&f, "x-leanlm-task"), "from-metadata");
    let call = h.call(header(&a, "x-leanlm-call-id")).await;
    let t = call.task.unwrap();
    assert_eq!((t.id.as_str(), t.origin.as_str()), (task.as_str(), "template"));
    assert_eq!(t.name, "classify-customer-message-one-banking");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_serves_tasks_calls_and_spend_behind_a_token() {
    let off = Harness::start("").await;
    let r = off.http.get(format!("{}/api/tasks", off.url)).send().await.unwrap();
    assert_eq!(r.status(), 403, "no token configured: the admin API is off");
    off.shutdown().await;

    let h = Harness::start("[admin]\ntoken = \"admin-secret\"\n").await;
    let api = |path: &str| h.http.get(format!("{}{path}", h.url)).bearer_auth("admin-secret");
    assert_eq!(
        h.http
            .get(format!("{}/api/tasks", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.http
            .get(format!("{}/api/tasks", h.url))
            .bearer_auth("admin-secreT")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let mut ids = Vec::new();
    for q in [
        "I lost my card",
        "card not here",
        "top up failed",
        "pin blocked",
        "refund please",
    ] {
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "gpt-4o-mini", "max_tokens": 3, "messages": [
                {"role": "system", "content": "Classify the customer's message into one of: lost_card, card_arrival, top_up, pin_blocked, refund."},
                {"role": "user", "content": q}]}),
            )
            .await;
        ids.push((
            header(&r, "x-leanlm-task").to_owned(),
            header(&r, "x-leanlm-call-id").to_owned(),
        ));
    }
    let (task, last_call) = ids.last().cloned().unwrap();
    h.call(&last_call).await; // written

    let tasks: Value = api("/api/tasks").send().await.unwrap().json().await.unwrap();
    let t = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"]["id"] == task.as_str())
        .unwrap();
    assert_eq!(t["profile"]["calls"], 5);
    assert_eq!(t["profile"]["type"]["type"], "classify");

    let detail: Value = api(&format!("/api/tasks/{task}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["samples"].as_array().unwrap().len(), 5);
    assert_eq!(api("/api/tasks/t_none").send().await.unwrap().status(), 404);

    let r = h
        .http
        .post(format!("{}/api/tasks/{task}/name", h.url))
        .bearer_auth("admin-secret")
        .json(&json!({"name": "intents"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .post(format!("{}/api/tasks/{task}/name", h.url))
        .bearer_auth("admin-secret")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let calls: Value = api(&format!("/api/calls?task={task}&limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls.as_array().unwrap().len(), 3);
    let call: Value = api(&format!("/api/calls/{last_call}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(call["task"]["name"], "intents");
    assert!(call["request_body"].as_str().unwrap().contains("refund please"));
    assert_eq!(api("/api/calls?status=weird").send().await.unwrap().status(), 400);
    let spend: Value = api("/api/spend?by=task").send().await.unwrap().json().await.unwrap();
    assert_eq!(spend[0]["key"], task.as_str());
    assert_eq!(api("/api/spend?by=year").send().await.unwrap().status(), 400);

    // Control-plane refusals get their own status: not found 404, refused by the state 409, bad input 400.
    let post = |path: &str, body: Value| {
        h.http
            .post(format!("{}{path}", h.url))
            .bearer_auth("admin-secret")
            .json(&body)
    };
    let status_of = |r: reqwest::RequestBuilder| async move {
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        status
    };
    let deploy = |task: &str, body: Value| post(&format!("/api/policies/{task}/deploy"), body);
    assert_eq!(
        status_of(deploy("t_none", json!({"replacement": "gpt-4o-mini"}))).await,
        404
    );
    assert_eq!(
        status_of(deploy(&task, json!({"replacement": "gpt-4o-mini", "stage": "canary"}))).await,
        409,
        "past shadow without a passing validation"
    );
    assert_eq!(
        status_of(deploy(&task, json!({"replacement": "gpt-4o-mini", "audit_rate": 2.0}))).await,
        400
    );
    assert_eq!(status_of(deploy(&task, json!({"replacement": "cascade:x"}))).await, 400);
    assert_eq!(
        status_of(post(&format!("/api/policies/{task}/promote"), json!({}))).await,
        404,
        "no policy to promote"
    );
    assert_eq!(
        status_of(post(&format!("/api/policies/{task}/rollback"), json!({"reason": " "}))).await,
        400
    );
    assert_eq!(status_of(post("/api/cache/clear?task=nope", json!({}))).await, 404);
    assert_eq!(
        status_of(post("/api/tasks/t_none/name", json!({"name": "x"}))).await,
        404
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_requests_are_answered_from_the_exact_cache() {
    let h = Harness::start("").await;
    let req = json!({"model": "gpt-4o", "temperature": 0, "messages": user("what is 2+2")});
    let first = h.post("/v1/chat/completions", req.clone()).await;
    assert_eq!(header(&first, "x-leanlm-cache"), "miss");
    let first_cost: f64 = header(&first, "x-leanlm-cost-usd").parse().unwrap();
    let first_body: Value = first.json().await.unwrap();
    let upstream_calls = h.mock.stats.requests();

    // The same request, keys reordered and streamed: served from the cache, as a stream.
    let reordered = json!({"messages": user("what is 2+2"), "temperature": 0, "model": "gpt-4o"});
    let hit = h.post("/v1/chat/completions", reordered).await;
    assert_eq!(header(&hit, "x-leanlm-cache"), "hit");
    assert_eq!(header(&hit, "x-leanlm-cost-usd"), "0.00000000");
    let id = header(&hit, "x-leanlm-call-id").to_owned();
    assert_eq!(hit.json::<Value>().await.unwrap(), first_body);
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = h.post("/v1/chat/completions", streamed).await;
    assert_eq!(header(&r, "x-leanlm-cache"), "hit");
    let text = r.text().await.unwrap();
    let mut acc = leanlm_wire::openai::StreamAccumulator::default();
    for (_, d) in sse(&text) {
        if let Ok(v) = serde_json::from_str::<Value>(&d) {
            acc.push(&v);
        }
    }
    let replayed = acc.finish();
    assert_eq!(
        replayed["choices"][0]["message"]["content"],
        first_body["choices"][0]["message"]["content"]
    );
    assert_eq!(replayed["usage"]["prompt_tokens"], first_body["usage"]["prompt_tokens"]);
    assert_eq!(h.mock.stats.requests(), upstream_calls, "no upstream call for a hit");

    let call = h.call(&id).await;
    assert_eq!(call.cache.map(|c| c.as_str()), Some("hit"));
    assert_eq!(call.cost_usd, Some(0.0));
    assert!((call.cost_avoided_usd.unwrap() - first_cost).abs() < 1e-9);

    // Not deterministic: not cached, unless asked; `off` and `refresh` do what they say.
    let warm = json!({"model": "gpt-4o", "temperature": 0.7, "messages": user("a poem")});
    assert_eq!(
        header(&h.post("/v1/chat/completions", warm.clone()).await, "x-leanlm-cache"),
        "bypass"
    );
    let with = |v: &str, body: &Value| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-leanlm-cache", v)
            .json(body)
            .send()
    };
    assert_eq!(header(&with("on", &warm).await.unwrap(), "x-leanlm-cache"), "miss");
    assert_eq!(header(&with("on", &warm).await.unwrap(), "x-leanlm-cache"), "hit");
    assert_eq!(header(&with("off", &req).await.unwrap(), "x-leanlm-cache"), "bypass");
    let before = h.mock.stats.requests();
    assert_eq!(header(&with("refresh", &req).await.unwrap(), "x-leanlm-cache"), "miss");
    assert_eq!(h.mock.stats.requests(), before + 1);
    let bad = with("maybe", &req).await.unwrap();
    assert_eq!(bad.status(), 400);

    // An Anthropic client gets its own entries, replayed as Anthropic events.
    let a = json!({"model": "claude-haiku-4-5", "max_tokens": 20, "temperature": 0, "messages": [{"role": "user", "content": "hello cache"}]});
    assert_eq!(
        header(&h.post("/v1/messages", a.clone()).await, "x-leanlm-cache"),
        "miss"
    );
    let mut s = a.clone();
    s["stream"] = json!(true);
    let r = h.post("/v1/messages", s).await;
    assert_eq!(header(&r, "x-leanlm-cache"), "hit");
    let text = r.text().await.unwrap();
    let mut acc = leanlm_wire::anthropic::StreamAccumulator::default();
    for (_, d) in sse(&text) {
        acc.push(&serde_json::from_str(&d).unwrap());
    }
    assert_eq!(acc.finish()["content"][0]["text"], "Echo: hello cache");

    // A streamed answer is cached too, and replays whole to a non-streaming client, usage included.
    let q = json!({"model": "gpt-4o-mini", "temperature": 0, "stream": true, "messages": user("stream then plain")});
    let r = h.post("/v1/chat/completions", q.clone()).await;
    assert_eq!(header(&r, "x-leanlm-cache"), "miss");
    let _ = r.text().await.unwrap();
    let mut plain = q.clone();
    plain["stream"] = json!(false);
    let deadline = Instant::now() + Duration::from_secs(3);
    let r = loop {
        // The stream's entry is stored when the stream ends, just after the client has seen its end.
        let r = h.post("/v1/chat/completions", plain.clone()).await;
        if header(&r, "x-leanlm-cache") == "hit" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(header(&r, "x-leanlm-cache"), "hit");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: stream then plain");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    h.shutdown().await;
}

/// Two gateway instances share answers through Redis. Runs where `LEANLM_TEST_REDIS` names a Redis (CI sets
/// it; this machine kind runs one); elsewhere it says it was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_exact_cache_through_redis() {
    let Ok(url) = std::env::var("LEANLM_TEST_REDIS") else {
        eprintln!("skipped: set LEANLM_TEST_REDIS=redis://127.0.0.1:6379 to run");
        return;
    };
    let extra = format!("[cache]\nredis = \"{url}\"\nttl_secs = 60\n");
    let a = Harness::start(&extra).await;
    let b = Harness::start(&extra).await;
    // A prompt no earlier run has cached.
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let req = json!({"model": "gpt-4o", "temperature": 0, "messages": user(&format!("shared {nonce}"))});
    let first = a.post("/v1/chat/completions", req.clone()).await;
    assert_eq!(header(&first, "x-leanlm-cache"), "miss");
    let body: Value = first.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let hit = loop {
        // The write to Redis leaves the request path, so the other instance may need a moment.
        let r = b.post("/v1/chat/completions", req.clone()).await;
        if header(&r, "x-leanlm-cache") == "hit" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        header(&hit, "x-leanlm-cache"),
        "hit",
        "instance b answers from instance a's entry"
    );
    assert_eq!(hit.json::<Value>().await.unwrap(), body);
    assert_eq!(b.mock.stats.requests(), 0, "b never asked its upstream");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_miss_not_an_error() {
    let h = Harness::start("[cache]\nredis = \"redis://127.0.0.1:9\"\n").await;
    let req = json!({"model": "gpt-4o", "temperature": 0, "messages": user("redis is down")});
    for _ in 0..2 {
        let r = h.post("/v1/chat/completions", req.clone()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-leanlm-cache"), "miss");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_policy_can_cache_what_the_global_one_would_not() {
    let h =
        Harness::start("[cache]\nexact = \"opt-in\"\n[cache.tasks.\"labels\"]\nexact = \"always\"\nttl_secs = 60\n")
            .await;
    let req = json!({"model": "gpt-4o", "temperature": 0.7, "messages": user("label this")});
    let named = |task: &'static str| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-leanlm-task", task)
            .json(&req)
            .send()
    };
    assert_eq!(header(&named("labels").await.unwrap(), "x-leanlm-cache"), "miss");
    assert_eq!(header(&named("labels").await.unwrap(), "x-leanlm-cache"), "hit");
    assert_eq!(
        header(&named("other").await.unwrap(), "x-leanlm-cache"),
        "bypass",
        "the global policy is opt-in"
    );
    h.shutdown().await;
}

/// Endpoints LeanLM has no handler of its own for pass through to a provider of the client's kind, as they
/// are: the Responses API (plain and streamed, with its cost), a file upload (bytes unread), Anthropic's
/// token counting, a query string, an upstream error; each call is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_endpoints_pass_through_with_their_cost_and_a_log_row() {
    let h = Harness::start("[models.house]\nprovider = \"openai\"\nupstream = \"gpt-4o-mini\"\n").await;

    // The Responses API, under an alias: renamed for the upstream, priced as gpt-4o-mini.
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "house", "input": "pass me through", "store": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-leanlm-provider"), "openai");
    assert_eq!(header(&r, "x-leanlm-model"), "house");
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let cost: f64 = header(&r, "x-leanlm-cost-usd").parse().unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["output"][0]["content"][0]["text"], "Echo: pass me through");
    let seen = h.mock.stats.last().unwrap();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(
        seen.body["model"], "gpt-4o-mini",
        "the alias is renamed for the upstream"
    );
    assert_eq!(seen.body["store"], false, "every other field is passed on");
    assert_eq!(
        seen.headers["authorization"], "Bearer sk-configured-secret-0001",
        "the gateway's key replaces the client's"
    );
    let call = h.call(&id).await;
    assert_eq!(call.endpoint, "responses");
    assert_eq!(call.status, CallStatus::Ok);
    assert_eq!(call.served_model.as_deref(), Some("house"));
    assert_eq!(call.upstream_model.as_deref(), Some("gpt-4o-mini"));
    let usage = call.usage.unwrap();
    assert_eq!(
        usage.input_tokens as i64,
        body["usage"]["input_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        usage.output_tokens as i64,
        body["usage"]["output_tokens"].as_i64().unwrap()
    );
    let price = leanlm_cost::PriceTable::bundled().lookup("gpt-4o-mini").unwrap().price;
    let expected = leanlm_cost::cost_usd(&usage, &price);
    assert!(expected > 0.0 && (call.cost_usd.unwrap() - expected).abs() < 1e-12);
    assert!((cost - expected).abs() < 1e-8);
    assert!(call.task.is_none(), "a passed-through call is not a task's traffic");

    // Streamed: the events arrive as sent, and the usage of `response.completed` is logged.
    let r = h
        .post(
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "stream me through", "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let text = r.text().await.unwrap();
    assert!(text.contains("event: response.output_text.delta"));
    assert!(text.contains("event: response.completed"));
    let call = h.call(&id).await;
    assert!(call.stream);
    assert_eq!(call.status, CallStatus::Ok);
    assert!(call.usage.unwrap().output_tokens > 0);
    assert!(call.cost_usd.unwrap() > 0.0);
    assert!(call.ttft_ms.is_some());

    // A file upload: not JSON, so it streams through unread, byte for byte, with its query string.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let boundary = "leanlm-test-boundary";
    let mut multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&payload);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = h
        .http
        .post(format!("{}/v1/files?purpose=batch", h.url))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .header("openai-beta", "assistants=v2")
        .header("expect", "100-continue")
        .body(multipart.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-request-id"),
        "req_mock_echo",
        "the upstream's headers come back"
    );
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/files");
    assert_eq!(echo["query"], "purpose=batch");
    assert_eq!(echo["body_bytes"], multipart.len());
    use sha2::Digest;
    assert_eq!(echo["body_sha256"], hex::encode(sha2::Sha256::digest(&multipart)));
    assert_eq!(echo["headers"]["openai-beta"], "assistants=v2");
    assert!(
        echo["headers"].get("expect").is_none(),
        "the gateway answered the expectation itself"
    );
    assert!(echo["headers"].get("x-leanlm-call-id").is_none());
    let call = h.call(&id).await;
    assert_eq!((call.endpoint.as_str(), call.status), ("files", CallStatus::Ok));
    assert!(call.request_body.is_none(), "an upload is not read, so not logged");

    // A GET, with no body.
    let r = h
        .http
        .get(format!("{}/v1/batches?limit=2", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        (echo["method"].as_str(), echo["query"].as_str()),
        (Some("GET"), Some("limit=2"))
    );
    assert_eq!(echo["body_bytes"], 0);
    assert!(
        echo["headers"].get("transfer-encoding").is_none(),
        "no body, not an empty chunked one: {echo}"
    );

    // Anthropic's token counting: an Anthropic client reaches the anthropic provider with its own key.
    let r = h
        .http
        .post(format!("{}/v1/messages/count_tokens", h.url))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "ak-client-own-key")
        .json(&json!({"model": "claude-haiku-4-5", "messages": user("count me")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-leanlm-provider"), "anthropic");
    let counted: Value = r.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);
    let seen = h.mock.stats.last().unwrap();
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(
        seen.headers["x-api-key"], "ak-client-own-key",
        "no gateway key: the client's passes"
    );

    // An upstream error comes back as the upstream gave it, in the client's format, and is logged.
    let r = h.post("/v1/mock-status/429", json!({"model": "gpt-4o-mini"})).await;
    assert_eq!(r.status(), 429);
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["message"], "mock: the status asked for");
    let call = h.call(&id).await;
    assert_eq!((call.status, call.http_status), (CallStatus::UpstreamError, 429));
    assert_eq!(call.error.as_deref(), Some("mock: the status asked for"));

    // A client that hangs up mid-stream cancels the upstream, and the call is logged as closed by it.
    let mut r = h
        .post(
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "stream": true, "input": "a b c d e f [[mock:chunk_delay_ms=200]]"}),
        )
        .await;
    let id = header(&r, "x-leanlm-call-id").to_owned();
    assert!(!r.chunk().await.unwrap().unwrap().is_empty());
    drop(r);
    assert_eq!(h.call(&id).await.status, CallStatus::ClientClosed);
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.mock.stats.cancelled() < 1 {
        assert!(Instant::now() < deadline, "the upstream stream was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    h.shutdown().await;
}

/// What cannot be passed through gets a clear error in the client's format: a model whose provider speaks
/// another API, a JSON body over the size limit, an upstream that is down; paths outside `/v1/` are not
/// found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_through_fails_clearly() {
    let h = Harness::start(
        "[server]\nmax_body_bytes = 4096\n[providers.down]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [models.nowhere]\nprovider = \"down\"\nupstream = \"m\"\n",
    )
    .await;
    let r = h
        .post("/v1/responses", json!({"model": "claude-haiku-4-5", "input": "x"}))
        .await;
    assert_eq!(r.status(), 400);
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let err: Value = r.json().await.unwrap();
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("untranslated") && msg.contains("claude-haiku-4-5"),
        "{msg}"
    );
    assert_eq!(h.call(&id).await.status, CallStatus::ClientError);

    let r = h
        .post(
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "x".repeat(8000)}),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    let r = h.post("/v1/responses", json!({"model": "nowhere", "input": "x"})).await;
    assert_eq!(r.status(), 502);
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not reach upstream `down`")
    );
    assert_eq!(h.call(&id).await.status, CallStatus::UpstreamError);

    let r = h
        .http
        .post(format!("{}/v2/anything", h.url))
        .header("anthropic-version", "2023-06-01")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "error",
        "in Anthropic's format"
    );
    h.shutdown().await;

    // An upstream error that quotes the gateway's own key reaches the client without it.
    let h = Harness::start(
        "[providers.keyed]\nkind = \"openai\"\nbase_url = \"MOCK/v1\"\napi_key = \"sk-gateway-owned-bad-key\"\n\
         [models.keyed]\nprovider = \"keyed\"\nupstream = \"gpt-4o-mini\"\n",
    )
    .await;
    let r = h.post("/v1/responses", json!({"model": "keyed", "input": "x"})).await;
    assert_eq!(r.status(), 401);
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let text = r.text().await.unwrap();
    assert!(!text.contains("sk-gateway-owned-bad-key"), "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("[REDACTED]"),
        "{text}"
    );
    let call = h.call(&id).await;
    assert!(!call.error.unwrap().contains("sk-gateway-owned-bad-key"));
    assert!(!call.response_body.unwrap().contains("sk-gateway-owned-bad-key"));
    h.shutdown().await;

    // Switched off, other endpoints are not found, and nothing reaches the upstream.
    let h = Harness::start("[server]\npassthrough = false\n").await;
    let r = h
        .post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "x"}))
        .await;
    assert_eq!(r.status(), 404);
    assert!(
        r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no endpoint")
    );
    assert_eq!(h.mock.stats.requests(), 0);
    h.shutdown().await;
}

/// Connections that never finish a request are closed after the header or body deadline, past the cap they
/// are refused at once, and `/healthz` answers throughout (issue 24: 20,000 such connections took every file
/// descriptor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_and_health_stays_answerable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("[server]\nmax_connections = 300\nheader_timeout_secs = 1\nbody_timeout_secs = 1\n").await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for i in 0..1500 {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let half: &[u8] = match i % 3 {
            // Half a request's headers; nothing at all; a body that stops after 10 of 100 bytes.
            0 => b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n",
            1 => b"",
            _ => b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
        };
        let _ = s.write_all(half).await;
        stalled.push(s);
    }
    // Health answers while they are open.
    let started = Instant::now();
    let healthy = loop {
        match h
            .http
            .get(format!("{}/healthz", h.url))
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break true,
            _ if started.elapsed() > Duration::from_secs(5) => break false,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(
        healthy,
        "/healthz did not answer within 5 s of 1,500 stalled connections"
    );
    // Every stalled connection is closed (or answered and closed) within the deadlines.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut open = 0;
    let mut kinds = [0; 3];
    for (i, s) in stalled.iter_mut().enumerate() {
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => continue, // an error response before the close
                Err(_) => break false,
            }
        };
        open += usize::from(!closed);
        kinds[i % 3] += usize::from(!closed);
    }
    assert_eq!(
        open,
        0,
        "{open} of {} stalled connections still open ({kinds:?})",
        stalled.len()
    );
    // An idle keep-alive connection is closed after the header deadline too.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    h.shutdown().await;
}

#[test]
fn connection_limits_are_configured_and_checked() {
    let parse = |extra: &str| {
        Config::from_toml(
            "t.toml",
            &format!("[server]\n{extra}\n"),
            &Overrides::default(),
            &|_| None,
        )
    };
    let c = parse("max_connections = 50\nheader_timeout_secs = 2.5\nbody_timeout_secs = 7").unwrap();
    assert_eq!(c.limits.max_connections, 50);
    assert_eq!(c.limits.header_timeout, Duration::from_millis(2500));
    assert_eq!(c.limits.body_timeout, Duration::from_secs(7));
    let d = parse("").unwrap();
    assert_eq!(d.limits, leanlm_gateway::listen::Limits::default());
    for (bad, field) in [
        ("max_connections = 0", "max_connections"),
        ("header_timeout_secs = 0", "header_timeout_secs"),
        ("body_timeout_secs = -1", "body_timeout_secs"),
        ("body_timeout_secs = 1e9", "body_timeout_secs"),
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains("t.toml"), "{bad}: {e}");
    }
}

/// Where the client's own key authorises the call (no gateway key for the provider), a cached answer serves
/// that key alone: another key, an invalid one or none goes upstream, and an error is never cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_never_cross_credentials() {
    let h = Harness::start("").await;
    let ask = |key: Option<&'static str>| {
        let mut req = h
            .http
            .post(format!("{}/v1/messages", h.url))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 20, "temperature": 0,
                "messages": [{"role": "user", "content": "What is our refund policy?"}]}));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send()
    };
    let first = ask(Some("sk-ant-client-one")).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-leanlm-cache"), "miss");
    let again = ask(Some("sk-ant-client-one")).await.unwrap();
    assert_eq!(
        header(&again, "x-leanlm-cache"),
        "hit",
        "the same key is served from the cache"
    );
    // An invalid key is refused by the provider, twice: the cache neither serves it nor keeps the error.
    for _ in 0..2 {
        let bad = ask(Some("sk-ant-bad-key")).await.unwrap();
        assert_eq!(bad.status(), 401);
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["type"], "error", "{body}");
    }
    // Another valid key and no key at all are not served the first key's answer.
    let other = ask(Some("sk-ant-client-two")).await.unwrap();
    assert_eq!(header(&other, "x-leanlm-cache"), "miss");
    let none = ask(None).await.unwrap();
    assert_ne!(header(&none, "x-leanlm-cache"), "hit");
    h.shutdown().await;
}

/// A task name a client gives is bounded: too long or with other characters, it is refused in the client's
/// own error format, naming where it came from (issue 24: 64 KiB names were accepted, one task each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_task_names_are_checked_in_the_callers_format() {
    let h = Harness::start("").await;
    let body = json!({"model": "gpt-4o-mini", "messages": user("hi")});
    let send = |path: &str, name: String, body: Value| {
        h.http
            .post(format!("{}{path}", h.url))
            .header("x-leanlm-task", name)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let long = send("/v1/chat/completions", "x".repeat(5000), body.clone())
        .await
        .unwrap();
    assert_eq!(long.status(), 400);
    let e: Value = long.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("x-leanlm-task") && message.contains("128"), "{e}");
    let anthropic = send(
        "/v1/messages",
        "<img src=x>".into(),
        json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": user("hi")}),
    )
    .await
    .unwrap();
    assert_eq!(anthropic.status(), 400);
    let e: Value = anthropic.json().await.unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("'<'"), "{e}");
    let mut meta = body.clone();
    meta["metadata"] = json!({"leanlm_task": "bad|name"});
    let r = h.post("/v1/chat/completions", meta).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("metadata.leanlm_task"),
        "{e}"
    );
    let ok = send("/v1/chat/completions", "support triage".into(), body)
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-leanlm-task"), "support triage");
    h.shutdown().await;
}

/// Every error is JSON in the caller's shape: a wrong method and oversized headers on `/v1` in the
/// client's format, and bad query parameters or unknown paths under `/api` in the admin API's (issue 24:
/// 405 and 431 had empty bodies, `/api/calls?limit=abc` answered plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_in_the_callers_shape() {
    let h = Harness::start("[admin]\ntoken = \"admin-secret\"\n").await;
    let get = |path: &str| h.http.get(format!("{}{path}", h.url));
    let json_of = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("a JSON body");
        (status, v)
    };
    let (status, v) = json_of(get("/v1/chat/completions").send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert!(v["error"]["message"].as_str().unwrap().contains("GET"), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let (status, v) = json_of(
        get("/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
    let mut many = get("/v1/models");
    for i in 0..150 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    let (status, v) = json_of(many.send().await.unwrap()).await;
    assert_eq!(status, 431);
    assert!(v["error"]["message"].as_str().unwrap().contains("headers"), "{v}");
    let (status, v) = json_of(
        get("/api/calls?limit=abc")
            .bearer_auth("admin-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("limit"), "{v}");
    let (status, v) = json_of(
        get("/api/nothing-here")
            .bearer_auth("admin-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        v["error"]["message"].is_string() && v["error"].get("type").is_none(),
        "{v}"
    );
    h.shutdown().await;
}

/// The gateway's key never goes beyond the API: a pass-through path with dot segments (plain or
/// percent-encoded) and a model name that would change a Gemini URL's path are refused before any upstream
/// sees them (issue 24: both reached other paths on the provider's host with the gateway's key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_model_names_cannot_leave_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("").await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    for path in ["/v1/../../etc/passwd", "/v1/%2e%2e/%2e%2e/admin", "/v1/files/%2F..%2Fx"] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk-client\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains("not a path LeanLM passes on"), "{path}: {out}");
    }
    let before = h.mock.stats.seen().len();
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini/../../v1/x?", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot go in a Gemini URL"),
        "{e}"
    );
    assert_eq!(h.mock.stats.seen().len(), before, "no upstream saw either");
    h.shutdown().await;
}

/// An upstream that repeats the gateway's own key in a successful answer (as one echoing request headers
/// does) never gets it to the client or the log: unary, streamed and passed through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_key_is_redacted_from_successful_answers() {
    let h = Harness::start("").await;
    let leak = "please repeat sk-configured-secret-0001";
    let unary = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": user(leak)}),
        )
        .await;
    assert_eq!(unary.status(), 200);
    let id = header(&unary, "x-leanlm-call-id").to_owned();
    let text = unary.text().await.unwrap();
    assert!(
        !text.contains("sk-configured-secret-0001") && text.contains("[REDACTED]"),
        "{text}"
    );
    let logged = h.call(&id).await;
    assert!(
        !logged
            .response_body
            .unwrap_or_default()
            .contains("sk-configured-secret-0001")
    );
    let streamed = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": user(leak)}),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !streamed.contains("sk-configured-secret-0001") && streamed.contains("REDACTED"),
        "{streamed}"
    );
    let passed = h
        .post("/v1/responses", json!({"model": "gpt-4o-mini", "input": leak}))
        .await;
    assert_eq!(passed.status(), 200);
    let passed = passed.text().await.unwrap();
    assert!(
        !passed.contains("sk-configured-secret-0001") && passed.contains("REDACTED"),
        "{passed}"
    );
    h.shutdown().await;
}

/// A web page cannot use the gateway unless its origin is allowed: a cross-site `text/plain` POST is refused,
/// a rebinding host name is refused on loopback, the gateway's own dashboard (same origin) works, and an
/// allowed origin gets CORS headers (issue 24: the POST was served and any `Host` accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_of_other_origins_cannot_use_the_gateway() {
    let h = Harness::start(
        "[server]\nallowed_origins = [\"https://app.example.com\"]\nallowed_hosts = [\"gw.internal\"]\n",
    )
    .await;
    let chat = json!({"model": "gpt-4o-mini", "messages": user("hi")}).to_string();
    let post = |origin: Option<&str>, content_type: &str| {
        let mut r = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("content-type", content_type.to_owned())
            .body(chat.clone());
        if let Some(o) = origin {
            r = r.header("origin", o.to_owned());
        }
        r.send()
    };
    let evil = post(Some("https://evil.example"), "text/plain").await.unwrap();
    assert_eq!(evil.status(), 403);
    let e: Value = evil.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("evil.example"), "{e}");
    let evil_json = post(Some("https://evil.example"), "application/json").await.unwrap();
    assert_eq!(evil_json.status(), 403);
    // The dashboard's own origin, and an allowed one (which needs JSON, and gets CORS headers).
    let same = post(Some(&h.url), "application/json").await.unwrap();
    assert_eq!(same.status(), 200);
    let allowed_plain = post(Some("https://app.example.com"), "text/plain").await.unwrap();
    assert_eq!(allowed_plain.status(), 415);
    let allowed = post(Some("https://app.example.com"), "application/json").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    // Clients that are not browsers send no Origin and are untouched.
    assert_eq!(post(None, "application/json").await.unwrap().status(), 200);
    // DNS rebinding: a name that resolves to this loopback gateway but is not its own.
    let rebound = h
        .http
        .get(format!("{}/v1/models", h.url))
        .header("host", "attacker.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    for host in ["localhost:8080", "gw.internal", "[::1]:9"] {
        let r = h
            .http
            .get(format!("{}/v1/models", h.url))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    h.shutdown().await;
}

/// A hung provider costs at most the request's deadline, over every attempt and retry (configured, or
/// shortened by `X-LeanLM-Timeout`), and a shutdown with a hung call in flight ends within its grace period
/// with the call logged (issue 24: the timeout was per attempt; SIGTERM took 37 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_costs_at_most_the_deadline_and_shutdown_is_bounded() {
    let h = Harness::start(
        "[retry]\nmax_retries = 2\nbase_backoff_ms = 10\nmax_backoff_ms = 3000\ndeadline_secs = 1.5\n\
         [server]\nshutdown_grace_secs = 0.5\n",
    )
    .await;
    let hung = json!({"model": "gpt-4o-mini", "messages": user("[[mock:hang]] are you there?")});
    let t0 = Instant::now();
    let r = h.post("/v1/chat/completions", hung.clone()).await;
    let took = t0.elapsed();
    assert_eq!(r.status(), 504);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("deadline"), "{e}");
    // Two-second attempts with two retries would take over 6 s.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let t0 = Instant::now();
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-timeout", "0.4")
        .json(&hung)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(t0.elapsed() < Duration::from_millis(1200), "{:?}", t0.elapsed());
    let bad = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-timeout", "soon")
        .json(&hung)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("x-leanlm-timeout"),
        "{e}"
    );
    // A call hung at shutdown: the server stops within its grace period and the call is in the log.
    let url = h.url.clone();
    let client = h.http.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(format!("{url}/v1/chat/completions"))
            .header("x-leanlm-task", "hung-at-shutdown")
            .json(&json!({"model": "gpt-4o-mini", "messages": user("[[mock:hang]] still there?")}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let db = h.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let _ = in_flight.await;
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let logged = store
        .calls(&leanlm_store::CallFilter {
            limit: 10,
            task: Some("hung-at-shutdown".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(logged.len(), 1, "the call cancelled at shutdown is logged");
}

/// A client that walks away is still billed by the provider for what was generated: an abandoned stream is
/// logged with the tokens streamed so far, priced (estimated), and an abandoned unary call with the model
/// and provider it went to (issue 24: both were logged with neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_are_logged_with_their_model_and_what_they_cost() {
    let h = Harness::start("").await;
    let long = "word ".repeat(300);
    let mut r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true,
                   "messages": user(&format!("[[mock:chunk_delay_ms=30]] {long}"))}),
        )
        .await;
    let id = header(&r, "x-leanlm-call-id").to_owned();
    let mut got = 0;
    while got < 3 {
        if r.chunk().await.unwrap().is_some() {
            got += 1;
        }
    }
    drop(r);
    let c = h.call(&id).await;
    assert_eq!(c.status, CallStatus::ClientClosed);
    assert_eq!(c.served_model.as_deref(), Some("gpt-4o-mini"));
    let usage = c.usage.expect("what was streamed is counted");
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0, "{usage:?}");
    assert!(c.cost_usd.unwrap_or(0.0) > 0.0 && c.cost_estimated, "{c:?}");
    // A unary call abandoned while the upstream thinks.
    let abandoned = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-task", "walked-away")
        .timeout(Duration::from_millis(300))
        .json(&json!({"model": "gpt-4o-mini", "messages": user("[[mock:delay_ms=1500]] hello")}))
        .send()
        .await;
    assert!(abandoned.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = h.shutdown().await;
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    let rows = store
        .calls(&leanlm_store::CallFilter {
            limit: 10,
            task: Some("walked-away".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].served_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(rows[0].provider.as_deref(), Some("openai"));
}

/// A call that reached a provider with no key at all, gateway's or client's, and was refused says which
/// variable to set (issue 25: the first example failed with only "could not reach upstream").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_want_of_any_key_names_the_variable_to_set() {
    let h = Harness::start("").await;
    let r = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "[[mock:status=401]] hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ANTHROPIC_API_KEY") && message.contains("[providers.anthropic]"),
        "{e}"
    );
    // With the client's own key, the provider's refusal is its own.
    let r = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-ant-client")
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "[[mock:status=401]] hi"}]}))
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert!(
        !e["error"]["message"].as_str().unwrap().contains("ANTHROPIC_API_KEY"),
        "{e}"
    );
    h.shutdown().await;
}
