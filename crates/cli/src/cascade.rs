//! `leanlm train-cascade`: the cheap model answers a sample of the task's logged calls, each answer is
//! scored against the logged one, and the cascade's acceptance score and threshold are fitted on those
//! outcomes; also the cascade's judgement of answers during `leanlm validate --candidate cascade:…`.

use anyhow::Context;
use futures_util::StreamExt;
use leanlm_gateway::Replayer;
use leanlm_route::cascade::{self, Evidence, Example, Setup, TaskCascade};
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
    /// The model that answers first.
    #[arg(long)]
    pub cheap: String,
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

/// The cheap model's answer to one logged call: the first sample, and the second if drawn.
struct Answered {
    call: usize,
    first: Reply,
    second: Option<Reply>,
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
    routes
        .resolve(&a.cheap)
        .map_err(|e| anyhow::anyhow!("--cheap: {}", e.message))?;
    let profile = leanlm_gateway::admin::task_profile(&store, &task, None)?;
    let scorer: ScorerSpec = match &a.scorer {
        Some(s) => s.parse().map_err(anyhow::Error::msg).context("--scorer")?,
        None => ScorerSpec::for_task(profile.verdict.as_ref().map(|v| v.kind)),
    };
    anyhow::ensure!(
        !matches!(scorer, ScorerSpec::Judge { .. }),
        "--scorer: a cascade is trained on hundreds of answers; name a scorer that needs no model (label, json, \
         similarity, regex, json-path)"
    );

    // Every replayable call of the task, however earlier cascades used them; a stratified sample of them.
    let ids = store.replayable_calls(&task.id, "")?;
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
    let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
        .context("a cascade needs the local embedding model: run scripts/fetch-model")?;

    let replayer = Replayer::new(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    eprintln!("{} answers {} logged calls of task {}…", a.cheap, calls.len(), task.id);
    let results: Vec<Result<Answered, String>> = runtime.block_on(async {
        futures_util::stream::iter(calls.iter().enumerate().map(|(i, call)| {
            let replayer = &replayer;
            let cheap = a.cheap.as_str();
            async move {
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
            }
        }))
        .buffer_unordered(a.concurrency.max(1))
        .collect()
        .await
    });
    let mut failures = Vec::new();
    let mut answered = Vec::new();
    for r in results {
        match r {
            Ok(a) => answered.push(a),
            Err(e) => failures.push(e),
        }
    }
    answered.sort_by_key(|a| a.call);
    anyhow::ensure!(
        failures.len() * 5 <= calls.len(),
        "{} of {} replays through {} failed, e.g.: {}",
        failures.len(),
        calls.len(),
        a.cheap,
        failures.first().cloned().unwrap_or_default()
    );
    let spent: f64 = answered
        .iter()
        .map(|a| a.first.cost_usd.unwrap_or(0.0) + a.second.as_ref().and_then(|s| s.cost_usd).unwrap_or(0.0))
        .sum();

    let labels = calls.iter().map(|c| score::normalise_label(&c.reference)).collect();
    let schema = calls
        .iter()
        .find_map(|c| c.request.pointer("/response_format/json_schema/schema").cloned());
    let ctx = TaskContext {
        labels,
        schema,
        embedder: None,
    };
    let texts: Vec<String> = answered.iter().map(|a| calls[a.call].transcript()).collect();
    let mut prompts = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (v, t) in embedder.embed(&refs)?.iter().zip(chunk) {
            prompts.push(leanlm_route::features(v, t));
        }
    }
    let examples: Vec<Example> = answered
        .iter()
        .zip(prompts)
        .map(|(ans, prompt)| Example {
            prompt,
            answer: ans.first.text.clone(),
            logprobs: ans.first.logprobs.clone(),
            second: ans.second.as_ref().map(|s| s.text.clone()),
            agreed: score::score(&scorer, &calls[ans.call].reference, &ans.first.text, &ctx).agree,
        })
        .collect();
    let with_logprobs = examples.iter().filter(|e| e.logprobs.is_some()).count();
    let setup = Setup {
        cheap: a.cheap.clone(),
        strong: strong.clone(),
        scorer,
        labels: ctx.labels,
        schema: ctx.schema,
        logprobs: a.logprobs,
        samples: a.samples,
        bound: a.bound,
    };
    let trained = cascade::train(setup, &examples, a.seed)?;
    let spec = Replacement::Cascade {
        cheap: a.cheap.clone(),
        strong,
    }
    .to_string();
    store.put_router(
        &task.id,
        &spec,
        crate::validate::unix_ms(),
        &serde_json::to_string(&trained)?,
    )?;
    // Every call the cascade learned from (fitted or calibrated on) is left out of its validations.
    let used: Vec<String> = answered.iter().map(|a| calls[a.call].id.clone()).collect();
    store.mark_training_calls(&spec, &used)?;
    let agreed = examples.iter().filter(|e| e.agreed).count();
    // The calibration agreement as evidence: validation asks that an interval like this one, over calls the
    // cascade never saw, clears its bound.
    let n = trained.calibrated_on as u64;
    let interval = leanlm_validate::stats::wilson((trained.calibration_agreement * n as f64).round() as u64, n, 0.95);
    println!(
        "{spec} for task {}: {} answered {} calls (${spent:.4}; {} with log-probabilities) and agreed with the \
         logged answer on {:.1}%. Acceptance score: {} over {}, fitted on the {} usable answers and calibrated \
         out of fold on all {}: at a {:.1}% agreement bound it serves {:.1}% of them from {} and escalates the \
         rest (agreement {:.1}%, 95% interval {:.1}%–{:.1}%). \
         These calls are left out of its validations: `leanlm validate --task {} --candidate {spec}`.",
        task.id,
        a.cheap,
        examples.len(),
        with_logprobs,
        agreed as f64 / examples.len() as f64 * 100.0,
        trained.accept.describe(),
        if trained.reads_prompt {
            "the prompt's and the answer's features"
        } else {
            "the answer's features"
        },
        trained.trained_on,
        trained.calibrated_on,
        a.bound * 100.0,
        trained.accepted_share * 100.0,
        a.cheap,
        trained.calibration_agreement * 100.0,
        interval.low * 100.0,
        interval.high * 100.0,
        task.id,
    );
    Ok(())
}

