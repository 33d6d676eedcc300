//! LeanLM's bounded-error semantic cache next to vCache's verified per-entry thresholds and plain cosine
//! thresholds, on the same stream of real questions with the same embeddings, in one run.
//!
//! The stream is every Banking77 question (train and test, ~13,000) in a shuffled order; the "answer" to a
//! question is its intent, so a cached answer is right exactly when the cached question has the same
//! intent (the classification benchmark vCache's authors use). Each policy starts from an empty cache:
//!
//! - **static t**: the nearest cached question at cosine ≥ t is served (GPTCache's and Bifrost's rule).
//! - **vCache δ** (`VerifiedDecisionPolicy`, vcache-project/vCache): every cached entry learns a sigmoid of
//!   similarity from the outcomes of the requests it was nearest to; a request is served unless a random
//!   draw falls under the exploration probability τ that keeps P(wrong) ≤ δ, from the entry's fitted
//!   threshold and its uncertainty. Explored requests go upstream, label the entry, and a wrong would-be
//!   hit's question joins the cache. "as published" follows the reference code, where a fit over outcomes
//!   of one kind fails and the entry keeps exploring; "one-sided fits" treats such outcomes as separated
//!   (what the paper describes), so an entry serves after six agreeing outcomes.
//! - **LeanLM b** (the gateway's own rules, `leanlm_semantic::judge` and `calibrate`): the nearest of four
//!   neighbours at cosine ≥ 0.8 that the lexical guards let through is a would-be hit; it is served when its
//!   similarity clears the task's threshold, read off the task's verified would-be hits so that the upper
//!   end of the false-hit rate's 95% interval stays under b; otherwise (and for 5% of hits) it goes upstream
//!   and is verified. Misses join the cache (10,000 entries, oldest overwritten).
//!
//! vCache's δ bounds wrong answers among *all* requests (an upstream answer is never wrong); LeanLM's b
//! bounds them among *served hits*, the stricter promise. Both columns are reported.
//!
//!     cargo run --release -p leanlm --example vcache [-- SEEDS]
//!
//! SEEDS (default 3) shuffles are run and averaged. Embeddings come from `common/banking77.rs` (~5 minutes
//! the first time). Prints a Markdown report.

use std::collections::{HashMap, VecDeque};

use leanlm_semantic::{Decision, Estimate, Partition, Query, Verified, calibrate, judge};

#[path = "common/banking77.rs"]
mod banking77;

/// The gateway's defaults (`SemanticConfig`, `semantic.rs`).
const MIN_SIMILARITY: f32 = 0.8;
const VERIFY: f64 = 0.05;
const NEIGHBOURS: usize = 4;
const EVIDENCE_WINDOW: usize = 5_000;
const CAPACITY: usize = 10_000;
const BOUNDS: [f64; 6] = [0.01, 0.02, 0.03, 0.04, 0.05, 0.1];

/// xorshift64*: reproducible shuffles and draws without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// One request of the stream.
struct Request<'a> {
    /// The question's index in the data set.
    index: usize,
    text: &'a str,
    intent: u16,
    vector: &'a [f32],
}

/// What a policy did with a request: served from the cache (and whether rightly), or sent upstream.
#[derive(Clone, Copy, PartialEq)]
enum Served {
    Upstream,
    Cache { right: bool },
}

trait Policy {
    fn request(&mut self, r: &Request, rng: &mut Rng) -> Served;
}

struct Static {
    threshold: f32,
    cache: Partition<u16>,
}

impl Policy for Static {
    fn request(&mut self, r: &Request, _: &mut Rng) -> Served {
        if let Some(n) = self.cache.nearest(r.vector, 1).first()
            && n.similarity >= self.threshold
            && let Some(&intent) = self.cache.get(n.slot)
        {
            return Served::Cache {
                right: intent == r.intent,
            };
        }
        self.cache.insert(r.vector, r.intent);
        Served::Upstream
    }
}

