//! The three built binaries as separate processes on 127.0.0.1, configured only by their
//! environment as flowctl would start them (`ENABLE_FLOWCTL=true`, `COMPONENT_ID`, `PORT`,
//! `HEALTH_PORT`), registering with a v1 control plane test peer, chained by the test relay:
//! the consumer's stdout is the upstream file for testnet 997–998. Every process is stopped
//! (SIGTERM, then killed) when its test ends.

mod support;

use std::fs;
use std::process::Command;

use support::processes::{component_env, free_port, loopback, Process};
use support::{connect, params, real_lake, relay, RecordingControlPlane, TESTNET};

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
