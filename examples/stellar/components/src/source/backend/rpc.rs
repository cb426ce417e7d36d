//! The Stellar RPC backend (`BACKEND_TYPE=RPC`): ledgers from a server's JSON-RPC 2.0
//! `getLedgers` (params `startLedger`, `pagination {limit}`, `xdrFormat: "base64"`; result
//! `ledgers[]` with `sequence` and the base64 `LedgerCloseMeta` in `metadataXdr`, and
//! `latestLedger`, `oldestLedger`, `cursor`).
//!
//! Each stream runs a task that asks for `PREFETCH_OBJECTS` pages of `RPC_PAGE_LIMIT` ledgers
//! concurrently (the pages of a range are known in advance: ledgers are contiguous), over one
//! shared keep-alive HTTP client, and hands them over in order. Past the server's
//! `latestLedger` the reader waits and asks again (live mode). When the server refuses a page,
//! `getHealth` says why: before `oldestLedger` is an error naming both numbers, past
//! `latestLedger` is the live edge. Transport failures and 5xx/429 answers are retried for
//! `REMOTE_RETRY_TIMEOUT`. The auth header never appears in logs or errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use flowctl_proto::raw_ledger_service::RawLedger;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{Chunk, Feed, FeedError, Spawned};
use crate::source::config::{RpcConfig, Secret};

const RETRY_PAUSE: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A Stellar RPC server, shared by every stream.
#[derive(Debug)]
pub struct RpcLedgers {
    client: reqwest::Client,
    endpoint: String,
    auth: Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    auth_secret: Option<Secret>,
    page_limit: u32,
    retry_timeout: Duration,
    runtime: Handle,
}

