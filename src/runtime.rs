//! The process's one tokio runtime, built on first use and shared by everything that speaks
//! gRPC: health probes, stream verification, the control plane and the relay. The rest of
//! flowctl is synchronous; it enters this runtime only through [`block_on`] (from any of its
//! threads, several at once) or by spawning a task on [`shared`].

use std::future::Future;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use tokio::runtime::{Builder, Runtime};

/// Worker threads: the control plane's server and the relay's tasks; a probe or a check runs
/// on the thread that blocks on it.
const WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The runtime, built the first time it is asked for.
pub fn shared() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .thread_name("flowctl-tokio")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("cannot start the tokio runtime: {e}"))
}

/// Runs `future` to completion on the calling (synchronous) thread, its tasks on the shared
/// runtime.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(shared()?.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_threads_block_on_the_one_runtime_at_once() {
        let answers: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    scope.spawn(move || {
                        block_on(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            i
                        })
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(answers, vec![0, 1, 2, 3]);
        assert!(std::ptr::eq(shared().unwrap(), shared().unwrap()));
    }
}
