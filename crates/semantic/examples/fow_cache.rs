//! Semantic-cache precision on fow-cache (`$LEANLM_SHARED_DATA/fow-cache`, CC BY 4.0): for pairs that share an
//! answer, the share a cache would serve; for traps (negation, entity and number swaps, scope,
//! conversations whose last turn matches), the share it would serve wrongly. LeanLM's policy next to a
//! plain cosine-threshold cache (0.8 on the last user turn, the GPTCache and Bifrost default), with the same
//! embeddings, in the same run.
//!
//!     cargo run --release -p leanlm-semantic --example fow_cache [-- DATA_DIR]
//!
//! LeanLM is measured as the gateway runs it: a would-be hit is a pair whose weaker similarity (last turn,
//! context) reaches `min_similarity` (0.8) and that no guard vetoes; it is served only at or above the
//! threshold calibrated from verified would-be hits to a false-hit bound (`FOW_BOUND`, default 1%). The
//! pairs are split in two by id; each half is served with the threshold calibrated on the other half
//! (`FOW_EVIDENCE=N`: on N verified would-be hits drawn with replacement from the other half, as if the task
//! had seen that much more traffic of the same mix).
//! `FOW_SHOW=1` also lists the traps the guards let through and the same-answer pairs they stopped;
//! `FOW_SHOW=2` also the traps each guard stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use leanlm_embed::cosine;
use leanlm_semantic::{
    Assessment, Decision, EVIDENCE_WINDOW, Evidence, Query, Sample, Verified, Verifier, assess, calibrate, judge,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

struct Case {
    id: String,
    group: String,
    same_answer: bool,
    context: [String; 2],
    last: [String; 2],
}

impl Case {
    /// The two requests as the semantic cache compares them.
    fn queries(&self) -> (Query<'_>, Query<'_>) {
        // fow-cache's conversations have no system prompt.
        let query = |i: usize| Query {
            context: &self.context[i],
            preamble: Some(""),
            last: &self.last[i],
        };
        (query(0), query(1))
    }

    fn has_context(&self) -> bool {
        !self.context[0].is_empty() && !self.context[1].is_empty()
    }
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

/// `FOW_EVIDENCE=N`: N would-be hits drawn with replacement from a fold's half, seeded by the fold (the same
/// draws every run); without it, the half itself.
fn draw(half: Vec<Verified>, fold: u32, draws: Option<usize>) -> Vec<Verified> {
    match draws {
        Some(n) if !half.is_empty() => {
            let mut rng = StdRng::seed_from_u64(u64::from(fold));
            (0..n).map(|_| half[rng.random_range(0..half.len())]).collect()
        }
        _ => half,
    }
}

fn main() {
    let data = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LEANLM_SHARED_DATA").map(|d| PathBuf::from(d).join("fow-cache")))
        .expect("name the fow-cache folder, or set LEANLM_SHARED_DATA to the folder of public data sets (see bench/RESULTS.md)");
    let mut cases = Vec::new();
    for line in std::fs::read_to_string(data.join("pairs.jsonl"))
        .expect("pairs.jsonl")
        .lines()
    {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        cases.push(Case {
            id: v["id"].as_str().unwrap_or("").to_owned(),
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
                    id: format!("{dir}/{}", v["id"].as_str().unwrap_or(&cases.len().to_string())),
                    group: format!("{dir}/{}", v["subtype"].as_str().unwrap_or("")),
                    same_answer: v["same_answer"].as_bool().unwrap_or(false),
                    context: [ca, cb],
                    last: [la, lb],
                });
            }
        }
    }
    let mut texts: Vec<&str> = Vec::new();
    for c in &cases {
        texts.extend([
            c.last[0].as_str(),
            c.last[1].as_str(),
            c.context[0].as_str(),
            c.context[1].as_str(),
        ]);
    }
    // Embedded once and kept on disk (`leanlm_embed::cached`), so re-runs after a guard change take seconds.
    let started = std::time::Instant::now();
    let vectors = leanlm_embed::cached::embed_cached("fow-cache", &texts).unwrap_or_else(|e| panic!("{e}"));
    let per_text_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len() as f64;

    let bound: f64 = std::env::var("FOW_BOUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    let min_similarity: f32 = std::env::var("FOW_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.8);
    // Per case: plain cosine's verdict, and LeanLM's judgement.
    let judged: Vec<(bool, Decision)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = &vectors[4 * i..4 * i + 4];
            let last_sim = cosine(&v[0], &v[1]);
            let context_sim = c.has_context().then(|| cosine(&v[2], &v[3]));
            let (a, b) = c.queries();
            (last_sim >= 0.8, judge(a, b, last_sim, context_sim, min_similarity))
        })
        .collect();
    // The learned judgement: what the structural rules let through, with its features.
    let features: Vec<Option<leanlm_semantic::Features>> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = &vectors[4 * i..4 * i + 4];
            let (a, b) = c.queries();
            match assess(
                a,
                b,
                cosine(&v[0], &v[1]),
                c.has_context().then(|| cosine(&v[2], &v[3])),
                min_similarity,
            ) {
                Assessment::Candidate { features, .. } => Some(features),
                Assessment::Refused(_) => None,
            }
        })
        .collect();
    // What the guards cost: every pair judged as if its embeddings matched exactly, so every guard runs.
    leanlm_semantic::load_lexicon();
    let mut costs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for c in &cases {
        let (a, b) = c.queries();
        let started = std::time::Instant::now();
        std::hint::black_box(judge(a, b, 1.0, c.has_context().then_some(1.0), 0.0));
        costs[usize::from(c.has_context())].push(started.elapsed().as_secs_f64() * 1e6);
    }
    // Two folds by a stable hash of the id: each is served with the other's calibrated threshold.
    let fold = |c: &Case| {
        c.id.bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 2
    };
    // `FOW_EVIDENCE=N`: as if the task had verified N would-be hits of traffic with this half's mix, drawn
    // with replacement (a projection: more traffic like this one, not new pairs).
    let draws: Option<usize> = std::env::var("FOW_EVIDENCE").ok().and_then(|v| v.parse().ok());
    let evidence = |f: u32| -> Vec<Verified> {
        let half: Vec<Verified> = cases
            .iter()
            .zip(&judged)
            .filter(|(c, _)| fold(c) == f)
            .filter_map(|(c, (_, d))| match d {
                Decision::Candidate { similarity } => Some(Verified {
                    similarity: *similarity,
                    agreed: c.same_answer,
                }),
                _ => None,
            })
            .collect();
        draw(half, f, draws)
    };
    let estimates = [calibrate(&evidence(1), bound), calibrate(&evidence(0), bound)];
    // The task's own verifier: fitted on the other fold's would-be hits (as a task fits on its evidence),
    // where they are enough; otherwise the prior. Each fold is then calibrated with the same draws as the
    // guards' evidence, scored by the model the other fold is served with.
    let own: Vec<Verifier> = (0..2u32)
        .map(|f| {
            let other: Vec<(leanlm_semantic::Features, bool)> = cases
                .iter()
                .zip(&features)
                .filter(|(c, _)| fold(c) != f)
                .filter_map(|(c, x)| x.map(|x| (x, c.same_answer)))
                .collect();
            Verifier::fit(&other).unwrap_or_else(Verifier::prior)
        })
        .collect();
    let learned: Vec<Option<f32>> = cases
        .iter()
        .zip(&features)
        .map(|(c, x)| x.map(|x| own[fold(c) as usize].score(&x)))
        .collect();
    let learned_evidence = |f: u32| -> Vec<Verified> {
        let half: Vec<Verified> = cases
            .iter()
            .zip(&features)
            .filter(|(c, _)| fold(c) == f)
            .filter_map(|(c, x)| {
                x.map(|x| Verified {
                    similarity: own[1 - f as usize].score(&x),
                    agreed: c.same_answer,
                })
            })
            .collect();
        draw(half, f, draws)
    };
    let learned_estimates = [
        calibrate(&learned_evidence(1), bound),
        calibrate(&learned_evidence(0), bound),
    ];
    // As the gateway reads it (`judgement = "learned"`): the other fold's would-be hits through
    // `Evidence`, which keeps the similarity, the prior or its cross-fitted own model, whichever serves most.
    // Its folds are by arrival order, so copies of one pair (`FOW_EVIDENCE` draws with replacement) are put
    // at positions of one parity: a pair is never both fitted on and calibrated with.
    let gateway: Vec<Evidence> = (0..2u32)
        .map(|f| {
            let other: Vec<(usize, Sample)> = cases
                .iter()
                .enumerate()
                .zip(&features)
                .filter(|((_, c), _)| fold(c) != f)
                .filter_map(|((i, c), x)| {
                    x.map(|x| {
                        let v = &vectors[4 * i..4 * i + 2];
                        let sample = Sample {
                            similarity: cosine(&v[0], &v[1]),
                            features: Some(x),
                            agreed: c.same_answer,
                        };
                        (i, sample)
                    })
                })
                .collect();
            let side = |parity: usize| -> Vec<Sample> {
                let mine: Vec<Sample> = other.iter().filter(|(i, _)| i % 2 == parity).map(|(_, s)| *s).collect();
                match draws {
                    Some(n) if !mine.is_empty() => {
                        let mut rng = StdRng::seed_from_u64(u64::from(f) * 2 + parity as u64);
                        (0..n / 2).map(|_| mine[rng.random_range(0..mine.len())]).collect()
                    }
                    _ => mine,
                }
            };
            let (even, odd) = (side(0), side(1));
            let mut e = Evidence::new(true, EVIDENCE_WINDOW);
            e.extend(even.into_iter().zip(odd).flat_map(|(a, b)| [a, b]));
            e
        })
        .collect();
    let gateway_estimates: Vec<_> = gateway
        .iter()
        .map(|e| {
            let mut e = e.clone();
            (e.estimate(bound), e)
        })
        .collect();
    for (f, (est, e)) in gateway_estimates.iter().enumerate() {
        println!(
            "fold {f} served with the other's evidence as the gateway reads it: {} samples, judge {}, threshold {}",
            e.len(),
            e.judge().as_str(),
            est.threshold.map_or("none".into(), |t| format!("{t:.3}"))
        );
    }
    let gateway_served: Vec<bool> = cases
        .iter()
        .enumerate()
        .zip(&features)
        .map(|((i, c), x)| {
            let (est, e) = &gateway_estimates[fold(c) as usize];
            let v = &vectors[4 * i..4 * i + 2];
            x.as_ref().is_some_and(|x| {
                est.threshold
                    .is_some_and(|t| e.score(cosine(&v[0], &v[1]), Some(x)).is_some_and(|s| s >= t))
            })
        })
        .collect();
    let gateway_good = cases
        .iter()
        .zip(&gateway_served)
        .filter(|(c, s)| c.same_answer && **s)
        .count();
    let gateway_trap = cases
        .iter()
        .zip(&gateway_served)
        .filter(|(c, s)| !c.same_answer && **s)
        .count();
    // group -> (n, same_answer, plain, would-be hits, served, learned served)
    let mut table: BTreeMap<String, (u32, bool, u32, u32, u32, u32)> = BTreeMap::new();
    let mut vetoes: BTreeMap<String, (u32, u32)> = BTreeMap::new(); // guard -> (traps stopped, good hits lost)
    let mut totals = [[0u32; 5]; 2]; // [trap, good] x [n, plain, would-be, served, learned served]
    for ((c, (plain, d)), score) in cases.iter().zip(&judged).zip(&learned) {
        let learned_served =
            score.is_some_and(|s| learned_estimates[fold(c) as usize].threshold.is_some_and(|t| s >= t));
        let would = matches!(d, Decision::Candidate { .. });
        let served = match d {
            Decision::Candidate { similarity } => {
                estimates[fold(c) as usize].threshold.is_some_and(|t| *similarity >= t)
            }
            _ => false,
        };
        if let Decision::Vetoed(veto) = d {
            let e = vetoes.entry(veto.as_str().to_owned()).or_default();
            if c.same_answer { e.1 += 1 } else { e.0 += 1 }
        }
        let row = table.entry(c.group.clone()).or_insert((0, c.same_answer, 0, 0, 0, 0));
        row.0 += 1;
        row.2 += *plain as u32;
        row.3 += would as u32;
        row.4 += served as u32;
        row.5 += learned_served as u32;
        let t = &mut totals[c.same_answer as usize];
        t[0] += 1;
        t[1] += *plain as u32;
        t[2] += would as u32;
        t[3] += served as u32;
        t[4] += learned_served as u32;
    }
    let pct = |a: u32, b: u32| 100.0 * a as f64 / b.max(1) as f64;
    let spread = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0.0);
        format!("p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs", at(0.5), at(0.99), at(1.0))
    };
    let [mut single, mut conversation] = costs;
    println!(
        "guards per pair, all of them run: single questions {}; conversations {}\n",
        spread(&mut single),
        spread(&mut conversation)
    );
    println!(
        "{} cases; embedding {:.1} ms per text (release build, batches of 32; near 0 when read from the \
         on-disk cache)\n",
        cases.len(),
        per_text_ms
    );
    println!(
        "| category | pairs | same answer | plain cosine 0.8 serves | LeanLM would-be hits (guards) | LeanLM serves (bound {:.0}%) | learned serves |\n|---|---|---|---|---|---|---|",
        bound * 100.0
    );
    for (g, (n, same, p, w, o, l)) in &table {
        println!(
            "| {g} | {n} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            if *same { "yes" } else { "no (trap)" },
            pct(*p, *n),
            pct(*w, *n),
            pct(*o, *n),
            pct(*l, *n)
        );
    }
    let [trap, good] = totals;
    println!(
        "\n| overall | plain cosine 0.8 | LeanLM would-be hits | LeanLM serves (guards) | learned serves |\n|---|---|---|---|---|"
    );
    println!(
        "| same-answer pairs served (higher is better) | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
        pct(good[1], good[0]),
        pct(good[2], good[0]),
        pct(good[3], good[0]),
        pct(good[4], good[0])
    );
    println!(
        "| traps served wrongly (lower is better) | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
        pct(trap[1], trap[0]),
        pct(trap[2], trap[0]),
        pct(trap[3], trap[0]),
        pct(trap[4], trap[0])
    );
    println!(
        "\nlearned, as the gateway reads it: same-answer pairs served {:.1}%, traps served {:.1}%",
        pct(gateway_good as u32, good[0]),
        pct(gateway_trap as u32, trap[0])
    );
    println!("\n| guard | traps it stopped | good hits it cost |\n|---|---|---|");
    for (g, (stopped, lost)) in &vetoes {
        println!("| {g} | {stopped} | {lost} |");
    }
    for (f, e) in estimates.iter().enumerate() {
        println!(
            "\nfold {f}: threshold {} from {} verified would-be hits ({} false, upper bound {:.2}%)",
            e.threshold
                .map_or("none (nothing served)".to_owned(), |t| format!("{t:.3}")),
            e.n,
            e.false_hits,
            e.upper * 100.0
        );
    }
    // `FOW_SHOW=1`: the traps that got through the guards, to see what a sharper judge must catch.
    if std::env::var_os("FOW_SHOW").is_some() {
        println!("\n| trap let through | similarity | a | b |\n|---|---|---|---|");
        for (c, (_, d)) in cases.iter().zip(&judged) {
            if let (false, Decision::Candidate { similarity }) = (c.same_answer, d) {
                println!("| {} | {similarity:.3} | {} | {} |", c.id, c.last[0], c.last[1]);
            }
        }
        println!("\n| same-answer pair vetoed | guard | a | b |\n|---|---|---|---|");
        for (c, (_, d)) in cases.iter().zip(&judged) {
            if let (true, Decision::Vetoed(v)) = (c.same_answer, d) {
                println!("| {} | {} | {} | {} |", c.id, v.as_str(), c.last[0], c.last[1]);
            }
        }
    }
    // `FOW_SHOW=2`: also the traps each guard stopped, to see what a guard change would let through, and the
    // same-answer pairs that came close to the similarity floor.
    if std::env::var("FOW_SHOW").is_ok_and(|v| v == "2") {
        println!("\n| trap vetoed | guard | a | b |\n|---|---|---|---|");
        for (c, (_, d)) in cases.iter().zip(&judged) {
            if let (false, Decision::Vetoed(v)) = (c.same_answer, d) {
                println!("| {} | {} | {} | {} |", c.id, v.as_str(), c.last[0], c.last[1]);
            }
        }
        println!("\n| same-answer pair under the floor | similarity | a | b |\n|---|---|---|---|");
        for (c, (_, d)) in cases.iter().zip(&judged) {
            if let (true, Decision::TooFar { similarity }) = (c.same_answer, d)
                && *similarity >= min_similarity - 0.1
            {
                println!("| {} | {similarity:.3} | {} | {} |", c.id, c.last[0], c.last[1]);
            }
        }
    }
    // The whole frontier: what a fixed threshold over the guarded would-be hits would give.
    println!("\n| threshold | same-answer pairs served | traps served |\n|---|---|---|");
    for t in [0.80f32, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98] {
        let (mut g, mut w) = (0, 0);
        for (c, (_, d)) in cases.iter().zip(&judged) {
            if let Decision::Candidate { similarity } = d
                && *similarity >= t
            {
                if c.same_answer { g += 1 } else { w += 1 }
            }
        }
        println!("| {t:.2} | {:.1}% | {:.1}% |", pct(g, good[0]), pct(w, trap[0]));
    }
}
