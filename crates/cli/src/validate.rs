//! `leanlm candidates`, `validate`, `validations` and `validation`: from "what could replace this task's
//! model" to a stored pass/fail report.

use std::time::Duration;

use anyhow::Context;
use leanlm_gateway::Replayer;
use leanlm_store::{Store, TaskRow, ValidationRow};
use leanlm_validate::run::Logged;
use leanlm_validate::{Bound, Options, Replacement, Report, ScorerSpec, Validation};

use crate::StoreArgs;

/// The validation ran and its verdict is fail (the process exits 2).
#[derive(Debug)]
pub struct VerdictFailed;

impl std::fmt::Display for VerdictFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the candidate did not pass")
    }
}

impl std::error::Error for VerdictFailed {}

/// Finds a task by id, or by name when exactly one task has it.
pub fn find_task(store: &Store, key: &str) -> anyhow::Result<TaskRow> {
    Ok(leanlm_control::tasks::find(store, key)?)
}

pub fn catalog(store_args: &StoreArgs, json: bool) -> anyhow::Result<()> {
    let catalog = leanlm_gateway::route::catalog(&store_args.config()?);
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    let mut table = crate::show::table([
        "model",
        "provider",
        "input",
        "output",
        "context",
        "tools",
        "JSON schema",
        "vision",
        "replacement",
    ]);
    let yes = |b: bool| if b { "yes" } else { "-" }.to_owned();
    for m in &catalog {
        let (context, tools, schema, vision) = match &m.caps {
            Some(c) => (
                format!("{}k", c.context / 1000),
                yes(c.tools),
                yes(c.json_schema),
                yes(c.vision),
            ),
            None => ("?".into(), "?".into(), "?".into(), "?".into()),
        };
        table.add_row([
            m.name.clone(),
            m.provider.clone(),
            m.price.map_or("-".into(), |p| p.input.to_string()),
            m.price.map_or("-".into(), |p| p.output.to_string()),
            context,
            tools,
            schema,
            vision,
            if m.allowed { "allowed" } else { "-" }.to_owned(),
        ]);
    }
    println!("{table}");
    println!("USD per million tokens. Mark replacements with [catalog] allow = [...] in the config ([\"*\"] for all).");
    Ok(())
}

