//! The call-log writer's cost per record, apart from the gateway: records shaped like the overhead
//! benchmark's (a ~1 KB chat request, a chat.completion answer, a task, usage and cost) inserted into a fresh
//! SQLite store in batches, as the writer thread does at 1,000 calls/s (100 per transaction).
//!
//!   cargo run --release -p leanlm-store --example insert_batch [RECORDS] [BATCH]
//!   valgrind --tool=callgrind target/release/examples/insert_batch 5000   # instructions, not seconds

use leanlm_core::{CallRecord, CallStatus, ClientFormat, Origin, TaskRef, Usage};
use leanlm_store::Store;

fn record(i: usize, started_at_ms: i64) -> CallRecord {
    let question = "I ordered my card two weeks ago and it still has not arrived, when will I get it? ".repeat(3);
    let request = serde_json::json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 16, "messages": [
        {"role": "system", "content": "You are a support assistant for a retail bank. Classify the customer's message into exactly one intent from the list and answer with the intent name only. Intents: card_arrival, card_linking, exchange_rate, card_payment_wrong_exchange_rate, extra_charge_on_statement."},
        {"role": "user", "content": format!("{question} ({i})")}]});
    let response = serde_json::json!({"id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "card_arrival"},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 250, "completion_tokens": 3, "total_tokens": 253}});
    CallRecord {
        id: format!("0190{i:028x}"),
        started_at_ms,
        endpoint: "chat.completions".into(),
        client_format: ClientFormat::OpenAi,
        client_key_id: Some("key_0123456789ab".into()),
        task: Some(TaskRef {
            id: "t_0123456789ab".into(),
            name: "support-retail-bank-classify".into(),
            origin: Origin::Template,
            absorbs: Default::default(),
        }),
        requested_model: "gpt-4o-mini".into(),
        served_model: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-4o-mini".into()),
        stream: false,
        status: CallStatus::Ok,
        http_status: 200,
        error: None,
        usage: Some(Usage {
            input_tokens: 250,
            output_tokens: 3,
            ..Default::default()
        }),
        cost_usd: Some(0.0000393),
        cost_estimated: false,
        latency_ms: 0.4,
        ttft_ms: None,
        overhead_us: Some(7.0),
        attempts: 1,
        request_body: Some(request.to_string()),
        response_body: Some(response.to_string()),
        cache: None,
        cost_avoided_usd: None,
        policy: None,
        stages: Vec::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("leanlm-insert-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut store = Store::open(&format!("sqlite://{}", dir.join("calls.db").display()))?;
    let records: Vec<CallRecord> = (0..n).map(|i| record(i, 1_796_000_000_000 + i as i64)).collect();
    let started = std::time::Instant::now();
    for chunk in records.chunks(batch) {
        store.insert_batch(chunk)?;
    }
    let took = started.elapsed();
    println!(
        "{n} records in batches of {batch}: {:.1} µs per record (wall)",
        took.as_secs_f64() * 1e6 / n as f64
    );
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
