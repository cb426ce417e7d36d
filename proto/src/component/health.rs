//! The `/health` endpoint (docs/contract.md §5) and the probe behind each component's `healthcheck`
//! subcommand.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// What `/health` reports in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug)]
struct State {
    status: HealthStatus,
    metrics: BTreeMap<String, f64>,
    details: BTreeMap<String, String>,
}

/// A component's status and metrics, shared by its work, its `/health` endpoint and its
/// heartbeats. Cloning shares the same state.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Mutex<State>>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics(Arc::new(Mutex::new(State {
            status: HealthStatus::Healthy,
            metrics: BTreeMap::new(),
            details: BTreeMap::new(),
        })))
    }
}

impl Metrics {
    /// Metrics that start out healthy with every key in `keys` at zero, so `/health` shows the
    /// full set of docs/contract.md §3 keys from the start.
    pub fn with_keys(keys: &[&str]) -> Metrics {
        let metrics = Metrics::default();
        for key in keys {
            metrics.set(key, 0.0);
        }
        metrics
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind; they are still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: f64) {
        self.state().metrics.insert(key.to_string(), value);
    }

    /// Adds `delta` to `key` (missing keys start at zero).
    pub fn add(&self, key: &str, delta: f64) {
        *self.state().metrics.entry(key.to_string()).or_insert(0.0) += delta;
    }

    /// The current value of `key`, zero when unset.
    pub fn get(&self, key: &str) -> f64 {
        self.state().metrics.get(key).copied().unwrap_or(0.0)
    }

    /// The reported status.
    pub fn status(&self) -> HealthStatus {
        self.state().status
    }

    /// Sets the reported status.
    pub fn set_status(&self, status: HealthStatus) {
        self.state().status = status;
    }

    /// Records a string detail shown in `/health` next to the metrics (e.g. `last_error`).
    pub fn set_detail(&self, key: &str, value: impl Into<String>) {
        self.state().details.insert(key.to_string(), value.into());
    }

    /// A copy of the numeric metrics, as sent in heartbeats.
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        self.state().metrics.clone()
    }

    /// The `/health` JSON body.
    pub fn health_json(&self) -> serde_json::Value {
        let state = self.state();
        let mut body = serde_json::json!({
            "status": state.status.as_str(),
            "metrics": state.metrics,
        });
        for (key, value) in &state.details {
            body[key] = serde_json::Value::String(value.clone());
        }
        body
    }
}

/// A tiny HTTP/1.1 server for `GET /health`, on its own threads so a busy data path never
/// delays a health answer.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: SocketAddr,
}

impl HealthServer {
    /// Binds `0.0.0.0:port` (the container's published port must reach it) and serves in the
    /// background until the process exits.
    pub fn start(port: u16, metrics: Metrics) -> io::Result<HealthServer> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
        let local_addr = listener.local_addr()?;
        thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let metrics = metrics.clone();
                    // One short-lived thread per probe; probes are rare and tiny.
                    let _ = thread::Builder::new()
                        .name("health-conn".into())
                        .spawn(move || serve(stream, &metrics));
                }
            })?;
        Ok(HealthServer { local_addr })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

fn serve(stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers so the client sees a clean close.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status_line, body) = match (method, path) {
        ("GET", "/health") | ("GET", "/healthz") => {
            let body = metrics.health_json();
            let ok = body["status"] != "unhealthy";
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, body.to_string())
        }
        _ => ("404 Not Found", r#"{"error":"not found"}"#.to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(response.as_bytes());
}

/// Probes `http://127.0.0.1:<port>/health` as flowctl does: ready when the answer is 2xx and
/// `status` is `healthy` or `degraded`. The error says why not.
pub fn probe_health(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send request: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read response: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response: {head:?}"))?;
    if !(200..300).contains(&code) {
        return Err(format!("HTTP {code}: {body}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("health body is not JSON: {e}"))?;
    match json["status"].as_str() {
        Some("healthy") | Some("degraded") => Ok(()),
        other => Err(format!("status {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_status_and_metrics_and_the_probe_reads_them() {
        let metrics = Metrics::with_keys(&["success_count", "error_count"]);
        let server = HealthServer::start(0, metrics.clone()).unwrap();
        let port = server.local_addr().port();
        metrics.add("success_count", 2.0);
        assert_eq!(probe_health(port, Duration::from_secs(5)), Ok(()));

        metrics.set_status(HealthStatus::Degraded);
        assert_eq!(probe_health(port, Duration::from_secs(5)), Ok(()));

        metrics.set_status(HealthStatus::Unhealthy);
        metrics.set_detail("last_error", "disk on fire");
        let err = probe_health(port, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("503") && err.contains("disk on fire"), "{err}");

        let body = metrics.health_json();
        assert_eq!(body["metrics"]["success_count"], 2.0);
        assert_eq!(body["metrics"]["error_count"], 0.0);
    }

    #[test]
    fn probe_of_a_closed_port_fails_with_the_address() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe_health(port, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
