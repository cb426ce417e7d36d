//! Health probing of a component at the address flowctl reaches it at (a published port, or
//! its address on the pipeline network): HTTP (docs/contract.md §5) or `grpc.health.v1.Health`
//! ([`HealthProtocol`]), and the back-off between probes.

use std::net::SocketAddr;
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::plan::{HealthPlan, HealthProtocol};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long its connection may take: a port that answers accepts or refuses at once, so a
/// connect that hangs is a lost SYN (a retry sends a fresh one) or a port whose container is
/// gone (Podman keeps forwarding a published port to the exited container's address for a
/// moment, where the SYN is dropped), and the loop that probes must see that exit soon. On
/// loopback (a port published on this machine) a connection takes microseconds.
fn connect_timeout(address: SocketAddr) -> Duration {
    if address.ip().is_loopback() {
        Duration::from_millis(150)
    } else {
        Duration::from_millis(500)
    }
}

/// First wait between probes: a fast component is not kept waiting (a probe is one loopback
/// HTTP request, so probing often while a component starts costs next to nothing).
pub const FIRST_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait between probes.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Probes `GET http://<address><path>`, or `grpc.health.v1.Health/Check` at `address`.
#[derive(Debug, Clone)]
pub enum HealthProbe {
    Http { agent: ureq::Agent, url: String },
    Grpc { address: SocketAddr },
}

impl HealthProbe {
    /// The probe `plan` asks for, of the component reached at `address`.
    pub fn for_plan(address: SocketAddr, plan: &HealthPlan) -> HealthProbe {
        match plan.protocol {
            HealthProtocol::Http => HealthProbe::new(address, &plan.path),
            HealthProtocol::Grpc => HealthProbe::Grpc { address },
        }
    }

    /// An HTTP probe of `path` at `address`.
    pub fn new(address: SocketAddr, path: &str) -> HealthProbe {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(PROBE_TIMEOUT))
            .timeout_connect(Some(connect_timeout(address)))
            .http_status_as_error(false)
            // A proxy from the environment must never see loopback probes.
            .proxy(None)
            .build();
        HealthProbe::Http {
            agent: config.into(),
            url: format!("http://{address}{path}"),
        }
    }

    /// HTTP: ready when the answer is 2xx and, if the body is JSON with a `status`, that status
    /// is `healthy` or `degraded` (any case). gRPC: ready when `Check` answers SERVING. The
    /// error says what was seen instead.
    pub fn check(&self) -> Result<(), String> {
        let (agent, url) = match self {
            HealthProbe::Http { agent, url } => (agent, url),
            HealthProbe::Grpc { address } => return check_grpc(*address),
        };
        let mut response = agent
            .get(url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        judge(status, &body).map_err(|why| format!("GET {url}: {why}"))
    }
}

/// One `grpc.health.v1.Health/Check` of the whole server (service ""), blocking the calling
/// thread on the process's runtime: probes run on flowctl's synchronous threads.
fn check_grpc(address: SocketAddr) -> Result<(), String> {
    let what = format!("grpc.health.v1.Health/Check at {address}");
    let answer = crate::runtime::block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(connect_timeout(address))
            .timeout(PROBE_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| format!("gRPC status {:?}: {}", s.code(), s.message()))
    })
    .map_err(|e| format!("{what}: {e}"))?;
    match answer {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("{what}: {}", other.as_str_name())),
        Err(why) => Err(format!("{what}: {why}")),
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

    #[test]
    fn probes_a_real_grpc_health_server() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        runtime.block_on(reporter.set_service_status("", tonic_health::ServingStatus::NotServing));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let plan = HealthPlan {
            container_port: address.port(),
            path: String::new(),
            protocol: HealthProtocol::Grpc,
        };
        let probe = HealthProbe::for_plan(address, &plan);
        let err = probe.check().unwrap_err();
        assert!(err.contains("NOT_SERVING"), "{err}");
        assert!(err.contains(&address.to_string()), "{err}");
        runtime.block_on(reporter.set_service_status("", tonic_health::ServingStatus::Serving));
        probe.check().unwrap();
        drop(runtime);
        let err = probe.check().unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
