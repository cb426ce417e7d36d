//! `flowctl run` and `flowctl gc` against the real container engine, with the
//! `flowctl/test-component:dev` image (built by scripts/build-images.sh).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use support::{docker, flowctl, line_index, Scratch, Unmanaged, LONG_RUNNING};

/// The host port flowctl reported for `id`'s container port 8088.
fn reported_port(stderr: &str, id: &str) -> u16 {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("flowctl {id} healthy")))
        .unwrap_or_else(|| panic!("no healthy line for {id} in:\n{stderr}"));
    let after = line
        .split("8088→127.0.0.1:")
        .nth(1)
        .unwrap_or_else(|| panic!("no published port in {line:?}"));
    after
        .trim_end_matches(')')
        .split([',', ')'])
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port number in {line:?}"))
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to published port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn bounded_pipeline_starts_in_order_finds_inputs_by_id_and_leaves_nothing() {
    let scratch = Scratch::new("bounded");
    // The processor and sink check their inputs' /health by component id (through the
    // engine's DNS, although containers are named `<project>-<id>`) before turning healthy:
    // they fail if an input is not yet healthy or not resolvable.
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      env: {TEST_HEALTHY_AFTER_MS: 300}
  processors:
    - id: processor
      image: flowctl/test-component:dev
      inputs: [source]
      health_port: 8088
      env: {TEST_CONNECT: 'source:8088'}
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      inputs: [processor]
      health_port: 8088
      env: {TEST_RESOLVE: 'source,processor', TEST_CONNECT: 'processor:8088', TEST_EXIT_AFTER_MS: 1000}
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    let (stderr, stdout) = (run.stderr(), run.stdout());
    assert_eq!(status.code(), Some(0), "{}", run.output());

    // Each component is healthy before the next one starts.
    let order = [
        "starting source",
        "source healthy",
        "starting processor",
        "processor healthy",
        "starting sink",
        "sink healthy",
        "every sink finished",
        "removed 3 container(s) and 1 network(s)",
    ];
    let positions: Vec<usize> = order.iter().map(|t| line_index(&stderr, t)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{stderr}"
    );
    for expected in [
        "processor | processor: source:8088 is healthy",
        "sink      | sink: resolved source to ",
        "sink      | sink: resolved processor to ",
        "sink      | sink: processor:8088 is healthy",
        "sink      | sink: done, exiting 0",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // The injected variables are listed by key; values never appear.
    assert!(stderr.contains("FLOWCTL_ENDPOINT"), "{stderr}");
    assert!(!stderr.contains("source,processor"), "{stderr}");
}

#[test]
fn a_sink_that_finishes_before_its_first_probe_completes_the_run() {
    let scratch = Scratch::new("quick");
    let pipeline = scratch.pipeline(
        "
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      health_port: 8088
      env: {TEST_EXIT_AFTER_MS: 0}
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    assert_eq!(run.wait().code(), Some(0), "{}", run.output());
    assert!(
        run.stderr().contains("every sink finished"),
        "{}",
        run.output()
    );
}

#[test]
fn published_ports_reach_components_and_sigint_leaves_nothing() {
    let scratch = Scratch::new("ports");
    // A pinned port: one that is free right now.
    let pinned = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The sink is LONG_RUNNING's last component, so these lines extend it.
    let pipeline = scratch.pipeline(&format!(
        "{LONG_RUNNING}      ports:
        - {{name: health, containerPort: 8088, hostPort: {pinned}}}
"
    ));
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");
    let stderr = run.stderr();
    let source_port = reported_port(&stderr, "source");
    assert_eq!(reported_port(&stderr, "sink"), pinned, "{stderr}");

    // Reachable from the host on loopback, and the engine agrees on the port.
    let response = http_get(source_port, "/health");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("\"healthy\""),
        "{response}"
    );
    let engine_view = docker(&["port", &scratch.container("source"), "8088/tcp"]);
    assert!(
        engine_view.contains(&format!("127.0.0.1:{source_port}")),
        "{engine_view}"
    );
    let labels = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.flowctl.component\"}} {{index .Config.Labels \"io.flowctl.managed\"}} {{.HostConfig.SecurityOpt}}",
        &scratch.container("sink"),
    ]);
    assert_eq!(labels.trim(), "sink true [no-new-privileges]");

    run.signal("INT");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.output());
    assert!(run.stderr().contains("stopping"), "{}", run.output());
}

