//! End-to-end validation on Banking77: traffic logged through the real gateway from a reference model that
//! is always right, then the `leanlm` binary validating mock candidates whose accuracy is known. A 90%
//! candidate must fail a 95% bound and a 99% one must pass, whichever prompts the seed makes them miss.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures_util::StreamExt;
use leanlm_gateway::{Config, Gateway, Overrides};
use leanlm_mock::{Labeller, Mock};
use leanlm_store::Store;
use serde_json::{Value, json};

const SYSTEM: &str =
    "Classify the customer's banking query into one of the 77 Banking77 intents. Answer with the intent name only.";

/// `../shared/data/banking77` from the project root (or `LEANLM_SHARED_DATA/banking77`).
fn banking77() -> PathBuf {
    let candidates = [
        std::env::var_os("LEANLM_SHARED_DATA").map(|d| PathBuf::from(d).join("banking77")),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/banking77")),
        Some(PathBuf::from("/work/shared/data/banking77")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("test.csv").exists())
        .expect("Banking77 not found: set LEANLM_SHARED_DATA to the shared data folder")
}

fn texts(dir: &Path, every: usize) -> Vec<String> {
    let mut reader = csv::Reader::from_path(dir.join("test.csv")).unwrap();
    reader
        .records()
        .map(|r| r.unwrap()[0].to_owned())
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(_, t)| t)
        .collect()
}

struct Logged {
    dir: PathBuf,
    config: PathBuf,
    task: String,
    _mock: tokio::runtime::Runtime,
}

