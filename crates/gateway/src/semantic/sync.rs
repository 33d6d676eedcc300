//! The semantic cache's store thread, apart from the lookup path: it writes evidence and entries off the
//! request path, applies the clears recorded in the store, takes in what other gateways on the store cached
//! and verified, and prunes stored entries. The lookup path only ever queues to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use leanlm_store::{SemanticEntry, SemanticEvidence, Store};

use leanlm_semantic::Sample;

use super::{Evidence, Item, Memory, PartitionKey, TaskEvidence};
use crate::config::SemanticConfig;
use crate::unix_ms;

/// What the semantic cache's writer thread stores, in the order it was asked.
pub(super) enum Write {
    Evidence(SemanticEvidence),
    Entry(Box<SemanticEntry>),
    /// Deletes the stored entries of a task (`None`: of every task) cached up to a clear's time, once the
    /// ones queued before it are written.
    Clear(Option<String>, i64),
}

/// How often stored entries that expired or that no cache could hold any more are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often the writer looks for cache clears recorded in the store: the longest another gateway, or the
/// CLI, waits for its clear to reach this one.
const CLEARS_POLL: Duration = Duration::from_secs(1);
/// The semantic cache's thread for the store: writes evidence and entries off the request path, applies the
/// clears recorded in the store, takes in the entries other gateways on the store cached, and prunes stored
/// entries.
pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) memory: Arc<Memory>,
    /// The latest recorded clear applied.
    pub(super) clears_seen: i64,
    /// Where entries persist: what the store holds of other gateways' entries.
    pub(super) shared: Option<Shared>,
    /// The tasks' evidence, which other gateways' verified would-be hits join.
    pub(super) evidence: Evidence,
    /// The latest stored verified would-be hit taken in (or found to be this gateway's own).
    pub(super) evidence_seen: i64,
    /// Ids of this gateway's stored evidence not yet seen.
    pub(super) own_evidence: BTreeSet<i64>,
    /// The bound a task gets until this gateway serves it (and sets the task's own).
    pub(super) default_bound: f64,
    pub(super) judgement: crate::config::Judgement,
}

/// The entries gateways on one store share, by id.
pub(super) struct Shared {
    /// The embedding model of this gateway's vectors: only its entries are comparable.
    pub(super) embedding: String,
    /// The latest stored entry taken in (or found to be this gateway's own).
    pub(super) seen: i64,
    /// Ids of entries this gateway stored that are not yet seen: in memory already.
    pub(super) own: BTreeSet<i64>,
    /// Entries per partition and in all.
    pub(super) limits: (usize, usize),
}

/// How many stored entries one look at the store takes in at most; the next look takes the rest.
const SHARED_BATCH: usize = 1_000;

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub(super) fn run(mut self, rx: crate::queue::Receiver<Write>) {
        let (mut pruned, mut polled) = (Instant::now(), Instant::now());
        loop {
            let first = match rx.recv_timeout(CLEARS_POLL) {
                Ok(w) => Some(w),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.write(first.into_iter().chain(rx.try_iter().take(999)));
            // After this gateway's own queued entries are stored, so none of those outlives a clear.
            if polled.elapsed() >= CLEARS_POLL {
                polled = Instant::now();
                self.apply_clears();
                self.take_shared();
                self.take_evidence();
            }
            if let Some((per_partition, total)) = self.shared.as_ref().map(|s| s.limits)
                && pruned.elapsed() >= PRUNE_EVERY
            {
                pruned = Instant::now();
                if let Err(e) = self.store.prune_semantic_entries(unix_ms(), per_partition, total) {
                    tracing::warn!(error = %e, "could not prune stored semantic-cache entries");
                }
            }
        }
    }

    /// Stores a batch, in order: entries queued before a clear are written before it deletes.
    fn write(&mut self, batch: impl Iterator<Item = Write>) {
        let (mut evidence, mut entries) = (Vec::new(), Vec::new());
        for w in batch {
            match w {
                Write::Evidence(e) => evidence.push(e),
                Write::Entry(e) => entries.push(*e),
                Write::Clear(task, at_ms) => {
                    self.insert_entries(&mut entries);
                    self.delete_entries(task.as_deref(), at_ms);
                }
            }
        }
        if !evidence.is_empty() {
            match self.store.insert_semantic_evidence(&evidence) {
                Ok(ids) => self.own_evidence.extend(ids),
                Err(e) => tracing::error!(error = %e, "could not store semantic-cache evidence"),
            }
        }
        self.insert_entries(&mut entries);
    }

    fn insert_entries(&mut self, entries: &mut Vec<SemanticEntry>) {
        if entries.is_empty() {
            return;
        }
        match self.store.insert_semantic_entries(entries) {
            Ok(ids) => {
                if let Some(shared) = &mut self.shared {
                    shared.own.extend(ids);
                }
            }
            Err(e) => tracing::error!(error = %e, "could not store semantic-cache entries"),
        }
        entries.clear();
    }

    /// Takes in the would-be hits other gateways verified since the last look: every gateway calibrates a
    /// task's threshold on all of the task's traffic, not only on what passed through it.
    fn take_evidence(&mut self) {
        let store = &self.store;
        let rows = others_after(&mut self.evidence_seen, &mut self.own_evidence, |after| {
            store.semantic_evidence_after(after, SHARED_BATCH)
        });
        let mut learned: HashMap<String, Vec<Sample>> = HashMap::new();
        for e in rows {
            learned
                .entry(e.task_id)
                .or_default()
                .push(Sample::of(e.similarity, e.features.as_deref(), e.agreed));
        }
        for (task, samples) in learned {
            let task_evidence = self
                .evidence
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(task)
                .or_insert_with(|| Arc::new(Mutex::new(TaskEvidence::new(self.default_bound, self.judgement))))
                .clone();
            metrics::counter!("leanlm_semantic_evidence_shared_total").increment(samples.len() as u64);
            TaskEvidence::add_to(&task_evidence, samples);
        }
    }

    /// Takes in the live entries other gateways stored since the last look, so a request answered through
    /// one gateway serves its paraphrases through every gateway on the store.
    fn take_shared(&mut self) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        let (now_ms, now) = (unix_ms(), Instant::now());
        let (store, embedding) = (&self.store, &shared.embedding);
        let rows = others_after(&mut shared.seen, &mut shared.own, |after| {
            store.semantic_entries_after(after, embedding, now_ms, SHARED_BATCH)
        });
        let mut contexts = HashMap::new();
        for e in rows {
            let stored_at_ms = e.stored_at_ms;
            let (key, task, vector, item) = item_of(e, now_ms, now, &mut contexts);
            if self
                .memory
                .insert(key, &task, &vector, item, Some(stored_at_ms), shared.limits)
            {
                metrics::counter!("leanlm_semantic_shared_total").increment(1);
            }
        }
    }

    fn delete_entries(&mut self, task: Option<&str>, up_to_ms: i64) {
        if let Err(e) = self.store.delete_semantic_entries(task, up_to_ms) {
            tracing::error!(error = %e, "could not delete stored semantic-cache entries");
        }
    }

    /// Applies the clears recorded since the last look (by another gateway or the CLI; this gateway's own were
    /// applied when it recorded them).
    fn apply_clears(&mut self) {
        let clears = match self.store.cache_clears_after(self.clears_seen) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read recorded cache clears");
                return;
            }
        };
        for (id, task, at_ms) in clears {
            self.clears_seen = id;
            let here = self
                .memory
                .applied_here
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            if here {
                continue;
            }
            self.delete_entries(task.as_deref(), at_ms);
            let removed = self.memory.drop_task(task.as_deref(), at_ms);
            tracing::info!(
                task = task.as_deref().unwrap_or("(all)"),
                removed,
                "semantic cache cleared"
            );
        }
    }
}

