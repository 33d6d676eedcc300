//! The semantic cache on an FAQ assistant's traffic: Banking77 (`$LEANLM_SHARED_DATA/banking77`, CC BY 4.0,
//! PolyAI), where the answer depends only on the intent, so two queries share an answer exactly when they
//! share an intent, and the near intents (`card_arrival` / `card_delivery_estimate`, `top_up_failed` /
//! `top_up_reverted`) are the traps.
//!
//!     cargo run --release -p leanlm-semantic --example banking_faq            # figures on the test split
//!     cargo run --release -p leanlm-semantic --example banking_faq -- fit     # the prior, from the train split
//!
//! Each split is replayed as a cache's traffic in a fixed shuffled order: each query's nearest earlier query
//! (exact search, MiniLM embeddings) is its would-be hit. `fit` fits the verifier's prior on the training
//! split's would-be hits and prints its weights. The figures use the test split only (held out: nothing was
//! fitted or tuned on it): its would-be hits are cut in two by position; the first half is the task's own
//! evidence (`FAQ_EVIDENCE`, default 1,000 verified would-be hits), the second is served with the threshold
//! each judgement calibrates on that evidence at the bound (`FAQ_BOUND`, default 5%). Judgements compared:
//! a plain cosine threshold, the written guards as vetoes (today's default), the prior's score, and a model
//! fitted on the task's own evidence. Also, at equal recall, each ranking's wrong serves.

use std::path::PathBuf;

use leanlm_core::stats::wilson;
use leanlm_semantic::{
    CONFIDENCE, EVIDENCE_WINDOW, Evidence, FEATURE_NAMES, Features, Query, Sample, Verified, Verifier, calibrate, veto,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// A way to score a pair; `None`: never served.
type Score<'a> = &'a dyn Fn(&Pair) -> Option<f32>;

struct Pair {
    sim: f32,
    same: bool,
    vetoed: bool,
    features: Features,
    new: String,
    cached: String,
}

fn load(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        // `text,category`; the text may be quoted with commas inside.
        let Some(comma) = line.rfind(',') else { continue };
        let (t, c) = (&line[..comma], &line[comma + 1..]);
        let t = t.trim_matches('"').replace("\"\"", "\"");
        out.push((t, c.trim().to_owned()));
    }
    out
}

/// Replays a split as a cache's traffic: each query against the nearest of those before it.
fn pairs(label: &str, rows: &[(String, String)], limit: usize, min_sim: f32) -> Vec<Pair> {
    let mut rows: Vec<&(String, String)> = rows.iter().collect();
    rows.shuffle(&mut StdRng::seed_from_u64(77));
    rows.truncate(limit);
    let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let vectors = leanlm_embed::cached::embed_cached(label, &texts).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for i in 1..rows.len() {
        let (j, sim) = (0..i)
            .map(|j| (j, leanlm_embed::cosine(&vectors[i], &vectors[j])))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        if sim < min_sim {
            continue;
        }
        fn q(t: &str) -> Query<'_> {
            Query {
                context: "",
                preamble: Some(""),
                last: t,
            }
        }
        let (a, b) = (q(&rows[i].0), q(&rows[j].0));
        out.push(Pair {
            sim,
            same: rows[i].1 == rows[j].1,
            vetoed: veto(&rows[i].0, &rows[j].0).is_some(),
            features: Features::measure(a, b, sim, None),
            new: rows[i].0.clone(),
            cached: rows[j].0.clone(),
        });
    }
    out
}

