//! `leanlm train-cascade`: each cheap model answers a sample of the task's logged calls, each answer is
//! scored against the logged one, and the cascade's acceptance scores and thresholds are fitted on those
//! outcomes; also the cascade's judgement of answers during `leanlm validate --candidate cascade:…`.

use anyhow::Context;
use futures_util::StreamExt;
use leanlm_gateway::Replayer;
use leanlm_route::cascade::{self, Chain, Evidence, Example, Setup};
use leanlm_validate::Replacement;
use leanlm_validate::run::{Accept, Logged, Reply};
use leanlm_validate::score::{self, ScorerSpec, TaskContext};

use crate::StoreArgs;
use crate::validate::{LocalEmbedder, find_task};

#[derive(clap::Args)]
pub struct TrainCascadeArgs {
    /// The task (id or name).
    #[arg(long)]
    pub task: String,
    /// The model that answers first; several (`--cheap a,b` or repeated) answer in turn, each judged by its
    /// own acceptance score, up to three.
    #[arg(long, value_delimiter = ',', required = true)]
    pub cheap: Vec<String>,
    /// The model unsure answers escalate to (default: the model that served most of the task's calls).
    #[arg(long)]
    pub strong: Option<String>,
    /// The agreement with the reference to keep on the calibration calls. Above the bound validation
    /// asks for (95% by default), so that the validated lower confidence bound clears it.
    #[arg(long, default_value_t = 0.98)]
    pub bound: f64,
    /// Logged calls the cheap model answers to learn from (they are then left out of the cascade's
    /// validations).
    #[arg(long, default_value_t = 400)]
    pub sample: usize,
    /// Ask the cheap model for token log-probabilities (OpenAI-compatible providers).
    #[arg(long)]
    pub logprobs: bool,
    /// Cheap samples per call: 2 adds their agreement to the score, at twice the cheap cost.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub samples: u8,
    /// label, json[:tol=X], similarity[:T], regex:PATTERN, json-path:PATH (default: from the task's type).
    #[arg(long)]
    pub scorer: Option<String>,
    /// Replays in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A cheap model's answer to one logged call: the first sample, and the second if drawn.
struct Answered {
    call: usize,
    first: Reply,
    second: Option<Reply>,
}

/// Every sampled call answered by one cheap model (`None` where its replay failed), and what it spent.
async fn answer_all(
    replayer: &Replayer,
    calls: &[Logged],
    cheap: &str,
    a: &TrainCascadeArgs,
) -> anyhow::Result<(Vec<Option<Answered>>, f64)> {
    let results: Vec<Result<Answered, String>> =
        futures_util::stream::iter(calls.iter().enumerate().map(|(i, call)| async move {
            let (first, second) = leanlm_validate::run::cheap_samples(
                replayer,
                &call.format,
                &call.request,
                cheap,
                a.logprobs,
                usize::from(a.samples),
            )
            .await?;
            Ok(Answered {
                call: i,
                first,
                second: second.transpose()?,
            })
        }))
        .buffer_unordered(a.concurrency.max(1))
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut answered: Vec<Option<Answered>> = (0..calls.len()).map(|_| None).collect();
    for r in results {
        match r {
            Ok(ans) => {
                let i = ans.call;
                answered[i] = Some(ans);
            }
            Err(e) => failures.push(e),
        }
    }
    anyhow::ensure!(
        failures.len() * 5 <= calls.len(),
        "{} of {} replays through {cheap} failed, e.g.: {}",
        failures.len(),
        calls.len(),
        failures.first().cloned().unwrap_or_default()
    );
    let spent = answered
        .iter()
        .flatten()
        .map(|a| a.first.cost_usd.unwrap_or(0.0) + a.second.as_ref().and_then(|s| s.cost_usd).unwrap_or(0.0))
        .sum();
    Ok((answered, spent))
}

pub fn train_cascade(store_args: &StoreArgs, a: TrainCascadeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.bound),
        "--bound is an agreement between 0 and 1, e.g. 0.95"
    );
    anyhow::ensure!(
        a.sample >= cascade::MIN_EXAMPLES,
        "--sample must be at least {}",
        cascade::MIN_EXAMPLES
    );
    let config = store_args.config()?;
    let mut store = store_args.open()?;
    let task = find_task(&store, &a.task)?;
    let routes = leanlm_gateway::route::Routes::new(std::sync::Arc::new(config.clone()));
    anyhow::ensure!(
        (1..=cascade::MAX_STAGES).contains(&a.cheap.len()),
        "--cheap names 1 to {} models, not {}",
        cascade::MAX_STAGES,
        a.cheap.len()
    );
    let mut cheap_price = Vec::with_capacity(a.cheap.len());
    for cheap in &a.cheap {
        let target = routes
            .resolve(cheap)
            .map_err(|e| anyhow::anyhow!("--cheap: {}", e.message))?;
        cheap_price.push(target.first().and_then(|t| t.price));
    }
    let profile = leanlm_control::tasks::profile(&store, &task, None)?;
    let scorer: ScorerSpec = match &a.scorer {
        Some(s) => s.parse().map_err(anyhow::Error::msg).context("--scorer")?,
        None => ScorerSpec::for_task(
            profile.verdict.as_ref().map(|v| v.kind),
            profile.verdict.as_ref().is_some_and(|v| v.values),
        ),
    };
    anyhow::ensure!(
        !matches!(scorer, ScorerSpec::Judge { .. }),
        "--scorer: a cascade is trained on hundreds of answers; name a scorer that needs no model (label, json, \
         similarity, regex, json-path)"
    );

    // Every replayable call of the task, however earlier cascades used them; a stratified sample of them,
    // leaving enough calls to validate the result on (the calls it learns from are never validated on).
    let ids = store.replayable_calls(&task.id, "")?;
    let for_validation = leanlm_core::stats::min_to_pass(leanlm_deploy::DEFAULT_BOUND, 0.95);
    anyhow::ensure!(
        a.sample + for_validation <= ids.len(),
        "--sample {}: task {} has {} replayable calls, and a validation of the cascade needs {} of them that it \
         did not learn from; use --sample {} or less, or log more traffic",
        a.sample,
        task.id,
        ids.len(),
        for_validation,
        ids.len().saturating_sub(for_validation)
    );
    let left = ids.len() - a.sample.min(ids.len());
    let picked = leanlm_validate::sample::stratified(
        &ids.iter().map(|(t, id)| (*t, id.clone())).collect::<Vec<_>>(),
        a.sample,
        a.seed,
    );
    let mut calls = Vec::with_capacity(picked.len());
    for id in &picked {
        if let Some(l) = store.call(id)?.as_ref().and_then(Logged::from_record) {
            calls.push(l);
        }
    }
    anyhow::ensure!(
        calls.len() >= cascade::MIN_EXAMPLES,
        "task {} has {} replayable logged calls (with request and response bodies); a cascade needs at least {}",
        task.id,
        calls.len(),
        cascade::MIN_EXAMPLES
    );
    let strong = match &a.strong {
        Some(s) => {
            routes
                .resolve(s)
                .map_err(|e| anyhow::anyhow!("--strong: {}", e.message))?;
            s.clone()
        }
        None => {
            let mut counts: std::collections::HashMap<&str, usize> = Default::default();
            for c in &calls {
                *counts.entry(c.model.as_str()).or_default() += 1;
            }
            counts
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(m, _)| m.to_owned())
                .context("no calls")?
        }
    };
    let strong_price = routes
        .resolve(&strong)
        .ok()
        .and_then(|c| c.first().and_then(|t| t.price));
    let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
        .context("a cascade needs the local embedding model: run scripts/fetch-model")?;

    let replayer = Replayer::new(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Each cheap model answers every sampled call; a call is kept where all of them answered.
    let mut per_model = Vec::with_capacity(a.cheap.len());
    let mut spent = 0.0;
    for cheap in &a.cheap {
        eprintln!("{cheap} answers {} logged calls of task {}…", calls.len(), task.id);
        let (answered, cost) = runtime.block_on(answer_all(&replayer, &calls, cheap, &a))?;
        spent += cost;
        per_model.push(answered);
    }
    let kept: Vec<usize> = (0..calls.len())
        .filter(|i| per_model.iter().all(|answers| answers[*i].is_some()))
        .collect();

    let labels = calls.iter().map(|c| score::normalise_label(&c.reference)).collect();
    let schema = calls
        .iter()
        .find_map(|c| c.request.pointer("/response_format/json_schema/schema").cloned());
    let ctx = TaskContext {
        labels,
        schema,
        embedder: None,
    };
    let texts: Vec<String> = kept.iter().map(|i| calls[*i].transcript()).collect();
    let mut prompts = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (v, t) in embedder.embed(&refs)?.iter().zip(chunk) {
            prompts.push(leanlm_route::features(v, t));
        }
    }
    // What a call reaching each stage costs there: the cheap models' replays, and the strong model's
    // price on the logged tokens (stages cost 1, 2, … and the strong model one more where prices are
    // unknown).
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    };
    let mut costs: Vec<f64> =
        per_model
            .iter()
            .map(|answers| {
                mean(&mut kept.iter().filter_map(|i| answers[*i].as_ref()).map(|a| {
                    a.first.cost_usd.unwrap_or(0.0) + a.second.as_ref().and_then(|s| s.cost_usd).unwrap_or(0.0)
                }))
            })
            .collect();
    costs.push(strong_price.map_or(0.0, |p| {
        mean(
            &mut kept
                .iter()
                .map(|i| (calls[*i].input_tokens as f64 * p.input + calls[*i].output_tokens as f64 * p.output) / 1e6),
        )
    }));
    if costs.iter().any(|c| *c <= 0.0) || cheap_price.iter().any(Option::is_none) {
        costs = (1..=costs.len()).map(|k| k as f64).collect();
    }
    let mut stages = Vec::with_capacity(a.cheap.len());
    let mut with_logprobs = 0;
    let mut agreement = Vec::with_capacity(a.cheap.len());
    for (cheap, answers) in a.cheap.iter().zip(&per_model) {
        let examples: Vec<Example> = kept
            .iter()
            .zip(&prompts)
            .filter_map(|(i, prompt)| {
                let ans = answers[*i].as_ref()?;
                Some(Example {
                    prompt: prompt.clone(),
                    answer: ans.first.text.clone(),
                    logprobs: ans.first.logprobs.clone(),
                    second: ans.second.as_ref().map(|s| s.text.clone()),
                    agreed: score::score(&scorer, &calls[*i].reference, &ans.first.text, &ctx).agree,
                })
            })
            .collect();
        with_logprobs += examples.iter().filter(|e| e.logprobs.is_some()).count();
        agreement.push(examples.iter().filter(|e| e.agreed).count() as f64 / examples.len().max(1) as f64);
        let setup = Setup {
            cheap: cheap.clone(),
            strong: strong.clone(),
            scorer: scorer.clone(),
            labels: ctx.labels.clone(),
            schema: ctx.schema.clone(),
            logprobs: a.logprobs,
            samples: a.samples,
            bound: a.bound,
        };
        stages.push((setup, examples));
    }
    let chain = cascade::train_chain(stages, &costs, a.bound, a.seed)?;
    let replacement = Replacement::Cascade {
        cheap: a.cheap[0].clone(),
        then: a.cheap[1..].to_vec(),
        strong,
    };
    let spec = replacement.to_string();
    // A one-stage cascade is stored as before chains existed, so older gateways still read it.
    let stored = match chain.stages.as_slice() {
        [one] => serde_json::to_string(one)?,
        _ => serde_json::to_string(&chain)?,
    };
    store.put_router(&task.id, &spec, crate::validate::unix_ms(), &stored)?;
    // Every call the cascade learned from (fitted or calibrated on) is left out of its validations.
    let used: Vec<String> = kept.iter().map(|i| calls[*i].id.clone()).collect();
    store.mark_training_calls(&spec, &used)?;
    // The calibration agreement as evidence: validation asks that an interval like this one, over calls the
    // cascade never saw, clears its bound.
    let n = chain.calibrated_on as u64;
    let interval = leanlm_validate::stats::wilson((chain.calibration_agreement * n as f64).round() as u64, n, 0.95);
    println!(
        "{spec} for task {}: {} calls answered by {} ({}; {with_logprobs} answers with log-probabilities).",
        task.id,
        kept.len(),
        a.cheap.join(", "),
        crate::show::money(spent),
    );
    for ((stage, served), agreed) in chain.stages.iter().zip(&chain.served).zip(&agreement) {
        if stage.never_accepts() {
            println!(
                "  {}: agreed with the logged answer on {:.1}%; no threshold pays for asking it at this bound: it \
                 is skipped.",
                stage.setup.cheap,
                agreed * 100.0
            );
            continue;
        }
        println!(
            "  {}: agreed with the logged answer on {:.1}%; acceptance score {} over {}, fitted on its {} usable \
             answers; serves {:.1}% of the calls.",
            stage.setup.cheap,
            agreed * 100.0,
            stage.accept.describe(),
            if stage.reads_prompt {
                "the prompt's and the answer's features"
            } else {
                "the answer's features"
            },
            stage.trained_on,
            served * 100.0,
        );
    }
    println!(
        "Calibrated out of fold on all {} calls at a {:.1}% agreement bound: {:.1}% served cheaply, the rest \
         escalated to {} (agreement {:.1}%, 95% interval {:.1}%–{:.1}%). These calls are left out of its \
         validations, which have {left} other calls to replay: `leanlm validate --task {} --candidate {spec}`.",
        chain.calibrated_on,
        a.bound * 100.0,
        chain.accepted_share() * 100.0,
        chain.strong(),
        chain.calibration_agreement * 100.0,
        interval.low * 100.0,
        interval.high * 100.0,
        task.id,
    );
    Ok(())
}

