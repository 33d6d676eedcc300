//! The semantic cache through the real `leanlm` binary with the real local embedding model (MiniLM on
//! candle): intent-classification traffic, the cache switched on for the task by a `cache:semantic` policy from the
//! CLI, learning from verified would-be hits, then serving, with `leanlm cache` showing the estimate.

mod common;

use std::time::{Duration, Instant};

use common::{Env, examples, model_installed, serve_binary, truth};
use serde_json::Value;

#[test]
fn intent_traffic_learns_then_serves_semantic_hits() {
    if !model_installed() {
        eprintln!("skipped: no local embedding model (scripts/fetch-model installs it)");
        return;
    }
    let data = examples(20);
    let answers: std::collections::HashMap<String, String> = truth(&data)
        .into_iter()
        .map(|(q, label)| (q.to_lowercase(), label))
        .collect();
    let queries: Vec<String> = data.iter().map(|e| e.0.clone()).collect();
    let env = Env::start("semantic", 3, &[]);
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("\n[cache.semantic]\nbound = 0.05\nverify = 0.05\n");
    std::fs::write(&env.config, config).unwrap();
    let gw = serve_binary(&env);

    // The task exists once it has traffic; then the CLI switches its semantic cache on.
    assert!(
        env.send_to(&gw.1, &queries[..20], "big", 4)
            .iter()
            .all(|a| a.status == 200)
    );
    let task = env.wait_for_calls(20).id;
    let (code, out, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cache:semantic",
        "--stage",
        "canary",
        "--share",
        "1",
        "--scorer",
        "label",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500));

    // Distinct questions, then the same questions typed differently (a different exact-cache key; the
    // same meaning): the second round is made of would-be hits that teach the cache its threshold.
    let originals = &queries[20..];
    let lower: Vec<String> = originals.iter().map(|q| q.to_lowercase()).collect();
    let upper: Vec<String> = originals.iter().map(|q| q.to_uppercase()).collect();
    let n = originals.len();
    for round in [originals, &lower[..], &upper[..]] {
        let got = env.send_to(&gw.1, round, "big", 2);
        assert!(got.iter().all(|a| a.status == 200));
        for (q, a) in round.iter().zip(&got) {
            assert_eq!(Some(&a.text), answers.get(&q.to_lowercase()), "{q}");
        }
    }
    // Every hit must be right (the mock answers each question's true label), and there must be hits.
    let cache = || -> Value {
        let (code, out, err) = env.leanlm(&["cache", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    // The call log is written asynchronously: wait until the hits are in it.
    let eligible = n as u64 * 3 / 4; // the Anthropic-format quarter is not deterministic here
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let v = cache();
        let row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_id"] == task.as_str())
            .cloned();
        if let Some(r) = row.filter(|r| r["semantic_hits"].as_u64().unwrap_or(0) * 4 >= eligible) {
            break r;
        }
        assert!(Instant::now() < deadline, "too few semantic hits logged: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let hits = row["semantic_hits"].as_u64().unwrap();
    assert!(
        hits * 4 >= eligible,
        "{hits} semantic hits of {eligible} eligible repeats: {row}"
    );
    let e = &row["estimate"];
    assert!(e["threshold"].as_f64().is_some(), "{row}");
    assert!(e["upper"].as_f64().unwrap() <= 0.05, "{row}");
    assert!(row["cost_avoided_usd"].as_f64().unwrap() > 0.0);
    let (code, out, _) = env.leanlm(&["cache"]);
    assert_eq!(code, 0);
    eprintln!("{out}");
    assert!(out.contains("semantic hits") && out.contains(&task[..8]), "{out}");

    // `leanlm cache --clear` withdraws the task's entries: the stored ones at once (running gateways drop
    // theirs within a second; crates/gateway/tests/semantic.rs checks that part).
    let (code, _, err) = env.leanlm(&["cache", "--clear", "--task", "no-such-task"]);
    assert_ne!(code, 0);
    assert!(err.contains("--task") && err.contains("no-such-task"), "{err}");
    let stored = || {
        leanlm_store::Store::open(&env.db)
            .unwrap()
            .semantic_entries("local", 0, 100_000, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.task_id == task)
            .count()
    };
    assert!(stored() > 0, "the task's entries are stored");
    let (code, out, err) = env.leanlm(&["cache", "--clear", "--task", &task, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["stored_entries_deleted"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(stored(), 0);
}
