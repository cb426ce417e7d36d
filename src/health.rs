//! HTTP health probing of a component (CONTRACT.md §5) at the address flowctl reaches it at (a
//! published port, or its address on the pipeline network), and the back-off between probes.

use std::net::SocketAddr;
use std::time::Duration;

/// First wait between probes: a fast component is not kept waiting (a probe is one loopback
/// HTTP request, so probing often while a component starts costs next to nothing).
pub const FIRST_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait between probes.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Probes `GET http://<address><path>`.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    agent: ureq::Agent,
    url: String,
}

impl HealthProbe {
    /// A probe of `path` at `address`.
    pub fn new(address: SocketAddr, path: &str) -> HealthProbe {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            // A proxy from the environment must never see loopback probes.
            .proxy(None)
            .build();
        HealthProbe {
            agent: config.into(),
            url: format!("http://{address}{path}"),
        }
    }

    /// Ready when the answer is 2xx and, if the body is JSON with a `status`, that status is
    /// `healthy` or `degraded`. The error says what was seen instead.
    pub fn check(&self) -> Result<(), String> {
        let mut response = self
            .agent
            .get(&self.url)
            .call()
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        judge(status, &body).map_err(|why| format!("GET {}: {why}", self.url))
    }
}

fn judge(status: u16, body: &str) -> Result<(), String> {
    let excerpt: String = body.trim().chars().take(200).collect();
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status} {excerpt}"));
    }
    // Components that answer plain text (third-party images) are ready on any 2xx.
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return Ok(());
    };
    // Upstream's SDK answers `HEALTHY`: the status is compared case-insensitively.
    match json.get("status").and_then(|s| s.as_str()) {
        None => Ok(()),
        Some(word)
            if word.eq_ignore_ascii_case("healthy") || word.eq_ignore_ascii_case("degraded") =>
        {
            Ok(())
        }
        Some(other) => Err(format!("HTTP {status} status `{other}`: {excerpt}")),
    }
}

/// Waits growing by half from [`FIRST_INTERVAL`] up to [`MAX_INTERVAL`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_INTERVAL,
        }
    }
}

impl Backoff {
    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 3 / 2).min(MAX_INTERVAL);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn statuses_are_judged_as_the_contract_says() {
        assert!(judge(200, r#"{"status":"healthy","metrics":{}}"#).is_ok());
        assert!(judge(200, r#"{"status":"degraded"}"#).is_ok());
        assert!(judge(200, r#"{"status":"HEALTHY","metrics":{}}"#).is_ok());
        assert!(judge(200, r#"{"status":"Degraded"}"#).is_ok());
        assert!(judge(200, r#"{"status":"UNHEALTHY"}"#).is_err());
        assert!(judge(200, "OK").is_ok());
        assert!(judge(200, r#"{"status":"starting"}"#)
            .unwrap_err()
            .contains("starting"));
        assert!(judge(503, r#"{"status":"unhealthy"}"#)
            .unwrap_err()
            .contains("HTTP 503"));
    }

    #[test]
    fn backoff_starts_fast_and_caps_at_one_second() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..12).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(
            waits,
            [20, 30, 45, 67, 101, 151, 227, 341, 512, 768, 1000, 1000]
        );
    }

    #[test]
    fn probes_a_real_http_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            for body in [r#"{"status":"unhealthy"}"#, r#"{"status":"healthy"}"#] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let code = if body.contains("unhealthy") {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let response = format!(
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).unwrap();
            }
        });
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = HealthProbe::new(address, "/health");
        let err = probe.check().unwrap_err();
        assert!(err.contains("HTTP 503"), "{err}");
        probe.check().unwrap();
        server.join().unwrap();
        drop(probe);
        let err = HealthProbe::new(address, "/health").check().unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