/// The ledger range a server keeps (`getHealth`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub oldest_ledger: u32,
    pub latest_ledger: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerPage {
    ledgers: Vec<LedgerInfo>,
    latest_ledger: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerInfo {
    sequence: u32,
    metadata_xdr: String,
}

/// A page's outcome.
enum Page {
    Ledgers(Vec<RawLedger>),
    /// The server does not have the page's first ledger yet.
    NotYet {
        latest: u32,
    },
}

impl RpcLedgers {
    /// A client for `config`'s server; checks that the server answers (`getHealth`).
    pub async fn open(config: &RpcConfig) -> anyhow::Result<RpcLedgers> {
        let mut roots = Vec::new();
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            roots.push(reqwest::Certificate::from_der(root)?);
        }
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("creating the RPC HTTP client")?;
        let auth = match &config.auth_header {
            None => None,
            Some(secret) => {
                let (name, value) = match secret.0.split_once(':') {
                    Some((name, value)) if !name.contains(' ') => (name.trim(), value.trim()),
                    _ => ("Authorization", secret.0.as_str()),
                };
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| anyhow::anyhow!("RPC_AUTH_HEADER: not a valid header name"))?;
                let mut value = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| anyhow::anyhow!("RPC_AUTH_HEADER: not a valid header value"))?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let rpc = RpcLedgers {
            client,
            endpoint: config.endpoint.clone(),
            auth,
            auth_secret: config.auth_header.clone(),
            page_limit: config.page_limit,
            retry_timeout: config.retry_timeout,
            runtime: Handle::current(),
        };
        let retention = rpc.retention().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        log::info!(
            "RPC server {} keeps ledgers {}-{}",
            rpc.endpoint,
            retention.oldest_ledger,
            retention.latest_ledger
        );
        Ok(rpc)
    }

    pub fn describe(&self) -> String {
        format!(
            "Stellar RPC {} ({} ledgers per getLedgers{})",
            self.endpoint,
            self.page_limit,
            if self.auth.is_some() {
                ", with RPC_AUTH_HEADER"
            } else {
                ""
            }
        )
    }

    fn scrub(&self, text: String) -> String {
        match &self.auth_secret {
            Some(secret) => secret.redact(&text),
            None => text,
        }
    }

    /// One JSON-RPC call, retried on transport errors and 5xx/429 for `REMOTE_RETRY_TIMEOUT`.
    /// `Ok(Err(message))` is the server's JSON-RPC error.
    async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Result<serde_json::Value, String>, FeedError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let began = Instant::now();
        loop {
            let mut request = self
                .client
                .post(&self.endpoint)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some((name, value)) = &self.auth {
                request = request.header(name.clone(), value.clone());
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| self.failed(method, &e))?;
                    let reply: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                        FeedError::new(
                            tonic::Code::DataLoss,
                            format!("{method} at {}: not JSON: {e}", self.endpoint),
                        )
                    })?;
                    if let Some(error) = reply.get("error") {
                        let message = error
                            .get("message")
                            .and_then(|m| m.as_str())
                            .unwrap_or("(no message)");
                        return Ok(Err(self.scrub(message.to_string())));
                    }
                    return match reply.get("result") {
                        Some(result) => Ok(Ok(result.clone())),
                        None => Err(FeedError::new(
                            tonic::Code::DataLoss,
                            format!("{method} at {}: no result and no error", self.endpoint),
                        )),
                    };
                }
                Ok(response) => {
                    let status = response.status();
                    if matches!(status.as_u16(), 401 | 403) {
                        return Err(FeedError::new(
                            tonic::Code::PermissionDenied,
                            format!(
                                "{method} at {}: access denied ({status}) with {}",
                                self.endpoint,
                                if self.auth.is_some() {
                                    "the RPC_AUTH_HEADER given"
                                } else {
                                    "no RPC_AUTH_HEADER"
                                }
                            ),
                        ));
                    }
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(FeedError::new(
                            tonic::Code::Unavailable,
                            format!("{method} at {}: HTTP {status}", self.endpoint),
                        ));
                    }
                    format!("HTTP {status}")
                }
                Err(e) => self.scrub(format!("{e}")),
            };
            if began.elapsed() >= self.retry_timeout {
                return Err(FeedError::new(
                    tonic::Code::Unavailable,
                    format!(
                        "{method} at {} (retried for {:?}): {failure}",
                        self.endpoint, self.retry_timeout
                    ),
                ));
            }
            log::warn!("{method} at {}: {failure}; trying again", self.endpoint);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn failed(&self, method: &str, e: &reqwest::Error) -> FeedError {
        FeedError::new(
            tonic::Code::Unavailable,
            self.scrub(format!("{method} at {}: {e}", self.endpoint)),
        )
    }

    /// `getHealth`: the ledgers the server keeps.
    pub async fn retention(&self) -> Result<Retention, FeedError> {
        match self.call("getHealth", json!({})).await? {
            Ok(result) => serde_json::from_value(result).map_err(|e| {
                FeedError::new(
                    tonic::Code::DataLoss,
                    format!("getHealth at {}: unexpected result: {e}", self.endpoint),
                )
            }),
            Err(message) => Err(FeedError::new(
                tonic::Code::Unavailable,
                format!("getHealth at {}: {message}", self.endpoint),
            )),
        }
    }

    /// The page of ledgers from `start`.
    async fn page(self: Arc<Self>, start: u32) -> Result<Page, FeedError> {
        let params = json!({
            "startLedger": start,
            "pagination": {"limit": self.page_limit},
            "xdrFormat": "base64",
        });
        let result = match self.call("getLedgers", params).await? {
            Ok(result) => result,
            Err(message) => {
                // Why was it refused? Ask for the range the server keeps.
                let retention = self.retention().await?;
                if start < retention.oldest_ledger {
                    return Err(FeedError::new(
                        tonic::Code::OutOfRange,
                        format!(
                            "ledger {start} is before the oldest ledger {} that the RPC server \
                             at {} keeps (latest {})",
                            retention.oldest_ledger, self.endpoint, retention.latest_ledger
                        ),
                    ));
                }
                if start > retention.latest_ledger {
                    return Ok(Page::NotYet {
                        latest: retention.latest_ledger,
                    });
                }
                return Err(FeedError::new(
                    tonic::Code::Unavailable,
                    format!("getLedgers from {start} at {}: {message}", self.endpoint),
                ));
            }
        };
        let page: LedgerPage = serde_json::from_value(result).map_err(|e| {
            FeedError::new(
                tonic::Code::DataLoss,
                format!(
                    "getLedgers from {start} at {}: unexpected result: {e}",
                    self.endpoint
                ),
            )
        })?;
        if page.ledgers.is_empty() {
            return Ok(Page::NotYet {
                latest: page.latest_ledger,
            });
        }
        let base64 = base64::engine::general_purpose::STANDARD;
        let mut ledgers = Vec::with_capacity(page.ledgers.len());
        for (info, expected) in page.ledgers.into_iter().zip(start..) {
            if info.sequence != expected {
                return Err(FeedError::new(
                    tonic::Code::DataLoss,
                    format!(
                        "getLedgers from {start} at {} returned ledger {} where {expected} \
                         belongs",
                        self.endpoint, info.sequence
                    ),
                ));
            }
            let xdr = base64.decode(info.metadata_xdr.as_bytes()).map_err(|e| {
                FeedError::new(
                    tonic::Code::DataLoss,
                    format!(
                        "getLedgers at {}: metadataXdr of ledger {expected} is not base64: {e}",
                        self.endpoint
                    ),
                )
            })?;
            ledgers.push(RawLedger {
                sequence: expected,
                ledger_close_meta_xdr: xdr,
            });
        }
        Ok(Page::Ledgers(ledgers))
    }
}

