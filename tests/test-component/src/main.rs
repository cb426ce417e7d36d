//! A small static component for flowctl's integration tests. It serves `/health` like the real
//! components (docs/contract.md §5), registers with the control plane when `ENABLE_FLOWCTL=true`,
//! exits cleanly on SIGTERM (it runs as PID 1 in a `FROM scratch` image, where the kernel gives
//! PID 1 no default signal handling), and is told by its environment how to misbehave:
//!
//! - `TEST_FAIL_AFTER_MS=T` (+ `TEST_EXIT_CODE=N`, default 1): exit with code N after T ms.
//! - `TEST_FAIL_TIMES=N` with `TEST_RUN_COUNTER=FILE`: counts its runs in FILE (on a writable
//!   volume, so the count survives a restart) and fails as `TEST_FAIL_AFTER_MS` says only in
//!   the first N runs; later runs behave as if it were unset.
//! - `TEST_EXIT_AFTER_MS=T`: exit 0 after T ms (a bounded sink).
//! - `TEST_NEVER_HEALTHY=true`: report `unhealthy` forever.
//! - `TEST_HEALTHY_AFTER_MS=T`: report `unhealthy` for the first T ms.
//! - `TEST_IGNORE_SIGTERM=true`: keep running on SIGTERM (only SIGKILL ends it).
//! - `TEST_RESOLVE=a,b`: resolve these names through the engine's DNS before becoming healthy
//!   (and print every address each resolves to).
//! - `TEST_NO_REGISTER=true`: never register with the control plane, even when told to.
//! - `TEST_STOP_HEARTBEAT_AFTER_MS=T`: register, then stop heartbeating after T ms (the
//!   process keeps running and stays healthy), so the control plane must call it unhealthy.
//! - `TEST_CONNECT=a:8088,b:8088`: probe these `/health` endpoints (they must be healthy)
//!   before becoming healthy; proves start order and DNS by component id.
//!
//! Any setup failure exits with code 3 and a message naming the variable. `healthcheck`
//! probes the local `/health` (for an image HEALTHCHECK; there is no curl in the image).

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowctl_proto::component::{
    probe_health, spawn_agent, AgentConfig, ComponentEnv, HealthServer, HealthStatus, Metrics,
};
use flowctl_proto::flowctl::ServiceType;
use tokio::signal::unix::{signal, SignalKind};

const DEFAULT_HEALTH_PORT: u16 = 8088;
const EXIT_SETUP: u8 = 3;
/// How long DNS and connection checks retry before giving up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let env = match ComponentEnv::from_env(DEFAULT_HEALTH_PORT) {
        Ok(env) => env,
        Err(e) => return fail(&e),
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return match probe_health(env.health_port, Duration::from_secs(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("healthcheck: {e}")),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(serve(env))
}

fn fail(message: &str) -> ExitCode {
    say_err(&format!("flowctl-test-component: {message}"));
    ExitCode::from(EXIT_SETUP)
}

/// One line to stderr in a single write: `eprintln!` writes each piece of its format
/// separately (stderr is unbuffered), and an engine's log driver may then record and replay
/// the pieces as partial lines interleaved with stdout.
fn say_err(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn millis(key: &str) -> Result<Option<Duration>, String> {
    var(key)
        .map(|v| {
            v.trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{key}: {v:?} is not a number of milliseconds"))
        })
        .transpose()
}

fn list(key: &str) -> Vec<String> {
    var(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// What the environment asks this run to do.
struct Behaviour {
    fail_after: Option<(Duration, u8)>,
    exit_after: Option<Duration>,
    never_healthy: bool,
    ignore_sigterm: bool,
    healthy_after: Option<Duration>,
    resolve: Vec<String>,
    connect: Vec<String>,
    no_register: bool,
    stop_heartbeat_after: Option<Duration>,
}

fn behaviour() -> Result<Behaviour, String> {
    let exit_code = match var("TEST_EXIT_CODE") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("TEST_EXIT_CODE: {v:?} is not an exit code (0-255)"))?,
        None => 1,
    };
    let mut fail_after = millis("TEST_FAIL_AFTER_MS")?.map(|d| (d, exit_code));
    if let Some(times) = var("TEST_FAIL_TIMES") {
        let times: u32 = times
            .trim()
            .parse()
            .map_err(|_| format!("TEST_FAIL_TIMES: {times:?} is not a count"))?;
        let counter = var("TEST_RUN_COUNTER").ok_or_else(|| {
            "TEST_FAIL_TIMES needs TEST_RUN_COUNTER (a file on a writable volume)".to_string()
        })?;
        let runs_before = count_run(&counter)?;
        println!("run {} (fails in the first {times})", runs_before + 1);
        if runs_before >= times {
            fail_after = None;
        }
    }
    Ok(Behaviour {
        fail_after,
        exit_after: millis("TEST_EXIT_AFTER_MS")?,
        never_healthy: var("TEST_NEVER_HEALTHY").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ignore_sigterm: var("TEST_IGNORE_SIGTERM").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        healthy_after: millis("TEST_HEALTHY_AFTER_MS")?,
        resolve: list("TEST_RESOLVE"),
        connect: list("TEST_CONNECT"),
        no_register: var("TEST_NO_REGISTER").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        stop_heartbeat_after: millis("TEST_STOP_HEARTBEAT_AFTER_MS")?,
    })
}

/// Increments the run count in `path`; returns the count before this run.
fn count_run(path: &str) -> Result<u32, String> {
    let before = match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("TEST_RUN_COUNTER: {path} holds {text:?}, not a count"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("TEST_RUN_COUNTER: cannot read {path}: {e}")),
    };
    std::fs::write(path, (before + 1).to_string())
        .map_err(|e| format!("TEST_RUN_COUNTER: cannot write {path}: {e}"))?;
    Ok(before)
}