/// The cache, filled with the live entries earlier runs stored. A store that cannot be read leaves the cache
/// empty (said in the log), never stops the gateway.
pub(super) fn load_entries(store: &mut Store, config: &SemanticConfig, embedding: &str) -> Memory {
    let now_ms = unix_ms();
    if let Err(e) = store.prune_semantic_entries(now_ms, config.max_entries, config.max_total_entries) {
        tracing::warn!(error = %e, "could not prune stored semantic-cache entries");
    }
    let entries = match store.semantic_entries(embedding, now_ms, config.max_entries, config.max_total_entries) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "could not read stored semantic-cache entries; starting empty");
            return Memory::default();
        }
    };
    let (now, memory) = (Instant::now(), Memory::default());
    let limits = (config.max_entries, config.max_total_entries);
    let mut contexts = HashMap::new();
    for e in entries {
        let (key, task, vector, item) = item_of(e, now_ms, now, &mut contexts);
        memory.insert(key, &task, &vector, item, None, limits);
    }
    let total = memory.total.load(std::sync::atomic::Ordering::Relaxed);
    if total > 0 {
        let partitions = memory.partitions.read().unwrap_or_else(|p| p.into_inner()).len();
        tracing::info!(entries = total, partitions, "semantic cache reloaded from the store");
    }
    memory
}

/// The rows other gateways stored after id `seen`, read in batches by `read` (rows after an id, oldest first).
/// Advances `seen`; this gateway's own rows (`own`) are skipped and forgotten, as are own ids the store
/// deleted before they were seen. A read error is logged and ends the look; the next one resumes.
fn others_after<T>(
    seen: &mut i64,
    own: &mut BTreeSet<i64>,
    mut read: impl FnMut(i64) -> Result<Vec<(i64, T)>, leanlm_store::StoreError>,
) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        let rows = match read(*seen) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not read what other gateways stored");
                break;
            }
        };
        let complete = rows.len() < SHARED_BATCH;
        for (id, row) in rows {
            *seen = id;
            if !own.remove(&id) {
                out.push(row);
            }
        }
        if complete {
            break;
        }
    }
    let seen = *seen;
    own.retain(|id| *id > seen);
    out
}

/// A stored entry as the cache holds it in memory: its partition, task, vector and item, as old as it is.
/// Entries of one system prompt or history share its embedding through `contexts`, as they did when cached.
fn item_of(
    e: SemanticEntry,
    now_ms: i64,
    now: Instant,
    contexts: &mut HashMap<String, Arc<Vec<f32>>>,
) -> (PartitionKey, String, Vec<f32>, Item) {
    let age = Duration::from_millis(u64::try_from(now_ms.saturating_sub(e.stored_at_ms)).unwrap_or(0));
    let ttl = Duration::from_millis(u64::try_from(e.expires_at_ms.saturating_sub(e.stored_at_ms)).unwrap_or(0));
    let context_vector = e
        .context_vector
        .map(|v| contexts.entry(e.context.clone()).or_insert_with(|| Arc::new(v)).clone());
    let item = Item {
        last: e.last,
        context: e.context,
        preamble: e.preamble,
        context_vector,
        body: Bytes::from(e.body),
        cost_usd: e.cost_usd,
        model: e.model,
        provider: e.provider,
        stored: now.checked_sub(age).unwrap_or(now),
        ttl,
    };
    (e.partition, e.task_id, e.last_vector, item)
}
