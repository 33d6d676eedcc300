//! Semantic-cache speed on this machine, each figure next to its baseline measured in the same run:
//!
//! 1. MiniLM embedding time per short query, batch 1 and batches of 32;
//! 2. nearest-neighbour lookup p50/p99 in one partition of 10k, 100k and 1M entries (random unit vectors of
//!    384 dimensions, queried with near-duplicates of stored ones): the HNSW graph partitions that large
//!    keep, against the exact scan in the same run, and how often each finds the near-duplicate;
//! 3. through the gateway (in-process, real HTTP on 127.0.0.1, mock upstream): the latency of a semantic hit
//!    against the embedding time alone, and the latency of requests that are not cache-eligible with the
//!    semantic cache on against the same gateway with it off.
//!
//!     cargo run --release -p leanlm --example semantic_speed [-- --max-entries 1000000]
//!
//! Prints a Markdown report.

#[path = "common/banking77.rs"]
mod banking77;

use std::sync::Arc;
use std::time::{Duration, Instant};

use leanlm_gateway::embedder::{Embed, EmbedLoader, SharedEmbed};
use leanlm_gateway::{Config, Gateway, Overrides};
use leanlm_mock::{Labeller, Mock};
use leanlm_semantic::Partition;
use serde_json::json;

struct MiniLm(leanlm_embed::Embedder);

impl Embed for MiniLm {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.99))
}

/// A deterministic pseudo-random unit vector (xorshift), so runs compare.
fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// One partition of `entries` random unit vectors, searched `graph`-first (what the cache does at this size)
/// or by exact scan: p50 and p99 of a lookup, the share of near-duplicate queries (cosine ~0.97 to a stored
/// vector) whose top hit is that vector, and the time to fill the partition.
fn lookup(entries: usize, graph: bool) -> (f64, f64, f64, f64, &'static str) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let ann_from = if graph { leanlm_semantic::ANN_FROM } else { usize::MAX };
    let mut p: Partition<u32> = Partition::with_ann_from(384, entries, ann_from);
    let samples = if entries > 100_000 { 200 } else { 1000 };
    let mut bases = Vec::with_capacity(samples);
    let t0 = Instant::now();
    for i in 0..entries {
        let v = random_unit(&mut seed, 384);
        if i % (entries / samples) == 0 && bases.len() < samples {
            bases.push((i as u32, v.clone()));
        }
        p.insert(&v, i as u32);
    }
    let fill = t0.elapsed().as_secs_f64();
    let mut found = 0;
    let ms: Vec<f64> = bases
        .iter()
        .map(|(i, base)| {
            let noise = random_unit(&mut seed, 384);
            let mut q: Vec<f32> = base.iter().zip(&noise).map(|(a, b)| a + 0.25 * b).collect();
            let n = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            q.iter_mut().for_each(|x| *x /= n);
            let t = Instant::now();
            let got = std::hint::black_box(p.nearest(&q, 4));
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            if got.first().and_then(|n| p.get(n.slot)) == Some(i) {
                found += 1;
            }
            elapsed
        })
        .collect();
    let recall = found as f64 / bases.len() as f64;
    let (p50, p99) = summary(ms);
    let how = if p.searches_graph() { "HNSW graph" } else { "exact scan" };
    (p50, p99, recall, fill, how)
}

