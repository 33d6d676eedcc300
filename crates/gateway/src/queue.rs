//! A bounded queue to a background thread that takes memory only for what it holds.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates and touches all `n` slots up front: the policy thread's
//! queue of 100,000 online scores alone was 17 MB of resident memory in a gateway that had queued nothing.
//! This wraps the unbounded (linked-block) channel with a count, so the bound still holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A queue of at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Sender {
            tx,
            queued: queued.clone(),
            capacity,
        },
        Receiver { rx, queued },
    )
}

pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// Why an item was not queued; it is handed back.
#[derive(Debug)]
pub enum TrySendError<T> {
    Full(T),
    Disconnected(T),
}

impl<T> Sender<T> {
    /// Queues an item without waiting, or hands it back when the queue is full or the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let reserved = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < self.capacity).then_some(n + 1)
        });
        if reserved.is_err() {
            return Err(TrySendError::Full(item));
        }
        self.tx.send(item).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.0)
        })
    }
}

pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> Receiver<T> {
    fn taken(&self, item: T) -> T {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        item
    }

    /// Waits for an item at most `timeout`; `Err(Disconnected)` once every sender is gone and the queue is
    /// empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map(|item| self.taken(item))
    }

    /// The items queued now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.try_iter().map(|item| self.taken(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_frees_room_as_items_are_taken() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        tx.try_send(4).unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![2, 4]);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ));
        tx.try_send(5).unwrap();
        tx.try_send(6).unwrap();
    }

    #[test]
    fn a_gone_receiver_hands_the_item_back_without_taking_room() {
        let (tx, rx) = bounded(1);
        drop(rx);
        assert!(matches!(tx.try_send(7), Err(TrySendError::Disconnected(7))));
        assert!(matches!(tx.try_send(8), Err(TrySendError::Disconnected(8))));
    }

    #[test]
    fn the_receiver_ends_once_senders_are_gone_and_the_queue_is_drained() {
        let (tx, rx) = bounded(4);
        tx.try_send("a").unwrap();
        drop(tx);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "a");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
    }
}