struct LeanLm<'a> {
    bound: f64,
    texts: &'a [&'a str],
    /// Entries: the index of the cached question and its intent.
    cache: Partition<(usize, u16)>,
    evidence: VecDeque<Verified>,
    estimate: Estimate,
}

impl LeanLm<'_> {
    /// The gateway's `nearest_allowed`: the most similar neighbour the judgement lets through.
    fn would_be_hit(&self, r: &Request) -> Option<(u16, f32)> {
        for n in self.cache.nearest(r.vector, NEIGHBOURS) {
            if n.similarity < MIN_SIMILARITY {
                break;
            }
            let Some(&(question, intent)) = self.cache.get(n.slot) else {
                continue;
            };
            let new = Query {
                context: "",
                preamble: Some(""),
                last: r.text,
            };
            let cached = Query {
                context: "",
                preamble: Some(""),
                last: self.texts[question],
            };
            if let Decision::Candidate { similarity } = judge(new, cached, n.similarity, None, MIN_SIMILARITY) {
                return Some((intent, similarity));
            }
        }
        None
    }
}

impl Policy for LeanLm<'_> {
    fn request(&mut self, r: &Request, rng: &mut Rng) -> Served {
        let Some((intent, similarity)) = self.would_be_hit(r) else {
            self.cache.insert(r.vector, (r.index, r.intent));
            return Served::Upstream;
        };
        let right = intent == r.intent;
        if self.estimate.threshold.is_some_and(|t| similarity >= t) && rng.uniform() >= VERIFY {
            return Served::Cache { right };
        }
        self.evidence.push_back(Verified {
            similarity,
            agreed: right,
        });
        if self.evidence.len() > EVIDENCE_WINDOW {
            self.evidence.pop_front();
        }
        self.estimate = calibrate(self.evidence.make_contiguous(), self.bound);
        Served::Upstream
    }
}

/// A cached question under vCache: its intent and the (similarity, right) outcomes of requests it was
/// nearest to.
struct Entry {
    intent: u16,
    outcomes: Vec<(f64, bool)>,
}

struct VCache {
    delta: f64,
    /// Fit one-sided outcomes as separated instead of failing (see the module comment).
    one_sided: bool,
    cache: Partition<Entry>,
}

