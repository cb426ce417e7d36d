//! A small Stellar RPC server for the tests: HTTP/1.1 with keep-alive on 127.0.0.1, JSON-RPC
//! 2.0 `getLedgers` and `getHealth` with the response shapes of Stellar RPC, serving the real
//! ledgers of a lake folder. The ledger window (`oldestLedger`..`latestLedger`) can be moved
//! to play live mode and retention; an auth header can be required. Stopped on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};
use stellar_ttp::datalake::{DataLake, Layout};
use stellar_xdr::{LedgerCloseMeta, LedgerHeaderHistoryEntry, Limits, WriteXdr};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the server holds and shows.
struct State {
    /// Sequence -> the `getLedgers` entry.
    ledgers: BTreeMap<u32, Value>,
    oldest: u32,
    latest: u32,
    /// `(header name, value)` every request must carry.
    auth: Option<(String, String)>,
    /// `getLedgers` calls answered.
    calls: usize,
}

pub struct RpcServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

fn header_entry(meta: &LedgerCloseMeta) -> &LedgerHeaderHistoryEntry {
    match meta {
        LedgerCloseMeta::V0(v) => &v.ledger_header,
        LedgerCloseMeta::V1(v) => &v.ledger_header,
        LedgerCloseMeta::V2(v) => &v.ledger_header,
    }
}

impl RpcServer {
    /// Serves the ledgers `first..=last` of the lake folder `lake` (1 ledger per file), all of
    /// them visible.
    pub async fn start(lake: &Path, first: u32, last: u32) -> RpcServer {
        let base64 = base64::engine::general_purpose::STANDARD;
        let lake = DataLake::new(
            lake,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap();
        let mut ledgers = BTreeMap::new();
        for sequence in first..=last {
            let batch = lake.read_batch(sequence).unwrap().unwrap();
            for meta in batch.ledger_close_metas.iter() {
                let entry = header_entry(meta);
                ledgers.insert(
                    entry.header.ledger_seq,
                    json!({
                        "hash": hex(&entry.hash.0),
                        "sequence": entry.header.ledger_seq,
                        "ledgerCloseTime": entry.header.scp_value.close_time.0.to_string(),
                        "headerXdr": base64.encode(entry.to_xdr(Limits::none()).unwrap()),
                        "metadataXdr": base64.encode(meta.to_xdr(Limits::none()).unwrap()),
                    }),
                );
            }
        }
        let state = Arc::new(Mutex::new(State {
            ledgers,
            oldest: first,
            latest: last,
            auth: None,
            calls: 0,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task: every connection ends with the server.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve_connection(stream, shared.clone()));
            }
        });
        RpcServer {
            addr,
            state,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Shows only `oldest..=latest`, as a server with that retention at that moment.
    pub fn set_window(&self, oldest: u32, latest: u32) {
        let mut state = self.state.lock().unwrap();
        state.oldest = oldest;
        state.latest = latest;
    }

    pub fn require_header(&self, name: &str, value: &str) {
        self.state.lock().unwrap().auth = Some((name.to_string(), value.to_string()));
    }

    pub fn get_ledgers_calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve_connection(stream: TcpStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                }
                headers.push((name, value));
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, reply) = answer(&state, &headers, &body);
        let text = reply.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(
    state: &Mutex<State>,
    headers: &[(String, String)],
    body: &[u8],
) -> (&'static str, Value) {
    let mut state = state.lock().unwrap();
    if let Some((name, value)) = &state.auth {
        let given = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value);
        if !given {
            return ("401 Unauthorized", json!({"error": "unauthorized"}));
        }
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => return ("400 Bad Request", json!({"error": "not JSON"})),
    };
    let id = request["id"].clone();
    let error = |message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": message}});
    let result = match request["method"].as_str() {
        Some("getHealth") => json!({
            "status": "healthy",
            "latestLedger": state.latest,
            "oldestLedger": state.oldest,
            "ledgerRetentionWindow": state.latest - state.oldest + 1,
        }),
        Some("getLedgers") => {
            state.calls += 1;
            let params = &request["params"];
            let limit = params["pagination"]["limit"].as_u64().unwrap_or(5).min(200) as u32;
            let start = match (
                params["pagination"]["cursor"].as_str(),
                params["startLedger"].as_u64(),
            ) {
                (Some(cursor), _) => cursor.parse::<u32>().unwrap_or(0) + 1,
                (None, Some(start)) => {
                    let start = start as u32;
                    if start < state.oldest || start > state.latest {
                        return (
                            "200 OK",
                            error(format!(
                                "start ledger must be between the oldest ledger: {} and the latest ledger: {} for this rpc instance.",
                                state.oldest, state.latest
                            )),
                        );
                    }
                    start
                }
                (None, None) => return ("200 OK", error("startLedger is required".into())),
            };
            if params["xdrFormat"].as_str().unwrap_or("base64") != "base64" {
                return ("200 OK", error("only base64 here".into()));
            }
            let end = state.latest.min(start.saturating_add(limit - 1));
            let ledgers: Vec<Value> = state
                .ledgers
                .range(start..=end)
                .map(|(_, v)| v.clone())
                .collect();
            let cursor = ledgers
                .last()
                .map(|l| l["sequence"].to_string())
                .unwrap_or_else(|| start.saturating_sub(1).to_string());
            json!({
                "ledgers": ledgers,
                "latestLedger": state.latest,
                "latestLedgerCloseTime": "0",
                "oldestLedger": state.oldest,
                "oldestLedgerCloseTime": "0",
                "cursor": cursor,
            })
        }
        _ => {
            return (
                "200 OK",
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}}),
            )
        }
    };
    (
        "200 OK",
        json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}
