//! The semantic cache at run time: a similar enough request, in the same conversation context, answered
//! from an earlier answer, only where the task's own traffic shows that is safe.
//!
//! For an eligible request (the same rules as the exact cache, plus semantic caching switched on for its
//! task) the last user turn and the conversation before it are embedded, on the blocking pool, and the
//! nearest cached requests of the same partition (task, client format, provider, model and every other
//! request field) are compared: both the last turn and the context must be similar, and the lexical guards
//! must not veto (numbers, negation, entities, scope, opposites, direction, substitution; a bare reply such as
//! "yes please" matches only in the same conversation). What survives is a *would-be hit*.
//!
//! A would-be hit is served only when its similarity clears the task's threshold, which is read off the
//! task's verified would-be hits so that the false-hit rate's upper confidence bound stays under the
//! task's bound (`leanlm_semantic::calibrate`). Until then, and for a sample of hits after, the request goes
//! upstream as usual and the fresh answer is compared with the cached one by the task's scorer: learning
//! costs nothing, and the estimate keeps being checked while hits are served.
//!
//! Gateways on one store share what they learn: each takes in, every second, the would-be hits the others
//! verified, the clears any of them recorded and, where entries persist, the others' new entries.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use leanlm_core::transcript::{Conversation, conversation};
use leanlm_semantic::{
    Assessment, Decision, EVIDENCE_WINDOW, Estimate, Features, Partition, Query, Sample, assess, calibrate, dot, judge,
};
use leanlm_store::{SemanticEntry, SemanticEvidence, Store};
use leanlm_validate::ScorerSpec;
use leanlm_validate::score::{self, TaskContext};
use leanlm_wire::ClientFormat;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod sync;

use sync::{Shared, Write, Writer, load_entries};

use crate::config::{Embeddings, Judgement, SemanticConfig, TaskSemantic};
use crate::embedder::Embedder;
use crate::route::{Routes, Target};
use crate::unix_ms;

/// Nearest entries examined per lookup: the most similar one may be vetoed where the next is fine.
const NEIGHBOURS: usize = 4;
/// How far under the similarity floor a neighbour is still judged, for misspellings of the same words.
const SPELLING_SLACK: f32 = 0.1;
/// Context embeddings remembered (system prompts and histories repeat across calls).
const CONTEXT_MEMO: usize = 4_096;

/// A cached answer with what it was the answer to.
struct Item {
    last: String,
    context: String,
    /// The context's system prompt and prefill (`None`: an entry stored before these were kept).
    preamble: Option<String>,
    context_vector: Option<Arc<Vec<f32>>>,
    body: Bytes,
    cost_usd: Option<f64>,
    model: String,
    provider: String,
    stored: Instant,
    ttl: Duration,
}

/// A task's verified would-be hits, the threshold they give, and the bound it keeps.
struct TaskEvidence {
    evidence: leanlm_semantic::Evidence,
    estimate: Estimate,
    bound: f64,
}

impl TaskEvidence {
    fn new(bound: f64, judgement: Judgement) -> TaskEvidence {
        TaskEvidence {
            evidence: leanlm_semantic::Evidence::new(judgement == Judgement::Learned, EVIDENCE_WINDOW),
            estimate: calibrate(&[], bound),
            bound,
        }
    }

    fn score(&self, similarity: f32, features: Option<&Features>) -> Option<f32> {
        self.evidence.score(similarity, features)
    }

    /// Adds verified would-be hits and calibrates once.
    fn extend(&mut self, v: impl IntoIterator<Item = Sample>) {
        self.evidence.extend(v);
        self.recalibrate();
    }

    fn recalibrate(&mut self) {
        self.estimate = self.evidence.estimate(self.bound);
    }

