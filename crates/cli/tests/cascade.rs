//! A cascade end to end through the real `leanlm` binary with the real local embedding model: intent
//! traffic logged from a reference that is always right; `leanlm train-cascade` has a cheap model that is
//! right 90% of the time (and, like a real model, less sure of its wrong answers) answer part of it, and
//! fits the acceptance score; `leanlm validate` replays held-out calls through the cascade as it would
//! serve; `leanlm deploy` puts it live for the task; `leanlm serve` then answers new questions cheaply where
//! the cascade trusts the cheap answer and escalates the rest, logging every stage's cost.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Served, examples, model_installed, serve_binary, truth};
use serde_json::Value;

/// `leanlm validate` on the task's held-out calls; the report, once it passed. Up to 1,000 calls: the
/// cascade's agreement sits near 97–99% against the 95% bound, and at 400 a sample that landed on 97.5%
/// could not yet tell.
fn validate(env: &Env, task: &str, spec: &str) -> Value {
    let (code, out, err) = env.leanlm(&[
        "validate",
        "--task",
        task,
        "--candidate",
        spec,
        "--seed",
        "1",
        "--sample",
        "1000",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    eprintln!("{spec}: {}", report["verdict"]["reason"]);
    assert_eq!(code, 0, "{:#}", report["verdict"]);
    report
}

/// New questions through `leanlm serve` (once it has the policy): the answers, how many are right, and the
/// server (killed when dropped, so kept until its call log is read).
fn serve_fresh(env: &Env, fresh: &[(String, String)]) -> (Vec<common::Answer>, usize, Served) {
    let gw = serve_binary(env);
    std::thread::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500));
    let answers = truth(fresh);
    let queries: Vec<String> = fresh.iter().map(|e| e.0.clone()).collect();
    let got = env.send_to(&gw.1, &queries, "big", 4);
    let right = queries
        .iter()
        .zip(&got)
        .filter(|(q, a)| a.status == 200 && Some(&a.text) == answers.get(*q))
        .count();
    (got, right, gw)
}

