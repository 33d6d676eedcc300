//! `leanlm deploy`, `promote`, `rollback`, `policies` and `policy-log`: moving a validated replacement
//! through its stages, and reading where each task stands.

use leanlm_control::policy::{self as deploy, DeployRequest};
use leanlm_deploy::Stage;
use leanlm_validate::stats::wilson;

use crate::StoreArgs;
use crate::validate::find_task;

/// Who is making a change, for the audit log: `LEANLM_ACTOR` where a script names itself, else the OS user
/// (`USER`, `LOGNAME`, else the account of the process's uid, as containers often set neither).
fn actor() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(a) = env("LEANLM_ACTOR") {
        return a;
    }
    let user = env("USER").or_else(|| env("LOGNAME")).or_else(account_of_uid);
    format!("cli:{}", user.unwrap_or_else(|| "unknown".into()))
}

/// The account name of the process's uid, from `/etc/passwd` (`uid:N` where it has none).
#[cfg(unix)]
fn account_of_uid() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let (name, _, id) = (f.next()?, f.next()?, f.next()?);
        (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

#[cfg(not(unix))]
fn account_of_uid() -> Option<String> {
    None
}

/// Everything `leanlm deploy` takes.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The task (id or name).
    #[arg(long)]
    pub task: String,
    /// The replacement: a model name (or model:NAME), a trained router:CHEAP,STRONG, or cache:semantic.
    #[arg(long)]
    pub replacement: String,
    /// shadow or canary.
    #[arg(long, default_value = "shadow")]
    pub stage: String,
    /// In canary, the share of calls the replacement serves (default 0.1).
    #[arg(long)]
    pub share: Option<f64>,
    /// The share of calls checked by the other model (default 0.1).
    #[arg(long)]
    pub audit_rate: Option<f64>,
    /// The online agreement the replacement must keep (default: the bound its passing validation cleared, else
    /// 0.95).
    #[arg(long)]
    pub bound: Option<f64>,
    /// The highest share of replacement failures (default 0.05).
    #[arg(long)]
    pub error_bound: Option<f64>,
    /// Scored calls before any automatic decision (default 20).
    #[arg(long)]
    pub min_samples: Option<u64>,
    /// Move up a stage automatically when the online evidence clears the bound.
    #[arg(long)]
    pub auto_promote: bool,
    /// How online answers are compared (default: the validation's, else from the task type).
    #[arg(long)]
    pub scorer: Option<String>,
    /// Go past shadow without a passing validation, recording this reason.
    #[arg(long)]
    pub force: Option<String>,
}

fn describe(p: &leanlm_deploy::Policy) -> String {
    let share = match p.stage {
        Stage::Canary => format!(" on {:.0}% of calls", p.share * 100.0),
        _ => String::new(),
    };
    format!(
        "task {}: {} is {}{share} (policy version {}, audit {:.0}%, bound {:.1}%)",
        p.task_id,
        p.replacement,
        p.stage,
        p.version,
        p.audit_rate * 100.0,
        p.bound * 100.0
    )
}

pub fn deploy(store_args: &StoreArgs, a: DeployArgs) -> anyhow::Result<()> {
    if !store_args.config()?.log_bodies {
        eprintln!(
            "warning: [store] log_bodies is off, so no call can be checked online: shadow gathers no evidence and \
             nothing can roll back on quality (replacement errors still count)"
        );
    }
    let mut store = store_args.open()?;
    let task = find_task(&store, &a.task)?;
    let stage: Stage = a.stage.parse().map_err(anyhow::Error::msg)?;
    let policy = deploy::deploy(
        &mut store,
        DeployRequest {
            task_id: task.id,
            replacement: a.replacement.parse().map_err(anyhow::Error::msg)?,
            stage,
            share: a.share,
            audit_rate: a.audit_rate,
            bound: a.bound,
            error_bound: a.error_bound,
            min_samples: a.min_samples,
            auto_promote: a.auto_promote,
            scorer: a.scorer.map(|s| s.parse()).transpose().map_err(anyhow::Error::msg)?,
            force: a.force,
            actor: actor(),
        },
    )?;
    println!("{}", describe(&policy));
    println!(
        "Running gateways pick it up within {} s.",
        deploy::SYNC_INTERVAL.as_secs()
    );
    Ok(())
}