    /// Adds verified would-be hits to a shared task's evidence. A refit of the task's verifier that falls
    /// due runs outside the lock, so the task's lookups never wait for a fit.
    fn add_to(cell: &Mutex<TaskEvidence>, v: impl IntoIterator<Item = Sample>) {
        let refit = {
            let mut e = cell.lock().unwrap_or_else(|p| p.into_inner());
            let refit = e.evidence.add(v);
            e.recalibrate();
            refit
        };
        if let Some(refit) = refit {
            let fitted = refit.fit();
            let mut e = cell.lock().unwrap_or_else(|p| p.into_inner());
            if e.evidence.install(fitted) {
                e.recalibrate();
            }
        }
    }
}

type PartitionKey = [u8; 32];

/// Each task's verified would-be hits, by task id: this gateway's and, taken in from the store, the others'.
type Evidence = Arc<RwLock<HashMap<String, Arc<Mutex<TaskEvidence>>>>>;

pub struct SemanticCache {
    config: SemanticConfig,
    tasks: HashMap<String, TaskSemantic>,
    embedder: Arc<Embedder>,
    /// The entries, shared with the writer thread, which applies clears recorded in the store.
    memory: Arc<Memory>,
    contexts: Mutex<HashMap<[u8; 32], Arc<Vec<f32>>>>,
    evidence: Evidence,
    /// `None` once dropping: closing the queue lets the writer finish.
    writer: Option<crate::queue::Sender<Write>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Which embedding model makes the vectors, as stored with each entry; `None` when entries are not
    /// persisted.
    persisted_as: Option<String>,
}

/// The cache's entries in memory.
#[derive(Default)]
struct Memory {
    partitions: RwLock<Partitions>,
    /// Entries in all partitions.
    total: std::sync::atomic::AtomicUsize,
    /// Clears this gateway applied when it recorded them, which its writer then need not apply again.
    applied_here: Mutex<std::collections::HashSet<i64>>,
    /// The time of the latest clear applied, per task (`None`: of every task). Changed and read only under
    /// the `partitions` write lock, so an entry another gateway stored before a clear is never taken after
    /// it.
    cleared: Mutex<HashMap<Option<String>, i64>>,
}

