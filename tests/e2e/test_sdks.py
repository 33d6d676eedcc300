"""The official OpenAI and Anthropic Python SDKs, and curl, against the real gateway binary."""

import json
import subprocess
import urllib.request

import anthropic
import openai
import pytest


def oai(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-anything", **kw)


def ant(gw, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="ak-client-anything", **kw)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_openai_sdk_plain_call_and_cost_headers(gateway):
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello sdk"}], seed=1
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello sdk"
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-leanlm-model"] == "gpt-4o-mini"
    assert float(raw.headers["x-leanlm-cost-usd"]) > 0
    call_id = raw.headers["x-leanlm-call-id"]
    record = gateway.call(call_id)
    assert record["status"] == "ok"
    assert abs(record["cost_usd"] - float(raw.headers["x-leanlm-cost-usd"])) < 1e-8


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"])
def test_openai_sdk_streams_from_every_provider(gateway, model):
    stream = oai(gateway).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Echo: stream me please"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"])
def test_openai_sdk_tools(gateway, model):
    c = oai(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER]
    )
    call = c.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock"}
    assert c.choices[0].finish_reason == "tool_calls"
    # The tool result goes back and the model answers in text.
    follow = oai(gateway).chat.completions.create(
        model=model,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert follow.choices[0].message.content.startswith("Echo:")


def mock_requests(mock_url: str) -> list:
    with urllib.request.urlopen(mock_url + "/mock/requests", timeout=5) as r:
        return json.load(r)


def test_openai_sdk_conversation_with_tools_moves_between_providers(gateway, mock_url):
    """The SDK's own message object goes back as the docs show: Gemini gets its thought signature again, and
    the same history reaches the other providers without it."""
    client = oai(gateway)
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    first = client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER])
    message = first.choices[0].message
    call = message.tool_calls[0]
    signature = call.model_extra["extra_content"]["google"]["thought_signature"]
    messages += [message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    for model in ["gemini-2.5-flash", "claude-haiku-4-5", "gpt-4o-mini"]:
        follow = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        assert follow.choices[0].message.content.startswith("Echo:"), model
        sent = mock_requests(mock_url)[-1]["body"]
        if model == "gemini-2.5-flash":
            assert sent["contents"][1]["parts"][0]["thoughtSignature"] == signature
        elif model == "gpt-4o-mini":
            assert "extra_content" not in sent["messages"][1]["tool_calls"][0]
    # OpenAI's custom tools reach OpenAI-compatible models; other providers refuse them by name.
    custom = [{"type": "custom", "custom": {"name": "exec", "description": "Runs Python"}}]
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], tools=custom)
    assert mock_requests(mock_url)[-1]["body"]["tools"] == custom
    with pytest.raises(openai.BadRequestError) as e:
        oai(gateway, max_retries=0).chat.completions.create(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}], tools=custom
        )
    assert "tools[0]" in e.value.message and "custom" in e.value.message


PDF = "JVBERi0xLjQKJcfsj6IK"  # the first bytes of a PDF, base64


def test_sdks_send_documents_to_other_providers(gateway, mock_url):
    """A PDF reaches a model of another provider in that provider's shape; audio Anthropic cannot take is a
    typed error, not a prompt quietly sent without it."""
    doc = {"type": "document", "title": "q3.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    for model, where in [("gpt-4o-mini", "messages"), ("gemini-2.5-flash", "contents")]:
        m = ant(gateway).messages.create(model=model, max_tokens=50, messages=[
            {"role": "user", "content": [doc, {"type": "text", "text": "summarise"}]}])
        assert m.content[0].text == "Echo: summarise"
        sent = mock_requests(mock_url)[-1]["body"][where][0]
        if where == "messages":
            assert sent["content"][0] == {"type": "file", "file": {"filename": "q3.pdf",
                                                                   "file_data": f"data:application/pdf;base64,{PDF}"}}
        else:
            assert sent["parts"][0] == {"inlineData": {"mimeType": "application/pdf", "data": PDF}}
    c = oai(gateway).chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "q3.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "summarise"}]}])
    assert c.choices[0].message.content == "Echo: summarise"
    assert mock_requests(mock_url)[-1]["body"]["messages"][0]["content"][0]["type"] == "document"
    with pytest.raises(openai.BadRequestError) as e:
        oai(gateway, max_retries=0).chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}])
    assert "messages[0].content[0]" in e.value.message


