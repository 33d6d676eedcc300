//! Learned routing on MMLU (`$LEANLM_SHARED_DATA/routellm-mmlu`, Apache-2.0, from lm-sys/RouteLLM): the real
//! per-question correctness of Mixtral-8x7B-Instruct (cheap) and GPT-4-1106-preview (strong) on 14,042
//! questions. The router `leanlm train-router` fits (`leanlm_route::fit`: logistic models on each prompt's
//! MiniLM embedding and length, and the similarity-weighted outcomes of the nearest training prompts, the
//! best on the calibration split) is trained on 60% of the questions, chosen and its threshold calibrated on
//! 20%, and everything is reported on the last 20%: the cost/accuracy
//! curve, APGR, CPT(50%), CPT(80%), next to a random router measured the same way, and the cost saved at 95%
//! of GPT-4's accuracy. Prompts RouteLLM lists as contaminated are left out.
//!
//!   cargo run --release -p leanlm-route --example mmlu            # embeds once (~5 min), then seconds
//!
//! Prices come from the bundled table: Mixtral-8x7B on Together, and gpt-4-turbo for GPT-4-1106-preview
//! (the same model, priced under its current name). Embeddings are kept on disk (`leanlm_embed::cached`);
//! nothing is committed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use leanlm_route::{Outcome, apgr, calibrate, cpt, curve, pgr, random_curve, route_with};
use rand::SeedableRng;
use rand::seq::SliceRandom;

const CHEAP: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
const STRONG: &str = "gpt-4-1106-preview";
const STRONG_PRICED_AS: &str = "gpt-4-turbo";

fn data_dir() -> PathBuf {
    match std::env::var_os("LEANLM_SHARED_DATA") {
        Some(d) => PathBuf::from(d).join("routellm-mmlu"),
        None => {
            eprintln!("set LEANLM_SHARED_DATA to the folder of public data sets (see bench/RESULTS.md)");
            std::process::exit(2);
        }
    }
}

struct Question {
    prompt: String,
    cheap: bool,
    strong: bool,
}

fn load(dir: &Path) -> anyhow::Result<Vec<Question>> {
    let contaminated: HashSet<String> = std::fs::read_to_string(dir.join("contaminated_prompts.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("eval_prompt").and_then(|p| p.as_str()).map(str::to_owned))
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("responses"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let mut r = csv::Reader::from_path(&f).with_context(|| format!("reading {}", f.display()))?;
        let headers = r.headers()?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .context(format!("no column {name}"))
        };
        let (c, s) = (col(CHEAP)?, col(STRONG)?);
        for row in r.records() {
            let row = row?;
            let prompt = row[0].to_owned();
            if contaminated.contains(&prompt) {
                continue;
            }
            out.push(Question {
                cheap: &row[c] == "True",
                strong: &row[s] == "True",
                prompt,
            });
        }
    }
    Ok(out)
}

/// Embeds every prompt once (`leanlm_embed::cached`).
fn embeddings(questions: &[Question]) -> anyhow::Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = questions.iter().map(|q| q.prompt.as_str()).collect();
    leanlm_embed::cached::embed_cached("mmlu", &texts)
        .context("embedding MMLU (the local model: run scripts/fetch-model)")
}