impl Memory {
    /// Caches an entry in its partition, within `(per partition, in all)` entries (a full partition
    /// overwrites its oldest entry; a full cache takes no new one). An entry another gateway stored at
    /// `stored_at_ms` is not taken if a clear since has covered it. False when it was not taken.
    fn insert(
        &self,
        key: PartitionKey,
        task: &str,
        vector: &[f32],
        item: Item,
        stored_at_ms: Option<i64>,
        limits: (usize, usize),
    ) -> bool {
        use std::sync::atomic::Ordering;
        let (per_partition, total) = limits;
        let budget_left = self.total.load(Ordering::Relaxed) < total;
        let partition = {
            let mut all = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = stored_at_ms {
                let cleared = self.cleared.lock().unwrap_or_else(|p| p.into_inner());
                let covered = |t: Option<String>| cleared.get(&t).is_some_and(|c| at <= *c);
                if covered(None) || covered(Some(task.to_owned())) {
                    return false;
                }
            }
            match all.get(&key) {
                Some(s) => s.entries.clone(),
                None if budget_left => all
                    .entry(key)
                    .or_insert_with(|| Shelf::new(task.to_owned(), vector.len(), per_partition))
                    .entries
                    .clone(),
                None => {
                    metrics::counter!("leanlm_semantic_full_total").increment(1);
                    return false;
                }
            }
        };
        let mut p = partition.write().unwrap_or_else(|p| p.into_inner());
        let grows = p.len() < per_partition;
        if grows && !budget_left {
            metrics::counter!("leanlm_semantic_full_total").increment(1);
            return false;
        }
        if p.insert(vector, item).is_none() {
            return false;
        }
        if grows {
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Drops the entries of a task (by id; `None`: of every task), for a clear at `at_ms`, and returns how
    /// many.
    fn drop_task(&self, task: Option<&str>, at_ms: i64) -> usize {
        let removed: usize = {
            let mut all = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            let mut cleared = self.cleared.lock().unwrap_or_else(|p| p.into_inner());
            let latest = cleared.entry(task.map(str::to_owned)).or_insert(at_ms);
            *latest = (*latest).max(at_ms);
            drop(cleared);
            let mut removed = 0;
            all.retain(|_, s| {
                let keep = task.is_some_and(|t| t != s.task);
                if !keep {
                    removed += s.entries.read().unwrap_or_else(|p| p.into_inner()).len();
                }
                keep
            });
            removed
        };
        // Saturating: an insert counted just after its partition was dropped must not wrap the count.
        let _ = self.total.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |t| Some(t.saturating_sub(removed)),
        );
        metrics::counter!("leanlm_semantic_cleared_total").increment(removed as u64);
        removed
    }
}

/// A partition's entries and the task they belong to.
struct Shelf {
    task: String,
    entries: Arc<RwLock<Partition<Item>>>,
}

impl Shelf {
    fn new(task: String, dim: usize, capacity: usize) -> Shelf {
        Shelf {
            task,
            entries: Arc::new(RwLock::new(Partition::new(dim, capacity))),
        }
    }
}

type Partitions = HashMap<PartitionKey, Shelf>;

/// An eligible request, ready to look up.
pub struct Probe {
    task: String,
    partition: PartitionKey,
    context: String,
    /// The part of `context` that is not the conversation: system prompt, prefill.
    preamble: String,
    last: String,
    /// Whether a hit may be served (a `cache:semantic` policy in shadow only learns).
    serve: bool,
    /// The task's false-hit bound.
    bound: f64,
    scorer: ScorerSpec,
    ttl: Duration,
}

/// A semantic hit to serve.
pub struct Hit {
    pub body: Bytes,
    pub cost_usd: Option<f64>,
    pub model: String,
    pub provider: String,
    pub similarity: f32,
}

/// What to do with the upstream's answer once it is complete: cache it, or compare it with the cached
/// answer the request would have been served.
pub struct Pending {
    probe: Probe,
    last_vector: Arc<Vec<f32>>,
    context_vector: Option<Arc<Vec<f32>>>,
    verify: Option<(Bytes, f32, Option<Features>)>,
}

pub enum Lookup {
    Hit(Hit),
    Pending(Pending),
    /// Embedding failed: the request goes upstream and nothing is cached.
    Skipped,
}

impl SemanticCache {
    /// Opens the cache: its tasks' evidence and, where entries persist, the live entries stored by earlier
    /// runs. `log_bodies` is the store's privacy setting; without it entries stay in memory.
    pub fn new(
        config: SemanticConfig,
        tasks: HashMap<String, TaskSemantic>,
        store_url: &str,
        log_bodies: bool,
        embedder: Arc<Embedder>,
    ) -> anyhow::Result<SemanticCache> {
        use anyhow::Context;
        // The substitution guard's lexicon (a few MB) is parsed in the background at start where config
        // switches semantic caching on; otherwise on first use (a policy may switch it on later).
        if config.enabled || tasks.values().any(|t| t.enabled == Some(true)) {
            std::thread::Builder::new()
                .name("leanlm-lexicon".into())
                .spawn(leanlm_semantic::load_lexicon)
                .context("starting the lexicon's loader")?;
        }
        let mut store = Store::open(store_url).context("opening the store for the semantic cache")?;
        let mut evidence: HashMap<String, Arc<Mutex<TaskEvidence>>> = HashMap::new();
        // Settings may name a task by its name; evidence is kept by id.
        let names: HashMap<String, String> = store
            .tasks(None)
            .context("reading task names")?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect();
        // Per task, oldest first, taken in at once: the verifier is fitted once, not every hundred samples.
        let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
        for row in store
            .semantic_evidence(None, EVIDENCE_WINDOW)
            .context("reading semantic-cache evidence")?
        {
            samples.entry(row.task_id).or_default().push(Sample::of(
                row.similarity,
                row.features.as_deref(),
                row.agreed,
            ));
        }
        for (task, samples) in samples {
            let name = names.get(&task).map(String::as_str).unwrap_or("");
            let bound = tasks
                .get(&task)
                .or_else(|| tasks.get(name))
                .and_then(|t| t.bound)
                .unwrap_or(config.bound);
            let mut e = TaskEvidence::new(bound, config.judgement);
            e.extend(samples);
            evidence.insert(task, Arc::new(Mutex::new(e)));
        }
        // Read after loading: what another gateway verified meanwhile is left out (a few samples fewer),
        // never counted twice (which would overstate the evidence).
        let evidence_seen = store
            .last_semantic_evidence()
            .context("reading the latest semantic-cache evidence")?;
        let evidence: Evidence = Arc::new(RwLock::new(evidence));
        let persisted_as = (config.persist && log_bodies).then(|| match &config.embeddings {
            Embeddings::Local { .. } => "local".to_owned(),
            Embeddings::Remote { model } => format!("remote:{model}"),
        });
        // Read before loading: an entry another gateway stores meanwhile is loaded twice at worst, never missed.
        let shared = match &persisted_as {
            Some(embedding) => Some(Shared {
                embedding: embedding.clone(),
                seen: store
                    .last_semantic_entry()
                    .context("reading the latest stored semantic-cache entry")?,
                own: BTreeSet::new(),
                limits: (config.max_entries, config.max_total_entries),
            }),
            None => None,
        };
        let memory = Arc::new(match &persisted_as {
            Some(embedding) => load_entries(&mut store, &config, embedding),
            None => Memory::default(),
        });
        let clears_seen = store.last_cache_clear().context("reading recorded cache clears")?;
        let (tx, rx) = crate::queue::bounded::<Write>(10_000);
        let writer = Writer {
            store,
            memory: memory.clone(),
            clears_seen,
            shared,
            evidence: evidence.clone(),
            evidence_seen,
            own_evidence: BTreeSet::new(),
            default_bound: config.bound,
            judgement: config.judgement,
        };
        let writer_thread = std::thread::Builder::new()
            .name("leanlm-semantic".into())
            .spawn(move || writer.run(rx))
            .context("starting the semantic-cache writer")?;
        Ok(SemanticCache {
            config,
            tasks,
            embedder,
            memory,
            contexts: Mutex::default(),
            evidence,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            persisted_as,
        })
    }