pub fn promote(store_args: &StoreArgs, task: &str, share: Option<f64>, force: Option<String>) -> anyhow::Result<()> {
    let mut store = store_args.open()?;
    let task = find_task(&store, task)?;
    let promoted = deploy::promote(&mut store, &task.id, share, force, &actor());
    // The evidence the promotion rested on (or was refused for), either way.
    if let Some(version) = deploy::overview(&store)?
        .into_iter()
        .find(|(p, _)| p.task_id == task.id)
        .map(|(p, _)| if promoted.is_ok() { p.version - 1 } else { p.version })
    {
        let c = store.online_counts(&task.id, version)?;
        let a = leanlm_core::stats::wilson(c.agreed, c.scored, leanlm_deploy::ONLINE_CONFIDENCE);
        eprintln!(
            "Online evidence of version {version}: {} of {} scored answers agreed ({:.1}%, interval {:.1}%–{:.1}%); \
             {} failures in {} served.",
            c.agreed,
            c.scored,
            a.rate * 100.0,
            a.low * 100.0,
            a.high * 100.0,
            c.errors,
            c.attempts
        );
    }
    println!("{}", describe(&promoted?));
    Ok(())
}

pub fn rollback(store_args: &StoreArgs, task: &str, reason: &str) -> anyhow::Result<()> {
    let mut store = store_args.open()?;
    let task = find_task(&store, task)?;
    let policy = deploy::rollback(&mut store, &task.id, reason, &actor())?;
    println!("{}", describe(&policy));
    Ok(())
}

pub fn policies(store_args: &StoreArgs, json: bool) -> anyhow::Result<()> {
    let store = store_args.open()?;
    let rows = deploy::overview(&store)?;
    let names: std::collections::HashMap<String, String> =
        store.tasks(None)?.into_iter().map(|t| (t.id, t.name)).collect();
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, c)| serde_json::json!({"policy": p, "online": c}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut table = crate::show::table([
        "task",
        "stage",
        "replacement",
        "share",
        "audit",
        "bound",
        "online agreement",
        "errors",
        "version",
        "since (UTC)",
    ]);
    for (p, c) in &rows {
        let a = wilson(c.agreed, c.scored, leanlm_deploy::ONLINE_CONFIDENCE);
        table.add_row([
            match names.get(&p.task_id) {
                Some(n) if *n != p.task_id => format!("{n} ({})", p.task_id),
                _ => p.task_id.clone(),
            },
            p.stage.to_string(),
            p.replacement.to_string(),
            format!("{:.0}%", p.share * 100.0),
            format!("{:.0}%", p.audit_rate * 100.0),
            format!("{:.1}%", p.bound * 100.0),
            if c.scored == 0 {
                "-".into()
            } else {
                format!(
                    "{:.1}% [{:.1}–{:.1}] of {}",
                    a.rate * 100.0,
                    a.low * 100.0,
                    a.high * 100.0,
                    c.scored
                )
            },
            format!("{} of {}", c.errors, c.attempts),
            p.version.to_string(),
            crate::chrono_like(p.updated_at_ms),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn policy_log(store_args: &StoreArgs, task: Option<&str>, limit: usize, json: bool) -> anyhow::Result<()> {
    let store = store_args.open()?;
    let task_id = match task {
        Some(t) => Some(find_task(&store, t)?.id),
        None => None,
    };
    let rows = store.policy_audit(task_id.as_deref(), limit)?;
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let mut table = crate::show::table(["time (UTC)", "task", "version", "who", "what", "from", "to", "why"]);
    for r in &rows {
        table.add_row([
            crate::chrono_like(r.at_ms),
            r.task_id.clone(),
            r.version.to_string(),
            r.actor.clone(),
            r.action.to_string(),
            r.from_stage.clone().unwrap_or_else(|| "-".into()),
            r.to_stage.clone(),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}