def test_openai_sdk_log_probabilities_from_gemini(gateway):
    c = oai(gateway).chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "two words"}], logprobs=True
    )
    tokens = c.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == c.choices[0].message.content
    assert all(t.logprob <= 0 for t in tokens)


def test_anthropic_sdk_conversation_with_tools_on_gemini(gateway, mock_url):
    client = ant(gateway)
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    messages = [{"role": "user", "content": "weather in Oslo?"}]
    first = client.messages.create(model="gemini-2.5-flash", max_tokens=50, tools=tools, messages=messages)
    use = next(b for b in first.content if b.type == "tool_use")
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    follow = client.messages.create(model="gemini-2.5-flash", max_tokens=50, tools=tools, messages=messages)
    assert follow.content[0].text.startswith("Echo:")
    assert mock_requests(mock_url)[-1]["body"]["contents"][1]["parts"][0]["thoughtSignature"] == \
        "skip_thought_signature_validator"
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(gateway, max_retries=0).messages.create(
            model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "news?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "web_search_20250305" in e.value.message


def test_openai_sdk_json_schema(gateway):
    c = oai(gateway).chat.completions.create(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": "json please"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "e", "schema": {"type": "object", "properties": {"echo": {"type": "string"}}}},
        },
    )
    assert json.loads(c.choices[0].message.content) == {"echo": "json please"}


def test_openai_sdk_embeddings_and_models(gateway):
    e = oai(gateway).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 8
    ids = [m.id for m in oai(gateway).models.list()]
    assert "fast" in ids and "gpt-4o-mini" in ids


def test_openai_sdk_errors_are_typed(gateway):
    client = oai(gateway, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert "messages" in e.value.message
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "[[mock:status=503]]"}])
    assert e.value.status_code == 503
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "a b c d [[mock:truncate]]"}]
        ))


def test_fallback_is_reported(gateway):
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-leanlm-model"] == "fast"
    assert raw.parse().choices[0].message.content == "Echo: hi"


def test_anthropic_sdk_plain_and_stream(gateway):
    client = ant(gateway)
    m = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, system="be brief",
        messages=[{"role": "user", "content": "hello claude"}],
    )
    assert m.content[0].text == "Echo: hello claude"
    assert m.usage.input_tokens > 0
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "stream claude"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: stream claude"
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_anthropic_sdk_served_by_other_providers(gateway, model):
    client = ant(gateway)
    m = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "cross"}])
    assert m.content[0].text == "Echo: cross"
    with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "cross stream"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: cross stream"
    assert final.usage.output_tokens > 0
    tools = [{"name": "get_weather", "description": "w",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    m = client.messages.create(model=model, max_tokens=50, tools=tools,
                               messages=[{"role": "user", "content": "weather?"}])
    block = next(b for b in m.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"city": "mock"}
    assert m.stop_reason == "tool_use"


def test_anthropic_sdk_errors_are_typed(gateway):
    client = ant(gateway, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude-haiku-4-5", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in e.value.message
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=5,
                               messages=[{"role": "user", "content": "[[mock:status=429]]"}])


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True)


def test_curl_plain_stream_and_errors(gateway):
    out = curl("-i", gateway.url + "/v1/chat/completions", "-H", "content-type: application/json",
               "-d", '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"from curl"}]}')
    head, body = out.stdout.split("\n\n", 1)  # text mode folds CRLF
    assert "x-leanlm-call-id:" in head.lower()
    assert json.loads(body)["choices"][0]["message"]["content"] == "Echo: from curl"
    out = curl("-N", gateway.url + "/v1/messages", "-d",
               '{"model":"claude-haiku-4-5","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"s"}]}')
    assert "event: message_stop" in out.stdout
    out = curl("-w", "%{http_code}", gateway.url + "/v1/chat/completions", "-d", "{broken")
    assert out.stdout.endswith("400") and "not valid JSON" in out.stdout


def test_calls_and_spend_are_recorded(gateway):
    bad = curl(gateway.url + "/v1/chat/completions", "-d", '{"model": "gpt-4o"}')
    assert "messages" in bad.stdout
    raw = oai(gateway).chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "spend"}])
    gateway.call(raw.headers["x-leanlm-call-id"])
    calls = gateway.calls()
    assert any(c["requested_model"] == "gpt-4o" and c["status"] == "ok" for c in calls)
    assert any(c["status"] == "client_error" for c in calls)
    spend = json.loads(gateway.cli("spend", "--json"))
    assert any(r["key"] == "gpt-4o" and r["cost_usd"] > 0 for r in spend)
    table = gateway.cli("spend", "--by", "day")
    assert "total:" in table