fn main() -> anyhow::Result<()> {
    let max_entries: usize = std::env::args()
        .skip_while(|a| a != "--max-entries")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let data = banking77::test_csv()?;
    let queries: Vec<String> = csv::Reader::from_reader(data.as_bytes())
        .records()
        .flatten()
        .filter_map(|r| r.get(0).map(str::to_owned))
        .step_by(20)
        .take(120)
        .collect();
    let model = Arc::new(MiniLm(
        leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())?,
    ));

    // 1. Embedding.
    let single: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            model.embed(&[q]).expect("embedding");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let (embed_p50, embed_p99) = summary(single);
    let t = Instant::now();
    for chunk in queries.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        model.embed(&refs).expect("embedding");
    }
    let batched = t.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
    println!("## Semantic cache speed\n");
    println!("| embedding (MiniLM, one short query) | ms |\n|---|---|");
    println!(
        "| batch 1, p50 | {embed_p50:.1} |\n| batch 1, p99 | {embed_p99:.1} |\n| batches of 32, per query | {batched:.1} |\n"
    );

    // 2. Lookup.
    println!(
        "| lookup, one partition | search | p50 ms | p99 ms | near-duplicate found | fill s |\n|---|---|---|---|---|---|"
    );
    for n in [10_000, 100_000, max_entries] {
        if n > max_entries || (n == max_entries && n <= 100_000) {
            continue;
        }
        // What the cache does at this size, then the exact scan as the baseline.
        let mut ways = vec![true];
        if n >= leanlm_semantic::ANN_FROM {
            ways.push(false);
        }
        for graph in ways {
            let (p50, p99, recall, fill, how) = lookup(n, graph);
            println!(
                "| {n} entries | {how} | {p50:.3} | {p99:.3} | {:.1}% | {fill:.1} |",
                recall * 100.0
            );
        }
    }

    // 3. Through the gateway.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let labeller = Labeller::from_csv(&data)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mock = Mock::serve_with(listener, false, Some(labeller));
        let dir = std::env::temp_dir().join(format!("leanlm-semantic-speed-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let start = |name: &str, semantic: &str| {
            let toml = format!(
                "[store]\nurl = \"sqlite://{}\"\n[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk\"\n{semantic}",
                dir.join(format!("{name}.db")).display(),
                mock.url()
            );
            let config = Config::from_toml("bench.toml", &toml, &Overrides::default(), &|_| None)?;
            let m = model.clone();
            let loader: EmbedLoader = Box::new(move |_| Ok(m.clone() as SharedEmbed));
            anyhow::Ok(Gateway::with_embedder(config, Some(loader))?)
        };
        // The bound is loose here so that serving starts after a few verified hits; the speed of a hit
        // does not depend on the bound.
        let on = start(
            "on",
            "[cache.semantic]\nenabled = true\nbound = 0.5\nverify = 0.0\n[cache.tasks.bench]\nscorer = \"label\"\n",
        )?;
        let off = start("off", "")?;
        let mut urls = Vec::new();
        for gw in [on, off] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            urls.push(format!("http://{}/v1/chat/completions", listener.local_addr()?));
            tokio::spawn(gw.serve(listener, std::future::pending()));
        }
        let http = reqwest::Client::new();
        let send = |url: String, text: String, temperature: f64| {
            let http = http.clone();
            async move {
                let t = Instant::now();
                let r = http
                    .post(url)
                    .header("x-leanlm-task", "bench")
                    .json(&json!({"model": "gpt-4o", "temperature": temperature,
                        "messages": [{"role": "user", "content": text}]}))
                    .send()
                    .await
                    .expect("request");
                let cache = r.headers().get("x-leanlm-cache").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let _ = r.bytes().await;
                (t.elapsed().as_secs_f64() * 1000.0, cache)
            }
        };
        // Not eligible (temperature 0.7): the semantic cache must cost nothing. Alternate the two gateways.
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..3 {
            for q in &queries {
                let text = format!("{q} #{round}");
                with.push(send(urls[0].clone(), text.clone(), 0.7).await.0);
                without.push(send(urls[1].clone(), text, 0.7).await.0);
            }
        }
        // Eligible: originals are cached, lower-case variants teach the threshold, upper-case ones hit.
        for q in &queries {
            send(urls[0].clone(), q.clone(), 0.0).await;
        }
        for q in &queries {
            send(urls[0].clone(), q.to_lowercase(), 0.0).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut hits = Vec::new();
        let mut misses = 0;
        for q in &queries {
            let (ms, cache) = send(urls[0].clone(), q.to_uppercase(), 0.0).await;
            if cache == "semantic-hit" {
                hits.push(ms);
            } else {
                misses += 1;
            }
        }
        let (w50, w99) = summary(with);
        let (o50, o99) = summary(without);
        let (h50, h99) = summary(hits.clone());
        println!("\n| through the gateway (sequential requests) | p50 ms | p99 ms |\n|---|---|---|");
        println!("| not eligible, semantic cache off | {o50:.2} | {o99:.2} |");
        println!("| not eligible, semantic cache on | {w50:.2} | {w99:.2} |");
        println!("| semantic hit ({} hits, {misses} not served) | {h50:.2} | {h99:.2} |", hits.len());
        println!("| embedding alone (above) | {embed_p50:.2} | {embed_p99:.2} |");
        println!(
            "\nsemantic hit / embedding time: {:.2}× at p50; not eligible, on / off: {:.2}× at p50",
            h50 / embed_p50,
            w50 / o50
        );
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::Ok(())
    })
}