/// What a stream's page task hands over, in ledger order.
enum Paged {
    Ledgers(Vec<RawLedger>),
    NotYet { latest: u32 },
    Failed(FeedError),
}

struct Pages {
    next: u32,
    rx: mpsc::Receiver<Paged>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One stream's reads from the RPC server.
pub struct RpcFeed {
    rpc: Arc<RpcLedgers>,
    depth: usize,
    pages: Option<Pages>,
}

impl RpcFeed {
    pub fn new(rpc: Arc<RpcLedgers>, depth: usize) -> RpcFeed {
        RpcFeed {
            rpc,
            depth,
            pages: None,
        }
    }
}

impl Feed for RpcFeed {
    fn next(&mut self, ledger: u32) -> Result<Chunk<'_>, FeedError> {
        if self.pages.as_ref().map(|pages| pages.next) != Some(ledger) {
            let (tx, rx) = mpsc::channel(1);
            let task = self
                .rpc
                .runtime
                .spawn(page_ahead(self.rpc.clone(), ledger, self.depth, tx));
            self.pages = Some(Pages {
                next: ledger,
                rx,
                task,
            });
        }
        let Some(pages) = self.pages.as_mut() else {
            unreachable!("started above");
        };
        match pages.rx.blocking_recv() {
            Some(Paged::Ledgers(ledgers)) => {
                if ledgers.len() < self.rpc.page_limit as usize {
                    // A short page ends the task (the live edge): the next call asks anew.
                    self.pages = None;
                } else {
                    pages.next = ledgers
                        .last()
                        .map_or(ledger, |last| last.sequence.saturating_add(1));
                }
                Ok(Chunk::Ledgers(ledgers))
            }
            Some(Paged::NotYet { latest }) => {
                self.pages = None;
                Ok(Chunk::NotYet {
                    name: format!("ledger {ledger} at {} (latest {latest})", self.rpc.endpoint),
                    later: None,
                })
            }
            Some(Paged::Failed(error)) => {
                self.pages = None;
                Err(error)
            }
            None => {
                self.pages = None;
                Err(FeedError::new(
                    tonic::Code::Unavailable,
                    format!("the page task for {} ended", self.rpc.endpoint),
                ))
            }
        }
    }
}

/// Asks for the pages from `first` on, `depth` at a time, and sends them in order until the
/// live edge, an error, or the feed going away.
async fn page_ahead(rpc: Arc<RpcLedgers>, first: u32, depth: usize, tx: mpsc::Sender<Paged>) {
    let step = rpc.page_limit;
    let starts = std::iter::successors(Some(first), move |start| start.checked_add(step));
    // Spawned, so that requests progress while the hand-over waits for the reader.
    let mut pages = futures_util::stream::iter(starts)
        .map(|start| Spawned(rpc.runtime.spawn(rpc.clone().page(start))).join())
        .buffered(depth);
    while let Some(page) = pages.next().await {
        let message = match page {
            Ok(Page::Ledgers(ledgers)) => {
                let full = ledgers.len() == step as usize;
                let last = ledgers.last().map(|ledger| ledger.sequence);
                if tx.send(Paged::Ledgers(ledgers)).await.is_err() {
                    return;
                }
                // A short page is the live edge: the pages asked for after it start too late.
                if full && last.is_some() {
                    continue;
                }
                return;
            }
            Ok(Page::NotYet { latest }) => Paged::NotYet { latest },
            Err(error) => Paged::Failed(error),
        };
        let _ = tx.send(message).await;
        return;
    }
}
