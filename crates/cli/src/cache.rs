//! `leanlm cache`: what the caches served per task, what that saved, and the semantic cache's measured
//! false-hit rate.

use anyhow::Context;

use crate::StoreArgs;

/// `leanlm cache --clear`: records a clear in the store, which deletes the stored entries; running gateways
/// apply it to what they hold within a second.
pub fn clear(store_args: &StoreArgs, task: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut store = store_args.open()?;
    let cleared = leanlm_control::cache::clear(&mut store, task).context("--task")?;
    if json {
        let (task, id, deleted) = (&cleared.task, cleared.clear_id, cleared.stored_entries_deleted);
        println!(
            "{}",
            serde_json::json!({"task": task, "clear_id": id, "stored_entries_deleted": deleted})
        );
    } else {
        println!(
            "Cleared the semantic cache of {}: {} stored entries deleted; running gateways on this store drop \
             theirs within a second.",
            cleared
                .task
                .as_deref()
                .map_or("every task".to_owned(), |t| format!("task {t}")),
            cleared.stored_entries_deleted
        );
    }
    Ok(())
}

pub fn cache(store_args: &StoreArgs, json: bool) -> anyhow::Result<()> {
    let config = store_args.config()?;
    let store = store_args.open()?;
    let rows = leanlm_control::cache::overview(&store, &config.cache_settings(), leanlm_store::Span::ALL)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "No cache hits or semantic-cache evidence yet. The exact cache answers repeated deterministic requests;\n\
             switch the semantic cache on per task ([cache.tasks.NAME] semantic = true) or with\n\
             `leanlm deploy --task ID --replacement cache:semantic --stage canary`."
        );
        return Ok(());
    }
    let mut table = crate::show::table([
        "task",
        "exact hits",
        "semantic hits",
        "saved",
        "verified",
        "false hits",
        "false-hit rate (upper)",
        "bound",
        "threshold",
    ]);
    for r in &rows {
        let task = match &r.task_name {
            Some(n) if *n != r.task_id => format!("{n} ({})", r.task_id),
            _ => r.task_id.clone(),
        };
        let (verified, false_hits, rate, bound, threshold) = match &r.estimate {
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            Some(e) => (
                e.n.to_string(),
                e.false_hits.to_string(),
                format!("{:.2}% (≤ {:.2}%)", e.rate * 100.0, e.upper * 100.0),
                format!("{:.2}%", e.bound * 100.0),
                match (e.threshold, r.judge) {
                    (Some(t), Some(j)) if j != leanlm_semantic::Judge::Similarity => {
                        format!("{t:.3} ({} score)", j.as_str())
                    }
                    (Some(t), _) => format!("{t:.3}"),
                    (None, _) => format!("learning ({} clean needed)", leanlm_semantic::evidence_needed(e.bound)),
                },
            ),
        };
        table.add_row([
            task,
            r.exact_hits.to_string(),
            r.semantic_hits.to_string(),
            crate::show::money(r.cost_avoided_usd),
            verified,
            false_hits,
            rate,
            bound,
            threshold,
        ]);
    }
    println!("{table}");
    println!(
        "verified: would-be semantic hits sent upstream anyway and compared with the cached answer; \
         the threshold keeps the false-hit rate's upper 95% bound under the task's bound"
    );
    Ok(())
}
