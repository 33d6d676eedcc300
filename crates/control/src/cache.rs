//! The caches seen from the control plane: what they served per task and saved, the semantic cache's
//! false-hit estimate, and withdrawing a task's semantic entries.

use std::collections::{BTreeMap, HashMap};

use leanlm_semantic::{EVIDENCE_WINDOW, Estimate, Evidence, Judge, Sample};
use leanlm_store::{Span, Store};
use serde::Serialize;

use crate::{ControlError, unix_ms};

/// What `leanlm cache` and the admin API show for a task: its hits and, for the semantic cache, the
/// false-hit estimate from its verified would-be hits.
#[derive(Debug, Clone, Serialize)]
pub struct TaskCache {
    pub task_id: String,
    pub task_name: Option<String>,
    /// Semantic caching switched on in the config (`None`: not named there).
    pub semantic_configured: Option<bool>,
    pub exact_hits: u64,
    pub semantic_hits: u64,
    pub cost_avoided_usd: f64,
    /// `None` until a would-be hit has been verified.
    pub estimate: Option<Estimate>,
    /// What the threshold is on: the similarity, or (learned judgement) the score the task's evidence
    /// chose.
    pub judge: Option<Judge>,
}

/// The semantic cache's settings the overview reports against, as the configuration gives them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[cache.semantic] enabled`.
    pub enabled: bool,
    /// `[cache.semantic] bound`: the false-hit rate a task's threshold keeps by default.
    pub bound: f64,
    /// Per task id or name: switched on or off, and its own bound.
    pub tasks: HashMap<String, TaskSettings>,
    /// `[cache.semantic] judgement = "learned"`: thresholds apply to the learned verifier's score, not to
    /// the similarity.
    pub learned: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TaskSettings {
    pub enabled: Option<bool>,
    pub bound: Option<f64>,
}

/// Per task: cache hits, savings, and the semantic cache's false-hit estimate, from the store.
pub fn overview(store: &Store, settings: &Settings, span: Span) -> Result<Vec<TaskCache>, ControlError> {
    let names: HashMap<String, String> = store.tasks(None)?.into_iter().map(|t| (t.id, t.name)).collect();
    let task_settings = |id: &str| {
        let name = names.get(id).map(String::as_str).unwrap_or("");
        settings.tasks.get(id).or_else(|| settings.tasks.get(name))
    };
    let configured = |id: &str| {
        task_settings(id)
            .and_then(|s| s.enabled)
            .or(settings.enabled.then_some(true))
    };
    let mut rows: BTreeMap<String, TaskCache> = BTreeMap::new();
    fn row<'a>(
        rows: &'a mut BTreeMap<String, TaskCache>,
        id: &str,
        new: impl FnOnce() -> TaskCache,
    ) -> &'a mut TaskCache {
        rows.entry(id.to_owned()).or_insert_with(new)
    }
    let new = |id: &str| TaskCache {
        task_id: id.to_owned(),
        task_name: names.get(id).cloned(),
        semantic_configured: configured(id),
        exact_hits: 0,
        semantic_hits: 0,
        cost_avoided_usd: 0.0,
        estimate: None,
        judge: None,
    };
    for (task, kind, n, avoided) in store.cache_hits(span)? {
        let r = row(&mut rows, &task, || new(&task));
        match kind.as_str() {
            "hit" => r.exact_hits += n,
            _ => r.semantic_hits += n,
        }
        r.cost_avoided_usd += avoided;
    }
    // The same reading of the evidence as the gateway's (`leanlm_semantic::Evidence`).
    let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
    for e in store.semantic_evidence(None, EVIDENCE_WINDOW)? {
        samples
            .entry(e.task_id)
            .or_default()
            .push(Sample::of(e.similarity, e.features.as_deref(), e.agreed));
    }
    for (task, samples) in samples {
        let mut evidence = Evidence::new(settings.learned, EVIDENCE_WINDOW);
        evidence.extend(samples);
        let bound = task_settings(&task).and_then(|s| s.bound).unwrap_or(settings.bound);
        let r = row(&mut rows, &task, || new(&task));
        r.estimate = Some(evidence.estimate(bound));
        r.judge = Some(evidence.judge());
    }
    Ok(rows.into_values().collect())
}

/// A recorded clear of the semantic cache.
#[derive(Debug, Clone, Serialize)]
pub struct Cleared {
    /// The task cleared; `None`: every task.
    pub task: Option<String>,
    pub clear_id: i64,
    pub at_ms: i64,
    pub stored_entries_deleted: usize,
}

/// Withdraws the semantic cache's entries of a task (by id or name) or, without one, of every task: the
/// stored ones at once; every gateway on the store drops what it holds within a second, when it reads the
/// clear recorded here.
pub fn clear(store: &mut Store, task: Option<&str>) -> Result<Cleared, ControlError> {
    let task = task
        .map(|key| crate::tasks::find(store, key))
        .transpose()?
        .map(|t| t.id);
    let at_ms = unix_ms();
    let (clear_id, deleted) = store.clear_semantic_cache(task.as_deref(), at_ms)?;
    Ok(Cleared {
        task,
        clear_id,
        at_ms,
        stored_entries_deleted: deleted,
    })
}
