use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::{CallRecord, Store};

/// Records per transaction: large enough to amortise the commit, small enough to keep latency to disk low.
const BATCH: usize = 512;
/// How often an idle writer looks for new records: the longest a record waits before its transaction.
/// Each commit rewrites the index pages it touched and appends them to the WAL, so fewer, larger
/// transactions cost less per record: at 1,000 calls/s, polling every 100 ms instead of 10 halved the
/// writer's CPU per record (60 → 32 µs on a slow 2-vCPU VM; `bench/overhead.sh`).
const POLL: Duration = Duration::from_millis(100);

/// What the queue may hold: records, and the bytes of their bodies.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub records: usize,
    pub bytes: usize,
}

/// The bytes a queued record holds, bodies counted in full.
fn size_of(r: &CallRecord) -> usize {
    512 + r.request_body.as_ref().map_or(0, String::len) + r.response_body.as_ref().map_or(0, String::len)
}

/// Writes a batch. A store that fails (another process holding the database's lock, a full disk) is tried
/// again with growing waits for as long as the queue behind has room: records wait in memory rather than
/// being lost to a lock that clears. Once the queue is full, the batch is counted as failed and said.
/// How long a failing store is retried once the gateway is shutting down (no new records will come).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

fn write(store: &mut Store, batch: &[CallRecord], stats: &Stats, room: impl Fn(Duration) -> bool) {
    let n = batch.len() as u64;
    let started = Instant::now();
    let mut wait = Duration::from_millis(50);
    let mut result = store.insert_batch(batch);
    while result.is_err() && room(started.elapsed()) {
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(1));
        stats.retried.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("leanlm_call_log_retries_total").increment(1);
        result = store.insert_batch(batch);
    }
    match result {
        Ok(()) => {
            stats.written.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("leanlm_call_log_written_total").increment(n);
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("leanlm_call_log_failed_total").increment(n);
            tracing::error!(error = %e, records = n, "writing call log records failed");
        }
    }
}

/// The request path's handle on the call log. Cloning is cheap.
#[derive(Clone)]
pub struct CallLog {
    /// `None` for a log that keeps nothing (replays for validation are not traffic).
    tx: Option<mpsc::Sender<CallRecord>>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    dropped: AtomicU64,
    /// Records queued without their bodies because the queue's bytes were full.
    stripped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    /// Bytes the queued records hold, against [`QueueLimits::bytes`].
    queued_bytes: AtomicUsize,
    /// Set by [`LogWriter::finish`]: the writer drains the queue and stops.
    stopping: std::sync::atomic::AtomicBool,
    max_bytes: usize,
    last_drop_warning: std::sync::Mutex<Option<Instant>>,
}

impl CallLog {
    /// A log that keeps nothing.
    pub fn discard() -> CallLog {
        CallLog {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Queues a record without waiting. Where the queue's bytes are full, the record goes without its bodies
    /// (its metadata and cost are what the log must not lose); where its records are full, it is dropped.
    /// Both are counted, and a drop is warned about at most once a second.
    pub fn record(&self, mut record: CallRecord) {
        let Some(tx) = &self.tx else { return };
        if self.stats.stopping.load(Ordering::SeqCst) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("leanlm_call_log_dropped_total").increment(1);
            tracing::warn!(id = %record.id, "call log record after the writer stopped: dropped");
            return;
        }
        let mut size = size_of(&record);
        if self.stats.queued_bytes.load(Ordering::Relaxed) + size > self.stats.max_bytes
            && (record.request_body.is_some() || record.response_body.is_some())
        {
            record.request_body = None;
            record.response_body = None;
            size = size_of(&record);
            self.stats.stripped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("leanlm_call_log_bodies_dropped_total").increment(1);
        }
        self.stats.queued_bytes.fetch_add(size, Ordering::Relaxed);
        match tx.try_send(record) {
            Ok(()) => {}
            Err(e) => {
                self.stats.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "writer stopped",
                };
                let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("leanlm_call_log_dropped_total").increment(1);
                let mut last = self.stats.last_drop_warning.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    *last = Some(Instant::now());
                    tracing::warn!(reason, dropped_total = total, "call log record dropped");
                }
            }
        }
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Records queued without their bodies because the queue's bytes were full.
    pub fn stripped(&self) -> u64 {
        self.stats.stripped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Records lost to a failing store (each failure is also logged).
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }
}