/// A stored cascade judging replayed answers, with the local embedding model for the prompt's features.
pub struct CascadeAccept {
    cascade: TaskCascade,
    embedder: LocalEmbedder,
}

impl CascadeAccept {
    pub fn load(store: &leanlm_store::Store, task: &str, spec: &str) -> anyhow::Result<CascadeAccept> {
        let cheap = spec
            .strip_prefix("cascade:")
            .and_then(|s| s.split(',').next())
            .unwrap_or("CHEAP");
        let json = store.router(task, spec)?.with_context(|| {
            format!("no `{spec}` cascade is trained for task {task}: run `leanlm train-cascade --task {task} --cheap {cheap}`")
        })?;
        let cascade: TaskCascade = serde_json::from_str(&json).context("reading the stored cascade")?;
        let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
            .context("a cascade needs the local embedding model: run scripts/fetch-model")?;
        Ok(CascadeAccept {
            cascade,
            embedder: LocalEmbedder(embedder),
        })
    }
}

impl Accept for CascadeAccept {
    fn logprobs(&self) -> bool {
        self.cascade.setup.logprobs
    }

    fn samples(&self) -> usize {
        usize::from(self.cascade.setup.samples)
    }

    fn accept(&self, call: &Logged, first: &Reply, second: Option<&Reply>) -> bool {
        let text = call.transcript();
        let Ok(mut v) = self.embedder.0.embed(&[text.as_str()]) else {
            return false;
        };
        let Some(vector) = v.pop() else { return false };
        let prompt = leanlm_route::features(&vector, &text);
        self.cascade
            .decide(&Evidence {
                prompt: &prompt,
                answer: &first.text,
                logprobs: first.logprobs.as_deref(),
                second: second.map(|s| s.text.as_str()),
            })
            .accepted()
    }
}
