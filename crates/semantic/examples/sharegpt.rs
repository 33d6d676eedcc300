//! Real users' repeats: the first user turns of ShareGPT conversations, replayed in order through the
//! exact cache's key (identical text) and the semantic cache's judgement (MiniLM similarity of at least
//! 0.8 with the most similar earlier prompt, guards included). Run by `bench/sharegpt.sh`, which fetches
//! the data.
//!
//!     cargo run --release -p leanlm-semantic --example sharegpt -- PROMPTS.jsonl [N]
//!
//! Embeddings are cached next to the prompts file, so a second run takes seconds.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use leanlm_embed::{Embedder, default_model_dir};
use leanlm_semantic::{Decision, Partition, Query, judge};
use serde_json::Value;

const MIN_SIMILARITY: f32 = 0.8;
const DIM: usize = 384;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: sharegpt PROMPTS.jsonl [N]"));
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let prompts: Vec<String> = std::fs::read_to_string(&path)
        .expect("prompts file")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["prompt"].as_str().map(str::to_owned))
        .take(n)
        .collect();
    let n = prompts.len();
    let cache = path.with_file_name(format!("sharegpt-vectors-{n}.f32"));
    let vectors: Vec<f32> = match std::fs::read(&cache) {
        Ok(bytes) if bytes.len() == n * DIM * 4 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        _ => {
            let model = Embedder::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
            let started = std::time::Instant::now();
            let mut out = Vec::with_capacity(n * DIM);
            for (i, chunk) in prompts.chunks(16).enumerate() {
                // MiniLM reads 256 word pieces at most (about 1,000 characters of English).
                let cut: Vec<&str> = chunk
                    .iter()
                    .map(|p| p.char_indices().nth(1000).map_or(p.as_str(), |(i, _)| &p[..i]))
                    .collect();
                for v in model.embed(&cut).expect("embeddings") {
                    out.extend(v);
                }
                if i % 20 == 0 {
                    eprint!("\rembedded {}/{n}", (i + 1) * 16);
                }
            }
            eprintln!("\rembedded {n} prompts in {:.0} s", started.elapsed().as_secs_f64());
            let mut f = std::fs::File::create(&cache).expect("vector cache");
            for x in &out {
                f.write_all(&x.to_le_bytes()).expect("vector cache");
            }
            out
        }
    };

    let mut seen: HashSet<&str> = HashSet::new();
    let mut index: Partition<usize> = Partition::new(DIM, n.max(1));
    let (mut exact, mut would) = (0usize, 0usize);
    let mut by_threshold: BTreeMap<u32, usize> = BTreeMap::new();
    let mut vetoed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        if !seen.insert(p.as_str()) {
            exact += 1;
            continue;
        }
        let v = &vectors[i * DIM..(i + 1) * DIM];
        let mut hit = None;
        for nb in index.nearest(v, 4) {
            let j = *index.get(nb.slot).expect("slot");
            let (new, cached) = (
                Query {
                    context: "",
                    preamble: Some(""),
                    last: p,
                },
                Query {
                    context: "",
                    preamble: Some(""),
                    last: &prompts[j],
                },
            );
            match judge(new, cached, nb.similarity, None, MIN_SIMILARITY) {
                Decision::Candidate { similarity } => {
                    hit = Some((j, similarity));
                    break;
                }
                Decision::Vetoed(veto) => *vetoed.entry(veto.as_str()).or_default() += 1,
                _ => {}
            }
        }
        match hit {
            Some((j, s)) => {
                would += 1;
                for t in [80u32, 85, 90, 95, 98] {
                    if s >= t as f32 / 100.0 {
                        *by_threshold.entry(t).or_default() += 1;
                    }
                }
                if examples.len() < 5 && p.len() < 120 {
                    examples.push((s, p.clone(), prompts[j].clone()));
                }
            }
            None => {
                index.insert(v, i);
            }
        }
    }
    let pct = |a: usize| 100.0 * a as f64 / n.max(1) as f64;
    println!("## ShareGPT first user turns, replayed in order ({n} prompts)\n");
    println!("| | prompts | share |\n|---|---|---|");
    println!("| exact repeats (exact-cache hits) | {exact} | {:.1}% |", pct(exact));
    println!(
        "| semantic would-be hits (similarity ≥ {MIN_SIMILARITY}, guards pass) | {would} | {:.1}% |",
        pct(would)
    );
    for (t, c) in &by_threshold {
        println!(
            "| … of which at similarity ≥ {:.2} | {c} | {:.1}% |",
            *t as f32 / 100.0,
            pct(*c)
        );
    }
    println!("\n| guard | neighbours vetoed |\n|---|---|");
    for (g, c) in &vetoed {
        println!("| {g} | {c} |");
    }
    println!("\nExamples of would-be hits:\n");
    for (s, a, b) in examples {
        println!("- {s:.3}: {a:?} ← {b:?}");
    }
    println!(
        "\nA would-be hit is served only at or above its task's calibrated threshold; which of these are right \
         depends on the answers, which ShareGPT's first turns share only where the prompts repeat."
    );
}
