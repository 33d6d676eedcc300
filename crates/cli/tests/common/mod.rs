//! Shared by the end-to-end tests: the project's labelled intent set, a labelled mock, a gateway in front of it, and the binary.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leanlm_gateway::{Config, Gateway, Overrides};
use leanlm_mock::{Labeller, Mock};
use serde_json::json;

pub const SYSTEM: &str =
    "Classify the customer's banking query into one of our 30 support intents. Answer with the intent name only.";

/// Every `every`-th query of the project's own labelled intent set ([`leanlm_mock::intents`]) with its
/// intent: the same on every machine, with nothing from outside the repository.
pub fn examples(every: usize) -> Vec<(String, String)> {
    leanlm_mock::intents().into_iter().step_by(every).collect()
}

/// A labelled mock, a gateway in front of it (models `big`, always right, and the cheap ones), and a
/// config file for the binary.
pub struct Env {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub db: String,
    pub url: String,
    pub mock_url: String,
    pub rt: tokio::runtime::Runtime,
    /// The system prompt [`Env::send`] sends.
    pub system: String,
    toml: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// More gateways on the same store, for multi-instance tests.
    others: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Starts a gateway on an ephemeral port: its URL, its stop signal, and its task.
fn serve(
    rt: &tokio::runtime::Runtime,
    toml: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = Config::from_toml("leanlm.toml", toml, &Overrides::default(), &|_| None).unwrap();
    rt.block_on(async {
        let gateway = Gateway::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        (url, stop, served)
    })
}

/// What one call got back.
pub struct Answer {
    pub status: u16,
    pub model: String,
    pub text: String,
}

impl Env {
    pub fn start(name: &str, seed: u64, accuracy: &[(&str, f64)]) -> Env {
        let mut labeller = Labeller::from_csv(&leanlm_mock::intents_csv()).unwrap();
        for (m, p) in accuracy {
            labeller = labeller.accuracy(*m, *p);
        }
        Env::start_with(name, seed, labeller, SYSTEM)
    }

    /// [`Env::start`] with another labelled set (its accuracies and styles set) and system prompt.
    pub fn start_with(name: &str, seed: u64, labeller: Labeller, system: &str) -> Env {
        let labeller = labeller.seed(seed);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("leanlm-{name}-{}-{seed}", std::process::id()));
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
# Priced well under cheap-99: a chain asks cheap-90 first because it pays off wherever it serves a fifth of
# the calls or more, not only when it happens to serve most of a varying sample (at 0.15 / 0.6, 60%).
[models.cheap-90]
provider = "mock"
upstream = "cheap-90"
price = {{ input = 0.05, output = 0.2 }}
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
        let (url, stop, served) = serve(&rt, &toml);
        Env {
            dir,
            config: config_path,
            db,
            url,
            mock_url,
            rt,
            system: system.to_owned(),
            toml,
            stop: Some(stop),
            served: Some(served),
            others: Vec::new(),
        }
    }

    /// Starts another gateway on the same store; returns its URL.
    pub fn add_gateway(&mut self) -> String {
        let (url, stop, _) = serve(&self.rt, &self.toml);
        self.others.push(stop);
        url
    }

    /// Sends the queries as `model`, one call in four in the Anthropic format.
    pub fn send(&self, queries: &[String], model: &str, concurrency: usize) -> Vec<Answer> {
        self.send_to(&self.url, queries, model, concurrency)
    }

    /// [`Env::send`] to another gateway.
    pub fn send_to(&self, url: &str, queries: &[String], model: &str, concurrency: usize) -> Vec<Answer> {
        let http = reqwest::Client::new();
        let system = self.system.as_str();
        self.rt.block_on(async {
            futures_util::stream::iter(queries.iter().enumerate())
                .map(|(i, text)| {
                    let http = http.clone();
                    let url = url.to_owned();
                    async move {
                        let r = if i % 4 == 0 {
                            http.post(format!("{url}/v1/messages"))
                                .json(&json!({"model": model, "max_tokens": 20,
                                "system": system, "messages": [{"role": "user", "content": text}]}))
                        } else {
                            http.post(format!("{url}/v1/chat/completions"))
                                .json(&json!({"model": model,
                                "temperature": 0, "messages": [{"role": "system", "content": system},
                                {"role": "user", "content": text}]}))
                        };
                        let resp = r.send().await.unwrap();
                        let status = resp.status().as_u16();
                        let served = resp
                            .headers()
                            .get(leanlm_gateway::HEADER_MODEL)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body: serde_json::Value = resp.json().await.unwrap_or_default();
                        Answer {
                            status,
                            model: served,
                            text: leanlm_wire::output_text(&body),
                        }
                    }
                })
                .buffered(concurrency)
                .collect()
                .await
        })
    }

    /// Stops the gateway, flushing the call log; the mock keeps running for replays.
    pub fn stop_gateway(&mut self) {
        for stop in self.others.drain(..) {
            let _ = stop.send(());
        }
        if let (Some(stop), Some(served)) = (self.stop.take(), self.served.take()) {
            let _ = stop.send(());
            self.rt.block_on(served).unwrap().unwrap();
        }
    }

    /// Waits until the call log holds `n` calls (writes are asynchronous by design).
    pub fn wait_for_calls(&self, n: u64) -> leanlm_store::TaskRow {
        let store = leanlm_store::Store::open(&self.db).unwrap();
        for _ in 0..200 {
            if let Some(t) = store.tasks(None).unwrap().into_iter().max_by_key(|t| t.calls)
                && t.calls >= n
            {
                return t;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the call log never reached {n} calls");
    }

    /// Runs the `leanlm` binary with this environment's config: (exit code, stdout, stderr).
    pub fn leanlm(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_leanlm"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("LEANLM_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_gateway();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The true intent of each query.
pub fn truth(examples: &[(String, String)]) -> HashMap<String, String> {
    examples.iter().cloned().collect()
}

/// `leanlm serve` on a free port of 127.0.0.1; killed on drop.
pub struct Served(Child, pub String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve_binary(env: &Env) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&env.config)
        .env("LEANLM_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "leanlm serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Served(child, url)
}

pub fn model_installed() -> bool {
    let ok = leanlm_embed::default_model_dir().join("model.safetensors").exists();
    if !ok && std::env::var_os("LEANLM_REQUIRE_MODEL").is_some() {
        panic!("LEANLM_REQUIRE_MODEL is set but the embedding model is missing: run scripts/fetch-model");
    }
    ok
}