/// The writer thread. Join it after every [`CallLog`] is dropped to flush the queue, or [`LogWriter::finish`]
/// it while some are still held.
pub struct LogWriter {
    thread: JoinHandle<()>,
    stats: Arc<Stats>,
}

impl LogWriter {
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("call log writer thread panicked");
        }
    }

    /// Writes everything queued and stops, even while a [`CallLog`] is still held (a call or an online
    /// check still running at shutdown): what it records after this is counted as dropped.
    pub fn finish(self) {
        self.stats.stopping.store(true, Ordering::SeqCst);
        self.join();
    }
}

/// Starts the writer on its own thread, so SQLite's blocking I/O never runs on the async runtime.
pub fn spawn_writer(mut store: Store, limits: QueueLimits) -> (CallLog, LogWriter) {
    let (tx, mut rx) = mpsc::channel::<CallRecord>(limits.records.max(1));
    let stats = Arc::new(Stats {
        max_bytes: limits.bytes,
        ..Stats::default()
    });
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("leanlm-call-log".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            // The batch in hand still counts against the queue's bytes until it is written.
            let mut batch_bytes = 0usize;
            loop {
                // The writer polls instead of blocking on the channel: a sender then never has to wake
                // this thread, so logging costs the request path no cross-thread wake-up, and a quiet
                // gateway still writes within one poll interval.
                let closed = loop {
                    match rx.try_recv() {
                        Ok(r) => {
                            batch_bytes += size_of(&r);
                            batch.push(r);
                            if batch.len() == BATCH {
                                break false;
                            }
                        }
                        // Asked to finish: what was queued is in the batch.
                        Err(mpsc::error::TryRecvError::Empty) => break thread_stats.stopping.load(Ordering::SeqCst),
                        Err(mpsc::error::TryRecvError::Disconnected) => break true,
                    }
                };
                if batch.is_empty() {
                    if closed {
                        break;
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                // A full batch means a backlog: write on at once. A partial one drained the queue, so wait a
                // poll interval before the next: looping straight back would commit each record that arrived
                // during the write in a transaction of its own (at 1,000 calls/s, batches of one or two, at
                // 46–64 µs of CPU per record instead of ~10).
                let backlog = batch.len() == BATCH;
                // Room: the queue is not full, and (shutting down) the store has had its 10 s.
                write(&mut store, &batch, &thread_stats, |tried| {
                    rx.len() < rx.max_capacity() && !(rx.is_closed() && tried > SHUTDOWN_RETRY)
                });
                thread_stats.queued_bytes.fetch_sub(batch_bytes, Ordering::Relaxed);
                batch_bytes = 0;
                batch.clear();
                if closed {
                    break;
                }
                if !backlog {
                    std::thread::sleep(POLL);
                }
            }
        })
        .expect("spawning the call log writer thread");
    (
        CallLog {
            tx: Some(tx),
            stats: stats.clone(),
        },
        LogWriter { thread, stats },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallFilter;
    use crate::sqlite::tests::record;

    const LIMITS: QueueLimits = QueueLimits {
        records: 10_000,
        bytes: 64 << 20,
    };

    fn temp_db(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("leanlm-writer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("w.db").display());
        (dir, url)
    }

    /// Another process holding the database's write lock for longer than the busy timeout: records wait and
    /// are written once it clears, none lost (issue 24: a batch was dropped after one 50 ms retry).
    #[test]
    fn records_wait_out_a_lock_held_elsewhere() {
        let (dir, url) = temp_db("lock");
        let store = Store::open(&url).unwrap();
        let holder = rusqlite::Connection::open(dir.join("w.db")).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (log, writer) = spawn_writer(store, LIMITS);
        for i in 0..1000 {
            log.record(record(&format!("id{i:05}"), "m", i, 0.001));
        }
        // Longer than two attempts at the store's 5 s busy timeout each.
        std::thread::sleep(Duration::from_secs(11));
        holder.execute_batch("COMMIT").unwrap();
        let stats = log.stats.clone();
        drop(log);
        writer.join();
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        assert!(stats.retried.load(Ordering::Relaxed) > 0, "the lock was in the way");
        let calls = Store::open(&url)
            .unwrap()
            .calls(&CallFilter {
                limit: 5000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(calls.len(), 1000);
        std::fs::remove_dir_all(dir).ok();
    }

    /// With the queue's bytes full, records keep their metadata and cost and go without bodies.
    #[test]
    fn a_queue_full_of_bytes_drops_bodies_before_records() {
        let (dir, url) = temp_db("bytes");
        let store = Store::open(&url).unwrap();
        let holder = rusqlite::Connection::open(dir.join("w.db")).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (log, writer) = spawn_writer(
            store,
            QueueLimits {
                records: 10_000,
                bytes: 100 * 1024,
            },
        );
        for i in 0..200 {
            let mut r = record(&format!("id{i:05}"), "m", i, 0.001);
            r.response_body = Some("x".repeat(4096));
            log.record(r);
        }
        assert!(log.stripped() > 150, "{}", log.stripped());
        assert_eq!(log.dropped(), 0);
        holder.execute_batch("COMMIT").unwrap();
        drop(log);
        writer.join();
        let store = Store::open(&url).unwrap();
        let calls = store
            .calls(&CallFilter {
                limit: 5000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(calls.len(), 200, "every record kept");
        assert!(calls.iter().all(|c| c.cost_usd == Some(0.001)));
        std::fs::remove_dir_all(dir).ok();
    }

    /// Something still holding the log at shutdown (an online check) does not keep its queue from the store.
    #[test]
    fn finishing_writes_the_queue_while_a_log_is_still_held() {
        let (dir, url) = temp_db("finish");
        let (log, writer) = spawn_writer(Store::open(&url).unwrap(), LIMITS);
        for i in 0..300 {
            log.record(record(&format!("id{i:05}"), "m", i, 0.001));
        }
        let held = log.clone();
        writer.finish();
        held.record(record("late", "m", 1, 0.0));
        assert_eq!(held.dropped(), 1, "a record after the finish is counted");
        let n = Store::open(&url)
            .unwrap()
            .calls(&CallFilter {
                limit: 5000,
                ..Default::default()
            })
            .unwrap()
            .len();
        assert_eq!(n, 300);
        drop((log, held));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn everything_queued_is_flushed_on_join() {
        let dir = std::env::temp_dir().join(format!("leanlm-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("w.db").display());
        let (log, writer) = spawn_writer(Store::open(&url).unwrap(), LIMITS);
        for i in 0..2000 {
            log.record(record(&format!("id{i:05}"), "m", i, 0.001));
        }
        let probe = log.clone();
        drop(log);
        drop(probe);
        writer.join();
        let calls = Store::open(&url)
            .unwrap()
            .calls(&CallFilter {
                limit: 5000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(calls.len(), 2000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (log, writer) = spawn_writer(
            Store::open("sqlite::memory:").unwrap(),
            QueueLimits {
                records: 1,
                bytes: 1 << 20,
            },
        );
        // The writer may drain some; pushing many more than capacity must drop at least one, never block.
        for i in 0..10_000 {
            log.record(record(&format!("{i}"), "m", i, 0.0));
        }
        let dropped = log.dropped();
        assert!(dropped > 0);
        let stats = log.stats.clone();
        drop(log);
        writer.join();
        assert_eq!(
            stats.written.load(Ordering::Relaxed) + dropped,
            10_000,
            "every record is written or counted"
        );
    }
}
