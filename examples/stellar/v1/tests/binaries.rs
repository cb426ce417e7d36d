//! The three built binaries as separate processes on 127.0.0.1, configured only by their
//! environment as flowctl would start them (`ENABLE_FLOWCTL=true`, `COMPONENT_ID`, `PORT`,
//! `HEALTH_PORT`), registering with a v1 control plane test peer, chained by the test relay:
//! the consumer's stdout is the upstream file for testnet 997–998. Every process is stopped
//! (SIGTERM, then killed) when its test ends.

mod support;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{connect, params, real_lake, relay, RecordingControlPlane, TESTNET};

/// A running binary; stopped when dropped.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn start(name: &'static str, binary: &str, env: &[(&str, String)]) -> Process {
        let child = Command::new(binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Process { name, child }
    }

    /// Sends SIGTERM, waits for the exit (bounded) and returns stdout and stderr.
    fn stop(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} ignores SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        let mut stderr = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (stdout, stderr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 free right now (the binary binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn component_env(id: &str, grpc: SocketAddr, control_plane: SocketAddr) -> Vec<(&str, String)> {
    vec![
        ("COMPONENT_ID", id.to_string()),
        ("PORT", grpc.to_string()),
        ("HEALTH_PORT", free_port().to_string()),
        ("ENABLE_FLOWCTL", "true".to_string()),
        ("FLOWCTL_ENDPOINT", control_plane.to_string()),
        ("FLOWCTL_HEARTBEAT_INTERVAL", "100ms".to_string()),
    ]
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_relayed_print_the_upstream_events_and_register() {
    let (control_plane, control_plane_addr) = RecordingControlPlane::start(0).await;
    let lake = real_lake("testnet-997-999");
    let (source_addr, processor_addr, consumer_addr) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );

    let mut env = component_env("src", source_addr, control_plane_addr);
    env.push(("STORAGE_TYPE", "FS".into()));
    env.push(("BUCKET_NAME", lake.to_str().unwrap().into()));
    let source = Process::start(
        "stellar-live-source-v1",
        env!("CARGO_BIN_EXE_stellar-live-source-v1"),
        &env,
    );
    let mut env = component_env("ttp", processor_addr, control_plane_addr);
    env.push(("NETWORK_PASSPHRASE", TESTNET.into()));
    let processor = Process::start(
        "ttp-processor-v1",
        env!("CARGO_BIN_EXE_ttp-processor-v1"),
        &env,
    );
    let consumer = Process::start(
        "consumer-app-v1",
        env!("CARGO_BIN_EXE_consumer-app-v1"),
        &component_env("sink", consumer_addr, control_plane_addr),
    );

    let registrations = control_plane.registered(3).await;
    for (id, addr) in [
        ("src", source_addr),
        ("ttp", processor_addr),
        ("sink", consumer_addr),
    ] {
        let request = registrations
            .iter()
            .find(|request| request.component_id == id)
            .unwrap_or_else(|| panic!("{id} registered: {registrations:?}"));
        // Each registers its own listen address, as PORT gave it.
        assert_eq!(
            request.component.as_ref().unwrap().endpoint,
            addr.to_string()
        );
        control_plane.heartbeats_of(id, 1).await;
    }

    let answer = relay(
        connect(source_addr).await,
        connect(processor_addr).await,
        connect(consumer_addr).await,
        params(&[("start_ledger", "997"), ("end_ledger", "998")]),
    )
    .await
    .unwrap();
    let expected = fs::read_to_string(lake.join("expected-events-997-998.jsonl")).unwrap();
    assert_eq!(answer.events_consumed as usize, expected.lines().count());

    let (stdout, stderr) = consumer.stop();
    assert_eq!(stdout, expected, "consumer stderr:\n{stderr}");
    assert!(
        stderr.contains("consumer-app-v1 summary: {"),
        "consumer stderr:\n{stderr}"
    );
    drop(processor);
    drop(source);
}

#[test]
fn a_missing_setting_exits_2_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_ttp-processor-v1"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NETWORK_PASSPHRASE is required"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_stellar-live-source-v1"))
        .env_clear()
        .env("STORAGE_TYPE", "FS")
        .env("BUCKET_NAME", "/nonexistent/lake")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BUCKET_NAME"), "{stderr}");
}