/// Logs `texts` through a gateway in front of a labelled mock, then stops the gateway (flushing the log)
/// and leaves the mock running for the binary's replays.
fn log_traffic(seed: u64, texts: &[String]) -> Logged {
    let data = std::fs::read_to_string(banking77().join("test.csv")).unwrap();
    let labeller = Labeller::from_csv(&data)
        .unwrap()
        .accuracy("cheap-90", 0.90)
        .accuracy("cheap-99", 0.99)
        .seed(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("leanlm-validate-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("calls.db").display());
    let mock_url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Mock::serve_with(listener, false, Some(labeller)).url()
    });
    let toml = format!(
        r#"
[store]
url = "{db}"
[retry]
max_retries = 1
base_backoff_ms = 10
[providers.mock]
kind = "openai"
base_url = "{mock_url}/v1"
api_key = "sk-mock"
[providers.mock-anthropic]
kind = "anthropic"
base_url = "{mock_url}"
api_key = "sk-mock"
[models.big]
provider = "mock"
upstream = "big"
price = {{ input = 2.5, output = 10.0 }}
[models.cheap-90]
provider = "mock"
upstream = "cheap-90"
price = {{ input = 0.15, output = 0.6 }}
[models.cheap-99]
provider = "mock-anthropic"
upstream = "cheap-99"
price = {{ input = 0.25, output = 1.25 }}
[catalog]
allow = ["cheap-90", "cheap-99"]
"#
    );
    let config_path = dir.join("leanlm.toml");
    std::fs::write(&config_path, &toml).unwrap();
    let config = Config::from_toml("leanlm.toml", &toml, &Overrides::default(), &|_| None).unwrap();
    rt.block_on(async {
        let gateway = Gateway::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        // One call in four arrives in the Anthropic format: replay must speak both.
        let statuses: Vec<u16> = futures_util::stream::iter(texts.iter().enumerate())
            .map(|(i, text)| {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let r = if i % 4 == 0 {
                        http.post(format!("{url}/v1/messages"))
                            .json(&json!({"model": "big", "max_tokens": 20, "system": SYSTEM,
                                "messages": [{"role": "user", "content": text}]}))
                    } else {
                        http.post(format!("{url}/v1/chat/completions"))
                            .json(&json!({"model": "big", "temperature": 0,
                            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}))
                    };
                    r.send().await.unwrap().status().as_u16()
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        let _ = stop.send(());
        served.await.unwrap().unwrap();
    });
    let store = Store::open(&db).unwrap();
    let tasks = store.tasks(None).unwrap();
    let task = tasks.iter().max_by_key(|t| t.calls).unwrap();
    assert_eq!(
        task.calls as usize,
        texts.len(),
        "every call lands in one task: {tasks:?}"
    );
    Logged {
        task: task.id.clone(),
        config: config_path,
        dir,
        _mock: rt,
    }
}

fn leanlm(l: &Logged, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(args)
        .arg("--config")
        .arg(&l.config)
        .env("LEANLM_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn validate(l: &Logged, candidate: &str, seed: u64) -> (i32, Value) {
    let seed = seed.to_string();
    let (code, out, err) = leanlm(
        l,
        &[
            "validate",
            "--task",
            &l.task,
            "--candidate",
            candidate,
            "--seed",
            &seed,
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, report)
}

#[test]
fn verdicts_hold_over_seeds_and_reports_are_stored() {
    let texts = texts(&banking77(), 5);
    assert!(texts.len() > 600);
    for seed in 0..3u64 {
        let l = log_traffic(seed, &texts);
        let (code, poor) = validate(&l, "cheap-90", seed);
        assert_eq!(code, 2, "seed {seed}: {poor:#}");
        assert_eq!(poor["verdict"]["passed"], false);
        assert_eq!(
            poor["verdict"]["rule"], "agreement_below",
            "seed {seed}: {:#}",
            poor["verdict"]
        );
        assert_eq!(poor["scorer"], "label", "a classification task gets the label scorer");
        let (code, good) = validate(&l, "cheap-99", seed);
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
            let (code, out, err) = leanlm(&l, &["validations", "--json"]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(out.lines().count(), 2, "{out}");
            let id = good["id"].as_str().unwrap();
            let (code, md, _) = leanlm(&l, &["validation", &id[..24], "--format", "md"]);
            assert_eq!(code, 0);
            assert!(md.contains("PASS") && md.contains("cheap-99"), "{md}");
            // Candidates list both cheap models with their projected savings.
            let (code, out, err) = leanlm(&l, &["candidates", "--json"]);
            assert_eq!(code, 0, "{err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            let specs: Vec<&str> = v[0]["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["available"] == true)
                .map(|c| c["spec"].as_str().unwrap())
                .collect();
            assert_eq!(specs, ["model:cheap-90", "model:cheap-99"], "{out}");

            // An LLM judge (the mock's judge knows the true labels) reaches the same verdict, at the cost
            // of two judge calls per answer.
            let (code, out, err) = leanlm(
                &l,
                &[
                    "validate",
                    "--task",
                    &l.task,
                    "--candidate",
                    "cheap-90",
                    "--scorer",
                    "judge:big",
                    "--seed",
                    "0",
                    "--json",
                ],
            );
            assert_eq!(code, 2, "{err}");
            let judged: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(judged["scorer"], "judge:big");
            assert_eq!(judged["verdict"]["rule"], "agreement_below", "{:#}", judged["verdict"]);
            assert!(judged["failures"][0]["note"].as_str().unwrap().contains("judge big"));
            assert!(judged["validation_cost_usd"].as_f64() > poor["validation_cost_usd"].as_f64());

            // The catalog marks the allowed replacements.
            let (code, out, _) = leanlm(&l, &["catalog", "--json"]);
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
            let (code, out, _) = leanlm(
                &l,
                &[
                    "validate",
                    "--task",
                    &l.task,
                    "--candidate",
                    "cheap-99",
                    "--dry-run",
                    "--json",
                ],
            );
            assert_eq!(code, 0);
            let plan: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(plan["sample"], 400);
            assert!(plan["estimated_cost_usd"].as_f64().unwrap() > 0.0);

            // Bad input gets a clear message naming the problem.
            let bad = |args: &[&str], expect: &str| {
                let (code, _, err) = leanlm(&l, args);
                assert_eq!(code, 1, "{args:?}: {err}");
                assert!(err.contains(expect), "{args:?}: {err}");
            };
            bad(
                &["validate", "--task", "nope", "--candidate", "cheap-99"],
                "no task with id or name `nope`",
            );
            bad(
                &["validate", "--task", &l.task, "--candidate", "no-such-model"],
                "--candidate",
            );
            bad(
                &[
                    "validate",
                    "--task",
                    &l.task,
                    "--candidate",
                    "cheap-99",
                    "--scorer",
                    "bleu",
                ],
                "unknown scorer",
            );
            bad(
                &["validate", "--task", &l.task, "--candidate", "cheap-99", "--bound", "2"],
                "--bound",
            );
            bad(
                &[
                    "validate",
                    "--task",
                    &l.task,
                    "--candidate",
                    "cheap-99",
                    "--sample",
                    "30",
                ],
                "needs at least",
            );
            bad(
                &["validate", "--task", &l.task, "--candidate", "cache:exact"],
                "cannot be validated yet",
            );
            bad(&["validation", "val_nope"], "no validation with id");
        }
        let _ = std::fs::remove_dir_all(&l.dir);
    }
}