pub fn candidates(store_args: &StoreArgs, task: Option<&str>, json: bool) -> anyhow::Result<()> {
    let config = store_args.config()?;
    let store = store_args.open()?;
    let tasks = match task {
        Some(key) => vec![find_task(&store, key)?],
        None => store.tasks(None)?,
    };
    let mut all = Vec::new();
    for t in &tasks {
        let (usage, list) = leanlm_control::tasks::candidates_for(&store, &leanlm_gateway::route::catalog(&config), t)?;
        all.push((t.clone(), usage, list));
    }
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(t, u, c)| serde_json::json!({"task": t, "usage": u, "candidates": c}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let catalog = leanlm_gateway::route::catalog(&config);
    if !catalog.iter().any(|m| m.allowed) {
        println!("No model is allowed as a replacement: list them under [catalog] allow in the config");
        println!("(or allow = [\"*\"] for every model in the price table), or configure them under [models].");
    }
    let mut table = crate::show::table(["task", "now / month", "candidate", "would cost", "saves / month", "why"]);
    for (t, u, list) in &all {
        let now = u.cost_per_call_usd * u.calls_per_month;
        for c in list {
            let spec = if c.available {
                c.spec.clone()
            } else {
                format!("{} (not yet)", c.spec)
            };
            table.add_row([
                format!("{} ({})", t.name, t.id),
                format!("{} ({:.0} calls)", crate::show::money(now), u.calls_per_month),
                spec,
                crate::show::money_opt(c.monthly_cost_usd),
                crate::show::money_opt(c.monthly_savings_usd),
                c.why.clone(),
            ]);
        }
    }
    println!("{table}");
    for (t, u, _) in &all {
        if let Some(note) = u.thin_evidence() {
            println!("{} ({}): {note}.", t.name, t.id);
        }
    }
    println!(
        "Projected from each task's last 30 days, before any quality check: `leanlm validate --task ID --candidate SPEC`."
    );
    Ok(())
}

/// Everything `leanlm validate` takes.
#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The task (id or name).
    #[arg(long)]
    pub task: String,
    /// The replacement: a model name (or model:NAME); see `leanlm candidates`.
    #[arg(long)]
    pub candidate: String,
    /// The most logged calls to replay; the verdict may need fewer.
    #[arg(long, default_value_t = 400)]
    pub sample: usize,
    /// Calls on which the reference model is replayed against itself.
    #[arg(long, default_value_t = 50)]
    pub control: usize,
    /// label, value, json[:tol=X], similarity[:T], judge[:MODEL], regex:PATTERN, json-path:PATH (default:
    /// `value` where the task's answers come to a value, else from its type; free text gets the judge where
    /// one is configured).
    #[arg(long)]
    pub scorer: Option<String>,
    /// The judge's model (default: the config's `[validation] judge`): scores for `--scorer judge`, and
    /// checks a similarity or regex scorer before its agreement is trusted.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// Pass when the agreement's lower confidence bound clears this share of the control's agreement.
    #[arg(long, default_value_t = 0.95)]
    pub bound: f64,
    /// A fixed agreement bound instead (no control run).
    #[arg(long)]
    pub absolute_bound: Option<f64>,
    /// The highest share of unusable answers (invalid JSON, unknown labels, refusals).
    #[arg(long, default_value_t = 0.01)]
    pub hard_bound: f64,
    /// Stop spending past this many USD.
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// Replays in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Fixes the sample (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the sample size and estimated cost, replay nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Score the whole sample in one look instead of stopping once the evidence decides (for training a
    /// router on the outcomes).
    #[arg(long)]
    pub full_sample: bool,
    #[arg(long)]
    pub json: bool,
    /// Print nothing (the optimizer reads the stored report).
    #[arg(skip)]
    pub quiet: bool,
}

/// Shows replay progress with an ETA on stderr.
struct Bar(indicatif::ProgressBar);

impl leanlm_validate::Progress for Bar {
    fn phase(&self, name: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.reset_eta();
        self.0.set_prefix(name.to_owned());
    }
    fn step(&self, spent_usd: f64) {
        self.0.inc(1);
        self.0.set_message(format!("{} spent", crate::show::money(spent_usd)));
    }
}

/// The local embedding model, for the `similarity` scorer and the gateway's semantic cache.
pub(crate) struct LocalEmbedder(pub(crate) leanlm_embed::Embedder);

