//! `leanlm`: the gateway and the tools to read what it recorded.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use leanlm_gateway::{Config, Overrides};
use leanlm_store::{CallFilter, CallStatus, SpendBy, Store};

mod cache;
mod cascade;
mod demo;
mod deploy;
mod optimize;
mod show;
mod validate;

#[derive(Parser)]
#[command(
    name = "leanlm",
    version,
    about = "An LLM gateway that records every call with its exact cost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The configuration file a command reads: the one named, else `leanlm.toml` in the working directory when
/// there is one, so that `leanlm serve` and the commands that read its store see the same settings (a
/// task's cache bound, the catalog, the judge) without repeating `--config`.
fn config_path(named: Option<&std::path::Path>) -> Option<PathBuf> {
    named.map(std::path::Path::to_path_buf).or_else(|| {
        let local = PathBuf::from("leanlm.toml");
        local.is_file().then_some(local)
    })
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// Configuration file (its [store] url is used unless --db is given); default ./leanlm.toml if present.
    #[arg(long, env = "LEANLM_CONFIG")]
    config: Option<PathBuf>,
    /// The call log, e.g. sqlite://leanlm.db.
    #[arg(long, env = "LEANLM_DB")]
    db: Option<String>,
}

impl StoreArgs {
    /// The configuration, with `--db` applied.
    fn config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            db: self.db.clone(),
            listen: None,
        };
        Ok(Config::load(
            config_path(self.config.as_deref()).as_deref(),
            &overrides,
        )?)
    }

    /// The store's URL: `--db`, else the config file's, else the default.
    fn url(&self) -> anyhow::Result<String> {
        Ok(self.config()?.store_url)
    }

    /// Opens an existing call log, and prices calls with the prices imported into it from then on.
    fn open(&self) -> anyhow::Result<Store> {
        let url = self.url()?;
        if let Some(path) = url.strip_prefix("sqlite://")
            && !std::path::Path::new(path).exists()
        {
            anyhow::bail!("no call log at {path}: start the gateway with `leanlm serve` first, or pass --db");
        }
        let store = Store::open(&url).with_context(|| format!("opening {url}"))?;
        leanlm_control::prices::install(&store).context("reading imported prices")?;
        Ok(store)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Try LeanLM with no provider key and no network: a built-in mock provider, the gateway in front of
    /// it, and a few hundred calls of a classification task through it.
    Demo(demo::DemoArgs),
    /// One pass of the loop over every task, within guardrails: validate the cheapest promising candidate
    /// and deploy a passing one to shadow with automatic promotion (`--plan`: say what it would do).
    Optimize(optimize::OptimizeArgs),
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML; see leanlm.example.toml); default ./leanlm.toml if present.
        #[arg(long, env = "LEANLM_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
        /// The call log, e.g. sqlite://leanlm.db.
        #[arg(long)]
        db: Option<String>,
    },
    /// Recent calls, newest first.
    Calls {
        #[command(flatten)]
        store: StoreArgs,
        /// How many calls to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only calls that requested or were served by this model.
        #[arg(long)]
        model: Option<String>,
        /// Only calls of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only calls with this status: ok, client_error, upstream_error, client_closed.
        #[arg(long, value_parser = parse_status)]
        status: Option<CallStatus>,
        /// Only calls from the last N hours.
        #[arg(long)]
        since_hours: Option<f64>,
        /// Only calls under a policy: none, any, reference or replacement.
        #[arg(long, value_parser = |s: &str| s.parse::<leanlm_store::PolicyMatch>())]
        policy: Option<leanlm_store::PolicyMatch>,
        /// Only calls the caches did this for: hit, semantic-hit, miss or bypass.
        #[arg(long, value_parser = |s: &str| s.parse::<leanlm_core::CacheOutcome>())]
        cache: Option<leanlm_core::CacheOutcome>,
        /// The call with this id, or ids starting with it.
        #[arg(long)]
        id: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Tasks ranked by savings potential: what the calls do, what they cost, what they could cost.
    Tasks {
        #[command(flatten)]
        store: StoreArgs,
        /// Only the last N days.
        #[arg(long)]
        days: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// One task's profile, type with its reasons, and sample calls; or `task rename ID NAME`.
    #[command(args_conflicts_with_subcommands = true)]
    Task {
        #[command(subcommand)]
        action: Option<TaskAction>,
        /// The task id (see `leanlm tasks`).
        id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Only the last N days.
        #[arg(long)]
        days: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Everything recorded about one call, as JSON.
    Call {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
    /// Spend by model or by day.
    Spend {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = By::Model)]
        by: By,
        /// Only the last N days.
        #[arg(long)]
        days: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// What replacements and caches saved: what the asked-for model would have cost on the calls they served.
    Savings {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = SavingsGroup::Task)]
        by: SavingsGroup,
        /// Only the last N days.
        #[arg(long)]
        days: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Import existing logs: OpenAI chat request/response JSONL, and Batch API input and output files.
    Import {
        /// JSON Lines files; Batch API inputs and outputs are joined by custom_id across them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// The share of list price a Batch API call costs.
        #[arg(long, default_value_t = 0.5)]
        batch_price_factor: f64,
    },
    /// The models this deployment can route to: price, context, capabilities, and which may replace others.
    Catalog {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Replacements that apply to each task, with projected monthly savings.
    Candidates {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this task (id or name).
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Validate a replacement on a task's own logged calls: replay, score, control run, verdict.
    /// Exits 0 on pass, 2 on fail.
    Validate {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        args: validate::ValidateArgs,
    },
    /// Train a task's router for a cheap model on its validation outcomes, calibrated to a bound.
    TrainRouter {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        task: String,
        /// The cheap model the router keeps calls on.
        #[arg(long)]
        cheap: String,
        /// The agreement with the reference to keep, on held-out calls.
        #[arg(long, default_value_t = 0.95)]
        bound: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Train on the outcomes of this scorer only (default: the task's, as `validate` picks it).
        #[arg(long)]
        scorer: Option<String>,
    },
    /// Train a task's cascade: each cheap model answers a sample of its logged calls, and an acceptance
    /// score per model (hard checks, log-probabilities, sample agreement, the prompt) is fitted and the
    /// thresholds calibrated to a bound on the outcomes.
    TrainCascade {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        args: cascade::TrainCascadeArgs,
    },
    /// Stored validations, newest first.
    Validations {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this task (id or name).
        #[arg(long)]
        task: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One validation's report (an id or a unique prefix of one).
    Validation {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
        /// md or json.
        #[arg(long, default_value = "md")]
        format: String,
    },
    /// Deploy a replacement for a task to shadow or canary. Past shadow it needs a passing validation, or
    /// --force with a reason.
    Deploy {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        args: deploy::DeployArgs,
    },
    /// Move a task's policy up a stage: shadow → canary → live.
    Promote {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        task: String,
        /// The canary's share of calls (default 0.1).
        #[arg(long)]
        share: Option<f64>,
        /// Promote an unvalidated shadow, recording this reason.
        #[arg(long)]
        force: Option<String>,
    },
    /// Send a task back to its reference model.
    Rollback {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        task: String,
        #[arg(long)]
        reason: String,
    },
    /// Each task's policy: stage, replacement, share, and its online agreement.
    Policies {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Cache hits and savings per task, and the semantic cache's measured false-hit rate and threshold;
    /// with --clear, drops the semantic cache's entries of a task (or of all) in every gateway on the store.
    Cache {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
        /// Drop the semantic cache's entries (of --task, else of every task): stored ones now, those in running
        /// gateways' memory within a second. What the task's traffic taught stays.
        #[arg(long)]
        clear: bool,
        /// With --clear: the task, by id or name.
        #[arg(long, requires = "clear")]
        task: Option<String>,
    },
    /// Every policy change, manual or automatic: who, when, what, why.
    PolicyLog {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        task: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The price table in use (USD per million tokens): the bundled one, with imported prices over it.
    Prices {
        #[command(flatten)]
        store: StoreArgs,
        /// Import a price list in LiteLLM's layout (model_prices_and_context_window.json) into the store:
        /// every gateway and command reading the store prices calls with it from its next start.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
        /// The imported list's date (YYYY-MM-DD); default today.
        #[arg(long, requires = "import")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TaskAction {
    /// Give a task a name of your choosing.
    Rename {
        id: String,
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SavingsGroup {
    Task,
    /// Exact cache, semantic cache, or the replacement model.
    Technique,
    Day,
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    Model,
    /// Traffic, shadow, audit, validation, control, judge: what LeanLM itself spends, apart.
    Purpose,
    Day,
    Task,
    /// Task, policy version and role: spend per deployment stage.
    Policy,
}

fn parse_status(s: &str) -> Result<CallStatus, String> {
    s.parse()
}

fn since(hours: Option<f64>) -> Option<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    hours.map(|h| now - (h * 3_600_000.0) as i64)
}

fn main() -> std::process::ExitCode {
    // Output piped into `head` or `less` ends quietly when the reader stops, as other command-line tools do,
    // instead of panicking on the broken pipe. Not for `serve`: a client hanging up must not end the gateway.
    let cli = Cli::parse();
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo(_)) {
        // SAFETY: setting a signal's disposition to the default, before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A validation that ran and failed is an answer, not an error: exit 2, the report is printed.
        Err(e) if e.downcast_ref::<validate::VerdictFailed>().is_some() => std::process::ExitCode::from(2),
        Err(e) => {
            // `{:#}` prints the whole chain of context on one line, without a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEANLM_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Loads MiniLM for the semantic cache, the first time a request needs it.
fn local_embedder() -> leanlm_gateway::embedder::EmbedLoader {
    Box::new(|dir| {
        let dir = dir
            .map(std::path::Path::to_owned)
            .unwrap_or_else(leanlm_embed::default_model_dir);
        leanlm_embed::Embedder::load(&dir)
            .map(|e| std::sync::Arc::new(validate::LocalEmbedder(e)) as leanlm_gateway::embedder::SharedEmbed)
            .map_err(|e| e.to_string())
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing();
    match cli.command {
        Command::Catalog { store, json } => validate::catalog(&store, json),
        Command::TrainRouter {
            store,
            task,
            cheap,
            bound,
            seed,
            scorer,
        } => validate::train_router(&store, &task, &cheap, bound, seed, scorer.as_deref()),
        Command::TrainCascade { store, args } => cascade::train_cascade(&store, args),
        Command::Deploy { store, args } => deploy::deploy(&store, args),
        Command::Promote {
            store,
            task,
            share,
            force,
        } => deploy::promote(&store, &task, share, force),
        Command::Rollback { store, task, reason } => deploy::rollback(&store, &task, &reason),
        Command::Policies { store, json } => deploy::policies(&store, json),
        Command::Cache {
            store,
            json,
            clear: true,
            task,
        } => cache::clear(&store, task.as_deref(), json),
        Command::Cache { store, json, .. } => cache::cache(&store, json),
        Command::PolicyLog {
            store,
            task,
            limit,
            json,
        } => deploy::policy_log(&store, task.as_deref(), limit, json),
        Command::Candidates { store, task, json } => validate::candidates(&store, task.as_deref(), json),
        Command::Validate { store, args } => match validate::validate(&store, args)? {
            true => Ok(()),
            false => Err(validate::VerdictFailed.into()),
        },
        Command::Validations {
            store,
            task,
            limit,
            json,
        } => validate::validations(&store, task.as_deref(), limit, json),
        Command::Validation { store, id, format } => validate::validation(&store, &id, &format),
        Command::Demo(args) => demo::run(args, local_embedder()),
        Command::Optimize(args) => optimize::run(args),
        Command::Savings { store, by, days, json } => {
            use leanlm_control::savings::{SavingsBy, savings};
            if let Some(d) = days {
                anyhow::ensure!(d.is_finite() && d > 0.0, "--days must be a positive number of days");
            }
            let by = match by {
                SavingsGroup::Task => SavingsBy::Task,
                SavingsGroup::Technique => SavingsBy::Technique,
                SavingsGroup::Day => SavingsBy::Day,
            };
            let span = leanlm_store::Span::from(since(days.map(|d| d * 24.0)));
            let s = savings(&store.open()?, span, by, true)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            let mut t = crate::show::table(["", "calls", "spend", "would have been", "saved", "estimated"]);
            for r in s.rows.iter().chain([&s.total]) {
                t.add_row([
                    r.key.clone(),
                    r.calls.to_string(),
                    show::money(r.spend_usd),
                    show::money(r.would_have_usd),
                    show::money(r.saved_usd),
                    r.estimated_calls.to_string(),
                ]);
            }
            println!("{t}");
            println!(
                "Saved {} a month at the rate of the last {}. \"Would have been\": the model the client asked for on \
                 the same calls, exact where an audit re-asked it or a cache recorded it, otherwise the call's prompt \
                 at its price and the task's usual answer length (\"estimated\").",
                show::money(s.monthly_run_rate_usd),
                show::days(s.basis_days)
            );
            Ok(())
        }
        Command::Serve { config, listen, db } => {
            let config = Config::load(config_path(config.as_deref()).as_deref(), &Overrides { listen, db })?;
            leanlm_gateway::run(config, Some(local_embedder()))
        }
        Command::Calls {
            store,
            limit,
            model,
            task,
            status,
            since_hours,
            policy,
            cache,
            id,
            json,
        } => {
            let calls = store.open()?.calls(&CallFilter {
                limit,
                model,
                task,
                status,
                since_ms: since(since_hours),
                until_ms: None,
                id_prefix: id,
                policy,
                cache,
            })?;
            if json {
                for c in &calls {
                    println!("{}", serde_json::to_string(c)?);
                }
                return Ok(());
            }
            let mut t = crate::show::table([
                "time (UTC)",
                "id",
                "endpoint",
                "model",
                "provider",
                "status",
                "in",
                "out",
                "cost",
                "ms",
            ]);
            for c in &calls {
                let when = chrono_like(c.started_at_ms);
                let status = match c.http_status {
                    200 => c.status.to_string(),
                    s => format!("{} {s}", c.status),
                };
                let cost = if c.cost_estimated {
                    format!("~{}", show::money_opt(c.cost_usd))
                } else {
                    show::money_opt(c.cost_usd)
                };
                t.add_row([
                    when,
                    c.id.clone(),
                    c.endpoint.clone(),
                    c.served_model.clone().unwrap_or_else(|| c.requested_model.clone()),
                    c.provider.clone().unwrap_or_default(),
                    status,
                    c.input_tokens.map(|n| n.to_string()).unwrap_or_default(),
                    c.output_tokens.map(|n| n.to_string()).unwrap_or_default(),
                    cost,
                    format!("{:.0}", c.latency_ms),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        Command::Tasks { store, days, json } => {
            let (store, offers) = (store.open()?, offers(&store)?);
            let since_ms = since(days.map(|d| d * 24.0));
            let bar = indicatif::ProgressBar::new(0).with_message("profiling tasks");
            let rows = leanlm_control::tasks::ranked_with(&store, since_ms, &offers, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(t, p)| serde_json::json!({"task": t, "profile": p}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut table = crate::show::table([
                "id",
                "name",
                "type",
                "calls",
                "spend",
                "saves / month",
                "on",
                "from",
                "errors",
                "models",
            ]);
            for (t, p) in &rows {
                let (saves, on, basis) = match &p.savings {
                    Some(s) => (
                        show::money(s.monthly_savings_usd),
                        s.cheapest_model.clone(),
                        show::days(s.basis_days),
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                table.add_row([
                    t.id.clone(),
                    t.name.clone(),
                    p.verdict.as_ref().map(|v| v.kind.as_str()).unwrap_or("-").to_owned(),
                    t.calls.to_string(),
                    show::money(t.cost_usd),
                    saves,
                    on,
                    basis,
                    format!("{:.1}%", p.error_rate * 100.0),
                    p.models.keys().cloned().collect::<Vec<_>>().join(", "),
                ]);
            }
            println!("{table}");
            println!("Ranked by savings potential: what the cheapest model this deployment routes to and allows, and");
            println!("that supports what the task uses, would save a month, projected from the task's traffic in the");
            println!(
                "window (\"from\": how many days of it). An upper bound before any quality check; `leanlm candidates`"
            );
            println!("prices every kind of replacement.");
            if offers.is_empty() {
                println!(
                    "No model is allowed as a replacement yet, so none is priced: list them under [catalog] allow"
                );
                println!("in the config ([\"*\"] for every model the configured providers serve).");
            }
            Ok(())
        }
        Command::Task {
            action: Some(TaskAction::Rename { id, name, store }),
            ..
        } => {
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "the new name must not be empty");
            anyhow::ensure!(
                store.open()?.rename_task(&id, name)?,
                "no task with id {id}; see `leanlm tasks`"
            );
            println!("task {id} is now called \"{name}\"");
            Ok(())
        }
        Command::Task {
            action: None,
            id,
            store,
            days,
            json,
        } => {
            let id = id.context("name a task: `leanlm task ID` (ids are listed by `leanlm tasks`)")?;
            let (store, offers) = (store.open()?, offers(&store)?);
            let since_ms = since(days.map(|d| d * 24.0));
            let task = store
                .tasks(since_ms)?
                .into_iter()
                .find(|t| t.id == id)
                .with_context(|| format!("no task with id {id}; see `leanlm tasks`"))?;
            let profile = leanlm_control::tasks::profile_among(&store, &task, since_ms, Some(&offers))?;
            let samples = store.calls(&CallFilter {
                limit: 5,
                task: Some(id.clone()),
                ..Default::default()
            })?;
            if json {
                let v = serde_json::json!({"task": task, "profile": profile, "samples": samples});
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{} ({}, {})", task.name, task.id, task.origin);
            if let Some(v) = &profile.verdict {
                println!("type: {} because {}", v.kind.as_str(), v.reasons.join("; "));
            }
            if let Some(t) = &profile.template {
                println!("template:\n  {}", t.replace('\n', "\n  "));
            }
            println!(
                "calls: {}   spend: {}   errors: {:.1}%   exact duplicates: {:.1}%   distinct answers: {}",
                profile.calls,
                show::money(profile.spend_usd),
                profile.error_rate * 100.0,
                profile.duplicate_share * 100.0,
                profile.distinct_outputs
            );
            let p = |x: &Option<leanlm_profile::Percentiles>| {
                x.as_ref()
                    .map(|p| format!("p50 {:.0} / p95 {:.0}", p.p50, p.p95))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "input tokens: {}   output tokens: {}   latency ms: {}",
                p(&profile.input_tokens),
                p(&profile.output_tokens),
                p(&profile.latency_ms)
            );
            if let Some(sv) = &profile.savings {
                println!(
                    "savings potential: {} a month on {} (projected from {} of traffic; needs {})",
                    show::money(sv.monthly_savings_usd),
                    sv.cheapest_model,
                    show::days(sv.basis_days),
                    sv.needs.join(", ")
                );
            }
            let models: Vec<String> = profile.models.iter().map(|(m, n)| format!("{m} ({n})")).collect();
            println!("models: {}", models.join(", "));
            println!("recent calls:");
            for c in samples {
                println!(
                    "  {}  {}  {}  {}",
                    chrono_like(c.started_at_ms),
                    c.id,
                    c.status,
                    show::money_opt(c.cost_usd)
                );
            }
            Ok(())
        }
        Command::Call { store, id } => match store.open()?.call(&id)? {
            Some(c) => {
                println!("{}", serde_json::to_string_pretty(&c)?);
                Ok(())
            }
            None => anyhow::bail!("no call with id {id}"),
        },
        Command::Spend { store, by, days, json } => {
            let by = match by {
                By::Model => SpendBy::Model,
                By::Purpose => SpendBy::Purpose,
                By::Day => SpendBy::Day,
                By::Task => SpendBy::Task,
                By::Policy => SpendBy::Policy,
            };
            let store = store.open()?;
            let mut rows = store.spend(by, since(days.map(|d| d * 24.0)))?;
            if by == SpendBy::Task {
                // Tasks are shown by their names, with the id to use in `leanlm task ID`.
                let names: std::collections::HashMap<String, String> =
                    store.tasks(None)?.into_iter().map(|t| (t.id, t.name)).collect();
                for r in &mut rows {
                    if let Some(n) = names.get(&r.key).filter(|n| **n != r.key) {
                        r.key = format!("{n} ({})", r.key);
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let mut t = crate::show::table([
                match by {
                    SpendBy::Model => "model",
                    SpendBy::Purpose => "purpose",
                    SpendBy::Day => "day",
                    SpendBy::Task => "task",
                    SpendBy::Policy => "task, policy version, role",
                },
                "calls",
                "input",
                "cached",
                "output",
                "cost",
                "saved by cache",
            ]);
            let (mut total, mut saved) = (0.0, 0.0);
            for r in &rows {
                total += r.cost_usd;
                saved += r.cost_avoided_usd;
                let cost = if r.estimated_calls > 0 {
                    format!("{} ({} estimated)", show::money(r.cost_usd), r.estimated_calls)
                } else {
                    show::money(r.cost_usd)
                };
                t.add_row([
                    r.key.clone(),
                    r.calls.to_string(),
                    r.input_tokens.to_string(),
                    r.cached_input_tokens.to_string(),
                    r.output_tokens.to_string(),
                    cost,
                    show::money(r.cost_avoided_usd),
                ]);
            }
            println!("{t}");
            println!(
                "total: {}   saved by the cache: {}",
                show::money(total),
                show::money(saved)
            );
            Ok(())
        }
        Command::Import {
            files,
            store,
            batch_price_factor,
        } => {
            anyhow::ensure!(
                batch_price_factor.is_finite() && batch_price_factor > 0.0,
                "--batch-price-factor must be a positive number"
            );
            // Importing is how a call log starts: create the store if it does not exist yet.
            let url = store.url()?;
            let mut db = Store::open(&url).with_context(|| format!("opening {url}"))?;
            let bar = indicatif::ProgressBar::new(leanlm_control::import::total_bytes(&files));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {elapsed} (eta {eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let options = leanlm_control::import::ImportOptions { batch_price_factor };
            let report = leanlm_control::import::import_files(&files, &mut db, options, |b| bar.set_position(b))?;
            bar.finish_and_clear();
            for s in &report.skipped {
                eprintln!("{}:{}: skipped: {}", s.file.display(), s.line, s.reason);
            }
            println!(
                "imported {} calls into {}; {} lines skipped{}",
                report.imported,
                url,
                report.skipped.len(),
                if report.skipped.is_empty() {
                    ""
                } else {
                    " (listed above)"
                }
            );
            Ok(())
        }
        Command::Prices {
            store,
            import: Some(file),
            as_of,
            json,
        } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let url = store.url()?;
            let mut db = Store::open(&url).with_context(|| format!("opening {url}"))?;
            let as_of = as_of.unwrap_or_else(leanlm_cost::today);
            let s = leanlm_control::prices::import_litellm(&mut db, &text, &as_of, &file.display().to_string())
                .with_context(|| format!("importing {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "imported {} models as of {} into {url} ({} new, {} priced differently from the bundled table; {} \
                     entries of providers or modes LeanLM does not serve skipped). Gateways use them from their next start.",
                    s.imported, s.as_of, s.new, s.changed, s.skipped
                );
            }
            Ok(())
        }
        Command::Prices {
            store,
            import: None,
            json,
            ..
        } => {
            // The store's imports where there is a store; the bundled table alone where there is none yet.
            let table = match store.open() {
                Ok(db) => leanlm_control::prices::table(&db)?,
                Err(_) => leanlm_cost::PriceTable::bundled().clone(),
            };
            if json {
                let m: serde_json::Map<String, serde_json::Value> = table
                    .models()
                    .into_iter()
                    .map(|(k, e)| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["as_of"] = table.dated(k).into();
                        (k.to_owned(), v)
                    })
                    .collect();
                println!("{}", serde_json::json!({"as_of": table.newest(), "models": m}));
                return Ok(());
            }
            let mut t = crate::show::table([
                "model",
                "served by",
                "input",
                "cached input",
                "cache write",
                "output",
                "as of",
            ]);
            let opt = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into());
            for (name, e) in table.models() {
                t.add_row([
                    name.to_owned(),
                    e.host.as_str().to_owned(),
                    e.price.input.to_string(),
                    opt(e.price.cached_input),
                    opt(e.price.cache_write),
                    e.price.output.to_string(),
                    table.dated(name).to_owned(),
                ]);
            }
            println!("{t}");
            println!("USD per million tokens.");
            if let Some(warning) = leanlm_control::prices::staleness(&table) {
                println!("Warning: {warning}.");
            }
            Ok(())
        }
    }
}

/// The models tasks may move to: the configured catalog's allowed models (what `tasks` prices savings on).
/// Call it after opening the store, which puts the store's imported prices over the bundled ones.
fn offers(store: &StoreArgs) -> anyhow::Result<Vec<leanlm_profile::Offer>> {
    let config = store.config()?;
    Ok(leanlm_control::tasks::offers(&leanlm_gateway::route::catalog(&config)))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date-time dependency.
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_render_in_utc() {
        assert_eq!(super::chrono_like(0), "1970-01-01 00:00:00");
        assert_eq!(super::chrono_like(1_764_288_000_000), "2025-11-28 00:00:00");
    }
}
