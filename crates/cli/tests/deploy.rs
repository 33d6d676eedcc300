//! End-to-end deployment: a cheap model goes to shadow (checked online, never serving), is validated,
//! promoted to canary (serving half the task), then degraded on purpose at the mock; the gateway must roll
//! it back by itself, and say why.

mod common;

use std::time::{Duration, Instant};

use common::{Env, examples, truth};
use leanlm_deploy::{Policy, Stage};
use leanlm_store::Store;
use serde_json::Value;

fn policy(env: &Env) -> Option<Policy> {
    let store = Store::open(&env.db).unwrap();
    leanlm_control::policy::load(&store).unwrap().into_iter().next()
}

/// Waits for the sync thread (once a second) to have picked up a change.
fn settle() {
    std::thread::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500));
}

fn online(env: &Env) -> Value {
    let (code, out, err) = env.leanlm(&["policies", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["online"].clone()
}

#[test]
fn shadow_canary_and_automatic_rollback() {
    let data = examples(3);
    let answers = truth(&data);
    let queries: Vec<String> = data.iter().map(|e| e.0.clone()).collect();
    let env = Env::start("deploy", 7, &[("cheap-99", 0.99)]);
    assert!(env.send(&queries[..300], "big", 16).iter().all(|a| a.status == 200));
    let task = env.wait_for_calls(300).id;

    // Past shadow needs a passing validation.
    let (code, _, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cheap-99",
        "--stage",
        "canary",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no passing validation"), "{err}");

    // Shadow: the reference keeps serving; the replacement answers every call off the hot path.
    let (code, out, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cheap-99",
        "--stage",
        "shadow",
        "--audit-rate",
        "1",
        "--min-samples",
        "20",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is shadow"), "{out}");
    settle();
    let served = env.send(&queries[300..400], "big", 8);
    assert!(served.iter().all(|a| a.status == 200 && a.model == "big"));
    settle();
    let o = online(&env);
    assert!(o["scored"].as_u64().unwrap() >= 90, "{o}");
    assert!(
        o["agreed"].as_u64().unwrap() as f64 >= 0.9 * o["scored"].as_f64().unwrap(),
        "{o}"
    );
    assert!(
        o["cost_usd"].as_f64().unwrap() > 0.0,
        "shadow answers are paid for and counted"
    );

    // Validate, then promote to a 50% canary.
    let (code, _, err) = env.leanlm(&["validate", "--task", &task, "--candidate", "cheap-99", "--seed", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = env.leanlm(&["promote", "--task", &task, "--share", "0.5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is canary on 50%"), "{out}");
    settle();
    let canary = env.send(&queries[400..600], "big", 8);
    let cheap = canary.iter().filter(|a| a.model == "cheap-99").count();
    assert!((60..=140).contains(&cheap), "{cheap} of 200 served by the canary");
    assert!(canary.iter().all(|a| a.status == 200));
    let p = policy(&env).unwrap();
    assert_eq!((p.stage, p.version), (Stage::Canary, 2));
    // Every call records the policy version and role that served it (the log is written asynchronously).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spend = Store::open(&env.db).unwrap().policy_spend(&task).unwrap();
        let of = |role: &str| {
            spend
                .iter()
                .filter(|s| s.0 == 2 && s.1 == role)
                .map(|s| s.2 as usize)
                .sum::<usize>()
        };
        if of("replacement") + of("reference") == 200 {
            assert_eq!(of("replacement"), cheap, "{spend:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{spend:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // `leanlm spend --by policy` attributes spend per version and role.
    let (code, out, _) = env.leanlm(&["spend", "--by", "policy", "--json"]);
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&out).unwrap();
    let key = format!("{task} v2 replacement");
    assert!(
        rows.as_array().unwrap().iter().any(|r| r["key"] == key.as_str()),
        "{out}"
    );

    // Degrade the replacement; the policy must roll itself back.
    env.rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/mock/accuracy", env.mock_url))
            .json(&serde_json::json!({"model": "cheap-99", "accuracy": 0.3}))
            .send()
            .await
            .unwrap()
    });
    let degraded = Instant::now();
    let (mut sent, mut wrong) = (0, 0);
    let mut rolled_back = None;
    for batch in queries[600..].chunks(10) {
        for (a, q) in env.send(batch, "big", 4).iter().zip(batch) {
            if a.model == "cheap-99" && a.text != answers[q] {
                wrong += 1;
            }
        }
        sent += batch.len();
        if let Some(p) = policy(&env).filter(|p| p.stage == Stage::RolledBack) {
            rolled_back = Some(p);
            break;
        }
    }
    let p = rolled_back.unwrap_or_else(|| panic!("no rollback after {sent} calls: {}", online(&env)));
    eprintln!(
        "rolled back {:.1} s after the degradation, {sent} calls later, {wrong} of them served wrongly by the replacement",
        degraded.elapsed().as_secs_f64()
    );
    assert!(wrong < 120, "{wrong} wrong answers before the rollback");
    assert_eq!(p.version, 3);

    // The audit log says who, what and why, with the evidence.
    let (code, out, _) = env.leanlm(&["policy-log", "--json"]);
    assert_eq!(code, 0);
    let log: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(log.len(), 3, "{out}");
    assert_eq!(log[0]["actor"], "auto");
    assert_eq!(log[0]["action"], "rollback");
    assert!(
        log[0]["reason"].as_str().unwrap().contains("upper end is under"),
        "{}",
        log[0]
    );
    assert!(log[0]["evidence"].as_str().unwrap().contains("scored"));
    assert_eq!(log[1]["action"], "promote");
    assert!(log[1]["actor"].as_str().unwrap().starts_with("cli:"));
    // The OS user, even where the environment names none (containers, CI).
    assert_ne!(log[1]["actor"], "cli:unknown");

    // The online checks are training data: a router for the replacement learns from the shadow and audit
    // answers as well as from the validation.
    let (code, out, err) = env.leanlm(&["train-router", "--task", &task, "--cheap", "cheap-99", "--bound", "0.5"]);
    assert_eq!(code, 0, "{err}");
    let from_online: usize = out
        .split(" of them from online checks")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(from_online >= 50, "{out}");

    // Rolled back: the reference serves everything again.
    settle();
    assert!(env.send(&queries[..40], "big", 8).iter().all(|a| a.model == "big"));

    // A validation judges against the reference's own answers only: none of the calls the canary's
    // replacement served (before or after it degraded) is a reference.
    let (_, out, err) = env.leanlm(&[
        "validate",
        "--task",
        &task,
        "--candidate",
        "cheap-90",
        "--seed",
        "2",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let references: Vec<&String> = report["reference_models"].as_object().unwrap().keys().collect();
    assert_eq!(references, ["big"], "{}", report["reference_models"]);

    // Bad requests are refused with the reason.
    let (code, _, err) = env.leanlm(&["promote", "--task", &task]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be promoted"), "{err}");
    let (code, _, err) = env.leanlm(&["rollback", "--task", &task, "--reason", " "]);
    assert_eq!(code, 1);
    assert!(err.contains("say why"), "{err}");
    let (code, _, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cache:exact",
        "--stage",
        "shadow",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be served yet"), "{err}");
    let (code, _, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cheap-99",
        "--stage",
        "canary",
        "--share",
        "1.5",
        "--force",
        "test",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("between 0 and 1"), "{err}");
}

#[test]
fn gateways_sharing_a_store_see_a_change_within_seconds() {
    let queries: Vec<String> = examples(50).into_iter().map(|e| e.0).collect();
    let mut env = Env::start("instances", 1, &[]);
    let second = env.add_gateway();
    assert!(env.send(&queries[..30], "big", 8).iter().all(|a| a.status == 200));
    let task = env.wait_for_calls(30).id;
    let (code, _, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cheap-90",
        "--stage",
        "canary",
        "--share",
        "1",
        "--audit-rate",
        "0",
        "--force",
        "multi-instance test",
    ]);
    assert_eq!(code, 0, "{err}");
    let changed = Instant::now();
    let (mut first_sees, mut second_sees) = (None, None);
    while changed.elapsed() < Duration::from_secs(10) && (first_sees.is_none() || second_sees.is_none()) {
        if first_sees.is_none() && env.send(&queries[..1], "big", 1)[0].model == "cheap-90" {
            first_sees = Some(changed.elapsed());
        }
        if second_sees.is_none() && env.send_to(&second, &queries[1..2], "big", 1)[0].model == "cheap-90" {
            second_sees = Some(changed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a, b) = (
        first_sees.expect("the first gateway never switched"),
        second_sees.expect("the second never switched"),
    );
    eprintln!("the change reached the gateways after {a:?} and {b:?}");
    assert!(a < Duration::from_secs(5) && b < Duration::from_secs(5));
}

/// The sum of a Prometheus metric's series.
fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn spend_rows(env: &Env, by: &str) -> Vec<Value> {
    let (code, out, err) = env.leanlm(&["spend", "--by", by, "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

fn spend_of(rows: &[Value], keys: &[&str]) -> f64 {
    rows.iter()
        .filter(|r| keys.contains(&r["key"].as_str().unwrap_or("")))
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum()
}

#[test]
fn spend_counts_every_dollar_leanlm_spends_as_metrics_do() {
    let data = examples(4);
    let queries: Vec<String> = data.iter().map(|e| e.0.clone()).collect();
    let mut env = Env::start("spend", 5, &[("cheap-99", 0.99)]);
    assert!(env.send(&queries[..300], "big", 16).iter().all(|a| a.status == 200));
    let task = env.wait_for_calls(300).id;
    env.stop_gateway();

    // A validation from the CLI: its replays, control run and judge calls are spent, by purpose.
    let (code, out, err) = env.leanlm(&[
        "validate",
        "--task",
        &task,
        "--candidate",
        "cheap-99",
        "--seed",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let validation_cost = report["validation_cost_usd"].as_f64().unwrap();
    assert!(validation_cost > 0.0);
    let purposes = spend_rows(&env, "purpose");
    let validation_spend = spend_of(&purposes, &["validation", "control", "judge"]);
    assert!(
        (validation_spend - validation_cost).abs() < 1e-9 * validation_cost.max(1.0),
        "{validation_spend} in spend, {validation_cost} in the report: {purposes:?}"
    );
    let traffic_before = spend_of(&purposes, &["traffic"]);

    // A fresh `leanlm serve` (its /metrics start at zero): shadow, then a canary with every replaced call
    // audited.
    let gw = common::serve_binary(&env);
    let (code, _, err) = env.leanlm(&[
        "deploy",
        "--task",
        &task,
        "--replacement",
        "cheap-99",
        "--stage",
        "shadow",
        "--audit-rate",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    settle();
    assert!(
        env.send_to(&gw.1, &queries[300..350], "big", 8)
            .iter()
            .all(|a| a.status == 200)
    );
    let (code, _, err) = env.leanlm(&["promote", "--task", &task, "--share", "0.5"]);
    assert_eq!(code, 0, "{err}");
    settle();
    assert!(
        env.send_to(&gw.1, &queries[350..450], "big", 8)
            .iter()
            .all(|a| a.status == 200)
    );

    // Once the log and the online checks are written, `spend` holds what /metrics counted.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = env.rt.block_on(async {
            reqwest::get(format!("{}/metrics", gw.1))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let counted = metric_total(&metrics, "leanlm_spend_usd_total");
        let rows = spend_rows(&env, "purpose");
        let spent = spend_of(&rows, &["traffic", "shadow", "audit"]) - traffic_before;
        let (shadow, audit) = (spend_of(&rows, &["shadow"]), spend_of(&rows, &["audit"]));
        if counted > 0.0 && (spent - counted).abs() < 1e-9 * counted.max(1.0) && shadow > 0.0 && audit > 0.0 {
            // Every grouping sums to the same total.
            for by in ["model", "task", "day", "policy"] {
                let total: f64 = spend_rows(&env, by)
                    .iter()
                    .map(|r| r["cost_usd"].as_f64().unwrap())
                    .sum();
                let all: f64 = rows.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
                assert!(
                    (total - all).abs() < 1e-9 * all.max(1.0),
                    "by {by}: {total} against {all}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spend {spent} (shadow {shadow}, audit {audit}) against /metrics {counted}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn commands_read_leanlm_toml_in_the_working_directory() {
    let env = Env::start("config-discovery", 1, &[]);
    let queries: Vec<String> = examples(50).into_iter().map(|e| e.0).collect();
    assert!(env.send(&queries, "big", 4).iter().all(|a| a.status == 200));
    env.wait_for_calls(queries.len() as u64);
    // No --config and no --db: the leanlm.toml beside the command names the store (and every other setting).
    let run = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_leanlm"))
            .args(["spend", "--json"])
            .current_dir(dir)
            .env_remove("LEANLM_CONFIG")
            .env_remove("LEANLM_DB")
            .env("LEANLM_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&env.dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["key"] == "big"), "{rows}");
    // Elsewhere, without one, the defaults apply: no call log there.
    let empty = env.dir.join("elsewhere");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(&empty);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no call log"));
}