def test_sigterm_flushes_every_call(fresh_gateway):
    client = oai(fresh_gateway)
    for i in range(30):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"n{i}"}])
    assert fresh_gateway.stop() == 0
    assert len(fresh_gateway.calls()) == 30
    # The configured provider key is nowhere in the call log.
    assert b"sk-gateway-owned-key-42" not in fresh_gateway.db.read_bytes()


def test_several_workers_serve_and_sigterm_lets_a_stream_finish(mock_url, tmp_path):
    import threading
    import time
    from pathlib import Path
    from conftest import Gateway

    gw = Gateway(tmp_path, mock_url, extra="[server]\nworkers = 3\n")
    try:
        def workers() -> list[str]:
            names = [p.read_text().strip() for p in Path(f"/proc/{gw.proc.pid}/task").glob("*/comm")]
            return sorted(n for n in names if n.startswith("leanlm-worker"))
        expected = [f"leanlm-worker-{i}" for i in range(3)]
        # The first worker may answer /healthz a moment before the last thread is started.
        deadline = time.time() + 5
        while workers() != expected and time.time() < deadline:
            time.sleep(0.05)
        assert workers() == expected

        # The workers share their port with each other only: a second gateway on it is refused.
        from conftest import LEANLM
        second = subprocess.run(
            [str(LEANLM), "serve", "--config", str(gw.config), "--listen", f"127.0.0.1:{gw.port}",
             "--db", f"sqlite://{tmp_path / 'second.db'}"],
            capture_output=True, text=True, timeout=20)
        assert second.returncode != 0 and f"binding 127.0.0.1:{gw.port}" in second.stderr, second.stderr

        # Clients of their own: separate connections, which the kernel spreads over the workers' sockets.
        def calls(n: int) -> None:
            client = oai(gw)
            for j in range(5):
                r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"w{n} c{j}"}])
                assert r.choices[0].message.content
        workers = [threading.Thread(target=calls, args=(n,)) for n in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

        # A slow stream is under way when SIGTERM arrives: it finishes, and is logged.
        stream = oai(gw).chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "slow one [[mock:chunk_delay_ms=150]]"}])
        chunks = iter(stream)
        first = next(chunks)
        gw.proc.send_signal(__import__("signal").SIGTERM)
        text = (first.choices[0].delta.content or "") + "".join(
            c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "slow one" in text
        assert gw.proc.wait(timeout=20) == 0
    finally:
        if gw.proc.poll() is None:
            gw.stop()
    calls = gw.calls()
    assert len(calls) == 41
    assert all(c["status"] == "ok" for c in calls), [c["status"] for c in calls]
    assert sum(1 for c in calls if c["stream"]) == 1


def test_sdk_endpoints_leanlm_has_no_handler_for_pass_through(gateway):
    # OpenAI's Responses API, plain and streamed, through the official SDK: untouched, logged with its cost.
    raw = oai(gateway).responses.with_raw_response.create(model="gpt-4o-mini", input="responses through leanlm")
    response = raw.parse()
    assert response.output_text == "Echo: responses through leanlm"
    assert response.usage.input_tokens > 0
    assert float(raw.headers["x-leanlm-cost-usd"]) > 0
    record = gateway.call(raw.headers["x-leanlm-call-id"])
    assert record["endpoint"] == "responses" and record["status"] == "ok"
    assert abs(record["cost_usd"] - float(raw.headers["x-leanlm-cost-usd"])) < 1e-8

    deltas, completed = [], None
    with oai(gateway).responses.stream(model="gpt-4o-mini", input="stream the responses api") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        completed = stream.get_final_response()
    assert "".join(deltas) == "Echo: stream the responses api"
    assert completed.usage.output_tokens > 0

    # A file upload (multipart) through the SDK: streamed through unread, byte for byte.
    import hashlib
    content = bytes(range(256)) * 1000
    raw = oai(gateway).files.with_raw_response.create(file=("batch.jsonl", content), purpose="batch")
    echo = json.loads(raw.text)
    assert echo["method"] == "POST" and echo["path"] == "/v1/files"
    assert echo["headers"]["content-type"].startswith("multipart/form-data")
    # The gateway's key replaced the client's (the echo would show the client's otherwise), and a provider
    # that repeats it does not get it back to the client.
    assert echo["headers"]["authorization"] == "Bearer [REDACTED]"
    assert echo["body_bytes"] > len(content)
    assert gateway.call(raw.headers["x-leanlm-call-id"])["endpoint"] == "files"

    # Anthropic's token counting through the official SDK.
    counted = ant(gateway).messages.count_tokens(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "how many tokens is this"}])
    assert counted.input_tokens > 0

    # The CLI's call list says which endpoint each call went to (the log is written within 100 ms).
    import time
    deadline = time.time() + 5
    while "messages/count_tokens" not in (listed := gateway.cli("calls", "--limit", "20")) and time.time() < deadline:
        time.sleep(0.05)
    assert "responses" in listed and "files" in listed and "messages/count_tokens" in listed

    # A path outside the APIs is still not found, in the caller's format.
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"{gateway.url}/nope"], capture_output=True, text=True)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "404" and "no endpoint" in json.loads(body)["error"]["message"]


