//! Tasks: finding one by what a user typed, profiling and ranking them, and the candidates that could
//! replace each one's model.

use leanlm_core::Replacement;
use leanlm_profile::TaskProfile;
use leanlm_store::{Span, Store, TaskLookup, TaskRow};
use leanlm_validate::{Candidate, CatalogModel, Needs, TaskUsage, candidates};

use crate::{ControlError, unix_ms};

/// How many recent calls are read whole to type a task.
const TYPING_SAMPLE: usize = 200;

/// The task a user named by its id or its name; a name several tasks share is refused.
pub fn find(store: &Store, key: &str) -> Result<TaskRow, ControlError> {
    match store.find_task(key)? {
        TaskLookup::Found(t) => Ok(t),
        TaskLookup::Missing => Err(ControlError::NotFound(format!(
            "no task with id or name `{key}`; see `leanlm tasks`"
        ))),
        TaskLookup::Ambiguous(n) => Err(ControlError::Conflict(format!(
            "{n} tasks are named `{key}`; use the id (see `leanlm tasks`)"
        ))),
    }
}

/// The task with this exact id, with its activity in a window.
pub fn by_id(store: &Store, id: &str, span: impl Into<Span>) -> Result<TaskRow, ControlError> {
    store
        .tasks(span)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ControlError::NotFound(format!("no task with id `{id}`; see `leanlm tasks`")))
}

/// Gives a task a name of the user's choosing.
pub fn rename(store: &Store, id: &str, name: &str) -> Result<(), ControlError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ControlError::Invalid("the name must not be empty".into()));
    }
    if store.rename_task(id, name)? {
        Ok(())
    } else {
        Err(ControlError::NotFound(format!("no task with id `{id}`")))
    }
}

/// The models a task may move to: the catalog's allowed models with a known price.
///
/// A priced model whose capabilities are unknown (configured under `[models]`, not in the price table) is
/// offered as able to do the work, as `candidates` offers it ("validation will tell"): the savings figure
/// and the candidates list read the same set of models.
pub fn offers(catalog: &[CatalogModel]) -> Vec<leanlm_profile::Offer> {
    let unknown = leanlm_cost::Capabilities {
        kind: leanlm_cost::ModelKind::Chat,
        context: u64::MAX,
        tools: true,
        json_schema: true,
        vision: true,
    };
    catalog
        .iter()
        .filter(|m| m.allowed)
        .filter_map(|m| {
            Some(leanlm_profile::Offer {
                name: m.name.clone(),
                price: m.price?,
                caps: m.caps.unwrap_or(unknown),
            })
        })
        .collect()
}

/// A task's profile over a window, typed from a sample of its latest calls, with its savings priced on
/// every model of the bundled price table (for typing alone; [`profile_among`] for what it could save here).
pub fn profile(store: &Store, task: &TaskRow, span: impl Into<Span>) -> Result<TaskProfile, ControlError> {
    profile_among(store, task, span, None)
}

/// [`profile`], with its savings priced only on `offers`: the models this deployment routes to and allows.
pub fn profile_among(
    store: &Store,
    task: &TaskRow,
    span: impl Into<Span>,
    offers: Option<&[leanlm_profile::Offer]>,
) -> Result<TaskProfile, ControlError> {
    let span = span.into();
    let stats = store.task_stats(&task.id, span)?;
    let mut samples = Vec::new();
    for id in store.task_sample_ids(&task.id, TYPING_SAMPLE)? {
        if let Some(c) = store.call(&id)? {
            samples.push(c);
        }
    }
    Ok(leanlm_profile::profile(
        &stats,
        &samples,
        task.origin == leanlm_core::Origin::Chat,
        offers,
        // A window that ended in the past projects from its own end, not from today.
        span.until_ms.map_or_else(unix_ms, |u| u.min(unix_ms())),
    ))
}

