//! The semantic cache, learned routers and cascades (all embed prompts on the request path) end to end, in-process,
//! against the mock upstream over real HTTP on 127.0.0.1.
//!
//! The mock answers a small labelled data set (paraphrase groups that share a label, and traps that do
//! not), and a bag-of-words embedder stands in for MiniLM so the test is fast and exact about similarity;
//! `crates/cli/tests/semantic.rs` runs the real model through the real binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leanlm_gateway::embedder::{Embed, EmbedLoader, SharedEmbed};
use leanlm_gateway::{Config, Gateway, Overrides};
use leanlm_mock::{Labeller, Mock};
use leanlm_store::Store;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Words hashed into 256 buckets, L2-normalised: texts that share most of their words are close.
struct BagOfWords;

impl Embed for BagOfWords {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 256];
                for w in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w
                        .bytes()
                        .fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
                    v[(h % 256) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

const LABELS: &str = "text,label
how do i reset my password,password
how do i reset my password please,password
how do i reset my password now,password
how do i reset my password thanks,password
hey how do i reset my password,password
so how do i reset my password,password
how do i reset my password again,password
tell me how do i reset my password,password
how do i reset my password quickly,password
ok how do i reset my password,password
how do i reset my account password,password
well how do i reset my password,password
how do i reset my password here,password
how do i reset my password fast,password
how do i reset my password asap,password
how do i not reset my password,other
where is my card,card
where is my card now,card
where is my card please,other
where is my card thanks,card
where is my card again,other
where is my card hey,card
where is my card so,other
where is my card ok,card
where is my card tell me,other
where is my card quickly,card
where is my card here,other
where is my card fast,card
";

struct Harness {
    mock: Mock,
    url: String,
    db: PathBuf,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    async fn start(extra: &str) -> Harness {
        Harness::start_with(extra, Box::new(|_| Ok(Arc::new(BagOfWords) as SharedEmbed))).await
    }

    async fn start_with(extra: &str, loader: EmbedLoader) -> Harness {
        let dir = std::env::temp_dir().join(format!("leanlm-semantic-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Harness::start_on(dir.join("calls.db"), "", extra, loader).await
    }

    /// A gateway (and a fresh mock upstream) on the store at `db`, as after a restart; `store` adds
    /// settings to `[store]`.
    async fn start_on(db: PathBuf, store: &str, extra: &str, loader: EmbedLoader) -> Harness {
        let labeller = Labeller::from_csv(LABELS).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Mock::serve_with(listener, false, Some(labeller));
        let toml = format!(
            r#"
[store]
url = "sqlite://{db}"
{store}
[providers.openai]
kind = "openai"
base_url = "{m}/v1"
api_key = "sk-test"
[providers.anthropic]
kind = "anthropic"
base_url = "{m}"
api_key = "sk-test"
[providers.gemini]
kind = "gemini"
base_url = "{m}"
api_key = "sk-test"
{extra}
"#,
            db = db.display(),
            m = mock.url()
        );
        let config = Config::from_toml("test.toml", &toml, &Overrides::default(), &|_| None).unwrap();
        let gateway = Gateway::with_embedder(config, Some(loader)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(gateway.serve(listener, async move {
            let _ = rx.await;
        }));
        Harness {
            mock,
            url,
            db,
            http: reqwest::Client::new(),
            stop: Some(tx),
            done: Some(done),
        }
    }

    /// Asks the task `task` a question at temperature 0; returns the cache header, the answer and the call id.
    async fn ask(&self, task: &str, system: Option<&str>, question: &str) -> (String, String, String) {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": question}));
        let r = self.chat(task, Value::Array(messages)).await;
        let cache = r.headers()["x-leanlm-cache"].to_str().unwrap().to_owned();
        let id = r.headers()["x-leanlm-call-id"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        (cache, answer, id)
    }

    /// The cache outcome (`x-leanlm-cache`) of a deterministic chat request with these messages.
    async fn cache_outcome(&self, task: &str, messages: Value) -> String {
        let r = self.chat(task, messages).await;
        r.headers()["x-leanlm-cache"].to_str().unwrap().to_owned()
    }

    /// A successful chat request to the task `task` at temperature 0.
    async fn chat(&self, task: &str, messages: Value) -> reqwest::Response {
        let r = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("x-leanlm-task", task)
            .json(&json!({"model": "gpt-4o", "temperature": 0, "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    }

    /// The gateway's `/metrics` page.
    async fn metrics(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.url)).send().await.unwrap();
        r.text().await.unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}", self.db.display())).unwrap()
    }

    /// Waits until `n` verified would-be hits of the task are stored (the writer is asynchronous).
    async fn evidence(&self, task: &str, n: usize) -> Vec<leanlm_store::SemanticEvidence> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let e = self.store().semantic_evidence(Some(task), 1000).unwrap();
            if e.len() >= n {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} verified would-be hits stored",
                e.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

/// Rewordings of "how do i reset my password" that share its answer, in the order the tests teach them.
const PASSWORD_PARAPHRASES: [&str; 11] = [
    "how do i reset my password please",
    "how do i reset my password now",
    "how do i reset my password thanks",
    "hey how do i reset my password",
    "so how do i reset my password",
    "how do i reset my password again",
    "tell me how do i reset my password",
    "how do i reset my password quickly",
    "ok how do i reset my password",
    "how do i reset my account password",
    "well how do i reset my password",
];

const CONFIG: &str = r#"
[cache.semantic]
verify = 0.0
min_similarity = 0.8
[cache.tasks.pw]
semantic = true
semantic_bound = 0.3
scorer = "label"
[cache.tasks.card]
semantic = true
semantic_bound = 0.3
scorer = "label"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_served_only_once_the_tasks_own_evidence_bounds_the_false_hit_rate() {
    let h = Harness::start(CONFIG).await;
    let (cache, answer, _) = h.ask("pw", None, "how do i reset my password").await;
    assert_eq!((cache.as_str(), answer.as_str()), ("miss", "password"));

    // Learning: paraphrases are would-be hits, but go upstream until the evidence bounds the error.
    let paraphrases = PASSWORD_PARAPHRASES;
    let needed = leanlm_semantic::evidence_needed(0.3) as usize;
    assert!(needed < paraphrases.len(), "{needed}");
    for (i, q) in paraphrases.iter().take(needed).enumerate() {
        let (cache, answer, _) = h.ask("pw", None, q).await;
        assert_eq!((cache.as_str(), answer.as_str()), ("miss", "password"), "{q}");
        h.evidence("pw", i + 1).await;
    }
    let upstream = h.mock.stats.requests();
    let (cache, answer, id) = h.ask("pw", None, "how do i reset my password here").await;
    assert_eq!((cache.as_str(), answer.as_str()), ("semantic-hit", "password"));
    assert_eq!(h.mock.stats.requests(), upstream, "a hit never reaches the upstream");
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-task", "pw")
        .json(&json!({"model": "gpt-4o", "temperature": 0,
            "messages": [{"role": "user", "content": "how do i reset my password asap"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-leanlm-cache"], "semantic-hit");
    let similarity: f32 = r.headers()["x-leanlm-cache-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.8..=1.0).contains(&similarity), "{similarity}");

    // The hit is logged with the cost it avoided.
    let deadline = Instant::now() + Duration::from_secs(5);
    let call = loop {
        if let Some(c) = h.store().call(&id).unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(call.cache.map(|c| c.as_str()), Some("semantic-hit"));
    assert_eq!(call.cost_usd, Some(0.0));
    assert!(call.cost_avoided_usd.unwrap_or(0.0) > 0.0);

    // A streaming client gets the hit as SSE.
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-task", "pw")
        .json(&json!({"model": "gpt-4o", "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": "well how do i reset my password"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-leanlm-cache"], "semantic-hit");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let sse = r.text().await.unwrap();
    assert!(
        sse.contains("\"content\":\"password\"") && sse.ends_with("data: [DONE]\n\n"),
        "{sse}"
    );
    assert_eq!(h.mock.stats.requests(), upstream);

    // The guards still veto: a negation is never a hit.
    let (cache, answer, _) = h.ask("pw", None, "how do i not reset my password").await;
    assert_eq!((cache.as_str(), answer.as_str()), ("miss", "other"));
    // ... and /metrics says which guard refused.
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"leanlm_semantic_vetoes_total{guard="negation"}"#),
        "{metrics}"
    );
    // A bare reply is answered by what it replies to: "yes please" to another offer is never a hit, even
    // where the two conversations are as close as a paraphrase; to the same offer it is.
    let reply = |offer: &'static str, yes: &'static str| {
        let h = &h;
        async move {
            let messages = json!([
                {"role": "user", "content": "how do i reset my password"},
                {"role": "assistant", "content": offer},
                {"role": "user", "content": yes}]);
            h.cache_outcome("pw", messages).await
        }
    };
    let link = "shall i reset your password for you now";
    assert_eq!(reply(link, "yes please").await, "miss");
    assert_eq!(
        reply("shall i delete your password for you now", "yes please").await,
        "miss",
        "another offer"
    );
    assert_eq!(reply(link, "Yes please!").await, "semantic-hit", "the same offer");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"leanlm_semantic_vetoes_total{guard="reply"}"#),
        "{metrics}"
    );
    // A question that stands on its own ("... a Gmail password", naming what it is about, pointing back at
    // nothing) is answered alike after any conversation: a topic change is a hit whatever came before it,
    // but only under the same system prompt; a question that points back ("how long will it take") is not.
    let after = |history: &'static str, system: Option<&'static str>, question: &'static str| {
        let h = &h;
        async move {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.extend([
                json!({"role": "user", "content": history}),
                json!({"role": "assistant", "content": "done, anything else"}),
                json!({"role": "user", "content": question}),
            ]);
            h.cache_outcome("pw", Value::Array(messages)).await
        }
    };
    let gmail = "how do i reset a Gmail password";
    assert_eq!(after("where is my card", None, gmail).await, "miss");
    assert_eq!(
        after("can i change the pin on my card", None, gmail).await,
        "semantic-hit"
    );
    assert_eq!(
        after("can i change the pin on my card", Some("You answer in French."), gmail).await,
        "miss",
        "another system prompt"
    );
    assert_eq!(after("where is my card", None, "how long will it take").await, "miss");
    assert_eq!(
        after("can i change the pin on my card", None, "how long will it take").await,
        "miss",
        "a question that points back at another conversation"
    );
    // The same words misspelt are the same question, though the embedding puts them under the floor (here
    // 5 of 7 words in common: 0.71).
    let (cache, _, _) = h.ask("pw", None, "where do i find the invoice history").await;
    assert_eq!(cache, "miss");
    let (cache, _, _) = h.ask("pw", None, "where do i find the invioce histroy").await;
    assert_eq!(cache, "semantic-hit", "misspelt");
    // The context must match: another system prompt is another conversation.
    let (cache, _, _) = h
        .ask("pw", Some("You answer in French."), "how do i reset my password fast")
        .await;
    assert_eq!(cache, "miss");
    // Other tasks and non-deterministic requests never see these entries.
    let (cache, _, _) = h.ask("card", None, "how do i reset my password asap").await;
    assert_eq!(cache, "miss");

    // The admin API shows the estimate: no false hits, a threshold, six semantic hits (the call log is
    // written asynchronously: wait for them).
    let config = Config::from_toml("t", CONFIG, &Overrides::default(), &|_| None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pw = loop {
        let overview =
            leanlm_control::cache::overview(&h.store(), &config.cache_settings(), leanlm_store::Span::ALL).unwrap();
        let pw = overview.into_iter().find(|r| r.task_id == "pw").unwrap();
        if pw.semantic_hits >= 6 || Instant::now() > deadline {
            break pw;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pw.semantic_hits, 6);
    let e = pw.estimate.unwrap();
    assert_eq!(e.false_hits, 0);
    assert!(e.threshold.is_some() && e.upper <= 0.3, "{e:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_similar_requests_want_different_answers_is_never_served() {
    let h = Harness::start(CONFIG).await;
    h.ask("card", None, "where is my card").await;
    let qs = [
        "where is my card now",
        "where is my card please",
        "where is my card thanks",
        "where is my card again",
        "where is my card hey",
        "where is my card so",
        "where is my card ok",
        "where is my card tell me",
        "where is my card quickly",
        "where is my card here",
        "where is my card fast",
    ];
    for q in qs {
        let (cache, _, _) = h.ask("card", None, q).await;
        assert_eq!(
            cache, "miss",
            "{q}: half of this task's look-alikes want another answer"
        );
    }
    let e = h.evidence("card", qs.len()).await;
    assert!(
        e.iter().filter(|v| !v.agreed).count() >= 4,
        "the false would-be hits are recorded"
    );
    assert!(e.iter().any(|v| v.note.is_some()));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_caching_is_off_unless_switched_on() {
    let h = Harness::start("").await;
    for q in ["how do i reset my password", "how do i reset my password please"] {
        let (cache, _, _) = h.ask("pw", None, q).await;
        assert_eq!(cache, "miss");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.store().semantic_evidence(None, 10).unwrap().is_empty(),
        "nothing embedded, nothing learned"
    );
    h.shutdown().await;
}

/// Teaches the `pw` task until its paraphrases are served from the cache.
async fn learn_password_task(h: &Harness) {
    h.ask("pw", None, "how do i reset my password").await;
    let needed = leanlm_semantic::evidence_needed(0.3) as usize;
    let paraphrases = PASSWORD_PARAPHRASES;
    assert!(needed < paraphrases.len(), "{needed}");
    for (i, q) in paraphrases.iter().take(needed).enumerate() {
        h.ask("pw", None, q).await;
        h.evidence("pw", i + 1).await;
    }
    let (cache, _, _) = h.ask("pw", None, "how do i reset my password here").await;
    assert_eq!(cache, "semantic-hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_keeps_its_semantic_cache_unless_bodies_stay_out_of_the_store() {
    let bag = || -> EmbedLoader { Box::new(|_| Ok(Arc::new(BagOfWords) as SharedEmbed)) };
    let h = Harness::start(CONFIG).await;
    learn_password_task(&h).await;
    let bank = Some("You help the customers of a bank.");
    h.ask("pw", bank, "how do i reset my password").await;
    let db = h.db.clone();
    h.shutdown().await;
    let stored = |db: &PathBuf| {
        Store::open(&format!("sqlite://{}", db.display()))
            .unwrap()
            .semantic_entries("local", 0, 100, 100)
            .unwrap()
    };
    let entries = stored(&db);
    assert!(!entries.is_empty(), "the shutdown flushed the entries");
    assert!(entries.iter().all(|e| e.task_id == "pw" && e.last_vector.len() == 256));

    // A new process on the same store: entries and evidence are back, and the first paraphrase is a hit.
    let h = Harness::start_on(db.clone(), "", CONFIG, bag()).await;
    let (cache, answer, _) = h.ask("pw", None, "well how do i reset my password").await;
    assert_eq!((cache.as_str(), answer.as_str()), ("semantic-hit", "password"));
    assert_eq!(h.mock.stats.requests(), 0, "nothing went upstream after the restart");
    // The conversation's context came back with its entry: the same system prompt hits, another misses.
    let (cache, _, _) = h.ask("pw", bank, "well how do i reset my password").await;
    assert_eq!(cache, "semantic-hit");
    let (cache, _, _) = h
        .ask("pw", Some("You are a pirate."), "well how do i reset my password")
        .await;
    assert_eq!(cache, "miss");
    h.shutdown().await;

    // With bodies kept out of the store, entries stay in memory: a restart starts the cache empty.
    let dir = std::env::temp_dir().join(format!("leanlm-semantic-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("calls.db");
    let h = Harness::start_on(db.clone(), "log_bodies = false", CONFIG, bag()).await;
    learn_password_task(&h).await;
    h.shutdown().await;
    assert!(stored(&db).is_empty(), "no request text or answer in the store");
    let h = Harness::start_on(db, "log_bodies = false", CONFIG, bag()).await;
    let (cache, _, _) = h.ask("pw", None, "well how do i reset my password").await;
    assert_eq!(cache, "miss");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_withdraws_a_tasks_cached_answers_here_in_the_store_and_in_other_gateways() {
    let config = format!("{CONFIG}\n[admin]\ntoken = \"admin-secret\"\n");
    let h = Harness::start(&config).await;
    learn_password_task(&h).await;
    h.ask("card", None, "where is my card").await;
    // A second gateway on the same store, started once the first one's entries are stored.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.store().semantic_entries("local", 0, 100, 100).unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "entries stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = Harness::start_on(
        h.db.clone(),
        "",
        &config,
        Box::new(|_| Ok(Arc::new(BagOfWords) as SharedEmbed)),
    )
    .await;
    let (cache, _, _) = other.ask("pw", None, "how do i reset my password asap").await;
    assert_eq!(cache, "semantic-hit", "the other gateway loaded the entries");
    let clear = |task: &str, token: &str| {
        h.http
            .post(format!("{}/api/cache/clear?task={task}", h.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(clear("pw", "wrong").await.unwrap().status(), 401);
    let r = clear("no-such-task", "admin-secret").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no-such-task"));

    // The task is known to the store once the call log's writer has committed one of its calls.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(h.store().find_task("pw").unwrap(), leanlm_store::TaskLookup::Found(_)) {
        assert!(Instant::now() < deadline, "task pw logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_clear = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let r = clear("pw", "admin-secret").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["semantic_entries_removed"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["stored_entries_deleted"].as_u64().unwrap() >= 1, "{v}");
    let (cache, _, _) = h.ask("pw", None, "well how do i reset my password").await;
    assert_eq!(cache, "miss", "the task's entries are gone");
    // The other gateway reads the recorded clear within a second; until then it may still serve a hit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut missed = None;
    for q in [
        "ok how do i reset my password",
        "how do i reset my password fast",
        "hey how do i reset my password",
        "so how do i reset my password",
        "how do i reset my password again",
        "tell me how do i reset my password",
    ] {
        let (cache, _, _) = other.ask("pw", None, q).await;
        if cache == "miss" {
            missed = Some(q);
            break;
        }
        assert!(Instant::now() < deadline, "the other gateway dropped its entries");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    other.shutdown().await;
    let (cache, _, _) = h.ask("pw", None, "well how do i reset my password please").await;
    assert_eq!(
        cache, "semantic-hit",
        "its evidence stays: the next entry serves at once"
    );
    let db = h.db.clone();
    h.shutdown().await;
    let stored = Store::open(&format!("sqlite://{}", db.display()))
        .unwrap()
        .semantic_entries("local", 0, 100, 100)
        .unwrap();
    missed.expect("the other gateway dropped its entries");
    // The store keeps the other task's entries and what either gateway cached after the clear (the second
    // gateway's miss may have been a would-be hit on the first one's new entry, verified and not cached).
    let questions: Vec<&str> = stored.iter().map(|e| e.last.as_str()).collect();
    assert!(
        questions.contains(&"where is my card") && questions.contains(&"well how do i reset my password"),
        "{questions:?}"
    );
    assert!(
        stored
            .iter()
            .all(|e| e.task_id == "card" || e.stored_at_ms >= before_clear),
        "{questions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_store_serve_each_others_entries_on_each_others_evidence() {
    let h = Harness::start(CONFIG).await;
    let other = Harness::start_on(
        h.db.clone(),
        "",
        CONFIG,
        Box::new(|_| Ok(Arc::new(BagOfWords) as SharedEmbed)),
    )
    .await;
    // Everything the task teaches goes through the first gateway, after the second started.
    learn_password_task(&h).await;
    let bank = Some("You help the customers of a bank.");
    let (cache, _, _) = h.ask("pw", bank, "how do i reset my password").await;
    assert_eq!(cache, "miss");
    // The second takes in the entries and the verified would-be hits from the store within a second or so:
    // it serves hits it never verified itself, in either conversation, with no request upstream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let upstream = other.mock.stats.requests();
    for (context, question) in [
        (None, "well how do i reset my password"),
        (bank, "how do i reset my password please"),
    ] {
        let (cache, answer, _) = other.ask("pw", context, question).await;
        assert_eq!(
            (cache.as_str(), answer.as_str()),
            ("semantic-hit", "password"),
            "{question}"
        );
    }
    assert_eq!(other.mock.stats.requests(), upstream);
    other.shutdown().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learned_judgement_scores_would_be_hits_and_calibrates_on_its_own_score() {
    let config = format!("{CONFIG}\n").replace("[cache.semantic]\n", "[cache.semantic]\njudgement = \"learned\"\n");
    let h = Harness::start(&config).await;
    learn_password_task(&h).await;
    // Every verified would-be hit keeps what the verifier measured, for the task's own model.
    let evidence = h.evidence("pw", 1).await;
    assert!(
        evidence.iter().all(|e| e
            .features
            .as_ref()
            .is_some_and(|f| f.len() == leanlm_semantic::FEATURES)),
        "{evidence:?}"
    );
    // The threshold is on the score (a probability), read the same way by the control plane.
    let parsed = Config::from_toml("t", &config, &Overrides::default(), &|_| None).unwrap();
    assert!(parsed.cache_settings().learned);
    let pw = leanlm_control::cache::overview(&h.store(), &parsed.cache_settings(), leanlm_store::Span::ALL)
        .unwrap()
        .into_iter()
        .find(|r| r.task_id == "pw")
        .unwrap();
    let e = pw.estimate.unwrap();
    let t = e.threshold.expect("the evidence bounds the error");
    assert!((0.0..=1.0).contains(&t) && e.false_hits == 0, "{e:?}");
    // Structure still refuses outright: another system prompt is another conversation.
    let (cache, _, _) = h
        .ask("pw", Some("You answer in French."), "how do i reset my password fast")
        .await;
    assert_eq!(cache, "miss");
    h.shutdown().await;
}

#[test]
fn bad_semantic_settings_are_refused_with_the_field() {
    for (toml, field) in [
        ("[cache.semantic]\nbound = 1.5\n", "cache.semantic.bound"),
        ("[cache.semantic]\nverify = -0.1\n", "cache.semantic.verify"),
        ("[cache.tasks.x]\nsemantic_bound = 2\n", "cache.tasks.x.semantic_bound"),
        ("[cache.tasks.x]\nscorer = \"nonsense\"\n", "cache.tasks.x.scorer"),
        ("[cache.semantic]\nthreshold = 0.9\n", "threshold"),
        ("[cache.semantic]\njudgement = \"wise\"\n", "cache.semantic.judgement"),
    ] {
        let err = Config::from_toml("bad.toml", toml, &Overrides::default(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field) && err.contains("bad.toml"), "{toml}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_router_sends_each_call_to_the_model_it_picks() {
    let models = "[models.cheap]\nprovider = \"openai\"\nupstream = \"cheap\"\n[models.big]\nprovider = \"openai\"\nupstream = \"big\"\n";
    let h = Harness::start(models).await;
    let ask = |q: &'static str| {
        let http = h.http.clone();
        let url = h.url.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .header("x-leanlm-task", "intent")
                .json(&json!({"model": "big", "messages": [{"role": "user", "content": q}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let model = r.headers()["x-leanlm-model"].to_str().unwrap().to_owned();
            let id = r.headers()["x-leanlm-call-id"].to_str().unwrap().to_owned();
            (model, id)
        }
    };
    assert_eq!(ask("where is my card").await.0, "big");
    let mut store = h.store();
    intent_logged(&store).await;
    // Every call the replacement serves is audited.
    let request = |replacement: &str| deploy_request(replacement, leanlm_deploy::Stage::Canary, Some(1.0), Some(1.0));
    // No router trained yet: refused, with the command that trains one.
    let err = leanlm_control::policy::deploy(&mut store, request("router:cheap,big"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("leanlm train-router"), "{err}");

    // A router that keeps password questions on the cheap model and sends card questions to the big one,
    // trained on the same features the gateway computes (the transcript's embedding and its length).
    let texts: Vec<(&str, bool)> = LABELS
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(q, label)| (q, label == "password"))
        .collect();
    let x: Vec<Vec<f32>> = texts
        .iter()
        .map(|(q, _)| {
            let t = leanlm_validate::run::transcript(&json!({"messages": [{"role": "user", "content": q}]}));
            leanlm_route::features(&BagOfWords.embed(&[&t]).unwrap()[0], &t)
        })
        .collect();
    let y: Vec<bool> = texts.iter().map(|t| t.1).collect();
    let router = leanlm_route::TaskRouter {
        cheap: "cheap".into(),
        strong: "big".into(),
        scorer: leanlm_route::Scorer {
            cheap: leanlm_route::Logistic::fit(&x, &y, 1e-3, 500),
            strong: None,
            neighbours: None,
            blend: 1.0,
        },
        threshold: 0.5,
        bound: 0.95,
        trained_on: x.len(),
        calibrated_on: 0,
        cheap_share: 0.5,
        calibration_agreement: 1.0,
    };
    store
        .put_router(
            "intent",
            "router:cheap,big",
            0,
            &serde_json::to_string(&router).unwrap(),
        )
        .unwrap();
    let policy = leanlm_control::policy::deploy(&mut store, request("router:cheap,big")).unwrap();
    assert_eq!(policy.stage, leanlm_deploy::Stage::Canary);
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;

    let (model, id) = ask("how do i reset my password please").await;
    assert_eq!(model, "cheap");
    assert_eq!(ask("where is my card please").await.0, "big");
    assert_eq!(ask("how do i reset my account password").await.0, "cheap");
    // Calls record the policy version that served them, and its role.
    let deadline = Instant::now() + Duration::from_secs(5);
    let call = loop {
        if let Some(c) = h.store().call(&id).unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let tag = call.policy.unwrap();
    assert_eq!((tag.version, tag.role.as_str()), (policy.version, "replacement"));
    assert_eq!(call.served_model.as_deref(), Some("cheap"));
    // The two calls the router sent to the cheap model are audited; the one it sent to the reference is not
    // asked of the reference again.
    let counts = || h.store().online_counts("intent", policy.version).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts().scored < 2 {
        assert!(Instant::now() < deadline, "{:?}", counts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(counts().scored, 2, "{:?}", counts());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_embedding_model_can_replace_the_local_one() {
    let config = r#"
[models.emb]
provider = "openai"
upstream = "text-embedding-3-small"
[cache.semantic]
enabled = true
bound = 0.3
verify = 0.0
embeddings = "emb"
[cache.tasks.pw]
scorer = "label"
"#;
    let never: EmbedLoader = Box::new(|_| Err("the local model must not be loaded".into()));
    let h = Harness::start_with(config, never).await;
    // The same question from different users (`name`): another exact-cache key, the same text.
    let ask = |user: String| {
        let http = h.http.clone();
        let url = h.url.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .header("x-leanlm-task", "pw")
                .json(&json!({"model": "gpt-4o", "temperature": 0,
                    "messages": [{"role": "user", "name": user, "content": "how do i reset my password"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-leanlm-cache"].to_str().unwrap().to_owned()
        }
    };
    let needed = leanlm_semantic::evidence_needed(0.3) as usize;
    for i in 0..=needed {
        assert_eq!(ask(format!("u{i}")).await, "miss");
        if i > 0 {
            h.evidence("pw", i).await;
        }
    }
    assert_eq!(ask("last".into()).await, "semantic-hit");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_entry_budget_bounds_memory() {
    let h = Harness::start(&CONFIG.replace(
        "[cache.semantic]\nverify = 0.0\n",
        "[cache.semantic]\nverify = 0.0\nmax_total_entries = 1\n",
    ))
    .await;
    h.ask("pw", None, "how do i reset my password").await;
    h.ask("pw", None, "where is my card").await;
    // The second question found the budget spent: it was not cached, so its paraphrase finds nothing.
    h.ask("pw", None, "where is my card now").await;
    h.ask("pw", None, "how do i reset my password please").await;
    let e = h.evidence("pw", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.store().semantic_evidence(Some("pw"), 10).unwrap().len(), 1, "{e:?}");
    h.shutdown().await;
}

/// A harness whose `cheap` model is right 60% of the time, and less sure (lower log-probabilities) when
/// wrong, with task `intent` logged; and its store.
/// A policy for the `intent` task, scored by label, deployed without a stored validation.
fn deploy_request(
    replacement: &str,
    stage: leanlm_deploy::Stage,
    share: Option<f64>,
    audit_rate: Option<f64>,
) -> leanlm_control::policy::DeployRequest {
    leanlm_control::policy::DeployRequest {
        task_id: "intent".into(),
        replacement: replacement.parse().unwrap(),
        stage,
        share,
        audit_rate,
        bound: None,
        error_bound: None,
        min_samples: None,
        auto_promote: false,
        scorer: Some(leanlm_validate::ScorerSpec::Label),
        force: Some("test".into()),
        actor: "test".into(),
    }
}

async fn cascade_harness(models: &str) -> (Harness, Store) {
    let h = Harness::start(models).await;
    h.http
        .post(format!("{}/mock/accuracy", h.mock.url()))
        .json(&json!({"model": "cheap", "accuracy": 0.6}))
        .send()
        .await
        .unwrap();
    cascade_ask(&h, "where is my card", false).await;
    let store = h.store();
    intent_logged(&store).await;
    (h, store)
}

/// Asks `big` for task `intent`: the serving model, the cascade's outcome, the call id and the body.
async fn cascade_ask(h: &Harness, q: &str, stream: bool) -> (String, Option<String>, String, String) {
    let r = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-leanlm-task", "intent")
        .json(&json!({"model": "big", "stream": stream, "messages": [{"role": "user", "content": q}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (model, cascade, id) = (
        header("x-leanlm-model").unwrap(),
        header("x-leanlm-cascade"),
        header("x-leanlm-call-id").unwrap(),
    );
    let body = r.text().await.unwrap();
    (model, cascade, id, body)
}

/// Waits until task `intent` is in the call log.
async fn intent_logged(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.tasks(None).unwrap().iter().any(|t| t.id == "intent") {
        assert!(Instant::now() < deadline, "the task never reached the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The labelled questions.
fn questions() -> Vec<&'static str> {
    LABELS
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(q, _)| q)
        .collect()
}

/// A cascade stage for `cheap` (before `big`) trained on answers whose log-probability says whether they
/// were right (the mock's wrong answers never score above -0.2), on the features the gateway computes.
fn trained_cascade(cheap: &str) -> leanlm_route::cascade::TaskCascade {
    let questions = questions();
    let examples: Vec<leanlm_route::cascade::Example> = (0..400)
        .map(|i| {
            let q = questions[i % questions.len()];
            let t = leanlm_validate::run::transcript(&json!({"messages": [{"role": "user", "content": q}]}));
            let lp = -2.5 * (i as f64 / 400.0);
            leanlm_route::cascade::Example {
                prompt: leanlm_route::features(&BagOfWords.embed(&[&t]).unwrap()[0], &t),
                answer: "password".into(),
                logprobs: Some(vec![lp]),
                second: None,
                agreed: lp > -0.2,
            }
        })
        .collect();
    let setup = leanlm_route::cascade::Setup {
        cheap: cheap.into(),
        strong: "big".into(),
        scorer: leanlm_validate::ScorerSpec::Label,
        labels: ["password", "card", "other"].map(String::from).into(),
        schema: None,
        logprobs: true,
        samples: 1,
        bound: 0.99,
    };
    leanlm_route::cascade::train(setup, &examples, 1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_cascade_serves_the_answers_it_trusts_and_escalates_the_rest() {
    let models = "[models.cheap]\nprovider = \"openai\"\nupstream = \"cheap\"\nprice = { input = 1.0, output = 2.0 }\n\
                  [models.big]\nprovider = \"openai\"\nupstream = \"big\"\nprice = { input = 10.0, output = 20.0 }\n";
    let (h, mut store) = cascade_harness(models).await;
    let ask = |q: &'static str, stream: bool| cascade_ask(&h, q, stream);
    let request = deploy_request("cascade:cheap,big", leanlm_deploy::Stage::Canary, Some(1.0), Some(0.0));
    let err = leanlm_control::policy::deploy(&mut store, request.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("leanlm train-cascade"), "{err}");

    let questions = questions();
    let cascade = trained_cascade("cheap");
    store
        .put_router(
            "intent",
            "cascade:cheap,big",
            0,
            &serde_json::to_string(&cascade).unwrap(),
        )
        .unwrap();
    let policy = leanlm_control::policy::deploy(&mut store, request).unwrap();
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;

    let truth: std::collections::HashMap<&str, &str> =
        LABELS.lines().skip(1).filter_map(|l| l.split_once(',')).collect();
    let (mut accepted, mut escalated) = (Vec::new(), Vec::new());
    for q in &questions {
        let (model, outcome, id, body) = ask(q, false).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        assert!(
            v["choices"][0]["logprobs"].is_null(),
            "log-probabilities the client did not ask for: {v}"
        );
        match outcome.as_deref() {
            Some("accepted") => {
                assert_eq!(model, "cheap");
                assert_eq!(answer, truth[q], "an accepted cheap answer was wrong for `{q}`");
                accepted.push(id);
            }
            Some("escalated") => {
                assert_eq!(model, "big");
                assert_eq!(answer, truth[q], "the big model is always right");
                escalated.push(id);
            }
            other => panic!("x-leanlm-cascade: {other:?}"),
        }
    }
    assert!(
        !accepted.is_empty() && !escalated.is_empty(),
        "{accepted:?} {escalated:?}"
    );

    // An answer outside the task's labels is unusable, whatever its log-probability: escalated.
    let (model, outcome, _, _) = ask("what is the weather", false).await;
    assert_eq!((model.as_str(), outcome.as_deref()), ("big", Some("unusable")));

    // A streaming client gets only the answer served: an accepted one replayed as events.
    let (model, outcome, _, body) = ask(questions[0], true).await;
    assert!(body.starts_with("data: "), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let streamed: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, truth[questions[0]]);
    assert_eq!(model == "cheap", outcome.as_deref() == Some("accepted"));

    // The log has each stage: an escalated call costs the cheap attempt plus the big answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let call = |id: &str| loop {
        if let Some(c) = h.store().call(id).unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let e = call(&escalated[0]);
    assert_eq!(e.stages.len(), 1);
    assert_eq!(e.stages[0].model, "cheap");
    assert_eq!(e.stages[0].outcome.as_str(), "escalated");
    assert!(e.stages[0].score.is_some());
    let stage_cost = e.stages[0].cost_usd.unwrap();
    let usage = e.usage.unwrap();
    let big = (usage.input_tokens as f64 * 10.0 + usage.output_tokens as f64 * 20.0) / 1e6;
    assert!((e.cost_usd.unwrap() - (big + stage_cost)).abs() < 1e-12, "{e:?}");
    assert_eq!(e.served_model.as_deref(), Some("big"));
    let a = call(&accepted[0]);
    assert_eq!(a.stages[0].outcome.as_str(), "accepted");
    assert_eq!(a.served_model.as_deref(), Some("cheap"));
    assert!((a.cost_usd.unwrap() - a.stages[0].cost_usd.unwrap()).abs() < 1e-12);
    assert_eq!(a.policy.unwrap().version, policy.version);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_reads_the_confidence_of_a_gemini_cheap_model() {
    // The cheap stage is a Gemini model: its log-probabilities come from `logprobsResult`.
    let models = "[models.cheap]\nprovider = \"gemini\"\nupstream = \"cheap\"\nprice = { input = 1.0, output = 2.0 }\n\
                  [models.big]\nprovider = \"openai\"\nupstream = \"big\"\nprice = { input = 10.0, output = 20.0 }\n";
    let (h, mut store) = cascade_harness(models).await;
    store
        .put_router(
            "intent",
            "cascade:cheap,big",
            0,
            &serde_json::to_string(&trained_cascade("cheap")).unwrap(),
        )
        .unwrap();
    let request = deploy_request("cascade:cheap,big", leanlm_deploy::Stage::Canary, Some(1.0), Some(0.0));
    leanlm_control::policy::deploy(&mut store, request).unwrap();
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;
    let truth: std::collections::HashMap<&str, &str> =
        LABELS.lines().skip(1).filter_map(|l| l.split_once(',')).collect();
    let (mut accepted, mut escalated) = (0, 0);
    for q in questions() {
        let (model, outcome, _, body) = cascade_ask(&h, q, false).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], truth[q], "{model} {outcome:?}");
        match outcome.as_deref() {
            Some("accepted") => accepted += 1,
            Some("escalated") => escalated += 1,
            other => panic!("x-leanlm-cascade: {other:?}"),
        }
    }
    // Without log-probabilities the trained stage could not accept anything.
    assert!(
        accepted > 0 && escalated > 0,
        "accepted {accepted}, escalated {escalated}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_skips_a_stage_that_never_accepts_and_is_shadowed_stage_by_stage() {
    let models = "[models.tiny]\nprovider = \"openai\"\nupstream = \"tiny\"\nprice = { input = 0.1, output = 0.2 }\n\
                  [models.cheap]\nprovider = \"openai\"\nupstream = \"cheap\"\nprice = { input = 1.0, output = 2.0 }\n\
                  [models.big]\nprovider = \"openai\"\nupstream = \"big\"\nprice = { input = 10.0, output = 20.0 }\n";
    let (h, mut store) = cascade_harness(models).await;
    // `tiny` was trained but no threshold paid for asking it: it must never be asked.
    let second = trained_cascade("cheap");
    let mut never = trained_cascade("tiny");
    never.threshold = f64::MAX;
    let chain = leanlm_route::cascade::Chain {
        served: vec![0.0, second.accepted_share],
        calibration_agreement: second.calibration_agreement,
        calibrated_on: 400,
        stages: vec![never, second],
    };
    let spec = "cascade:tiny,cheap,big";
    store
        .put_router("intent", spec, 0, &serde_json::to_string(&chain).unwrap())
        .unwrap();
    let deploy = |stage, share, audit_rate| leanlm_control::policy::DeployRequest {
        bound: Some(0.5),
        ..deploy_request(spec, stage, share, audit_rate)
    };
    leanlm_control::policy::deploy(&mut store, deploy(leanlm_deploy::Stage::Canary, Some(1.0), Some(0.0))).unwrap();
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;
    let questions = questions();
    let mut ids = Vec::new();
    for q in &questions {
        let (model, outcome, id, _) = cascade_ask(&h, q, false).await;
        assert!(model == "cheap" || model == "big", "{model}");
        assert!(
            matches!(outcome.as_deref(), Some("accepted" | "escalated")),
            "{outcome:?}"
        );
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for id in &ids {
        let call = loop {
            if let Some(c) = h.store().call(id).unwrap() {
                break c;
            }
            assert!(Instant::now() < deadline, "call {id} never reached the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let asked: Vec<&str> = call.stages.iter().map(|s| s.model.as_str()).collect();
        assert_eq!(asked, ["cheap"], "{call:?}");
    }

    // In shadow, the reference serves and the chain is judged stage by stage off the hot path, recorded
    // under the chain's name.
    leanlm_control::policy::deploy(&mut store, deploy(leanlm_deploy::Stage::Shadow, None, Some(1.0))).unwrap();
    tokio::time::sleep(leanlm_control::policy::SYNC_INTERVAL + Duration::from_millis(500)).await;
    for q in &questions {
        let (model, outcome, _, _) = cascade_ask(&h, q, false).await;
        assert_eq!((model.as_str(), outcome), ("big", None));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scored = h.store().online_outcomes("intent", spec, "label").unwrap();
        if scored.len() >= questions.len() {
            // Accepted answers are the ones log-probabilities vouch for; escalated ones are the reference's.
            assert!(scored.iter().all(|(_, agreed)| *agreed), "{scored:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} shadow checks",
            scored.len(),
            questions.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.store().online_outcomes("intent", "tiny", "label").unwrap().is_empty());
    h.shutdown().await;
}
