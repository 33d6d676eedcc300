//! End-to-end validation on the project's intent set: traffic logged through the real gateway from a reference model that
//! is always right, then the `leanlm` binary validating mock candidates whose accuracy is known. A 90%
//! candidate must fail a 95% bound and a 99% one must pass, whichever prompts the seed makes them miss.

mod common;

use common::{Env, examples};
use serde_json::Value;

/// Logs the queries through the gateway to `big` (always right), then stops it, flushing the log.
fn log_traffic(seed: u64, queries: &[String]) -> (Env, String) {
    let mut env = Env::start("validate", seed, &[("cheap-90", 0.90), ("cheap-99", 0.99)]);
    let answers = env.send(queries, "big", 16);
    assert!(answers.iter().all(|a| a.status == 200));
    env.stop_gateway();
    let task = env.wait_for_calls(queries.len() as u64);
    assert_eq!(task.calls as usize, queries.len(), "every call lands in one task");
    (env, task.id)
}

fn validate(env: &Env, task: &str, candidate: &str, seed: u64) -> (i32, Value) {
    let seed = seed.to_string();
    let (code, out, err) = env.leanlm(&[
        "validate",
        "--task",
        task,
        "--candidate",
        candidate,
        "--seed",
        &seed,
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, report)
}

#[test]
fn verdicts_hold_over_seeds_and_reports_are_stored() {
    let texts: Vec<String> = examples(5).into_iter().map(|e| e.0).collect();
    assert!(texts.len() >= 600);
    for seed in 0..3u64 {
        let (env, task) = log_traffic(seed, &texts);
        let l = &env;
        let (code, poor) = validate(l, &task, "cheap-90", seed);
        assert_eq!(code, 2, "seed {seed}: {poor:#}");
        assert_eq!(poor["verdict"]["passed"], false);
        assert_eq!(
            poor["verdict"]["rule"], "agreement_below",
            "seed {seed}: {:#}",
            poor["verdict"]
        );
        assert_eq!(poor["scorer"], "label", "a classification task gets the label scorer");
        let (code, good) = validate(l, &task, "cheap-99", seed);
        assert_eq!(code, 0, "seed {seed}: {:#}", good["verdict"]);
        assert_eq!(good["verdict"]["rule"], "agreement_clears");
        // The reference (always right, deterministic) agrees with itself; the bound is 95% of that.
        assert_eq!(good["control"]["rate"], 1.0);
        assert_eq!(good["bound"], 0.95);
        assert!(good["agreement"]["low"].as_f64().unwrap() >= 0.95);
        assert!(good["scored"].as_u64().unwrap() <= 400);
        assert!(good["projected_monthly_savings_usd"].as_f64().unwrap() > 0.0);
        assert!(good["validation_cost_usd"].as_f64().unwrap() > 0.0);
        assert_eq!(good["replay_errors"], 0);
        assert!(poor["failures"][0]["reference"].is_string());

        if seed == 0 {
            // Both reports are stored, listed, and shown as Markdown.
            let (code, out, err) = l.leanlm(&["validations", "--json"]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(out.lines().count(), 2, "{out}");
            let id = good["id"].as_str().unwrap();
            let (code, md, _) = l.leanlm(&["validation", &id[..24], "--format", "md"]);
            assert_eq!(code, 0);
            assert!(md.contains("PASS") && md.contains("cheap-99"), "{md}");
            // Candidates list both cheap models with their projected savings.
            let (code, out, err) = l.leanlm(&["candidates", "--json"]);
            assert_eq!(code, 0, "{err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            let specs: Vec<&str> = v[0]["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["available"] == true)
                .map(|c| c["spec"].as_str().unwrap())
                .collect();
            assert_eq!(
                specs,
                [
                    "model:cheap-90",
                    "model:cheap-99",
                    "router:cheap-90,big",
                    "cascade:cheap-90,big"
                ],
                "{out}"
            );

            // An LLM judge (the mock's judge knows the true labels) reaches the same verdict, at the cost
            // of two judge calls per answer.
            let (code, out, err) = l.leanlm(&[
                "validate",
                "--task",
                &task,
                "--candidate",
                "cheap-90",
                "--scorer",
                "judge:big",
                "--seed",
                "0",
                "--json",
            ]);
            assert_eq!(code, 2, "{err}");
            let judged: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(judged["scorer"], "judge:big");
            assert_eq!(judged["verdict"]["rule"], "agreement_below", "{:#}", judged["verdict"]);
            assert!(judged["failures"][0]["note"].as_str().unwrap().contains("judge big"));
            assert!(judged["validation_cost_usd"].as_f64() > poor["validation_cost_usd"].as_f64());

            // A full sample's outcomes train a router for the cheap model; the calls it learned from (trained
            // and calibrated on) are then left out of anything validating it.
            let (code, out, err) = l.leanlm(&[
                "validate",
                "--task",
                &task,
                "--candidate",
                "cheap-90",
                "--full-sample",
                "--sample",
                "150",
                "--seed",
                "5",
                "--json",
            ]);
            assert_eq!(code, 2, "{err}");
            let full: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(full["scored"], 150, "no early stop: {:#}", full["looks"]);
            let (code, out, err) = l.leanlm(&["train-router", "--task", &task, "--cheap", "cheap-90"]);
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("router:cheap-90,big") && out.contains("keeps"), "{out}");
            assert!(out.contains("other calls to replay"), "{out}");
            let store = leanlm_store::Store::open(&format!("sqlite://{}", l.dir.join("calls.db").display())).unwrap();
            let router: leanlm_route::TaskRouter =
                serde_json::from_str(&store.router(&task, "router:cheap-90,big").unwrap().unwrap()).unwrap();
            // Trained on 70% of every scored call of cheap-90 (all its validations), calibrated on the rest.
            let total = router.trained_on + router.calibrated_on;
            assert!(
                total >= 150 && router.trained_on == total * 7 / 10,
                "{total} {}",
                router.trained_on
            );
            assert!(router.calibration_agreement >= 0.95, "{}", router.calibration_agreement);
            let left = store.replayable_calls(&task, "router:cheap-90,big").unwrap().len();
            assert_eq!(
                left,
                texts.len() - total,
                "training and calibration calls are both left out"
            );
            // The router is validated like any replacement, on calls it was not trained on, each answered by
            // the model it picks.
            let command = std::time::Instant::now();
            let (code, out, err) = l.leanlm(&[
                "validate",
                "--task",
                &task,
                "--candidate",
                "router:cheap-90,big",
                "--json",
            ]);
            assert!(code == 0 || code == 2, "{err}");
            let report: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(report["candidate"], "router:cheap-90,big");
            assert!(report["scored"].as_u64().unwrap() >= 50, "{report:#}");
            // Its duration is the command's, embedding the calls for the router included.
            let wall_ms = command.elapsed().as_secs_f64() * 1000.0;
            let duration_ms = report["duration_ms"].as_f64().unwrap();
            assert!(
                duration_ms <= wall_ms && duration_ms >= 0.7 * wall_ms,
                "{duration_ms:.0} ms reported for a {wall_ms:.0} ms command"
            );
            // Against a random split at the same share: the mock's cheap model is wrong on rows spread
            // evenly whatever they say, so what a router learns from the prompts is noise.
            let chance = &report["chance"];
            eprintln!("router against chance: {chance:#}");
            let share = chance["cheap_share"].as_f64().unwrap();
            assert!(share > 0.0 && share < 1.0, "{chance:#}");
            // A random split at the share keeps the big model's answers (agreement 1) on the other calls and
            // the cheap model's on the share: the expectation over the cheap model's agreement on all calls.
            let random = chance["random_agreement"].as_f64().unwrap();
            let on = |k: &str| chance[k].as_f64().unwrap();
            let cheap = share * on("cheap_agreement_on_kept") + (1.0 - share) * on("cheap_agreement_on_others");
            assert!((0.6..=1.0).contains(&cheap), "{chance:#}");
            assert!((random - (share * cheap + 1.0 - share)).abs() < 1e-9, "{chance:#}");
            if chance["better_than_chance"] == false {
                assert!(
                    report["verdict"]["reason"].as_str().unwrap().contains("a fixed split"),
                    "{:#}",
                    report["verdict"]
                );
                let (code, out, _) = l.leanlm(&["candidates", "--json"]);
                assert_eq!(code, 0);
                assert!(out.contains("a fixed split instead of `router:cheap-90,big`"), "{out}");
                assert!(out.contains("no better than chance"), "{out}");
            }
            let (code, _, err) = l.leanlm(&["validate", "--task", &task, "--candidate", "router:cheap-99,big"]);
            assert_eq!(code, 1);
            assert!(err.contains("leanlm train-router"), "{err}");
            let (code, _, err) = l.leanlm(&["train-router", "--task", &task, "--cheap", "never-validated"]);
            assert_eq!(code, 1);
            assert!(err.contains("needs at least 100 calls"), "{err}");
            // Outcomes of one scorer only: the label outcomes of cheap-99 do not train a similarity router.
            let (code, _, err) = l.leanlm(&[
                "train-router",
                "--task",
                &task,
                "--cheap",
                "cheap-99",
                "--scorer",
                "similarity",
            ]);
            assert_eq!(code, 1);
            assert!(err.contains("scored by `similarity` and has 0"), "{err}");
            assert!(err.contains("not mixed in") && err.contains("under `label`"), "{err}");

            // The catalog marks the allowed replacements.
            let (code, out, _) = l.leanlm(&["catalog", "--json"]);
            assert_eq!(code, 0);
            let catalog: Value = serde_json::from_str(&out).unwrap();
            let allowed: Vec<&str> = catalog
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["allowed"] == true)
                .map(|m| m["name"].as_str().unwrap())
                .collect();
            assert_eq!(allowed, ["cheap-90", "cheap-99"]);

            // A dry run replays nothing and prices the plan.
            let (code, out, _) = l.leanlm(&[
                "validate",
                "--task",
                &task,
                "--candidate",
                "cheap-99",
                "--dry-run",
                "--json",
            ]);
            assert_eq!(code, 0);
            let plan: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(plan["sample"], 400);
            assert!(plan["estimated_cost_usd"].as_f64().unwrap() > 0.0);

            // Bad input gets a clear message naming the problem.
            let bad = |args: &[&str], expect: &str| {
                let (code, _, err) = l.leanlm(args);
                assert_eq!(code, 1, "{args:?}: {err}");
                assert!(err.contains(expect), "{args:?}: {err}");
            };
            bad(
                &["validate", "--task", "nope", "--candidate", "cheap-99"],
                "no task with id or name `nope`",
            );
            bad(
                &["validate", "--task", &task, "--candidate", "no-such-model"],
                "--candidate",
            );
            bad(
                &[
                    "validate",
                    "--task",
                    &task,
                    "--candidate",
                    "cheap-99",
                    "--scorer",
                    "bleu",
                ],
                "unknown scorer",
            );
            bad(
                &["validate", "--task", &task, "--candidate", "cheap-99", "--bound", "2"],
                "--bound",
            );
            bad(
                &["validate", "--task", &task, "--candidate", "cheap-99", "--sample", "30"],
                "needs at least",
            );
            bad(
                &["validate", "--task", &task, "--candidate", "cache:exact"],
                "cannot be validated yet",
            );
            bad(&["validation", "val_nope"], "no validation with id");
        }
    }
}