/// The standard normal quantile.
fn ppf(q: f64) -> f64 {
    let z = leanlm_validate::stats::z;
    if q >= 0.5 { z(2.0 * q - 1.0) } else { -z(1.0 - 2.0 * q) }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// vCache's variance of the threshold when the outcomes separate perfectly, by number of outcomes (6–48;
/// the last beyond), from the reference code.
const SEPARATED_VARIANCE: [f64; 43] = [
    0.035445, 0.028285, 0.026436, 0.021349, 0.019371, 0.012615, 0.011433, 0.010228, 0.009963, 0.009253, 0.011674,
    0.013015, 0.010897, 0.011841, 0.013081, 0.010585, 0.014255, 0.012058, 0.013002, 0.011715, 0.00839, 0.008839,
    0.010628, 0.009899, 0.008033, 0.00457, 0.007335, 0.008932, 0.00729, 0.007445, 0.00761, 0.011423, 0.011233,
    0.006783, 0.005233, 0.00872, 0.010005, 0.01199, 0.00977, 0.01891, 0.01513, 0.02109, 0.01531,
];

impl VCache {
    /// The entry's threshold, steepness and the threshold's variance: an unpenalised logistic regression of
    /// rightness on similarity (Newton's method; on separated outcomes it runs until the slope is steep),
    /// the variance by the delta method or, when separated, from vCache's table. `None`: explore.
    fn fit(&self, outcomes: &[(f64, bool)]) -> Option<(f64, f64, f64)> {
        if outcomes.len() < 6 {
            return None;
        }
        let lowest_right = outcomes
            .iter()
            .filter(|o| o.1)
            .map(|o| o.0)
            .fold(f64::INFINITY, f64::min);
        let highest_wrong = outcomes
            .iter()
            .filter(|o| !o.1)
            .map(|o| o.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let one_sided = lowest_right.is_infinite() || highest_wrong.is_infinite();
        if one_sided && !self.one_sided {
            return None;
        }
        let hessian = |b: f64, g: f64| {
            let (mut h00, mut h01, mut h11) = (0.0, 0.0, 0.0);
            for &(s, _) in outcomes {
                let p = sigmoid(b + g * s);
                let w = p * (1.0 - p);
                h00 += w;
                h01 += w * s;
                h11 += w * s * s;
            }
            (h00, h01, h11)
        };
        let (mut b, mut g) = (0.0f64, 0.0f64);
        for _ in 0..200 {
            let (mut d0, mut d1) = (0.0, 0.0);
            for &(s, y) in outcomes {
                let e = f64::from(u8::from(y)) - sigmoid(b + g * s);
                d0 += e;
                d1 += e * s;
            }
            let (h00, h01, h11) = hessian(b, g);
            let det = h00 * h11 - h01 * h01;
            if det.abs() < 1e-300 {
                break;
            }
            let step0 = (h11 * d0 - h01 * d1) / det;
            let step1 = (h00 * d1 - h01 * d0) / det;
            b += step0;
            g += step1;
            if step0.abs() + step1.abs() < 1e-10 || g.abs() > 1e6 || !b.is_finite() || !g.is_finite() {
                break;
            }
        }
        if !b.is_finite() || !g.is_finite() {
            return None;
        }
        let gamma = g.max(1e-6);
        let t_hat = ((-b / gamma).clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
        let gamma = (gamma * 1000.0).round() / 1000.0;
        let variance = if lowest_right > highest_wrong {
            SEPARATED_VARIANCE[(outcomes.len() - 6).min(SEPARATED_VARIANCE.len() - 1)]
        } else {
            let (h00, h01, h11) = hessian(b, g);
            let det = h00 * h11 - h01 * h01;
            if det.abs() < 1e-300 {
                return None;
            }
            let (c00, c01, c11) = (h11 / det, -h01 / det, h00 / det);
            let (d0, d1) = (-1.0 / gamma, b / (gamma * gamma));
            (d0 * d0 * c00 + 2.0 * d0 * d1 * c01 + d1 * d1 * c11).max(0.0)
        };
        Some((t_hat, gamma, variance))
    }

    /// The probability of exploring at similarity `s`: the least over vCache's grid of ε.
    fn tau(&self, s: f64, t_hat: f64, gamma: f64, variance: f64) -> f64 {
        (0..50)
            .map(|i| {
                let eps = 1e-6 + (1.0 - 2e-6) * f64::from(i) / 49.0;
                let t = (t_hat + ppf(1.0 - eps) * variance.sqrt()).clamp(0.0, 1.0);
                let alpha = (1.0 - eps) * sigmoid(gamma * (s - t));
                1.0 - self.delta / (1.0 - alpha)
            })
            .fold(f64::INFINITY, f64::min)
    }
}

impl Policy for VCache {
    fn request(&mut self, r: &Request, rng: &mut Rng) -> Served {
        let Some(n) = self.cache.nearest(r.vector, 1).first().copied() else {
            self.cache.insert(
                r.vector,
                Entry {
                    intent: r.intent,
                    outcomes: Vec::new(),
                },
            );
            return Served::Upstream;
        };
        let s = (f64::from(n.similarity) * 1000.0).round() / 1000.0;
        let Some(entry) = self.cache.get(n.slot) else {
            return Served::Upstream;
        };
        let right = entry.intent == r.intent;
        let explore = match self.fit(&entry.outcomes) {
            None => true,
            Some((t_hat, gamma, variance)) => rng.uniform() <= self.tau(s, t_hat, gamma, variance),
        };
        if !explore {
            return Served::Cache { right };
        }
        if let Some(entry) = self.cache.get_mut(n.slot) {
            entry.outcomes.push((s, right));
        }
        if !right {
            self.cache.insert(
                r.vector,
                Entry {
                    intent: r.intent,
                    outcomes: Vec::new(),
                },
            );
        }
        Served::Upstream
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    requests: u64,
    served: u64,
    wrong: u64,
}

impl Tally {
    fn add(&mut self, s: Served) {
        self.requests += 1;
        if let Served::Cache { right } = s {
            self.served += 1;
            self.wrong += u64::from(!right);
        }
    }
}

fn pct(n: u64, d: u64) -> f64 {
    n as f64 / d.max(1) as f64 * 100.0
}

fn main() -> anyhow::Result<()> {
    let seeds: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("SEEDS must be a positive number, not {s:?}"))?,
        None => 3,
    };
    anyhow::ensure!(seeds > 0, "SEEDS must be a positive number");
    let mut questions = banking77::questions("train")?;
    questions.extend(banking77::questions("test")?);
    let vectors = banking77::embeddings(&questions)?;
    let mut intents: HashMap<&str, u16> = HashMap::new();
    let labels: Vec<u16> = questions
        .iter()
        .map(|q| {
            let next = intents.len() as u16;
            *intents.entry(q.intent.as_str()).or_insert(next)
        })
        .collect();
    let texts: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
    let dim = vectors.first().map_or(384, Vec::len);

    let names: Vec<String> = [0.8, 0.9, 0.95]
        .iter()
        .map(|t| format!("static cosine {t}"))
        .chain(BOUNDS.iter().flat_map(|d| {
            [
                format!("vCache δ={d} (as published)"),
                format!("vCache δ={d} (one-sided fits)"),
            ]
        }))
        .chain(BOUNDS.iter().map(|b| format!("LeanLM bound {b}")))
        .collect();
    let mut totals = vec![[Tally::default(); 2]; names.len()];
    for seed in 1..=seeds {
        let mut order: Vec<usize> = (0..questions.len()).collect();
        Rng(0x9e37_79b9_7f4a_7c15 ^ seed).shuffle(&mut order);
        let mut policies: Vec<Box<dyn Policy + '_>> = Vec::new();
        for t in [0.8, 0.9, 0.95] {
            policies.push(Box::new(Static {
                threshold: t,
                cache: Partition::new(dim, CAPACITY),
            }));
        }
        for delta in BOUNDS {
            for one_sided in [false, true] {
                policies.push(Box::new(VCache {
                    delta,
                    one_sided,
                    cache: Partition::new(dim, CAPACITY),
                }));
            }
        }
        for bound in BOUNDS {
            policies.push(Box::new(LeanLm {
                bound,
                texts: &texts,
                cache: Partition::new(dim, CAPACITY),
                evidence: VecDeque::new(),
                estimate: calibrate(&[], bound),
            }));
        }
        for (p, policy) in policies.iter_mut().enumerate() {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            for (k, &i) in order.iter().enumerate() {
                let r = Request {
                    index: i,
                    text: texts[i],
                    intent: labels[i],
                    vector: &vectors[i],
                };
                let served = policy.request(&r, &mut rng);
                totals[p][0].add(served);
                if k >= order.len() / 2 {
                    totals[p][1].add(served);
                }
            }
            eprintln!("seed {seed}: {}", names[p]);
        }
    }

    println!(
        "Banking77 with MiniLM: {} questions in a shuffled stream, {} intents, {seeds} shuffles averaged; \
         an answer is right when the cached question has the request's intent.\n",
        questions.len(),
        intents.len()
    );
    println!(
        "| policy | served from cache | wrong answers, of all requests | wrong, of served hits | second half: served | second half: wrong of all | second half: wrong of served |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, [all, late]) in names.iter().zip(&totals) {
        println!(
            "| {name} | {:.1}% | {:.2}% | {:.2}% | {:.1}% | {:.2}% | {:.2}% |",
            pct(all.served, all.requests),
            pct(all.wrong, all.requests),
            pct(all.wrong, all.served),
            pct(late.served, late.requests),
            pct(late.wrong, late.requests),
            pct(late.wrong, late.served),
        );
    }
    Ok(())
}