fn main() -> anyhow::Result<()> {
    let questions = load(&data_dir())?;
    let vectors = embeddings(&questions)?;
    let table = leanlm_cost::PriceTable::bundled();
    let (cheap_price, strong_price) = (
        table.lookup(CHEAP).context("Mixtral is not in the price table")?.price,
        table
            .lookup(STRONG_PRICED_AS)
            .context("gpt-4-turbo is not in the price table")?
            .price,
    );
    // A question costs its prompt plus a one-token answer ("A".."D").
    let cost = |p: &leanlm_cost::Price, tokens: u64| (tokens as f64 * p.input + p.output) / 1e6;
    let features: Vec<Vec<f32>> = questions
        .iter()
        .zip(&vectors)
        .map(|(q, v)| leanlm_route::features(v, &q.prompt))
        .collect();
    let outcomes: Vec<Outcome> = questions
        .iter()
        .map(|q| {
            let tokens = leanlm_cost::tokens::count_text("gpt-4", &q.prompt) + 8;
            Outcome {
                cheap_correct: q.cheap,
                strong_correct: q.strong,
                cheap_cost: cost(&cheap_price, tokens),
                strong_cost: cost(&strong_price, tokens),
            }
        })
        .collect();

    let mut order: Vec<usize> = (0..questions.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(42));
    let (train, rest) = order.split_at(questions.len() * 6 / 10);
    let (cal, test) = rest.split_at(rest.len() / 2);
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<Outcome>) {
        (
            idx.iter().map(|i| features[*i].clone()).collect(),
            idx.iter().map(|i| outcomes[*i]).collect(),
        )
    };
    let (x_train, o_train) = pick(train);
    let (x_cal, o_cal) = pick(cal);
    let (x_test, o_test) = pick(test);

    // What `leanlm train-router` fits: logistic models, then similarity-weighted nearest neighbours alone or
    // blended, whichever ranks the calibration split best. The best logistic one is shown beside it.
    let started = std::time::Instant::now();
    let dim = vectors[0].len();
    let (linear_model, linear_cal) = leanlm_route::fit_linear(&x_train, &o_train, &x_cal, &o_cal);
    let (scorer, chosen_cal) = leanlm_route::fit(&x_train, &o_train, &x_cal, &o_cal, dim);
    let fit_secs = started.elapsed().as_secs_f64();
    let acc = |o: &[Outcome], f: fn(&Outcome) -> bool| o.iter().filter(|o| f(o)).count() as f64 / o.len() as f64;
    let (cheap_acc, strong_acc) = (acc(&o_test, |o| o.cheap_correct), acc(&o_test, |o| o.strong_correct));
    let scores: Vec<f64> = x_test.iter().map(|x| scorer.score(x)).collect();
    let learned = curve(&scores, &o_test, 100);
    let linear_scores: Vec<f64> = x_test.iter().map(|x| linear_model.score(x)).collect();
    let linear = curve(&linear_scores, &o_test, 100);
    let random = random_curve(&o_test, 100, 200, 7);

    let all_strong: f64 = o_test.iter().map(|o| o.strong_cost).sum();
    let cal_scores: Vec<f64> = x_cal.iter().map(|x| scorer.score(x)).collect();
    let target = 0.95 * acc(&o_cal, |o| o.strong_correct);
    let threshold = calibrate(&cal_scores, &o_cal, target);

    println!(
        "MMLU, {} questions ({} train / {} calibration / {} test); cheap {CHEAP} {:.1}%, strong {STRONG} {:.1}% on the test split",
        questions.len(),
        train.len(),
        cal.len(),
        test.len(),
        cheap_acc * 100.0,
        strong_acc * 100.0
    );
    println!(
        "router: {} on the MiniLM embedding + length (calibration APGR {chosen_cal:.3}; best logistic alone: {}, \
         calibration APGR {linear_cal:.3}); candidates fitted and chosen in {fit_secs:.1} s\n",
        scorer.describe(),
        linear_model.describe()
    );
    println!("| router | APGR | CPT(50%) | CPT(80%) |\n|---|---|---|---|");
    let learned_name = format!("LeanLM router ({})", scorer.describe());
    let linear_name = format!("logistic alone ({})", linear_model.describe());
    for (name, c) in [
        (learned_name.as_str(), &learned),
        (linear_name.as_str(), &linear),
        ("random", &random),
    ] {
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
        println!(
            "| {name} | {:.3} | {} | {} |",
            apgr(c, cheap_acc, strong_acc),
            show(cpt(c, cheap_acc, strong_acc, 0.5)),
            show(cpt(c, cheap_acc, strong_acc, 0.8))
        );
    }
    println!(
        "\n| strong calls | learned accuracy | learned PGR | random accuracy | cost (learned) |\n|---|---|---|---|---|"
    );
    for i in (0..=100).step_by(10) {
        let (l, r) = (&learned[i], &random[i]);
        println!(
            "| {:.0}% | {:.1}% | {:.2} | {:.1}% | ${:.2} |",
            l.strong_share * 100.0,
            l.accuracy * 100.0,
            pgr(l.accuracy, cheap_acc, strong_acc),
            r.accuracy * 100.0,
            l.cost
        );
    }
    match threshold {
        Some(t) => {
            let p = route_with(&scores, t, &o_test);
            println!(
                "\ncalibrated to 95% of GPT-4's accuracy ({:.1}% on the calibration split): on the test split {:.1}% accuracy \
                 ({:.1}% of GPT-4's), {:.1}% of calls to GPT-4, cost ${:.2} against ${:.2} all-GPT-4: {:.1}% saved",
                target * 100.0,
                p.accuracy * 100.0,
                p.accuracy / strong_acc * 100.0,
                p.strong_share * 100.0,
                p.cost,
                all_strong,
                (1.0 - p.cost / all_strong) * 100.0
            );
            // A cascade with the same score: Mixtral answers every question, GPT-4 those the score doubts.
            // This data set has the models' correctness but not their answers, so the answer-based scores
            // (log-probabilities, sample agreement, label checks) cannot be measured on it: the score here
            // is the prompt's alone, and the cascade differs from the router only in paying Mixtral on
            // every escalated call.
            let escalated: f64 = scores
                .iter()
                .zip(&o_test)
                .filter(|(s, _)| **s < t)
                .map(|(_, o)| o.strong_cost)
                .sum();
            let cascade_cost = o_test.iter().map(|o| o.cheap_cost).sum::<f64>() + escalated;
            println!(
                "as a cascade with the same (prompt-only) score: the same accuracy, cost ${:.2}: {:.1}% saved",
                cascade_cost,
                (1.0 - cascade_cost / all_strong) * 100.0
            );
        }
        None => println!("\nno threshold reaches 95% of GPT-4's accuracy on the calibration split"),
    }
    Ok(())
}