impl leanlm_validate::score::Embed for LocalEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs a validation; `Ok(false)` when the verdict is fail.
pub fn validate(store_args: &StoreArgs, a: ValidateArgs) -> anyhow::Result<bool> {
    // The report's duration is the whole command's: embedding the calls for a router, say, is part of it.
    let command_started = std::time::Instant::now();
    let config = store_args.config()?;
    let mut store = store_args.open()?;
    let task = find_task(&store, &a.task)?;
    let replacement: Replacement = a.candidate.parse().map_err(anyhow::Error::msg).context("--candidate")?;
    anyhow::ensure!(a.sample > 0, "--sample must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.bound),
        "--bound is a share between 0 and 1, e.g. 0.95"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.hard_bound),
        "--hard-bound is a share between 0 and 1, e.g. 0.01"
    );
    if let Some(b) = a.absolute_bound {
        anyhow::ensure!((0.0..=1.0).contains(&b), "--absolute-bound is a rate between 0 and 1");
    }
    if let Some(c) = a.max_cost {
        anyhow::ensure!(c > 0.0, "--max-cost must be a positive amount of USD");
    }

    let (usage, _) = leanlm_control::tasks::candidates_for(&store, &leanlm_gateway::route::catalog(&config), &task)?;
    let profile = leanlm_control::tasks::profile(&store, &task, None)?;
    let judge_model = a.judge_model.clone().or_else(|| config.judge_model.clone());
    let scorer: ScorerSpec = match &a.scorer {
        Some(s) => s.parse().map_err(anyhow::Error::msg).context("--scorer")?,
        None => default_scorer(&profile, judge_model.is_some()),
    };
    let catalog = leanlm_gateway::route::catalog(&config);
    let candidate_price = match &replacement {
        Replacement::Model { model } => {
            // An unknown model fails here, with the gateway's own message, before anything is spent.
            let routes = leanlm_gateway::route::Routes::new(std::sync::Arc::new(config.clone()));
            let target = routes
                .resolve(model)
                .map_err(|e| anyhow::anyhow!("--candidate: {}", e.message))?;
            target
                .first()
                .and_then(|t| t.price)
                .or_else(|| catalog.iter().find(|m| &m.name == model).and_then(|m| m.price))
        }
        _ => None,
    };

    let key = replacement.to_string();
    let ids = store.replayable_calls(&task.id, &key)?;
    let seed = a.seed.unwrap_or_else(|| unix_ms() as u64);
    let picked = leanlm_validate::sample::stratified(
        &ids.iter().map(|(t, id)| (*t, id.clone())).collect::<Vec<_>>(),
        a.sample,
        seed,
    );
    let mut calls = Vec::with_capacity(picked.len());
    for id in &picked {
        if let Some(l) = store.call(id)?.as_ref().and_then(Logged::from_record) {
            calls.push(l);
        }
    }
    let mut opts = Options::new(&task.id, &task.name, replacement, scorer.clone());
    opts.sample = a.sample;
    opts.control = a.control;
    opts.concurrency = a.concurrency.max(1);
    opts.max_cost_usd = a.max_cost;
    opts.bound = match a.absolute_bound {
        Some(b) => Bound::Absolute(b),
        None => Bound::OfControl(a.bound),
    };
    opts.hard_bound = a.hard_bound;
    opts.candidate_price = candidate_price;
    opts.judge_model = judge_model;
    opts.monthly_calls = usage.calls_per_month;
    opts.seed = seed;
    opts.sequential = !a.full_sample;
    opts.audit_rate = leanlm_deploy::DEFAULT_AUDIT_RATE;

    let embedder = if matches!(scorer, ScorerSpec::Similarity { .. }) {
        match leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir()) {
            Ok(e) => Some(LocalEmbedder(e)),
            Err(e) => {
                eprintln!("note: no local embedding model ({e}); the similarity scorer uses ROUGE-L only");
                None
            }
        }
    } else {
        None
    };
    let picks = match &opts.replacement {
        Replacement::Router { cheap, .. } => Some(router_picks(&store, &task.id, &key, cheap, &calls)?),
        _ => None,
    };
    let cascade = match &opts.replacement {
        Replacement::Cascade { .. } => Some(crate::cascade::CascadeAccept::load(&store, &task.id, &key)?),
        _ => None,
    };
    let replayer = Replayer::new(config)?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = Bar(bar);
    let validation = Validation {
        opts,
        calls,
        available: ids.len(),
        replay: &replayer,
        embedder: embedder.as_ref().map(|e| e as &dyn leanlm_validate::score::Embed),
        progress: &progress,
        picks,
        cascade: cascade.as_ref().map(|c| c as &dyn leanlm_validate::run::Accept),
    };
    let estimate = validation.estimate()?;
    if a.dry_run {
        progress.0.finish_and_clear();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&estimate)?);
        } else {
            println!(
                "task {} ({}): {} usable logged calls; would replay up to {} through {} (looks at {:?}) and {} control calls on the reference",
                task.name, task.id, estimate.available_calls, estimate.sample, key, estimate.looks, estimate.control
            );
            println!(
                "at least {} scored calls are needed to pass; estimated cost at most {}{}",
                estimate.min_to_pass,
                crate::show::money_opt(estimate.estimated_cost_usd),
                if matches!(scorer, ScorerSpec::Judge { .. }) {
                    " plus two judge calls per candidate call"
                } else {
                    ""
                }
            );
        }
        return Ok(true);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut report = runtime.block_on(validation.run())?;
    report.duration_ms = command_started.elapsed().as_secs_f64() * 1000.0;
    progress.0.finish_and_clear();
    report.created_at_ms = unix_ms();
    report.id = format!("val_{}", uuid::Uuid::now_v7().simple());
    store.insert_validation(&ValidationRow {
        id: report.id.clone(),
        task_id: report.task_id.clone(),
        candidate: report.candidate.clone(),
        passed: report.verdict.passed,
        created_at_ms: report.created_at_ms,
        report: serde_json::to_string(&report)?,
    })?;
    let outcomes: Vec<(String, bool, Option<String>)> = report
        .outcomes
        .iter()
        .map(|o| (o.call_id.clone(), o.agreed, o.hard.clone()))
        .collect();
    store.insert_validation_outcomes(&report.id, &outcomes)?;
    if a.json && !a.quiet {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !a.quiet {
        print!("{}", report.markdown());
    }
    Ok(report.verdict.passed)
}

