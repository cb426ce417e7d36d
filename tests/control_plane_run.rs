//! The control plane, the status view and stream verification against the real container
//! engine: test components register through the `FLOWCTL_ENDPOINT` flowctl injects, from inside
//! containers on the pipeline's bridge network, to the control plane on its gateway.
//!
//! Needs the image `flowctl/test-component:dev` (scripts/build-images.sh).

mod support;

use support::{flowctl, Scratch};

/// A source that registers, and a sink that does not declare `register` (it still registers:
/// flowctl accepts registrations from components it does not wait for).
const REGISTERING: &str = "
  sources:
    - id: src
      image: flowctl/test-component:dev
      health_port: 8088
      register: true
  sinks:
    - id: snk
      image: flowctl/test-component:dev
      inputs: [src]
      health_port: 8088
";

#[test]
fn components_register_from_the_bridge_and_status_shows_them() {
    let scratch = Scratch::new("cp-register");
    let pipeline = scratch.pipeline(REGISTERING);
    let mut run = scratch.run(&pipeline, &["--heartbeat-interval", "500ms"], &[]);

    let listening = run.wait_for("control plane listening on ");
    // Bound to the bridge gateway, never to every interface.
    assert!(!listening.contains("0.0.0.0"), "{listening}");
    run.wait_for("src registered with the control plane as src-");
    run.wait_for("src healthy and registered in ");
    run.wait_for("is up:");
    // The table printed once everything is up.
    run.wait_for("COMPONENT");
    let src_row = run.wait_for("  src ");
    assert!(src_row.contains("yes (src-"), "{src_row}");
    assert!(src_row.contains(&scratch.container("src")), "{src_row}");

    // The sink registered too; wait until it has heartbeated, then ask from "another
    // terminal".
    let status = poll_status(&scratch.name, |out| {
        out.lines()
            .any(|l| l.starts_with("snk ") && l.contains("yes (snk-") && l.contains(" ago"))
    });
    assert!(status.contains("control plane "), "{status}");
    let src = status.lines().find(|l| l.starts_with("src ")).unwrap();
    assert!(src.contains("running"), "{status}");
    assert!(src.contains("flowctl/test-component:dev"), "{status}");
    assert!(src.contains("->8088/tcp"), "{status}");

    // SIGUSR1 asks for the table again.
    run.signal("USR1");
    run.wait_for("status requested (SIGUSR1)");
    run.wait_for("COMPONENT");

    run.signal("INT");
    let exit = run.wait();
    assert_eq!(exit.code(), Some(130), "{}", run.output());
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn a_component_whose_heartbeats_stop_is_reported_unhealthy() {
    let scratch = Scratch::new("cp-silent");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: quiet
      image: flowctl/test-component:dev
      health_port: 8088
      register: true
      env:
        TEST_STOP_HEARTBEAT_AFTER_MS: \"1000\"
",
    );
    let mut run = scratch.run(
        &pipeline,
        &[
            "--heartbeat-interval",
            "300ms",
            "--status-interval",
            "500ms",
        ],
        &[],
    );
    let notice = run.wait_for("quiet is unhealthy: no heartbeat for ");
    assert!(notice.contains("warning"), "{notice}");
    // The periodic table shows it too.
    let row = run.wait_for("unhealthy (silent ");
    assert!(row.contains(" quiet "), "{row}");

    // `flowctl status` sees it too: ListServices says is_healthy = false.
    let status = poll_status(&scratch.name, |out| {
        out.lines()
            .any(|l| l.starts_with("quiet ") && l.contains("unhealthy (silent"))
    });
    assert!(status.contains("yes (quiet-"), "{status}");

    run.signal("TERM");
    run.wait();
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn a_component_that_never_registers_fails_start_up_naming_it() {
    let scratch = Scratch::new("cp-never");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: mute
      image: flowctl/test-component:dev
      health_port: 8088
      health_timeout: 3s
      register: true
      env:
        TEST_NO_REGISTER: \"true\"
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    let exit = run.wait();
    assert!(!exit.success(), "{}", run.output());
    let stderr = run.stderr();
    assert!(
        stderr.contains("component `mute` was not ready after 3 s")
            && stderr.contains("has not registered with the control plane at"),
        "{stderr}"
    );
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn a_stream_that_is_not_grpc_fails_verification_naming_the_component() {
    // The test component serves HTTP/1.1 /health, not gRPC: verification must notice.
    let spec = "
  sources:
    - id: fake-source
      image: flowctl/test-component:dev
      health_port: 8088
      grpc:
        port: 8088
        service: raw_ledger_service.RawLedgerService
        verify:
          start_ledger: 5
";
    let scratch = Scratch::new("cp-verify");
    let pipeline = scratch.pipeline(spec);
    let mut run = scratch.run(&pipeline, &["--verify-timeout", "5s"], &[]);
    let exit = run.wait();
    assert!(!exit.success(), "{}", run.output());
    let stderr = run.stderr();
    assert!(
        stderr.contains("stream verification failed")
            && stderr.contains(
                "fake-source: raw_ledger_service.RawLedgerService/StreamRawLedgers at 127.0.0.1:"
            ),
        "{stderr}"
    );
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());

    // --no-verify skips it: the run comes up and stays up.
    let scratch = Scratch::new("cp-noverify");
    let pipeline = scratch.pipeline(spec);
    let mut run = scratch.run(&pipeline, &["--no-verify"], &[]);
    run.wait_for("is up:");
    run.signal("INT");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    assert!(!run.stderr().contains("verifying"), "{}", run.stderr());
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

/// Runs `flowctl status --project NAME` until `done` accepts its output (a component's next
/// heartbeat may not have arrived yet), at most [`support::PATIENCE`].
fn poll_status(project: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let (exit, stdout, stderr) = flowctl(&["status", "--project", project], &[]);
        assert!(exit.success(), "flowctl status failed: {stderr}");
        if done(&stdout) {
            return stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flowctl status never showed what was expected:\n{stdout}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

#[test]
fn the_example_components_register_and_their_streams_are_verified() {
    for image in [
        "flowctl/stellar-live-source-datalake:dev",
        "flowctl/ttp-processor:dev",
        "flowctl/consumer-app:dev",
    ] {
        let present = std::process::Command::new(support::docker_bin())
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            present,
            "image {image} is missing: run scripts/build-images.sh"
        );
    }
    let ledgers =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ledgers/testnet-997-999");
    let scratch = Scratch::new("cp-stellar");
    // The example pipeline in live mode (consumer end ledger 0), so it stays up.
    let pipeline = scratch.pipeline(&format!(
        r#"
  sources:
    - id: stellar-live-source-datalake
      image: flowctl/stellar-live-source-datalake:dev
      env:
        STORAGE_TYPE: FS
        BUCKET_NAME: /data/ledgers
        LEDGERS_PER_FILE: "1"
        FILES_PER_PARTITION: "64000"
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
      volumes:
        - host_path: {ledgers}
          container_path: /data/ledgers
          readonly: true
      health_port: 8088
      register: true
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify:
          start_ledger: 997
  processors:
    - id: ttp-processor
      image: flowctl/ttp-processor:dev
      inputs: [stellar-live-source-datalake]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        SOURCE_SERVICE_ADDRESS: stellar-live-source-datalake:50052
      health_port: 8088
      register: true
      grpc:
        port: 50051
        service: token_transfer_service.EventService
        verify:
          start_ledger: 997
          end_ledger: 998
  sinks:
    - id: consumer-app
      image: flowctl/consumer-app:dev
      inputs: [ttp-processor]
      args: ["997", "0"]
      env:
        TTP_SERVICE_ADDRESS: ttp-processor:50051
      health_port: 8088
      register: true
"#,
        ledgers = ledgers.display()
    ));
    let mut run = scratch.run(&pipeline, &["--heartbeat-interval", "1s"], &[]);
    for id in [
        "stellar-live-source-datalake",
        "ttp-processor",
        "consumer-app",
    ] {
        run.wait_for(&format!("{id} healthy and registered in "));
    }
    let ledgers_line = run
        .wait_for("stellar-live-source-datalake → ttp-processor: streaming (first ledger 997 in ");
    assert!(ledgers_line.ends_with(" ms)"), "{ledgers_line}");
    // Testnet ledgers 997-998 hold 18 token transfer events (examples/ledgers README).
    let events_line =
        run.wait_for("ttp-processor → consumer-app: streaming (first event at ledger 997 in ");
    assert!(
        events_line.ends_with("18 events for ledgers 997-998)"),
        "{events_line}"
    );

    // The consumer's heartbeats carry the events it received.
    let status = poll_status(&scratch.name, |out| {
        out.lines().any(|l| {
            l.starts_with("consumer-app ")
                && l.contains("yes (consumer-app-")
                && l.contains(" in")
                && !l.contains(" 0 in")
        })
    });
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("ttp-processor ") && l.contains(" out")),
        "{status}"
    );

    run.signal("INT");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn status_of_a_run_whose_flowctl_died_says_its_control_plane_does_not_answer() {
    let scratch = Scratch::new("cp-dead");
    let pipeline = scratch.pipeline(REGISTERING);
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up:");
    run.signal("KILL");
    run.wait();
    // The containers outlive a SIGKILLed flowctl; their labels still name the run.
    let (exit, stdout, stderr) = flowctl(&["status", "--project", &scratch.name], &[]);
    assert!(exit.success(), "{stderr}");
    assert!(stdout.contains("does not answer"), "{stdout}");
    assert!(stdout.contains("flowctl gc"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("src ") && l.contains(&scratch.container("src"))),
        "{stdout}"
    );
    // Scratch's drop removes the leftovers by label.
}
