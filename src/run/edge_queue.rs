//! The relay's queue into one component: bounded both in events and in bytes. A count alone
//! cannot be right for both kinds of edge: ledgers of a megabyte each would need a small count
//! (or flowctl holds hundreds of megabytes), and token transfer events of a few hundred bytes a
//! large one (or each HTTP/2 write carries only a handful of them and the relay spends its time
//! in system calls). A sender waits while either bound is reached.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::Bytes;

/// One queued message and its share of the byte budget, given back when the message leaves.
struct Queued {
    bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The sending side; clones share the queue and its bounds. The queue ends when every sender
/// is dropped.
#[derive(Clone)]
pub struct QueueSender {
    events: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

/// The receiving side, read once by the call that feeds the component.
pub struct QueueReceiver {
    events: mpsc::Receiver<Queued>,
}

/// A queue holding at most `max_events` messages and `max_bytes` bytes (a single larger message
/// still passes, alone).
pub fn queue(max_events: usize, max_bytes: usize) -> (QueueSender, QueueReceiver) {
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let (sender, receiver) = mpsc::channel(max_events.max(1));
    (
        QueueSender {
            events: sender,
            budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        },
        QueueReceiver { events: receiver },
    )
}

impl QueueSender {
    /// Queues `bytes`, waiting for room; `Err` gives them back when the receiver is gone.
    pub async fn send(&self, bytes: Bytes) -> Result<(), Bytes> {
        let share = bytes.len().clamp(1, self.max_bytes) as u32;
        let Ok(budget) = self.budget.clone().acquire_many_owned(share).await else {
            // The semaphore is never closed; kept total for the type's sake.
            return Err(bytes);
        };
        self.events
            .send(Queued {
                bytes,
                _budget: budget,
            })
            .await
            .map_err(|unsent| unsent.0.bytes)
    }
}

impl QueueReceiver {
    /// The messages in order; each one's bytes leave the budget as it is taken.
    pub fn into_stream(self) -> impl Stream<Item = Bytes> + Send + 'static {
        ReceiverStream::new(self.events).map(|queued| queued.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn sends_within(sender: &QueueSender, bytes: Bytes) -> bool {
        tokio::time::timeout(Duration::from_millis(50), sender.send(bytes))
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
    fn a_sender_waits_at_the_event_bound() {
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
    fn send_fails_once_the_receiver_is_gone() {
        runtime().block_on(async {
            let (sender, receiver) = queue(10, 100);
            drop(receiver);
            let unsent = sender.send(Bytes::from_static(b"kept")).await.unwrap_err();
            assert_eq!(unsent, Bytes::from_static(b"kept"));
        });
    }
}
