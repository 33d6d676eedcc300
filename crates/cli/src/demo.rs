//! `leanlm demo`: LeanLM on a machine with no provider key and no network. A built-in mock upstream
//! stands in for OpenAI, Anthropic and Gemini (it speaks their wire formats and answers a banking
//! intent-classification task the project generates, right or wrong by model), the gateway serves in front
//! of it, and a few hundred calls of that task go through, so tasks, candidates, a validation and the
//! dashboard have something to show within a minute.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use leanlm_gateway::{Config, Overrides};

/// The instruction every demo call carries: one template, one task.
const SYSTEM: &str = "Classify the customer's banking message into one intent. Answer with the intent name only.";

/// How often the demo's cheaper models answer right (the reference, gpt-4o, always does): one that a
/// validation passes, one it fails.
const ACCURACY: &[(&str, f64)] = &[("gpt-4o-mini", 0.99), ("gpt-4.1-nano", 0.7)];

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// How many calls to send through it at start.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// The configuration the demo writes (its providers point at the mock); other commands read it with
    /// `--config`.
    #[arg(long, default_value = "leanlm-demo.toml")]
    config: PathBuf,
    /// The demo's call log, apart from a real one.
    #[arg(long, default_value = "sqlite://leanlm-demo.db")]
    db: String,
}

pub fn run(args: DemoArgs, embedder: leanlm_gateway::embedder::EmbedLoader) -> anyhow::Result<()> {
    // A port in use is said now, before the demo's traffic could reach whatever holds it.
    drop(std::net::TcpListener::bind(&args.listen).with_context(|| {
        format!(
            "binding {}: is LeanLM already running? Pass --listen 127.0.0.1:PORT",
            args.listen
        )
    })?);
    // The mock upstream lives on a runtime of its own for as long as the gateway serves.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("leanlm-demo")
        .enable_all()
        .build()
        .context("starting the demo's runtime")?;
    let mut labeller = leanlm_mock::Labeller::from_csv(&leanlm_mock::intents_csv())?;
    for (model, p) in ACCURACY {
        labeller = labeller.accuracy(*model, *p);
    }
    let mock = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        anyhow::Ok(leanlm_mock::Mock::serve_with(listener, false, Some(labeller)))
    })?;
    let url = mock.url();
    let toml = format!(
        r#"# Written by `leanlm demo`. Every provider is the demo's mock upstream ({url}), which runs only while
# `leanlm demo` does: its answers are canned, and no call leaves this machine. Pass this file to other
# commands (`leanlm tasks --config {config}`) to read the demo's call log.
[server]
listen = "{listen}"
[store]
url = "{db}"
[admin]
token = "demo"
[providers.openai]
kind = "openai"
base_url = "{url}/v1"
api_key = "demo"
[providers.anthropic]
kind = "anthropic"
base_url = "{url}"
api_key = "demo"
[providers.gemini]
kind = "gemini"
base_url = "{url}"
api_key = "demo"
[catalog]
allow = ["gpt-4o-mini", "gpt-4.1-nano"]
[validation]
judge = "gpt-4o"
"#,
        config = args.config.display(),
        listen = args.listen,
        db = args.db,
    );
    std::fs::write(&args.config, &toml).with_context(|| format!("writing {}", args.config.display()))?;
    let config = Config::load(Some(&args.config), &Overrides::default())?;
    let addr = config.listen;
    let calls = args.calls;
    let path = args.config.clone();
    let db = args.db.clone();
    // The traffic goes through once the gateway answers; the gateway itself runs on this thread.
    std::thread::Builder::new()
        .name("leanlm-demo-traffic".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(traffic(addr, calls, &path, &db)) {
                eprintln!("demo traffic: {e:#}");
            }
            // Keep the mock serving until the process ends.
            runtime.block_on(std::future::pending::<()>());
        })
        .context("starting the demo's traffic")?;
    leanlm_gateway::run(config, Some(embedder))
}

/// Sends `n` intent questions through the gateway to gpt-4o, then says what to try next.
async fn traffic(addr: std::net::SocketAddr, n: usize, config: &std::path::Path, db: &str) -> anyhow::Result<()> {
    // reqwest is built without a TLS crypto provider (the gateway installs ring); this client speaks plain
    // HTTP to the gateway, but a client is not built without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(up, "the gateway did not come up on {base}");
    let rows = leanlm_mock::intents();
    let mut sent = 0u64;
    for chunk in rows.iter().take(n).collect::<Vec<_>>().chunks(16) {
        let posts = chunk.iter().map(|(question, _)| {
            let body = serde_json::json!({
                "model": "gpt-4o",
                "temperature": 0,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            });
            client.post(format!("{base}/v1/chat/completions")).json(&body).send()
        });
        for r in futures_util::future::join_all(posts).await {
            if r.is_ok_and(|r| r.status().is_success()) {
                sent += 1;
            }
        }
    }
    // The call log is written in batches off the request path: wait until it holds them, so the commands
    // suggested next see every call.
    let store = leanlm_store::Store::open(db)?;
    for _ in 0..100 {
        let logged: u64 = store
            .spend(leanlm_store::SpendBy::Model, None)?
            .iter()
            .map(|r| r.calls)
            .sum();
        if logged >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = config.display();
    println!(
        "\nDemo: {sent} calls of a banking intent classifier went through LeanLM to gpt-4o (the mock's).\n\
         Try, in another terminal:\n  \
           open http://{addr}/ui#token=demo            the dashboard\n  \
           leanlm tasks --config {c}                   the task it found, typed classify\n  \
           leanlm candidates --config {c}              cheaper ways to serve it\n  \
           leanlm validate --config {c} --task TASK --candidate gpt-4o-mini    (passes; gpt-4.1-nano fails)\n  \
           curl http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    \
             -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi\"}}]}}'\n\
         Ctrl-C stops the demo."
    );
    Ok(())
}