async fn serve(env: ComponentEnv) -> ExitCode {
    let behaviour = match behaviour() {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let id = env
        .component_id
        .clone()
        .unwrap_or_else(|| "test-component".into());
    // Unhealthy until the checks below pass.
    let metrics = Metrics::with_keys(&["success_count", "error_count", "total_processed"]);
    metrics.set_status(HealthStatus::Unhealthy);
    let server = match HealthServer::start(env.health_port, metrics.clone()) {
        Ok(server) => server,
        Err(e) => return fail(&format!("HEALTH_PORT {}: {e}", env.health_port)),
    };
    println!("{id}: serving /health on {}", server.local_addr());

    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot handle SIGTERM: {e}")),
    };
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot handle SIGINT: {e}")),
    };

    let config = AgentConfig {
        service_type: ServiceType::Processor,
        input_event_types: Vec::new(),
        output_event_types: Vec::new(),
        health_endpoint: format!("http://{id}:{}/health", env.health_port),
        max_inflight: 1,
        metadata: [(
            "component".to_string(),
            "flowctl-test-component".to_string(),
        )]
        .into_iter()
        .collect(),
    };
    let agent = if behaviour.no_register {
        println!("{id}: not registering (TEST_NO_REGISTER)");
        None
    } else {
        spawn_agent(&env, config, metrics.clone())
    };
    if let Some(agent) = agent {
        println!(
            "{id}: registering with the control plane at {}",
            env.flowctl_endpoint
        );
        if let Some(after) = behaviour.stop_heartbeat_after {
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                agent.abort();
                println!("{id}: stopped heartbeating (TEST_STOP_HEARTBEAT_AFTER_MS)");
            });
        }
    }

    for name in &behaviour.resolve {
        match retry(|| resolve(name)).await {
            Ok(address) => println!("{id}: resolved {name} to {address}"),
            Err(e) => return fail(&format!("TEST_RESOLVE: {e}")),
        }
    }
    for target in &behaviour.connect {
        match retry(|| check_health(target)).await {
            Ok(()) => println!("{id}: {target} is healthy"),
            Err(e) => return fail(&format!("TEST_CONNECT: {e}")),
        }
    }

    let started = Instant::now();
    if let Some(delay) = behaviour.healthy_after {
        tokio::time::sleep(delay).await;
    }
    if !behaviour.never_healthy {
        metrics.set_status(HealthStatus::Healthy);
        println!("{id}: healthy after {} ms", started.elapsed().as_millis());
    } else {
        println!("{id}: staying unhealthy (TEST_NEVER_HEALTHY)");
    }

    let far = Duration::from_secs(365 * 24 * 3600);
    let (deadline, code) = match (behaviour.fail_after, behaviour.exit_after) {
        (Some((after, code)), _) => (after, code),
        (None, Some(after)) => (after, 0),
        (None, None) => (far, 0),
    };
    let end = tokio::time::sleep(deadline.saturating_sub(started.elapsed()));
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => {
                if code == 0 {
                    println!("{id}: done, exiting 0");
                } else {
                    say_err(&format!("{id}: failing on purpose with exit code {code}"));
                }
                return ExitCode::from(code);
            }
            _ = terminate.recv() => {
                if behaviour.ignore_sigterm {
                    println!("{id}: ignoring SIGTERM (TEST_IGNORE_SIGTERM)");
                    continue;
                }
                println!("{id}: SIGTERM, exiting");
                return ExitCode::SUCCESS;
            }
            _ = interrupt.recv() => {
                println!("{id}: SIGINT, exiting");
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// Retries `attempt` every 100 ms until it succeeds or [`SETUP_TIMEOUT`] passes.
async fn retry<T>(mut attempt: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Every address `name` resolves to, sorted and comma-separated (replicas share a name).
fn resolve(name: &str) -> Result<String, String> {
    let mut addresses: Vec<String> = (name, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name}: {e}"))?
        .map(|a| a.ip().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(format!("{name} resolved to no address"));
    }
    Ok(addresses.join(","))
}

/// `target` is `host:port`; its `/health` must answer healthy.
fn check_health(target: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let address = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} resolved to no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{target}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{target}: {e}"))?;
    if response.starts_with("HTTP/1.1 200") && response.contains("\"healthy\"") {
        Ok(())
    } else {
        Err(format!(
            "{target} is not healthy: {}",
            response.lines().next().unwrap_or("")
        ))
    }
}
