//! `replicas: N` and `spec.pipelines` jobs against the real engine. Replicas are N
//! containers sharing the component's network alias (each with its own health check, label and
//! status row); the example pipeline with a replicated processor still gives every consumer the
//! exact upstream events. Jobs start after what they `depends_on`, are restarted as their
//! `restart_policy` says, and the run completes when they (and the sinks) have finished.

mod support;

use std::fs;
use std::process::Command;

use support::{
    docker, docker_bin, flowctl, flowctl_command, line_index, repo, require_images, unique,
    wait_bounded, Scratch, TempDir, PATIENCE,
};

const EXAMPLE_IMAGES: [&str; 3] = [
    "flowctl/stellar-live-source-datalake:dev",
    "flowctl/ttp-processor:dev",
    "flowctl/consumer-app:dev",
];

#[test]
fn replicas_share_their_alias_and_each_has_its_own_container_health_and_status_row() {
    let scratch = Scratch::new("replicas");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: src
      image: flowctl/test-component:dev
      health_port: 8088
  processors:
    - id: work
      image: flowctl/test-component:dev
      inputs: [src]
      replicas: 3
      health_port: 8088
      register: true
      env: {TEST_CONNECT: 'src:8088', TEST_HEALTHY_AFTER_MS: 200}
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      inputs: [work]
      health_port: 8088
      env: {TEST_RESOLVE: work, TEST_CONNECT: 'work:8088', TEST_EXIT_AFTER_MS: 3000}
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");

    // Three containers of their own, each answering to `work` on the network.
    let filter = format!("label=io.flowctl.pipeline={}", scratch.name);
    let names = docker(&["ps", "--filter", &filter, "--format", "{{.Names}}"]);
    let mut components: Vec<&str> = names
        .lines()
        .filter_map(|name| name.strip_prefix(&format!("{}-", scratch.name)))
        .collect();
    components.sort();
    assert_eq!(components, ["sink", "src", "work-1", "work-2", "work-3"]);
    for n in 1..=3 {
        let label = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.flowctl.component\"}}",
            &scratch.container(&format!("work-{n}")),
        ]);
        assert_eq!(label.trim(), format!("work-{n}"));
    }
    // `flowctl status` from another process lists each replica, registered on its own.
    let (exit, table, stderr) = flowctl(&["status", "--project", &scratch.name], &[]);
    assert!(exit.success(), "{stderr}");
    for n in 1..=3 {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("work-{n} "))
                && l.contains(&scratch.container(&format!("work-{n}")))
                && l.contains(&format!("yes (work-{n}"))),
            "no registered row for work-{n}:\n{table}"
        );
    }
    let network = format!("{}-bridge", scratch.name);
    for n in 1..=3 {
        let aliases = docker(&[
            "inspect",
            "--format",
            &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
            &scratch.container(&format!("work-{n}")),
        ]);
        assert!(aliases.contains("\"work\""), "work-{n}: {aliases}");
        assert!(
            aliases.contains(&format!("\"work-{n}\"")),
            "work-{n}: {aliases}"
        );
    }

    let status = run.wait();
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(0), "{}", run.output());
    // Each replica was started and probed on its own, after the source and before the sink.
    let src_healthy = line_index(&stderr, "src healthy");
    let sink_starts = line_index(&stderr, "starting sink");
    for n in 1..=3 {
        let starts = line_index(&stderr, &format!("starting work-{n}"));
        let healthy = line_index(&stderr, &format!("work-{n} healthy"));
        assert!(
            src_healthy < starts && starts < healthy && healthy < sink_starts,
            "work-{n} out of order:\n{stderr}"
        );
        // A status row per replica, registered with the control plane by its own id.
        assert!(
            stderr.lines().any(
                |l| l.contains(&format!(" work-{n} ")) && l.contains(&format!("yes (work-{n}"))
            ),
            "no status row for work-{n}:\n{stderr}"
        );
    }
    // The engine's DNS gives the name of the replicated component every replica's address.
    let resolved = stdout
        .lines()
        .find_map(|l| l.split_once("sink: resolved work to ").map(|(_, a)| a))
        .unwrap_or_else(|| panic!("the sink did not resolve work:\n{stdout}"));
    assert_eq!(resolved.split(',').count(), 3, "{resolved}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn a_replicated_processor_gives_every_consumer_every_event_once() {
    require_images(&EXAMPLE_IMAGES);
    let name = unique("ft-fanin-");
    let dir = TempDir::new("flowctl-replicas-example-");
    let mut text = fs::read_to_string(repo().join("examples/ttp-pipeline.yaml")).unwrap();
    let ledgers = repo().join("examples/ledgers");
    text = text.replace(
        "host_path: ledgers/",
        &format!("host_path: {}/", ledgers.display()),
    );
    text = text.replace("name: ttp-pipeline", &format!("name: {name}"));
    let processor = "      inputs: [stellar-live-source-datalake]\n";
    assert!(text.contains(processor), "the example changed:\n{text}");
    text = text.replace(processor, &format!("{processor}      replicas: 3\n"));
    // A second consumer: two calls into the replicated processor, each answered in full.
    let sink_at = text
        .find("    - id: consumer-app")
        .expect("the example's sink");
    let second = text[sink_at..].replace("id: consumer-app", "id: consumer-app-2");
    text.push_str(&second);
    let file = dir.0.join("pipeline.yaml");
    fs::write(&file, &text).unwrap();

    let mut child = flowctl_command()
        .args([
            "run",
            "--no-color",
            "--control-plane-port",
            "0",
            "--project",
        ])
        .arg(&name)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_bounded(&mut child, PATIENCE * 3, "flowctl run");
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "flowctl run failed: {status}\n{stdout}\n{stderr}"
    );

    let expected = support::testnet_997_998_events();
    for sink in ["consumer-app", "consumer-app-2"] {
        let events: Vec<String> = stdout
            .lines()
            .filter_map(|line| line.split_once(" | "))
            .filter(|(prefix, line)| prefix.trim() == sink && line.starts_with('{'))
            .map(|(_, line)| line.to_string())
            .collect();
        assert_eq!(
            events, expected,
            "{sink}'s events differ\nstderr:\n{stderr}"
        );
    }
    // Every replica was verified to stream on its own.
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!("ttp-processor-{n} ")),
            "no ttp-processor-{n} in:\n{stderr}"
        );
    }
    let left = Command::new(docker_bin())
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=io.flowctl.project={name}"))
        .args(["--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout), "");
}

#[test]
fn jobs_start_after_what_they_depend_on_restart_by_policy_and_end_the_run() {
    let scratch = Scratch::new("jobs");
    let state = scratch.dir.join("state");
    fs::create_dir_all(&state).unwrap();
    // The components run as nobody: the counter's folder must be writable for them.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let pipeline = scratch.pipeline(&format!(
        "
  sources:
    - id: db
      image: flowctl/test-component:dev
      health_port: 8088
      env: {{TEST_HEALTHY_AFTER_MS: 300}}
  pipelines:
    - id: migrate
      type: pipeline
      image: flowctl/test-component:dev
      depends_on: [db]
      restart_policy: on-failure:2
      volumes:
        - {{host_path: {}, container_path: /state, readonly: false}}
      env:
        TEST_CONNECT: 'db:8088'
        TEST_FAIL_TIMES: 1
        TEST_RUN_COUNTER: /state/runs
        TEST_FAIL_AFTER_MS: 300
        TEST_EXIT_CODE: 4
        TEST_EXIT_AFTER_MS: 1000
    - id: report
      image: flowctl/test-component:dev
      depends_on: [migrate]
      env: {{TEST_RESOLVE: db, TEST_EXIT_AFTER_MS: 1500}}
",
        state.display()
    ));
    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert_eq!(status.code(), Some(0), "{}", run.output());
    let order = [
        "db healthy",
        "starting migrate",
        "starting report",
        "every sink and job finished",
    ];
    let positions: Vec<usize> = order.iter().map(|t| line_index(&stderr, t)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{stderr}"
    );
    assert!(
        stderr.contains("restart 1 of 2, restart: on-failure:2"),
        "migrate was not restarted:\n{stderr}"
    );
    assert!(stdout.contains("report: done, exiting 0"), "{stdout}");
    assert_eq!(fs::read_to_string(state.join("runs")).unwrap().trim(), "2");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn a_failing_job_fails_the_run_naming_it() {
    let scratch = Scratch::new("jobfail");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: db
      image: flowctl/test-component:dev
      health_port: 8088
  pipelines:
    - id: migrate
      image: flowctl/test-component:dev
      depends_on: [db]
      restart_policy: never
      env: {TEST_FAIL_AFTER_MS: 300, TEST_EXIT_CODE: 5}
",
    );
    let stderr = scratch.run_failing(&pipeline);
    assert!(
        stderr.contains("migrate") && stderr.contains("exit code 5"),
        "{stderr}"
    );
}

/// Replicas and jobs again under Podman (netavark's DNS must give a shared alias every
/// replica's address too).
#[test]
fn podman_runs_replicas_and_jobs() {
    support::rerun_under_podman(
        "replicas and jobs",
        &[
            "replicas_share_their_alias_and_each_has_its_own_container_health_and_status_row",
            "jobs_start_after_what_they_depend_on_restart_by_policy_and_end_the_run",
            "--exact",
        ],
        2,
    );
}