/// A stored cascade judging replayed answers, with the local embedding model for the prompt's features.
pub struct CascadeAccept {
    chain: Chain,
    embedder: LocalEmbedder,
    /// Each call's prompt features, for the later stages of a chain (a call is embedded once).
    prompts: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Vec<f32>>>>,
}

impl CascadeAccept {
    pub fn load(store: &leanlm_store::Store, task: &str, spec: &str) -> anyhow::Result<CascadeAccept> {
        let cheap = spec
            .strip_prefix("cascade:")
            .and_then(|s| s.rsplit_once(','))
            .map_or("CHEAP", |(cheap, _)| cheap);
        let json = store.router(task, spec)?.with_context(|| {
            format!("no `{spec}` cascade is trained for task {task}: run `leanlm train-cascade --task {task} --cheap {cheap}`")
        })?;
        let chain: Chain = serde_json::from_str(&json).context("reading the stored cascade")?;
        let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
            .context("a cascade needs the local embedding model: run scripts/fetch-model")?;
        Ok(CascadeAccept {
            chain,
            embedder: LocalEmbedder(embedder),
            prompts: Default::default(),
        })
    }
}

impl Accept for CascadeAccept {
    fn logprobs(&self, stage: usize) -> bool {
        self.chain.stages.get(stage).is_some_and(|s| s.setup.logprobs)
    }