def redis_clients(url: str) -> list[dict]:
    """`CLIENT LIST` of the Redis at `url`, spoken over a raw socket (RESP), one dict per client."""
    import socket
    from urllib.parse import urlparse
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port or 6379), timeout=5) as s:
        s.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536)
        head, rest = data.split(b"\r\n", 1)
        assert head.startswith(b"$"), head
        size = int(head[1:])
        while len(rest) < size:
            rest += s.recv(65536)
    return [dict(f.split("=", 1) for f in line.split() if "=" in f)
            for line in rest[:size].decode().splitlines()]


def test_workers_have_their_own_redis_connections_and_share_answers(mock_url, tmp_path):
    import os
    import threading
    import time
    from conftest import Gateway

    base = os.environ.get("LEANLM_TEST_REDIS")
    if not base:
        pytest.skip("set LEANLM_TEST_REDIS=redis://127.0.0.1:6379 to run")
    # A database of its own, so this gateway's connections can be told apart from any other client's.
    db = 9
    url = f"{base.rstrip('/')}/{db}"
    gw = Gateway(tmp_path, mock_url, extra=f'[server]\nworkers = 2\n[cache]\nredis = "{url}"\nttl_secs = 60\n')
    try:
        prompt = [{"role": "user", "content": f"shared by workers {time.time_ns()}"}]
        first = oai(gw).chat.completions.with_raw_response.create(model="gpt-4o-mini", temperature=0, messages=prompt)
        assert first.headers["x-leanlm-cache"] == "miss"
        answer = first.parse().choices[0].message.content

        # Clients of their own (connections the kernel spreads over both workers) all get the stored answer,
        # read through the Redis connection of whichever worker serves them.
        seen, lock = [], threading.Lock()

        def ask() -> None:
            deadline = time.time() + 5
            while True:  # the write to Redis leaves the request path: the first reads may come before it
                raw = oai(gw).chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", temperature=0, messages=prompt)
                if raw.headers["x-leanlm-cache"] == "hit" or time.time() > deadline:
                    break
                time.sleep(0.05)
            with lock:
                seen.append((raw.headers["x-leanlm-cache"], raw.parse().choices[0].message.content))

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [("hit", answer)] * 12, seen

        # One connection per worker, each driven by its worker's own runtime: none shared between threads.
        mine = [c for c in redis_clients(base) if c.get("db") == str(db)]
        assert len(mine) == 2, mine
    finally:
        assert gw.stop() == 0
    calls = gw.calls()
    assert len(calls) >= 13
    assert all(c["status"] == "ok" for c in calls), [c["status"] for c in calls]


