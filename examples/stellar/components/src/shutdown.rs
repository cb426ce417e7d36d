//! Stopping on SIGTERM/SIGINT. The components run as PID 1 in their containers, where the
//! kernel ignores signals that have no handler, so they must install one and exit by themselves.
//! A server-streaming RPC never finishes on its own in live mode, so every open stream is also
//! ended when shutdown starts; otherwise a graceful server shutdown would wait forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_stream::Stream;

/// Starts a shutdown that every [`Shutdown`] handle sees.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A cloneable view of whether shutdown has started.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its handle.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Another handle on this trigger's shutdown.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown starts (or its trigger is dropped, which means the same).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Waits for SIGTERM or SIGINT and returns the signal's name.
pub async fn signalled() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Without handlers the process could not be stopped as PID 1; say so and rely on
        // Ctrl+C support alone.
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot install signal handlers: {e}");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// A stream that ends as soon as shutdown starts.
pub struct UntilShutdown<S> {
    inner: S,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl<S> UntilShutdown<S> {
    /// Wraps `inner` so that it ends when `shutdown` starts.
    pub fn new(inner: S, shutdown: Shutdown) -> Self {
        UntilShutdown {
            inner,
            shutdown: Box::pin(shutdown.wait()),
            done: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for UntilShutdown<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_stream_ends_when_shutdown_starts() {
        let (trigger, shutdown) = channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stream =
            UntilShutdown::new(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown);
        tx.send(1).await.unwrap();
        assert_eq!(stream.next().await, Some(1));
        trigger.trigger();
        // The sender is still open: only the shutdown ends the stream.
        tx.send(2).await.unwrap();
        assert_eq!(stream.next().await, None);
        assert!(trigger.subscribe().is_triggered());
    }
}
