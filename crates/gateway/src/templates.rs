//! Mined templates to and from the store. Discovery mines templates from the calls it sees (per-user
//! system prompts, inputs pasted inline); kept in the store, a restart knows them from its first call, and
//! every instance sharing the store learns what the others mined within a sync interval, so they agree on
//! the task of a call instead of each relearning it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use leanlm_profile::Discoverer;
use leanlm_store::Store;

const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Loads every kept template into `tasks`; returns the last rowid read, where the sync goes on from.
pub(crate) fn load(store: &Store, tasks: &Discoverer) -> anyhow::Result<i64> {
    let rows = store.mined_templates_after(0)?;
    tasks.learn_templates(rows.iter().map(|(_, t)| t));
    Ok(rows.last().map_or(0, |(rowid, _)| *rowid))
}

/// Keeps the templates mined since the last save.
pub(crate) fn save(store: &mut Store, tasks: &Discoverer) {
    let fresh = tasks.take_mined();
    if fresh.is_empty() {
        return;
    }
    if let Err(e) = store.save_mined_templates(&fresh) {
        // Only persistence is lost: the templates still serve in this process.
        tracing::warn!(error = %e, templates = fresh.len(), "could not keep mined templates");
    }
}

/// Saves what this instance mines and learns what others mined, every [`SYNC_INTERVAL`], until the
/// discoverer is dropped with the gateway.
pub(crate) fn spawn_sync(tasks: &Arc<Discoverer>, mut store: Store, mut after: i64) -> anyhow::Result<()> {
    let tasks: Weak<Discoverer> = Arc::downgrade(tasks);
    std::thread::Builder::new()
        .name("leanlm-templates".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SYNC_INTERVAL);
                let Some(tasks) = tasks.upgrade() else { return };
                save(&mut store, &tasks);
                match store.mined_templates_after(after) {
                    Ok(rows) => {
                        tasks.learn_templates(rows.iter().map(|(_, t)| t));
                        after = rows.last().map_or(after, |(rowid, _)| *rowid);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read mined templates"),
                }
            }
        })?;
    Ok(())
}
