//! Times task discovery on recorded request bodies (one OpenAI chat request per line), as the gateway runs
//! it on every call: parse-free, from the already-parsed request. Used by `bench/tasks.py`.
//!
//!     cargo run --release -p leanlm-profile --example discovery_timing -- requests.jsonl
//!     cargo run --release -p leanlm-profile --example discovery_timing -- requests.jsonl --ids
//!
//! With `--ids` it prints the task id the first pass gave each request instead, one per line.

use std::time::Instant;

use leanlm_profile::{Discoverer, Shape};
use leanlm_wire::openai::ChatRequest;

fn main() {
    let path = std::env::args().nth(1).expect("usage: discovery_timing REQUESTS.jsonl");
    let text = std::fs::read_to_string(&path).expect("readable file");
    let requests: Vec<ChatRequest> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| ChatRequest::parse(l.as_bytes()).ok())
        .collect();
    let d = Discoverer::new();
    if std::env::args().any(|a| a == "--ids") {
        for r in &requests {
            println!("{}", d.identify(&Shape::from_openai("chat", r)).id);
        }
        return;
    }
    // Cold: each system prompt masked for the first time.
    let t0 = Instant::now();
    for r in &requests {
        std::hint::black_box(d.identify(&Shape::from_openai("chat", r)));
    }
    let cold = t0.elapsed().as_secs_f64() * 1e6 / requests.len() as f64;
    // Warm: the steady state of a gateway that has seen its templates.
    let mut each = Vec::with_capacity(requests.len() * 3);
    for _ in 0..3 {
        for r in &requests {
            let t = Instant::now();
            std::hint::black_box(d.identify(&Shape::from_openai("chat", r)));
            each.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    each.sort_by(|a, b| a.total_cmp(b));
    let mean = each.iter().sum::<f64>() / each.len() as f64;
    let p = |q: f64| each[((each.len() - 1) as f64 * q) as usize];
    println!(
        "{}",
        serde_json::json!({"requests": requests.len(), "cold_mean_us": cold, "warm_mean_us": mean,
            "warm_p50_us": p(0.5), "warm_p99_us": p(0.99)})
    );
}