#[test]
fn a_second_interrupt_forces_removal() {
    let scratch = Scratch::new("force");
    // The sink ignores SIGTERM and has a grace period far beyond the test's patience, so the
    // run only ends in time if the second SIGINT really forces.
    let pipeline = scratch.pipeline(
        "
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      health_port: 8088
      stop_grace_period: 10m
      env: {TEST_IGNORE_SIGTERM: 'true'}
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");
    run.signal("INT");
    run.wait_for("stopping");
    // `stop` has delivered SIGTERM once the component says it ignores it.
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while !run.stdout().contains("ignoring SIGTERM") {
        assert!(std::time::Instant::now() < deadline, "{}", run.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    run.signal("INT");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.output());
    assert!(run.stderr().contains("forcing"), "{}", run.output());
}

#[test]
fn a_component_dying_during_start_up_is_reported_without_waiting_for_its_timeout() {
    let scratch = Scratch::new("dying");
    // Never healthy, and a timeout far beyond the test's patience: only noticing the exit
    // can end this start-up in time.
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      health_timeout: 10m
      env: {TEST_NEVER_HEALTHY: 'true', TEST_FAIL_AFTER_MS: 300, TEST_EXIT_CODE: 4}
  sinks:
    - {id: sink, image: flowctl/test-component:dev, inputs: [source]}
",
    );
    let stderr = scratch.run_failing(&pipeline);
    assert!(
        stderr.contains("component `source` exited with code 4 while starting"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting sink"), "{stderr}");
}

#[test]
fn a_component_that_never_gets_healthy_times_out_with_the_last_answer() {
    let scratch = Scratch::new("unhealthy");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      health_timeout: 2s
      env: {TEST_NEVER_HEALTHY: 'true'}
",
    );
    let stderr = scratch.run_failing(&pipeline);
    assert!(
        stderr.contains("component `source` was not ready after 2 s"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(
        stderr.contains("source | source: staying unhealthy"),
        "{stderr}"
    );
}

#[test]
fn missing_images_and_taken_names_are_refused_before_anything_is_created() {
    let scratch = Scratch::new("preflight");
    let pipeline = scratch.pipeline(
        "
  sources:
    - {id: source, image: flowctl/test-component:dev}
  sinks:
    - {id: sink, image: 'flowctl/no-such-image:dev', inputs: [source]}
",
    );
    // A container flowctl did not create holds the source's name.
    let bystander = Unmanaged::create(&scratch.container("source"));
    let (status, _, stderr) = flowctl(
        &[
            "run",
            &pipeline.display().to_string(),
            "--project",
            &scratch.name,
            "--control-plane-port",
            "0",
        ],
        &[],
    );
    let bystander = &bystander.name;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "component `sink`: image `flowctl/no-such-image:dev` is not present locally \
             (build it with scripts/build-images.sh)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "container name `{bystander}` is taken by something flowctl did not create"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("network"), "{stderr}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn gc_removes_a_killed_runs_leftovers_and_nothing_else() {
    let killed = Scratch::new("gckilled");
    let live = Scratch::new("gclive");
    let bystander = Unmanaged::create(&format!("{}-bystander", killed.name));

    let mut dead_run = killed.run(&killed.pipeline(LONG_RUNNING), &[], &[]);
    dead_run.wait_for("is up");
    let mut live_run = live.run(&live.pipeline(LONG_RUNNING), &[], &[]);
    live_run.wait_for("is up");

    // Its reaper (which would remove the run by itself) dies first: gc is the fallback.
    if let Some(reaper) = dead_run.reaper_pid() {
        let killed_reaper = std::process::Command::new("kill")
            .args(["-s", "KILL", &reaper.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(killed_reaper.success());
    }
    dead_run.signal("KILL");
    assert_eq!(dead_run.wait().signal(), Some(9));
    assert_eq!(killed.leftovers().len(), 3, "kill -9 leaves the run behind");

    let (status, stdout, stderr) = flowctl(&["gc"], &[]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("(pipeline {})", killed.name)) && stdout.contains("removed run"),
        "{stdout}"
    );
    assert_eq!(killed.leftovers(), Vec::<String>::new());
    // The live run and the unlabelled container are untouched.
    assert_eq!(live.leftovers().len(), 3, "{stdout}");
    assert!(
        stdout.contains("kept run") && stdout.contains(&live.name),
        "{stdout}"
    );
    assert!(bystander.exists(), "gc removed an unlabelled container");

    // gc is safe to repeat; --dry-run lists a live run only with --all, removing nothing.
    let (status, stdout, _) = flowctl(&["gc", "--all", "--dry-run"], &[]);
    assert!(status.success());
    assert!(
        stdout.contains("would remove run") && stdout.contains(&live.name),
        "{stdout}"
    );
    assert_eq!(live.leftovers().len(), 3);

    live_run.signal("TERM");
    assert_eq!(live_run.wait().code(), Some(130), "{}", live_run.output());
    assert_eq!(live.leftovers(), Vec::<String>::new());
}
