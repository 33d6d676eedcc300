//! Validation replays through the gateway's own request path, timed as the candidate answered, not as the
//! validation got round to looking.

use std::time::Duration;

use leanlm_gateway::{Config, Overrides, Replayer};
use leanlm_mock::Mock;
use leanlm_validate::score::Embed;
use leanlm_validate::{Bound, Logged, NoProgress, Options, ScorerSpec, Validation};
use serde_json::json;

/// An embedder as slow as a local model on a busy machine, and as blocking.
struct Slow;

impl Embed for Slow {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        std::thread::sleep(Duration::from_millis(40));
        Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_timed_by_its_upstream_not_by_the_scorer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = Mock::serve(listener, false);
    let toml = format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-mock\"\n\
         [models.big]\nprovider = \"mock\"\nupstream = \"big\"\n\
         [models.cheap]\nprovider = \"mock\"\nupstream = \"cheap\"\n",
        mock.url()
    );
    let config = Config::from_toml("leanlm.toml", &toml, &Overrides::default(), &|_| None).unwrap();
    let replayer = Replayer::new(config).unwrap();
    let calls: Vec<Logged> = (0..40)
        .map(|i| Logged {
            id: format!("c{i}"),
            started_at_ms: i,
            format: "openai".into(),
            request: json!({"model": "big", "messages": [{"role": "user", "content": format!("question {i}")}]}),
            reference: "an answer".into(),
            model: "big".into(),
            cost_usd: Some(0.001),
            latency_ms: 1.0,
            input_tokens: 10,
            output_tokens: 5,
        })
        .collect();
    let mut opts = Options::new(
        "t",
        "t",
        "cheap".parse().unwrap(),
        ScorerSpec::Similarity { threshold: None },
    );
    opts.sequential = false;
    opts.control = 4;
    opts.concurrency = 4;
    opts.bound = Bound::Absolute(0.5);
    let report = Validation {
        opts,
        calls,
        available: 40,
        replay: &replayer,
        embedder: Some(&Slow),
        progress: &NoProgress,
        picks: None,
        cascade: None,
    }
    .run()
    .await
    .unwrap();
    assert_eq!(report.scored, 40, "{report:?}");
    // The mock answers in about a millisecond; each answer then spends 40 ms being scored. Timed from the
    // validation's side, every reply that landed while another was being scored waited for it.
    let p50 = report.candidate_latency_ms.unwrap().p50;
    eprintln!("candidate p50 {p50:.1} ms");
    assert!(p50 < 30.0, "candidate p50 {p50:.1} ms");
}