    fn samples(&self, stage: usize) -> usize {
        self.chain.stages.get(stage).map_or(1, |s| usize::from(s.setup.samples))
    }

    fn skips(&self, stage: usize) -> bool {
        self.chain.stages.get(stage).is_none_or(|s| s.never_accepts())
    }

    fn accept(&self, stage: usize, call: &Logged, first: &Reply, second: Option<&Reply>) -> bool {
        let Some(cascade) = self.chain.stages.get(stage) else {
            return false;
        };
        let known = self.prompts.lock().ok().and_then(|m| m.get(&call.id).cloned());
        let prompt = match known {
            Some(p) => p,
            None => {
                let text = call.transcript();
                let Ok(mut v) = self.embedder.0.embed(&[text.as_str()]) else {
                    return false;
                };
                let Some(vector) = v.pop() else { return false };
                let p = std::sync::Arc::new(leanlm_route::features(&vector, &text));
                if self.chain.stages.len() > 1
                    && let Ok(mut m) = self.prompts.lock()
                {
                    m.insert(call.id.clone(), p.clone());
                }
                p
            }
        };
        cascade
            .decide(&Evidence {
                prompt: &prompt,
                answer: &first.text,
                logprobs: first.logprobs.as_deref(),
                second: second.map(|s| s.text.as_str()),
            })
            .accepted()
    }
}