def test_bad_config_is_refused_with_file_line_and_field(tmp_path):
    from conftest import LEANLM
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nlisten = "127.0.0.1:1"\n\n[models.m]\nprovider = "nowhere"\n')
    out = subprocess.run([str(LEANLM), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert f"{cfg}:5:" in out.stderr and "nowhere" in out.stderr


def test_tasks_are_discovered_typed_and_renamable(gateway):
    client = oai(gateway)
    system = "Classify the customer's message into one of: card_arrival, lost_card, top_up. Reply with the label."
    for q in ["my card never came", "I lost my card", "top up failed", "card still not here", "lost it on the bus"]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "system", "content": system}, {"role": "user", "content": q}]
        )
    gateway.call(raw.headers["x-leanlm-call-id"])  # the last one is written, so all are
    def task_of(*config):
        tasks = json.loads(gateway.cli("tasks", "--json", *config))
        return next(t for t in tasks if t["task"]["name"].startswith("classify-customer-message"))

    # Savings are priced only on models this deployment routes to and allows: with the gateway's config, only
    # `fast` (gpt-4o-mini itself) is allowed, so nothing is saved.
    task = task_of("--config", str(gateway.config))
    assert task["profile"]["calls"] == 5
    assert task["profile"]["type"]["type"] == "classify"
    assert task["profile"]["type"]["reasons"]
    narrow = task["profile"]["savings"]
    assert narrow["cheapest_model"] == "fast" and narrow["savings_usd"] <= 1e-12, narrow
    # Allowing every priced model: the cheapest that its providers (OpenAI, Anthropic, Gemini here) serve,
    # never a Groq model, which no provider here serves.
    wide = gateway.config.parent / "wide.toml"
    wide.write_text(gateway.config.read_text() + '\n[catalog]\nallow = ["*"]\n')
    savings = task_of("--config", str(wide))["profile"]["savings"]
    assert savings["cost_usd"] < task["profile"]["spend_usd"] and savings["savings_usd"] > 0
    assert savings["cheapest_model"] not in ("gpt-4o-mini", "llama-3.1-8b-instant"), savings
    prices = subprocess.run([str(__import__("conftest").LEANLM), "prices", "--json"], capture_output=True, text=True)
    host = json.loads(prices.stdout)["models"][savings["cheapest_model"]]["host"]
    assert host in ("openai", "anthropic", "gemini"), (savings, host)
    tid = task["task"]["id"]
    assert "is now called" in gateway.cli("task", "rename", tid, "renamed intents")
    detail = json.loads(gateway.cli("task", tid, "--json"))
    assert detail["task"]["name"] == "renamed intents"
    assert len(detail["samples"]) == 5
    spend = gateway.cli("spend", "--by", "task")
    assert "renamed intents" in spend
    out = subprocess.run([str(__import__("conftest").LEANLM), "task", "t_nope", "--db", f"sqlite://{gateway.db}"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no task with id t_nope" in out.stderr


def test_import_reports_bad_lines_and_profiles_imported_calls(tmp_path):
    from conftest import LEANLM
    completion = {"id": "c", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "lost_card"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 500, "completion_tokens": 5, "total_tokens": 505}}
    lines = []
    for q in ["I lost my card", "card stolen", "where is my card", "pin blocked"]:
        req = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Classify the banking intent."},
                                                {"role": "user", "content": q}]}
        lines.append(json.dumps({"request": req, "response": completion}))
    lines.insert(2, "{not json")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(lines) + "\n")
    db = f"sqlite://{tmp_path / 'imported.db'}"
    out = subprocess.run([str(LEANLM), "import", str(log), "--db", db], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "imported 4 calls" in out.stdout
    assert f"{log}:3: skipped: not JSON" in out.stderr
    tasks = json.loads(subprocess.run([str(LEANLM), "tasks", "--json", "--db", db], capture_output=True, text=True).stdout)
    assert len(tasks) == 1 and tasks[0]["task"]["calls"] == 4
    assert tasks[0]["profile"]["type"]["type"] == "classify"
    out = subprocess.run([str(LEANLM), "import", str(tmp_path / "missing.jsonl"), "--db", db], capture_output=True, text=True)
    assert out.returncode != 0 and "missing.jsonl" in out.stderr
