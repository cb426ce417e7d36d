//! The relay's queue into one component: bounded both in messages and in bytes. A count alone
//! cannot be right for both kinds of edge: ledgers of a megabyte each would need a small count
//! (or flowctl holds hundreds of megabytes), and token transfer events of a few hundred bytes a
//! large one (or each HTTP/2 write carries only a handful of them and the relay spends its time
//! in system calls). Messages are queued in batches (what arrived at once), so a burst of small
//! events costs one wake-up, not one per event. A sender waits while either bound is reached.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::codegen::Bytes;

/// One queued batch and its share of the byte budget, given back when the batch is taken.
struct Queued {
    batch: Vec<Bytes>,
    _budget: OwnedSemaphorePermit,
}

/// The sending side; clones share the queue and its bounds. The queue ends when every sender
/// is dropped.
#[derive(Clone)]
pub struct QueueSender {
    batches: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

/// The receiving side, read once by the call that feeds the component.
pub struct QueueReceiver {
    batches: mpsc::Receiver<Queued>,
}

/// A queue holding at most `max_batches` batches and `max_bytes` bytes (a single larger batch
/// still passes, alone).
pub fn queue(max_batches: usize, max_bytes: usize) -> (QueueSender, QueueReceiver) {
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let (sender, receiver) = mpsc::channel(max_batches.max(1));
    (
        QueueSender {
            batches: sender,
            budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        },
        QueueReceiver { batches: receiver },
    )
}

impl QueueSender {
    /// Queues `batch` (in order), waiting for room; `Err` gives it back when the receiver is
    /// gone.
    pub async fn send(&self, batch: Vec<Bytes>) -> Result<(), Vec<Bytes>> {
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let share = bytes.clamp(1, self.max_bytes) as u32;
        let Ok(budget) = self.budget.clone().acquire_many_owned(share).await else {
            // The semaphore is never closed; kept total for the type's sake.
            return Err(batch);
        };
        self.batches
            .send(Queued {
                batch,
                _budget: budget,
            })
            .await
            .map_err(|unsent| unsent.0.batch)
    }
}

impl QueueReceiver {
    /// The messages in order, one at a time. A batch's bytes leave the budget when the batch is
    /// taken, so the queue holds at most twice its byte bound.
    pub fn into_stream(self) -> impl Stream<Item = Bytes> + Send + 'static {
        Messages {
            batches: self.batches,
            current: Vec::new().into_iter(),
        }
    }
}

/// [`QueueReceiver::into_stream`].
struct Messages {
    batches: mpsc::Receiver<Queued>,
    current: std::vec::IntoIter<Bytes>,
}

impl Stream for Messages {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(message) = self.current.next() {
                return Poll::Ready(Some(message));
            }
            match ready!(self.batches.poll_recv(cx)) {
                Some(queued) => self.current = queued.batch.into_iter(),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_stream::StreamExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn sends_within(sender: &QueueSender, bytes: Bytes) -> bool {
        tokio::time::timeout(Duration::from_millis(50), sender.send(vec![bytes]))
            .await
            .is_ok()
    }

    #[test]
    fn a_sender_waits_at_the_byte_bound_until_bytes_leave() {
        runtime().block_on(async {
            let (sender, receiver) = queue(100, 1000);
            let mut stream = Box::pin(receiver.into_stream());
            assert!(sends_within(&sender, Bytes::from(vec![1; 600])).await);
            assert!(sends_within(&sender, Bytes::from(vec![2; 400])).await);
            // 1000 bytes are queued: one more byte waits.
            assert!(!sends_within(&sender, Bytes::from(vec![3; 1])).await);
            assert_eq!(stream.next().await.unwrap().len(), 600);
            assert!(sends_within(&sender, Bytes::from(vec![3; 1])).await);
            assert_eq!(stream.next().await.unwrap()[0], 2);
            assert_eq!(stream.next().await.unwrap()[0], 3);
        });
    }

    #[test]
    fn a_sender_waits_at_the_batch_bound() {
        runtime().block_on(async {
            let (sender, receiver) = queue(2, 1 << 20);
            let mut stream = Box::pin(receiver.into_stream());
            assert!(sends_within(&sender, Bytes::from_static(b"a")).await);
            assert!(sends_within(&sender, Bytes::from_static(b"b")).await);
            assert!(!sends_within(&sender, Bytes::from_static(b"c")).await);
            assert_eq!(stream.next().await.unwrap(), Bytes::from_static(b"a"));
            assert!(sends_within(&sender, Bytes::from_static(b"c")).await);
        });
    }

    #[test]
    fn a_message_over_the_byte_bound_passes_alone_and_the_queue_ends_with_its_senders() {
        runtime().block_on(async {
            let (sender, receiver) = queue(10, 100);
            let mut stream = Box::pin(receiver.into_stream());
            assert!(sends_within(&sender, Bytes::from(vec![0; 5000])).await);
            assert!(!sends_within(&sender, Bytes::from_static(b"x")).await);
            assert_eq!(stream.next().await.unwrap().len(), 5000);
            assert!(sends_within(&sender, Bytes::from_static(b"x")).await);
            drop(sender);
            assert_eq!(stream.next().await.unwrap(), Bytes::from_static(b"x"));
            assert_eq!(stream.next().await, None);
        });
    }

    #[test]
    fn a_batch_is_taken_in_order_and_counts_its_bytes_in_all() {
        runtime().block_on(async {
            let (sender, receiver) = queue(10, 100);
            let mut stream = Box::pin(receiver.into_stream());
            let batch = vec![Bytes::from(vec![1; 60]), Bytes::from(vec![2; 40])];
            assert!(
                tokio::time::timeout(Duration::from_millis(50), sender.send(batch))
                    .await
                    .is_ok()
            );
            // 100 bytes are queued in one batch: one more byte waits.
            assert!(!sends_within(&sender, Bytes::from_static(b"x")).await);
            assert_eq!(stream.next().await.unwrap()[0], 1);
            assert_eq!(stream.next().await.unwrap()[0], 2);
            assert!(sends_within(&sender, Bytes::from_static(b"x")).await);
        });
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone() {
        runtime().block_on(async {
            let (sender, receiver) = queue(10, 100);
            drop(receiver);
            let unsent = sender
                .send(vec![Bytes::from_static(b"kept")])
                .await
                .unwrap_err();
            assert_eq!(unsent, [Bytes::from_static(b"kept")]);
        });
    }
}