pub fn validations(store_args: &StoreArgs, task: Option<&str>, limit: usize, json: bool) -> anyhow::Result<()> {
    let store = store_args.open()?;
    let task_id = match task {
        Some(key) => Some(find_task(&store, key)?.id),
        None => None,
    };
    let rows = store.validations(task_id.as_deref(), limit)?;
    let reports: Vec<Report> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.report).with_context(|| format!("reading stored report {}", r.id)))
        .collect::<anyhow::Result<_>>()?;
    if json {
        for r in &reports {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let mut table = crate::show::table([
        "id",
        "time (UTC)",
        "task",
        "candidate",
        "verdict",
        "agreement",
        "bound",
        "scored",
        "saves / month",
        "cost",
    ]);
    for r in &reports {
        table.add_row([
            r.id.clone(),
            crate::chrono_like(r.created_at_ms),
            r.task_name.clone(),
            r.candidate.clone(),
            format!(
                "{} ({})",
                if r.verdict.passed { "PASS" } else { "FAIL" },
                r.verdict.rule.as_str()
            ),
            format!(
                "{:.1}% [{:.1}–{:.1}]",
                r.agreement.rate * 100.0,
                r.agreement.low * 100.0,
                r.agreement.high * 100.0
            ),
            format!("{:.1}%", r.bound * 100.0),
            r.scored.to_string(),
            crate::show::money_opt(r.projected_monthly_savings_usd),
            crate::show::money(r.validation_cost_usd),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn validation(store_args: &StoreArgs, id: &str, format: &str) -> anyhow::Result<()> {
    let store = store_args.open()?;
    let row = store.validation(id)?.with_context(|| {
        format!("no validation with id `{id}` (or more than one starts with it); see `leanlm validations`")
    })?;
    let report: Report =
        serde_json::from_str(&row.report).with_context(|| format!("reading stored report {}", row.id))?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        "md" | "markdown" => print!("{}", report.markdown()),
        other => anyhow::bail!("--format is md or json, not `{other}`"),
    }
    Ok(())
}

/// The model the task's stored router picks for each call, as the gateway would: from the embedding of the
/// call's transcript and its length.
fn router_picks(
    store: &leanlm_store::Store,
    task: &str,
    spec: &str,
    cheap: &str,
    calls: &[Logged],
) -> anyhow::Result<Vec<String>> {
    let json = store.router(task, spec)?.with_context(|| {
        format!(
            "no `{spec}` router is trained for task {task}: run `leanlm train-router --task {task} --cheap {cheap}`"
        )
    })?;
    let router: leanlm_route::TaskRouter = serde_json::from_str(&json).context("reading the stored router")?;
    let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
        .context("a router needs the local embedding model: run scripts/fetch-model")?;
    let texts: Vec<String> = calls.iter().map(Logged::transcript).collect();
    let mut picks = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (v, t) in embedder.embed(&refs)?.iter().zip(chunk) {
            let model = if router.cheap(&leanlm_route::features(v, t)) {
                &router.cheap
            } else {
                &router.strong
            };
            picks.push(model.clone());
        }
    }
    Ok(picks)
}

/// The scorer a task gets when none is named: `value` where its answers come to a value, else by its type;
/// free text gets the judge where one is configured (it reads meaning where similarity reads wording).
pub fn default_scorer(profile: &leanlm_profile::TaskProfile, judge: bool) -> ScorerSpec {
    match ScorerSpec::for_task(
        profile.verdict.as_ref().map(|v| v.kind),
        profile.verdict.as_ref().is_some_and(|v| v.values),
    ) {
        ScorerSpec::Similarity { .. } if judge => ScorerSpec::Judge { model: None },
        other => other,
    }
}

/// The fewest scored calls a router is trained and calibrated on.
const MIN_ROUTER_OUTCOMES: usize = 100;

/// Trains a task's router for a cheap model from its validations' outcomes, calibrates its threshold on
/// held-out outcomes to the bound, stores it, and marks the training calls so validation leaves them out.
pub fn train_router(
    store_args: &StoreArgs,
    task: &str,
    cheap: &str,
    bound: f64,
    seed: u64,
    scorer: Option<&str>,
) -> anyhow::Result<()> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    anyhow::ensure!(
        (0.0..=1.0).contains(&bound),
        "--bound is an agreement between 0 and 1, e.g. 0.95"
    );
    let mut store = store_args.open()?;
    let task = find_task(&store, task)?;
    let candidate = Replacement::Model {
        model: cheap.to_owned(),
    }
    .to_string();
    // One scorer's outcomes: an `agreed` from similarity and one from the judge are different facts.
    let outcome_scorer: String = match scorer {
        Some(s) => s
            .parse::<ScorerSpec>()
            .map_err(anyhow::Error::msg)
            .context("--scorer")?,
        None => {
            let judge = store_args.config().ok().and_then(|c| c.judge_model).is_some();
            default_scorer(&leanlm_control::tasks::profile(&store, &task, None)?, judge)
        }
    }
    .to_string();
    // Validation outcomes, then the online checks (shadow and audit) of the same model; a call scored both
    // ways keeps its validation outcome.
    let validated = store.candidate_outcomes(&task.id, &candidate, &outcome_scorer)?;
    let online: Vec<(String, bool)> = {
        let seen: std::collections::HashSet<&str> = validated.iter().map(|(id, _)| id.as_str()).collect();
        store
            .online_outcomes(&task.id, cheap, &outcome_scorer)?
            .into_iter()
            .filter(|(id, _)| !seen.contains(id.as_str()))
            .collect()
    };
    let from_online = online.len();
    let outcomes: Vec<(String, bool)> = validated.into_iter().chain(online).collect();
    if outcomes.len() < MIN_ROUTER_OUTCOMES {
        let others: Vec<String> = store
            .outcome_scorers(&task.id, &candidate)?
            .into_iter()
            .filter(|(s, _)| *s != outcome_scorer)
            .map(|(s, n)| format!("{n} under `{s}`"))
            .collect();
        anyhow::bail!(
            "a router needs at least {MIN_ROUTER_OUTCOMES} calls of {candidate} on task {} scored by `{outcome_scorer}` and has {}{}: \
             run `leanlm validate --task {} --candidate {cheap} --scorer {outcome_scorer} --full-sample` or shadow it first",
            task.id,
            outcomes.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(" (other scorers' outcomes are not mixed in: {})", others.join(", "))
            },
            task.id
        );
    }
    let mut calls = Vec::new();
    for (id, agreed) in &outcomes {
        if let Some(l) = store.call(id)?.as_ref().and_then(Logged::from_record) {
            calls.push((l, *agreed));
        }
    }
    let mut strong: std::collections::HashMap<&str, usize> = Default::default();
    for (l, _) in &calls {
        *strong.entry(l.model.as_str()).or_default() += 1;
    }
    let strong = strong
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(m, _)| m.to_owned())
        .context("no calls")?;
    let embedder = leanlm_embed::Embedder::load(&leanlm_embed::default_model_dir())
        .context("a router needs the local embedding model: run scripts/fetch-model")?;
    let texts: Vec<String> = calls.iter().map(|(l, _)| l.transcript()).collect();
    let (mut features, mut dim) = (Vec::with_capacity(texts.len()), 0);
    for chunk in texts.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (v, t) in embedder.embed(&refs)?.iter().zip(chunk) {
            dim = v.len();
            features.push(leanlm_route::features(v, t));
        }
    }
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let (train, cal) = order.split_at(calls.len() * 7 / 10);
    // The reference is right by definition: the cheap model's outcome is its agreement with it.
    let outcome = |i: &usize| leanlm_route::Outcome {
        cheap_correct: calls[*i].1,
        strong_correct: true,
        cheap_cost: 0.0,
        strong_cost: 1.0,
    };
    let x_train: Vec<Vec<f32>> = train.iter().map(|i| features[*i].clone()).collect();
    let o_train: Vec<leanlm_route::Outcome> = train.iter().map(outcome).collect();
    let x_cal: Vec<Vec<f32>> = cal.iter().map(|i| features[*i].clone()).collect();
    let cal_outcomes: Vec<leanlm_route::Outcome> = cal.iter().map(outcome).collect();
    let (scorer, _) = leanlm_route::fit(&x_train, &o_train, &x_cal, &cal_outcomes, dim);
    let scores: Vec<f64> = x_cal.iter().map(|x| scorer.score(x)).collect();
    let threshold = leanlm_route::calibrate(&scores, &cal_outcomes, bound).context("no threshold reaches the bound")?;
    let point = leanlm_route::route_with(&scores, threshold, &cal_outcomes);
    let router = leanlm_route::TaskRouter {
        cheap: cheap.to_owned(),
        strong: strong.clone(),
        scorer,
        threshold,
        bound,
        trained_on: train.len(),
        calibrated_on: cal.len(),
        cheap_share: 1.0 - point.strong_share,
        calibration_agreement: point.accuracy,
    };
    let spec = Replacement::Router {
        cheap: cheap.to_owned(),
        strong: strong.clone(),
    }
    .to_string();
    // The calibration calls chose the scorer and its threshold: they are no more held out than the
    // training calls, so no validation of the router replays either. Enough others must be left for one.
    let learned: Vec<String> = calls.iter().map(|(l, _)| l.id.clone()).collect();
    let learned_set: std::collections::HashSet<&str> = learned.iter().map(String::as_str).collect();
    let left = store
        .replayable_calls(&task.id, &spec)?
        .iter()
        .filter(|(_, id)| !learned_set.contains(id.as_str()))
        .count();
    let for_validation = leanlm_core::stats::min_to_pass(leanlm_deploy::DEFAULT_BOUND, 0.95);
    anyhow::ensure!(
        left >= for_validation,
        "the router would learn from {} calls and leave {left} of the task's others to validate it on; a validation \
         at a 95% bound needs {for_validation}: log more traffic first (nothing was stored)",
        learned.len()
    );
    store.put_router(&task.id, &spec, unix_ms(), &serde_json::to_string(&router)?)?;
    store.mark_training_calls(&spec, &learned)?;
    println!(
        "{spec} for task {}: {}, trained on {} calls, calibrated on {} ({from_online} of them from online checks), \
         outcomes scored by `{outcome_scorer}`; \
         at a {:.1}% agreement bound it keeps {:.1}% of calls on {cheap} (agreement {:.1}% on the calibration \
         calls). The calls it learned from are left out of its validations, which have {left} other calls to replay.",
        task.id,
        router.scorer.describe(),
        router.trained_on,
        router.calibrated_on,
        bound * 100.0,
        router.cheap_share * 100.0,
        router.calibration_agreement * 100.0
    );
    Ok(())
}