    /// The task's settings, by id or name.
    fn task_settings(&self, id: &str, name: &str) -> Option<&TaskSemantic> {
        self.tasks.get(id).or_else(|| self.tasks.get(name))
    }

    /// The request as the semantic cache sees it, or `None` when it may not use it: semantic caching off
    /// for its task, or a request that is not plain text (images, audio).
    ///
    /// `allowed` is the exact cache's verdict on the request (deterministic, or opted in) with its TTL;
    /// `policy` is set when a `cache:semantic` policy governs the task: whether this call may be served
    /// from the cache (canary share, live) or only teaches it (shadow), and the policy's scorer.
    #[allow(clippy::too_many_arguments)]
    /// `scope` is the credential's (see the exact cache's key). `request` gives the body as JSON; it is asked for only where the task's semantic cache is on, so other
    /// tasks never pay for the parse.
    pub fn probe<'r>(
        &self,
        task: (&str, &str),
        policy: Option<(bool, &ScorerSpec)>,
        allowed: Option<Duration>,
        format: ClientFormat,
        target: &Target,
        scope: Option<&[u8; 32]>,
        request: impl FnOnce() -> Option<&'r Value>,
    ) -> Option<Probe> {
        let ttl = allowed?;
        let settings = self.task_settings(task.0, task.1);
        let configured = settings.and_then(|s| s.enabled).unwrap_or(self.config.enabled);
        let serve = match policy {
            Some((serve, _)) => serve,
            None if configured => true,
            None => return None,
        };
        let v = request()?;
        let Conversation {
            context,
            preamble,
            last,
        } = conversation(v)?;
        // Every other field shapes the answer too (tools, response format, sampling): it partitions.
        const NOT_PARTITIONING: [&str; 7] = [
            "stream",
            "stream_options",
            "user",
            "metadata",
            "model",
            "messages",
            "system",
        ];
        let rest = match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| !NOT_PARTITIONING.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        };
        let mut h = Sha256::new();
        for part in [task.0, format.as_str(), &target.provider.name, &target.upstream_model] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        // Where the client's own key authorises the call, its answers serve that key alone.
        if let Some(scope) = scope {
            h.update(b"scope");
            h.update(scope);
        }
        h.update(rest.to_string().as_bytes());
        Some(Probe {
            task: task.0.to_owned(),
            partition: h.finalize().into(),
            context,
            preamble,
            last,
            serve,
            bound: settings.and_then(|s| s.bound).unwrap_or(self.config.bound),
            scorer: policy
                .map(|(_, s)| s.clone())
                .or_else(|| settings.and_then(|s| s.scorer.clone()))
                .unwrap_or(ScorerSpec::Similarity { threshold: None }),
            ttl,
        })
    }

    /// The task's evidence, created with its false-hit bound on first use.
    fn evidence_of(&self, task: &str, bound: f64) -> Arc<Mutex<TaskEvidence>> {
        if let Some(e) = self.evidence.read().unwrap_or_else(|p| p.into_inner()).get(task) {
            // Evidence taken in from another gateway came with the default bound: the task's own applies.
            let mut t = e.lock().unwrap_or_else(|p| p.into_inner());
            if t.bound != bound {
                t.bound = bound;
                t.extend([]);
            }
            return e.clone();
        }
        self.evidence
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(TaskEvidence::new(bound, self.config.judgement))))
            .clone()
    }

    /// Embeds the request and finds the nearest cached request that may answer it.
    pub async fn lookup(&self, routes: &Routes, http: &reqwest::Client, probe: Probe) -> Lookup {
        let context_key: Option<[u8; 32]> =
            (!probe.context.is_empty()).then(|| Sha256::digest(probe.context.as_bytes()).into());
        let memo = context_key.and_then(|k| self.contexts.lock().unwrap_or_else(|p| p.into_inner()).get(&k).cloned());
        let mut texts = vec![probe.last.clone()];
        if context_key.is_some() && memo.is_none() {
            texts.push(probe.context.clone());
        }
        if !leanlm_semantic::lexicon_loaded() {
            // Once, off the async workers: the guards compare words against it.
            let _ = tokio::task::spawn_blocking(leanlm_semantic::load_lexicon).await;
        }
        let t0 = Instant::now();
        let vectors = match self.embedder.embed(routes, http, texts).await {
            Ok(v) => v,
            Err(e) => {
                metrics::counter!("leanlm_semantic_errors_total").increment(1);
                tracing::warn!(error = %e, "semantic cache: embedding failed, treated as a miss");
                return Lookup::Skipped;
            }
        };
        metrics::histogram!("leanlm_semantic_embed_seconds").record(t0.elapsed().as_secs_f64());
        let mut vectors = vectors.into_iter();
        let Some(last_vector) = vectors.next().map(Arc::new) else {
            return Lookup::Skipped;
        };
        let context_vector = match (memo, vectors.next(), context_key) {
            (Some(m), ..) => Some(m),
            (None, Some(v), Some(k)) => {
                let v = Arc::new(v);
                let mut memo = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
                if memo.len() >= CONTEXT_MEMO {
                    memo.clear();
                }
                memo.insert(k, v.clone());
                Some(v)
            }
            _ => None,
        };
        let partition = self
            .memory
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&probe.partition)
            .map(|s| s.entries.clone());
        let found = partition.and_then(|p| {
            let p = p.read().unwrap_or_else(|e| e.into_inner());
            self.nearest_allowed(&p, &probe, &last_vector, context_vector.as_deref())
        });
        let Some((body, cost_usd, model, provider, similarity, features)) = found else {
            return Lookup::Pending(Pending {
                probe,
                last_vector,
                context_vector,
                verify: None,
            });
        };
        let clears = {
            let evidence = self.evidence_of(&probe.task, probe.bound);
            let e = evidence.lock().unwrap_or_else(|p| p.into_inner());
            let score = e.score(similarity, features.as_ref());
            e.estimate.threshold.zip(score).is_some_and(|(t, s)| s >= t)
        };
        if probe.serve && clears && rand::random::<f64>() >= self.config.verify {
            metrics::counter!("leanlm_semantic_hits_total").increment(1);
            return Lookup::Hit(Hit {
                body,
                cost_usd,
                model,
                provider,
                similarity,
            });
        }
        Lookup::Pending(Pending {
            probe,
            last_vector,
            context_vector,
            verify: Some((body, similarity, features)),
        })
    }

    /// The most similar cached request whose context matches and that no guard vetoes, with its similarity:
    /// the lower of the last turns' and the contexts'.
    #[allow(clippy::type_complexity)]
    fn nearest_allowed(
        &self,
        p: &Partition<Item>,
        probe: &Probe,
        last: &[f32],
        context: Option<&Vec<f32>>,
    ) -> Option<(Bytes, Option<f64>, String, String, f32, Option<Features>)> {
        for n in p.nearest(last, NEIGHBOURS) {
            // A little below the floor too: the same words misspelt score lower than they are, and `judge`
            // takes them as the same text.
            if n.similarity < self.config.min_similarity - SPELLING_SLACK {
                break;
            }
            let Some(item) = p.get(n.slot) else { continue };
            if item.stored.elapsed() >= item.ttl {
                continue;
            }
            let context_similarity = match (context, &item.context_vector) {
                (None, None) => None,
                (Some(a), Some(b)) => Some(dot(a, b)),
                _ => continue,
            };
            let new = Query {
                context: &probe.context,
                preamble: Some(&probe.preamble),
                last: &probe.last,
            };
            let cached = Query {
                context: &item.context,
                preamble: item.preamble.as_deref(),
                last: &item.last,
            };
            let (sim, min) = (n.similarity, self.config.min_similarity);
            let judged = match self.config.judgement {
                Judgement::Guards => match judge(new, cached, sim, context_similarity, min) {
                    Decision::Candidate { similarity } => Ok((similarity, None)),
                    refused => Err(refused),
                },
                Judgement::Learned => match assess(new, cached, sim, context_similarity, min) {
                    Assessment::Candidate { similarity, features } => Ok((similarity, Some(features))),
                    Assessment::Refused(refused) => Err(refused),
                },
            };
            let (similarity, features) = match judged {
                Ok(candidate) => candidate,
                // What each guard stops in production, as fow-cache measures it offline.
                Err(Decision::ContextDiffers) => {
                    metrics::counter!("leanlm_semantic_vetoes_total", "guard" => "context").increment(1);
                    continue;
                }
                Err(Decision::Vetoed(v)) => {
                    metrics::counter!("leanlm_semantic_vetoes_total", "guard" => v.as_str()).increment(1);
                    continue;
                }
                Err(_) => continue,
            };
            return Some((
                item.body.clone(),
                item.cost_usd,
                item.model.clone(),
                item.provider.clone(),
                similarity,
                features,
            ));
        }
        None
    }

    /// Takes the upstream's complete answer (in the client's format): caches it, or, for a would-be hit,
    /// scores it against the cached answer, off the response path.
    pub fn complete(
        self: &Arc<Self>,
        pending: Pending,
        body: &Bytes,
        cost_usd: Option<f64>,
        target: &Target,
        call_id: &str,
    ) {
        let Pending {
            probe,
            last_vector,
            context_vector,
            verify,
        } = pending;
        match verify {
            None => {
                // What the store keeps of the entry, where entries persist.
                let stored = self.persisted_as.as_ref().map(|embedding| {
                    let now = unix_ms();
                    SemanticEntry {
                        partition: probe.partition,
                        task_id: probe.task.clone(),
                        embedding: embedding.clone(),
                        stored_at_ms: now,
                        expires_at_ms: now.saturating_add(i64::try_from(probe.ttl.as_millis()).unwrap_or(i64::MAX)),
                        last: probe.last.clone(),
                        context: probe.context.clone(),
                        last_vector: last_vector.to_vec(),
                        context_vector: context_vector.as_ref().map(|v| v.to_vec()),
                        body: body.to_vec(),
                        cost_usd,
                        model: target.model.clone(),
                        provider: target.provider.name.clone(),
                        preamble: Some(probe.preamble.clone()),
                    }
                });
                let item = Item {
                    last: probe.last,
                    context: probe.context,
                    preamble: Some(probe.preamble),
                    context_vector,
                    body: body.clone(),
                    cost_usd,
                    model: target.model.clone(),
                    provider: target.provider.name.clone(),
                    stored: Instant::now(),
                    ttl: probe.ttl,
                };
                let limits = (self.config.max_entries, self.config.max_total_entries);
                if !self
                    .memory
                    .insert(probe.partition, &probe.task, &last_vector, item, None, limits)
                {
                    return;
                }
                if let Some(entry) = stored
                    && !self.queue(Write::Entry(Box::new(entry)))
                {
                    metrics::counter!("leanlm_semantic_entries_dropped_total").increment(1);
                }
            }
            Some((cached, similarity, features)) => {
                let this = self.clone();
                let fresh = body.clone();
                let call_id = call_id.to_owned();
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                // On the blocking pool: scoring, and every hundredth verified hit refitting the task's verifier
                // (~15 ms at a full window), must not hold up an async worker.
                handle.spawn_blocking(move || {
                    let text = |b: &Bytes| {
                        serde_json::from_slice::<Value>(b)
                            .map(|v| leanlm_wire::output_text(&v))
                            .unwrap_or_default()
                    };
                    let s = score::score(&probe.scorer, &text(&fresh), &text(&cached), &TaskContext::default());
                    let note = (!s.agree).then_some(s.note);
                    this.record(
                        &probe.task,
                        probe.bound,
                        (similarity, features),
                        s.agree,
                        &call_id,
                        note,
                    );
                });
            }
        }
    }

    /// Drops the cached entries of a task (by id; `None`: of every task) from this gateway's memory, after the
    /// clear with id `clear` was recorded in the store (which deleted the stored entries, and which every
    /// other gateway on the store applies within [`CLEARS_POLL`]). Returns how many this gateway held. What
    /// the task's traffic taught (its evidence and threshold) stays.
    pub fn clear(&self, task: Option<&str>, clear: i64, at_ms: i64) -> usize {
        // Entries still queued for the store are deleted once written; with the queue full, the writer
        // applies the recorded clear as another gateway's, which comes to the same.
        if self.queue(Write::Clear(task.map(str::to_owned), at_ms)) {
            self.memory
                .applied_here
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(clear);
        }
        self.memory.drop_task(task, at_ms)
    }

    /// Hands a row to the writer thread; false when the queue is full.
    fn queue(&self, w: Write) -> bool {
        self.writer.as_ref().is_some_and(|tx| tx.try_send(w).is_ok())
    }

    fn record(
        &self,
        task: &str,
        bound: f64,
        (similarity, features): (f32, Option<Features>),
        agreed: bool,
        call_id: &str,
        note: Option<String>,
    ) {
        metrics::counter!("leanlm_semantic_verified_total", "agreed" => if agreed { "true" } else { "false" })
            .increment(1);
        TaskEvidence::add_to(
            &self.evidence_of(task, bound),
            [Sample {
                similarity,
                features,
                agreed,
            }],
        );
        let row = SemanticEvidence {
            task_id: task.to_owned(),
            at_ms: unix_ms(),
            similarity,
            agreed,
            call_id: Some(call_id.to_owned()),
            note,
            features: features.map(|f| f.0.to_vec()),
        };
        if !self.queue(Write::Evidence(row)) {
            metrics::counter!("leanlm_semantic_evidence_dropped_total").increment(1);
        }
    }
}

impl Drop for SemanticCache {
    /// Closes the writer's queue and waits for it to store what is left, so a graceful shutdown loses no
    /// evidence or entry.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.writer_thread.take()
            && t.join().is_err()
        {
            tracing::error!("the semantic-cache writer thread panicked");
        }
    }
}
