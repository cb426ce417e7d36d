//! The three binaries as a container runs them: configuration errors name the variable and exit
//! 2, `healthcheck` probes the running component's `/health`, SIGTERM and SIGINT stop it cleanly.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SOURCE: &str = env!("CARGO_BIN_EXE_stellar-live-source-datalake");
const PROCESSOR: &str = env!("CARGO_BIN_EXE_ttp-processor");
const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer-app");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn configuration_errors_name_the_variable_and_exit_2() {
    let out = run(SOURCE, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("STORAGE_TYPE is required"),
        "{}",
        stderr(&out)
    );

    let out = run(SOURCE, &[], &[("STORAGE_TYPE", "S3")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("BUCKET_NAME is required"));

    let out = run(SOURCE, &[], &[("BACKEND_TYPE", "RPC")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("RPC_ENDPOINT is required"));

    let out = run(PROCESSOR, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NETWORK_PASSPHRASE is required"));

    let out = run(
        PROCESSOR,
        &[],
        &[("NETWORK_PASSPHRASE", "x"), ("HEALTH_PORT", "-1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("HEALTH_PORT"), "{}", stderr(&out));

    let out = run(CONSUMER, &["998", "997"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("before start_ledger"));

    let out = run(CONSUMER, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<start_ledger>"));
}

/// Polls `healthcheck` until it succeeds (the server is starting), with an upper bound.
fn wait_healthy(binary: &str, health_port: &str, server: &mut Child) {
    let began = Instant::now();
    loop {
        let out = run(binary, &["healthcheck"], &[("HEALTH_PORT", health_port)]);
        if out.status.success() {
            return;
        }
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        if let Some(status) = server.try_wait().unwrap() {
            panic!("the component exited while starting: {status}");
        }
        assert!(began.elapsed() < Duration::from_secs(60), "never healthy");
        thread::sleep(Duration::from_millis(20));
    }
}

fn stop(server: Child, signal: &str) -> String {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "exit after {signal}: {}", out.status);
    stderr(&out)
}

#[test]
fn healthcheck_probes_the_running_component_and_signals_stop_it() {
    let health = free_port().to_string();
    // Nothing listens yet: unhealthy.
    let out = run(PROCESSOR, &["healthcheck"], &[("HEALTH_PORT", &health)]);
    assert_eq!(out.status.code(), Some(1));

    let mut processor = Command::new(PROCESSOR)
        .env_clear()
        .envs([
            ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
            ("HEALTH_PORT", health.as_str()),
            ("PORT", "127.0.0.1:0"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(PROCESSOR, &health, &mut processor);
    let logs = stop(processor, "TERM");
    assert!(logs.contains("SIGTERM received, stopping"), "{logs}");

    let lake = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ledgers/testnet-997-999");
    let health = free_port().to_string();
    let mut source = Command::new(SOURCE)
        .env_clear()
        .envs([
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", lake),
            ("HEALTH_PORT", health.as_str()),
            ("PORT", "127.0.0.1:0"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(SOURCE, &health, &mut source);
    let logs = stop(source, "INT");
    assert!(logs.contains("SIGINT received, stopping"), "{logs}");
    assert!(
        logs.contains("network \"Test SDF Network ; September 2015\""),
        "{logs}"
    );
}
