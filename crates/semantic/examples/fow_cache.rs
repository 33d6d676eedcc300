//! Semantic-cache precision on fow-cache (../shared/data/fow-cache, CC BY 4.0): for pairs that share an
//! answer, the share a cache would serve; for traps (negation, entity and number swaps, scope,
//! conversations whose last turn matches), the share it would serve wrongly. LeanLM's policy next to a
//! plain cosine-threshold cache (0.8 on the last user turn, the GPTCache and Bifrost default), with the same
//! embeddings, in the same run.
//!
//!     cargo run --release -p leanlm-semantic --example fow_cache [-- DATA_DIR]
//!
//! `FOW_THRESHOLD` and `FOW_CONTEXT_THRESHOLD` override the policy's thresholds, to explore the trade-off.

use std::collections::BTreeMap;
use std::path::PathBuf;

use leanlm_embed::{Embedder, cosine, default_model_dir};
use leanlm_semantic::{Decision, Policy, Query, decide};
use serde_json::Value;

struct Case {
    group: String,
    same_answer: bool,
    context: [String; 2],
    last: [String; 2],
}

fn conversation(turns: &Value) -> (String, String) {
    let turns = turns.as_array().cloned().unwrap_or_default();
    let last = turns.iter().rposition(|t| t["role"] == "user").unwrap_or(0);
    let context: Vec<String> = turns[..last]
        .iter()
        .map(|t| {
            format!(
                "{}: {}",
                t["role"].as_str().unwrap_or(""),
                t["content"].as_str().unwrap_or("")
            )
        })
        .collect();
    (
        context.join("\n"),
        turns[last]["content"].as_str().unwrap_or("").to_owned(),
    )
}

fn main() {
    let data = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/fow-cache"));
    let mut cases = Vec::new();
    for line in std::fs::read_to_string(data.join("pairs.jsonl"))
        .expect("pairs.jsonl")
        .lines()
    {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        cases.push(Case {
            group: v["category"].as_str().unwrap_or("").to_owned(),
            same_answer: v["same_answer"].as_bool().unwrap_or(false),
            context: [String::new(), String::new()],
            last: [
                v["a"].as_str().unwrap_or("").to_owned(),
                v["b"].as_str().unwrap_or("").to_owned(),
            ],
        });
    }
    for dir in ["conv-parts", "conv-long"] {
        let mut files: Vec<_> = std::fs::read_dir(data.join(dir))
            .expect("conversation folder")
            .flatten()
            .collect();
        files.sort_by_key(|f| f.path());
        for f in files {
            for line in std::fs::read_to_string(f.path()).expect("readable").lines() {
                let v: Value = serde_json::from_str(line).expect("JSON line");
                let (ca, la) = conversation(&v["a"]);
                let (cb, lb) = conversation(&v["b"]);
                cases.push(Case {
                    group: format!("{dir}/{}", v["subtype"].as_str().unwrap_or("")),
                    same_answer: v["same_answer"].as_bool().unwrap_or(false),
                    context: [ca, cb],
                    last: [la, lb],
                });
            }
        }
    }
    let model = Embedder::load(&default_model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut texts: Vec<&str> = Vec::new();
    for c in &cases {
        texts.extend([
            c.last[0].as_str(),
            c.last[1].as_str(),
            c.context[0].as_str(),
            c.context[1].as_str(),
        ]);
    }
    let started = std::time::Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        vectors.extend(model.embed(chunk).expect("embeddings"));
    }
    let per_text_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len() as f64;

    // FOW_THRESHOLD / FOW_CONTEXT_THRESHOLD explore the policy; the defaults are what LeanLM ships.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f32>().ok());
    let defaults = Policy::default();
    let policy = Policy {
        threshold: env("FOW_THRESHOLD").unwrap_or(defaults.threshold),
        context_threshold: env("FOW_CONTEXT_THRESHOLD").unwrap_or(defaults.context_threshold),
    };
    // group -> (n, same_answer, plain served, leanlm served)
    let mut table: BTreeMap<String, (u32, bool, u32, u32)> = BTreeMap::new();
    let mut vetoes: BTreeMap<String, (u32, u32)> = BTreeMap::new(); // guard -> (traps stopped, good hits lost)
    let (mut good, mut good_plain, mut good_ours, mut traps, mut trap_plain, mut trap_ours) = (0, 0, 0, 0, 0, 0);
    for (i, c) in cases.iter().enumerate() {
        let v = &vectors[4 * i..4 * i + 4];
        let last_sim = cosine(&v[0], &v[1]);
        let has_context = !c.context[0].is_empty() || !c.context[1].is_empty();
        let context_sim = has_context.then(|| cosine(&v[2], &v[3]));
        let plain = last_sim >= 0.8;
        let a = Query {
            context: &c.context[0],
            last: &c.last[0],
        };
        let b = Query {
            context: &c.context[1],
            last: &c.last[1],
        };
        let decision = decide(&policy, a, b, last_sim, context_sim);
        if std::env::var_os("FOW_DEBUG").is_some() && c.group.starts_with("conv") {
            eprintln!(
                "{}\t{}\t{:.3}\t{:?}\t{:?}",
                c.group, c.same_answer, last_sim, context_sim, decision
            );
        }
        let ours = decision == Decision::Hit;
        if let Decision::Vetoed(veto) = &decision {
            let e = vetoes.entry(veto.as_str().to_owned()).or_default();
            if c.same_answer { e.1 += 1 } else { e.0 += 1 }
        }
        let row = table.entry(c.group.clone()).or_insert((0, c.same_answer, 0, 0));
        row.0 += 1;
        row.2 += plain as u32;
        row.3 += ours as u32;
        if c.same_answer {
            good += 1;
            good_plain += plain as u32;
            good_ours += ours as u32;
        } else {
            traps += 1;
            trap_plain += plain as u32;
            trap_ours += ours as u32;
        }
    }
    let pct = |a: u32, b: u32| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "{} cases; embedding {:.1} ms per text (release build, batches of 32)\n",
        cases.len(),
        per_text_ms
    );
    println!("| category | pairs | same answer | plain cosine 0.8 serves | LeanLM serves |\n|---|---|---|---|---|");
    for (g, (n, same, p, o)) in &table {
        println!(
            "| {g} | {n} | {} | {:.1}% | {:.1}% |",
            if *same { "yes" } else { "no (trap)" },
            pct(*p, *n),
            pct(*o, *n)
        );
    }
    println!("\n| overall | plain cosine 0.8 | LeanLM |\n|---|---|---|");
    println!(
        "| same-answer pairs served (higher is better) | {:.1}% | {:.1}% |",
        pct(good_plain, good),
        pct(good_ours, good)
    );
    println!(
        "| traps served wrongly (lower is better) | {:.1}% | {:.1}% |",
        pct(trap_plain, traps),
        pct(trap_ours, traps)
    );
    println!("\n| guard | traps it stopped | good hits it cost |\n|---|---|---|");
    for (g, (stopped, lost)) in &vetoes {
        println!("| {g} | {stopped} | {lost} |");
    }
    println!(
        "\npolicy: last turn ≥ {}, context ≥ {}; {} same-answer pairs, {} traps",
        policy.threshold, policy.context_threshold, good, traps
    );
}