/// Serves `eval` at the threshold calibrated on `evidence` for scores from `score` (`None`: never served).
fn serve(
    evidence: &[Pair],
    eval: &[Pair],
    bound: f64,
    score: &dyn Fn(&Pair) -> Option<f32>,
) -> (Option<f32>, usize, usize, usize) {
    let verified: Vec<Verified> = evidence
        .iter()
        .filter_map(|p| {
            score(p).map(|s| Verified {
                similarity: s,
                agreed: p.same,
            })
        })
        .collect();
    let est = calibrate(&verified, bound);
    let Some(t) = est.threshold else {
        return (None, 0, 0, eval.iter().filter(|p| p.same).count());
    };
    let served: Vec<&Pair> = eval.iter().filter(|p| score(p).is_some_and(|s| s >= t)).collect();
    let wrong = served.iter().filter(|p| !p.same).count();
    (Some(t), served.len(), wrong, eval.iter().filter(|p| p.same).count())
}

/// Wrong serves when serving the top of a ranking down to `recall` of the pairs that share an answer.
fn wrong_at_recall(eval: &[Pair], recall: f64, score: &dyn Fn(&Pair) -> Option<f32>) -> Option<usize> {
    let mut ranked: Vec<(f32, bool)> = eval.iter().filter_map(|p| score(p).map(|s| (s, p.same))).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let need = (recall * eval.iter().filter(|p| p.same).count() as f64).ceil() as usize;
    let (mut right, mut wrong) = (0, 0);
    for (_, same) in ranked {
        if right >= need {
            return Some(wrong);
        }
        if same {
            right += 1;
        } else {
            wrong += 1;
        }
    }
    (right >= need).then_some(wrong)
}