/// Puts the cascade live for every call of the task (no audit), as validated.
fn deploy_everywhere(env: &Env, task: &str, spec: &str) {
    let (code, out, err) = env.leanlm(&[
        "deploy",
        "--task",
        task,
        "--replacement",
        spec,
        "--stage",
        "canary",
        "--share",
        "1",
        "--audit-rate",
        "0",
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The task's logged calls, newest first, once there are `n` (writes are asynchronous).
fn logged(store: &leanlm_store::Store, task: &str, n: usize) -> Vec<leanlm_store::CallSummary> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store
            .calls(&leanlm_store::CallFilter {
                task: Some(task.to_owned()),
                limit: 5000,
                ..Default::default()
            })
            .unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(Instant::now() < deadline, "the served calls never reached the log");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cascade_is_trained_validated_deployed_and_served() {
    if !model_installed() {
        eprintln!("skipped: no local embedding model (scripts/fetch-model installs it)");
        return;
    }
    let all = examples(1);
    let traffic: Vec<String> = all.iter().step_by(3).map(|e| e.0.clone()).collect();
    let fresh: Vec<(String, String)> = all.iter().skip(1).step_by(10).take(240).cloned().collect();
    let mut env = Env::start("cascade", 5, &[("cheap-90", 0.90)]);
    // One at a time: the log's order, and so which calls training and validation sample, is then the
    // same on every run (sent concurrently, a run could land on a sample that cannot decide).
    assert!(env.send(&traffic, "big", 1).iter().all(|a| a.status == 200));
    env.stop_gateway();
    let task = env.wait_for_calls(traffic.len() as u64).id;

    // Not trained yet: validation and deployment say how to train it.
    let spec = "cascade:cheap-90,big";
    let (code, _, err) = env.leanlm(&["validate", "--task", &task, "--candidate", spec]);
    assert_ne!(code, 0);
    assert!(err.contains("leanlm train-cascade"), "{err}");
    // Bad input names the field.
    let (code, _, err) = env.leanlm(&["train-cascade", "--task", &task, "--cheap", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("--cheap") && err.contains("nope"), "{err}");
    let (code, _, err) = env.leanlm(&[
        "train-cascade",
        "--task",
        &task,
        "--cheap",
        "cheap-90",
        "--bound",
        "1.5",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--bound"), "{err}");
    // Training on so many calls that too few are left to validate the result on is refused, before any
    // replay, saying how many it may take.
    let (code, _, err) = env.leanlm(&[
        "train-cascade",
        "--task",
        &task,
        "--cheap",
        "cheap-90",
        "--sample",
        "990",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--sample 990") && err.contains("validation") && err.contains("--sample 927"),
        "{err}"
    );

    let (code, out, err) = env.leanlm(&[
        "train-cascade",
        "--task",
        &task,
        "--cheap",
        "cheap-90",
        "--logprobs",
        "--sample",
        "600",
        "--bound",
        "0.99",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Calls logged through the Anthropic API are asked in the OpenAI format, so every answer has them.
    assert!(
        out.contains(spec) && out.contains("600 answers with log-probabilities") && out.contains("400 other calls"),
        "{out}"
    );
    let store = leanlm_store::Store::open(&env.db).unwrap();
    let cascade: leanlm_route::cascade::TaskCascade =
        serde_json::from_str(&store.router(&task, spec).unwrap().unwrap()).unwrap();
    assert!(cascade.calibration_agreement >= 0.99, "{cascade:?}");
    // Log-probabilities alone separate ~80% of the answers at this bound (see the route crate's tests);
    // calibrated on a 30% split it once trusted 9%.
    assert!(
        cascade.accepted_share > 0.5,
        "log-probabilities let the cascade trust most of the cheap answers: {}",
        cascade.accepted_share
    );

    // Validated on calls it did not learn from, as it would serve: a 90% model alone fails the bound,
    // the cascade passes it.
    let report = validate(&env, &task, spec);
    assert_eq!(report["verdict"]["passed"], true);
    let learned: std::collections::HashSet<String> = store
        .replayable_calls(&task, "")
        .unwrap()
        .into_iter()
        .map(|c| c.1)
        .collect();
    let held_out: std::collections::HashSet<String> = store
        .replayable_calls(&task, spec)
        .unwrap()
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(
        learned.len() - held_out.len(),
        600,
        "the 600 calls it learned from are left out"
    );
    let validated = store
        .candidate_outcomes(&task, spec, report["scorer"].as_str().unwrap())
        .unwrap();
    assert!(validated.len() >= 100, "{}", validated.len());
    assert!(validated.iter().all(|(id, _)| held_out.contains(id)));

    deploy_everywhere(&env, &task, spec);

    // New questions through `leanlm serve`: right answers, some from the cheap model.
    let queries: Vec<String> = fresh.iter().map(|e| e.0.clone()).collect();
    let (got, right, _served) = serve_fresh(&env, &fresh);
    let cheap = got.iter().filter(|a| a.model == "cheap-90").count();
    assert!(
        right as f64 >= 0.95 * queries.len() as f64,
        "{right} of {} right",
        queries.len()
    );
    // Most, not all.
    assert!(
        cheap * 2 >= queries.len(),
        "{cheap} of {} served cheaply",
        queries.len()
    );
    assert!(cheap < queries.len(), "every call served cheaply: nothing escalated");

    // Every served call records its stage; an escalated one costs both models.
    let rows = logged(&store, &task, traffic.len() + queries.len());
    let (mut accepted, mut escalated) = (0, 0);
    for row in rows.iter().take(queries.len()) {
        let call = store.call(&row.id).unwrap().unwrap();
        let stage = call
            .stages
            .first()
            .unwrap_or_else(|| panic!("no stage logged: {call:?}"));
        assert_eq!(stage.model, "cheap-90");
        match stage.outcome.as_str() {
            "accepted" => {
                accepted += 1;
                assert_eq!(call.served_model.as_deref(), Some("cheap-90"));
            }
            "escalated" | "unusable" => {
                escalated += 1;
                assert_eq!(call.served_model.as_deref(), Some("big"));
                assert!(call.cost_usd.unwrap() > stage.cost_usd.unwrap());
            }
            other => panic!("stage outcome {other}: {call:?}"),
        }
    }
    assert_eq!(accepted, cheap);
    assert!(escalated > 0);
}

/// A chain of two cheap models before the strong one: a 90% model with log-probabilities answers first, a
/// 99% one (through the Anthropic API, so without them) answers what the first is unsure of, and the strong
/// model what neither is trusted with. Trained, validated, deployed and served like a two-model cascade.
#[test]
fn a_chain_of_two_cheap_models_serves_each_where_it_is_trusted() {
    if !model_installed() {
        eprintln!("skipped: no local embedding model (scripts/fetch-model installs it)");
        return;
    }
    let all = examples(1);
    let traffic: Vec<String> = all.iter().skip(2).step_by(3).map(|e| e.0.clone()).collect();
    let fresh: Vec<(String, String)> = all.iter().skip(4).step_by(10).take(160).cloned().collect();
    let mut env = Env::start("chain", 9, &[("cheap-90", 0.90), ("cheap-99", 0.99)]);
    // One at a time: the log's order, and so which calls training and validation sample, is then the
    // same on every run (sent concurrently, a run could land on a sample that cannot decide).
    assert!(env.send(&traffic, "big", 1).iter().all(|a| a.status == 200));
    env.stop_gateway();
    let task = env.wait_for_calls(traffic.len() as u64).id;

    // Bad input names the field.
    let (code, _, err) = env.leanlm(&[
        "train-cascade",
        "--task",
        &task,
        "--cheap",
        "cheap-90,cheap-99,cheap-90,cheap-99",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--cheap") && err.contains("1 to 3"), "{err}");

    let spec = "cascade:cheap-90,cheap-99,big";
    let (code, out, err) = env.leanlm(&[
        "train-cascade",
        "--task",
        &task,
        "--cheap",
        "cheap-90,cheap-99",
        "--strong",
        "big",
        "--logprobs",
        "--sample",
        "500",
        "--bound",
        "0.99",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(spec) && out.contains("cheap-90:") && out.contains("cheap-99:"),
        "{out}"
    );
    let store = leanlm_store::Store::open(&env.db).unwrap();
    let chain: leanlm_route::cascade::Chain =
        serde_json::from_str(&store.router(&task, spec).unwrap().unwrap()).unwrap();
    assert_eq!(chain.cheap().collect::<Vec<_>>(), ["cheap-90", "cheap-99"]);
    assert!(chain.calibration_agreement >= 0.99, "{chain:?}");
    // The 90% model keeps the answers its log-probabilities vouch for; the 99% model, ten times cheaper
    // than the strong one, is worth asking about most of the rest.
    assert!(chain.served[0] > 0.3, "{:?}", chain.served);
    assert!(chain.served[1] > 0.05, "{:?}", chain.served);

    validate(&env, &task, spec);
    deploy_everywhere(&env, &task, spec);

    let queries: Vec<String> = fresh.iter().map(|e| e.0.clone()).collect();
    let (got, right, _served) = serve_fresh(&env, &fresh);
    assert!(
        right as f64 >= 0.95 * queries.len() as f64,
        "{right} of {} right",
        queries.len()
    );
    let by = |m: &str| got.iter().filter(|a| a.model == m).count();
    assert!(
        by("cheap-90") > 0 && by("cheap-99") > 0,
        "{} / {} / {}",
        by("cheap-90"),
        by("cheap-99"),
        by("big")
    );

    // A call the second stage served logs both stages, and costs both.
    let rows = logged(&store, &task, traffic.len() + queries.len());
    let mut second = 0;
    for row in rows.iter().take(queries.len()) {
        let call = store.call(&row.id).unwrap().unwrap();
        let models: Vec<&str> = call.stages.iter().map(|s| s.model.as_str()).collect();
        match call.served_model.as_deref() {
            Some("cheap-90") => assert_eq!(models, ["cheap-90"], "{call:?}"),
            Some("cheap-99") => {
                second += 1;
                assert_eq!(models, ["cheap-90", "cheap-99"], "{call:?}");
                assert_ne!(call.stages[0].outcome.as_str(), "accepted");
                assert_eq!(call.stages[1].outcome.as_str(), "accepted");
                let stages: f64 = call.stages.iter().map(|s| s.cost_usd.unwrap()).sum();
                assert!((call.cost_usd.unwrap() - stages).abs() < 1e-9, "{call:?}");
            }
            Some("big") => {
                assert!(call.cost_usd.unwrap() > call.stages.iter().map(|s| s.cost_usd.unwrap_or(0.0)).sum::<f64>())
            }
            other => panic!("served by {other:?}"),
        }
    }
    assert_eq!(second, by("cheap-99"));
}