/// Every task with its profile, ranked by what a cheaper model among `offers` could save on it.
pub fn ranked(
    store: &Store,
    span: impl Into<Span>,
    offers: &[leanlm_profile::Offer],
) -> Result<Vec<(TaskRow, TaskProfile)>, ControlError> {
    ranked_with(store, span, offers, |_, _| {})
}

/// [`ranked`], telling `progress` how many of how many tasks are profiled.
pub fn ranked_with(
    store: &Store,
    span: impl Into<Span>,
    offers: &[leanlm_profile::Offer],
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<(TaskRow, TaskProfile)>, ControlError> {
    let span = span.into();
    let mut tasks = store.tasks(span)?;
    // Over a window with an end or a start, a task with no calls in it is not part of the picture.
    if span != Span::ALL {
        tasks.retain(|t| t.calls > 0);
    }
    let total = tasks.len();
    let mut rows = tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let p = profile_among(store, &t, span, Some(offers))?;
            progress(i + 1, total);
            Ok((t, p))
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    let key = |p: &TaskProfile| {
        p.savings
            .as_ref()
            .map(|s| s.monthly_savings_usd)
            .unwrap_or(f64::NEG_INFINITY)
    };
    rows.sort_by(|a, b| {
        key(&b.1)
            .total_cmp(&key(&a.1))
            .then(b.1.spend_usd.total_cmp(&a.1.spend_usd))
    });
    Ok(rows)
}

/// A task's last month of traffic and the replacements from `catalog` that apply to it, priced. The catalog
/// is what the deployment can route to, which the gateway's configuration knows.
pub fn candidates_for(
    store: &Store,
    catalog: &[CatalogModel],
    task: &TaskRow,
) -> Result<(TaskUsage, Vec<Candidate>), ControlError> {
    let now = unix_ms();
    let since = now - 30 * 86_400_000;
    let profile = profile_among(store, task, Some(since), Some(&offers(catalog)))?;
    let needs = profile
        .savings
        .as_ref()
        .map(|s| Needs::from_profile(&s.needs))
        .unwrap_or_default();
    let stats = store.task_stats(&task.id, Some(since))?;
    let usage = TaskUsage::from_stats(&stats, now, needs);
    let mut list = candidates(&usage, catalog);
    // A learned replacement whose latest validation found it no better than a random split at its share
    // earns no place over the simpler thing: say so, and propose the fixed split (its cheap model as a
    // canary on that share) instead.
    let validations = store.validations(Some(&task.id), 200)?;
    let mut simpler = Vec::new();
    for c in list.iter_mut() {
        let (Replacement::Router { cheap, .. } | Replacement::Cascade { cheap, .. }) = &c.replacement else {
            continue;
        };
        let Some(chance) = validations
            .iter()
            .find(|v| v.candidate == c.spec)
            .and_then(|v| serde_json::from_str::<leanlm_validate::Report>(&v.report).ok())
            .and_then(|r| r.chance)
        else {
            continue;
        };
        if chance.better_than_chance {
            continue;
        }
        let share = chance.cheap_share * 100.0;
        c.why = format!(
            "its latest validation found it no better than chance: the cheap model agrees {:.1}% on the calls it \
             keeps and {:.1}% on the others, so a fixed split does as well; {}",
            chance.cheap_agreement_on_kept * 100.0,
            chance.cheap_agreement_on_others * 100.0,
            c.why
        );
        simpler.push(Candidate {
            replacement: Replacement::Model { model: cheap.clone() },
            spec: Replacement::Model { model: cheap.clone() }.to_string(),
            monthly_cost_usd: None,
            monthly_savings_usd: None,
            why: format!(
                "a fixed split instead of `{}`, which is no better than chance: deploy {cheap} as a canary on \
                 {share:.0}% of calls (`leanlm deploy --task {} --replacement {cheap} --stage canary --share {:.2}`)",
                c.spec, task.id, chance.cheap_share
            ),
            available: true,
        });
    }
    list.extend(simpler);
    Ok((usage, list))
}