fn main() {
    let data = std::env::var_os("LEANLM_SHARED_DATA")
        .map(|d| PathBuf::from(d).join("banking77"))
        .unwrap_or_default();
    if !data.join("test.csv").exists() {
        eprintln!(
            "Banking77 not found at {} (set LEANLM_SHARED_DATA to the folder of public data sets; Banking77 is \
             at github.com/PolyAI-LDN/task-specific-datasets, CC BY 4.0)",
            data.display()
        );
        std::process::exit(1);
    }
    let min_sim: f32 = 0.6;
    if std::env::args().nth(1).as_deref() == Some("fit") {
        let train = load(&data.join("train.csv"));
        let p = pairs("banking77-train", &train, 6000, min_sim);
        let samples: Vec<(Features, bool)> = p.iter().map(|p| (p.features, p.same)).collect();
        let v = Verifier::fit(&samples).expect("enough pairs of both outcomes");
        println!(
            "{} would-be hits from the train split, {:.1}% share an intent",
            p.len(),
            100.0 * p.iter().filter(|p| p.same).count() as f64 / p.len() as f64
        );
        println!("intercept {:+.4}", v.weights[0]);
        for (n, w) in FEATURE_NAMES.iter().zip(&v.weights[1..]) {
            println!("{n:>22} {w:+.4}");
        }
        println!("\npub const PRIOR: [f64; FEATURES + 1] = {:?};", v.weights);
        return;
    }
    let bound: f64 = std::env::var("FAQ_BOUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.05);
    let evidence_n: usize = std::env::var("FAQ_EVIDENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let test = load(&data.join("test.csv"));
    let all = pairs("banking77-test", &test, test.len(), min_sim);
    let cut = evidence_n.min(all.len() / 2);
    let (evidence, eval) = all.split_at(cut);
    println!(
        "Banking77 test split as FAQ traffic (held out): {} would-be hits at similarity >= {min_sim}; {} as the \
         task's evidence, {} served; bound {:.0}%",
        all.len(),
        evidence.len(),
        eval.len(),
        bound * 100.0
    );
    println!(
        "{:.1}% of the served half share an intent with their nearest earlier query\n",
        100.0 * eval.iter().filter(|p| p.same).count() as f64 / eval.len() as f64
    );

    let own = {
        // Fitted on the first half of the evidence, calibrated on the second, so the threshold is read off
        // scores the model was not fitted on.
        let half = evidence.len() / 2;
        let samples: Vec<(Features, bool)> = evidence[..half].iter().map(|p| (p.features, p.same)).collect();
        Verifier::fit(&samples)
    };
    let prior = Verifier::prior();
    let cosine = |p: &Pair| Some(p.sim);
    let guarded = |p: &Pair| (!p.vetoed).then_some(p.sim);
    let prior_score = |p: &Pair| Some(prior.score(&p.features));
    let own_score = |p: &Pair| own.as_ref().map(|v| v.score(&p.features));
    let judgements: [(&str, Score, &[Pair]); 4] = [
        ("plain cosine threshold", &cosine, evidence),
        ("written guards as vetoes (today)", &guarded, evidence),
        ("learned: public prior", &prior_score, evidence),
        (
            "learned: the task's own model",
            &own_score,
            &evidence[evidence.len() / 2..],
        ),
    ];
    println!("| judgement | threshold | served | of true duplicates | wrong among served [95% interval] |");
    println!("|---|---|---|---|---|");
    for (name, score, ev) in &judgements {
        let (t, served, wrong, dups) = serve(ev, eval, bound, *score);
        let w = wilson(wrong as u64, served as u64, CONFIDENCE);
        println!(
            "| {name} | {} | {served} | {:.1}% | {:.1}% [{:.1}–{:.1}] |",
            t.map_or("none".into(), |t| format!("{t:.3}")),
            100.0 * (served - wrong) as f64 / dups.max(1) as f64,
            100.0 * w.rate,
            100.0 * w.low,
            100.0 * w.high
        );
    }
    // As the gateway reads it (`judgement = "learned"`): the evidence through `Evidence`, which keeps
    // whichever of the similarity, the prior and the task's cross-fitted own model serves the most of it.
    let mut gateway = Evidence::new(true, EVIDENCE_WINDOW);
    gateway.extend(evidence.iter().map(|p| Sample {
        similarity: p.sim,
        features: Some(p.features),
        agreed: p.same,
    }));
    let est = gateway.estimate(bound);
    let dups = eval.iter().filter(|p| p.same).count();
    let served: Vec<&Pair> = eval
        .iter()
        .filter(|p| {
            est.threshold
                .is_some_and(|t| gateway.score(p.sim, Some(&p.features)).is_some_and(|s| s >= t))
        })
        .collect();
    let wrong = served.iter().filter(|p| !p.same).count();
    let w = wilson(wrong as u64, served.len() as u64, CONFIDENCE);
    println!(
        "| learned, as the gateway reads it (chose: {}) | {} | {} | {:.1}% | {:.1}% [{:.1}–{:.1}] |",
        gateway.judge().as_str(),
        est.threshold.map_or("none".into(), |t| format!("{t:.3}")),
        served.len(),
        100.0 * (served.len() - wrong) as f64 / dups.max(1) as f64,
        100.0 * w.rate,
        100.0 * w.low,
        100.0 * w.high
    );
    println!("\nWrong serves at equal recall (served half):\n");
    println!("| recall | plain cosine | guards as vetoes | public prior | task's own model |");
    println!("|---|---|---|---|---|");
    for recall in [0.2, 0.35, 0.5, 0.7] {
        let cell = |s: &dyn Fn(&Pair) -> Option<f32>| {
            wrong_at_recall(eval, recall, s).map_or("unreachable".into(), |w| w.to_string())
        };
        println!(
            "| {:.0}% | {} | {} | {} | {} |",
            recall * 100.0,
            cell(&cosine),
            cell(&guarded),
            cell(&prior_score),
            cell(&own_score)
        );
    }
    if std::env::var_os("FAQ_SHOW").is_some() {
        let mut wrong: Vec<&Pair> = eval.iter().filter(|p| !p.same && p.sim > 0.85).collect();
        wrong.sort_by(|a, b| b.sim.total_cmp(&a.sim));
        for p in wrong.iter().take(20) {
            println!(
                "{:.3} prior {:.3} | {} | {}",
                p.sim,
                prior.score(&p.features),
                p.new,
                p.cached
            );
        }
    }
}
