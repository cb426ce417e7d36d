//! Against the real engine: `kill -9` of `flowctl run` leaves nothing (the reaper),
//! `flowctl gc` still cleans up when the reaper was killed too, a failing component and the
//! terminal's signals leave nothing. Every test here also runs under Podman (see
//! [`podman_passes_the_same_scenarios`]).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use support::{flowctl, is_running, kill9, stat_field, Flowctl, Scratch, LONG_RUNNING};

/// How long the reaper may take, as a failure bound (the guarantee is about 15 s; the engine
/// stopping containers under load can take longer). Not a measurement.
const REAP_BOUND: Duration = Duration::from_secs(30);

/// The pid flowctl reported for its reaper, once it did.
fn reaper_pid(run: &mut Flowctl) -> u32 {
    run.wait_for("reaper pid ");
    run.reaper_pid().expect("a pid after `reaper pid `")
}

/// Polls `done` until it holds or `bound` passes; returns how long it took, or panics with
/// `what`.
fn poll(bound: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{}", what());
        thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn a_killed_run_is_removed_by_its_reaper_which_then_exits() {
    let scratch = Scratch::new("reap");
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let mut run = scratch.run(&pipeline, &[], &[]);
    let reaper = reaper_pid(&mut run);
    run.wait_for("is up");
    assert_eq!(scratch.leftovers().len(), 3, "{}", run.output());
    // In a session of its own, so a terminal's Ctrl+C or hang-up never reaches it.
    let session = |pid: u32| stat_field(pid, 6);
    assert_ne!(
        session(reaper),
        session(run.pid),
        "the reaper shares a session"
    );
    assert_eq!(
        session(reaper),
        Some(reaper.to_string()),
        "not a session leader"
    );

    run.signal("KILL");
    assert_eq!(run.wait().signal(), Some(9));
    let took = poll(
        REAP_BOUND,
        || format!("still left: {:?}", scratch.leftovers()),
        || scratch.leftovers().is_empty(),
    );
    poll(
        REAP_BOUND,
        || format!("the reaper (pid {reaper}) is still running"),
        || !is_running(reaper),
    );
    eprintln!("reaper removed the killed run in {} ms", took.as_millis());
}

#[test]
fn gc_cleans_up_when_the_reaper_was_killed_too() {
    let scratch = Scratch::new("reapgc");
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let mut run = scratch.run(&pipeline, &[], &[]);
    let reaper = reaper_pid(&mut run);
    run.wait_for("is up");
    kill9(reaper);
    run.signal("KILL");
    assert_eq!(run.wait().signal(), Some(9));
    poll(
        REAP_BOUND,
        || "the killed reaper is still running".into(),
        || !is_running(reaper),
    );
    assert_eq!(
        scratch.leftovers().len(),
        3,
        "nothing should have removed the run"
    );

    let (status, stdout, stderr) = flowctl(&["gc"], &[]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&scratch.name), "{stdout}");
}

#[test]
fn a_clean_stop_dismisses_the_reaper() {
    let scratch = Scratch::new("reapdismiss");
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let mut run = scratch.run(&pipeline, &[], &[]);
    let reaper = reaper_pid(&mut run);
    run.wait_for("is up");
    run.signal("TERM");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    // flowctl waited for its dismissed reaper before exiting.
    assert!(!is_running(reaper), "the reaper outlived a clean stop");
}

#[test]
fn interrupt_terminate_and_hang_up_leave_nothing() {
    for signal in ["INT", "TERM", "HUP"] {
        let scratch = Scratch::new(&format!("rsig{}", signal.to_lowercase()));
        let pipeline = scratch.pipeline(LONG_RUNNING);
        let mut run = scratch.run(&pipeline, &[], &[]);
        run.wait_for("is up");
        assert_eq!(scratch.leftovers().len(), 3, "{}", run.output());
        run.signal(signal);
        assert_eq!(
            run.wait().code(),
            Some(130),
            "SIG{signal}: {}",
            run.output()
        );
        // The components got SIGTERM from `stop` and exited on their own.
        assert!(
            run.stdout().contains("sink   | sink: SIGTERM, exiting"),
            "SIG{signal}: {}",
            run.output()
        );
        assert_eq!(scratch.leftovers(), Vec::<String>::new(), "SIG{signal}");
    }
}

#[test]
fn a_component_failing_mid_run_is_named_with_its_exit_code_and_leaves_nothing() {
    let scratch = Scratch::new("rfail");
    let pipeline = scratch.pipeline(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      env: {TEST_FAIL_AFTER_MS: 1500, TEST_EXIT_CODE: 9}
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      inputs: [source]
      health_port: 8088
",
    );
    let stderr = scratch.run_failing(&pipeline);
    assert!(
        stderr.contains("component `source` exited with code 9"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source | source: failing on purpose with exit code 9"),
        "{stderr}"
    );
    assert!(stderr.contains("last log lines"), "{stderr}");
}

/// A pipeline whose source fails with code 7 a second after it is healthy, in its first
/// `fail_times` runs (counted in a file on a writable volume, since every restart is a fresh
/// container), under `restart`.
fn failing_source(scratch: &Scratch, restart: &str, fail_times: u32) -> PathBuf {
    let state = scratch.dir.join("state");
    fs::create_dir_all(&state).unwrap();
    // The image runs as nobody.
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    scratch.pipeline(&format!(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      restart: {restart}
      env:
        TEST_FAIL_AFTER_MS: 1000
        TEST_EXIT_CODE: 7
        TEST_FAIL_TIMES: {fail_times}
        TEST_RUN_COUNTER: /state/runs
      volumes:
        - {{host_path: {}, container_path: /state, readonly: false}}
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      inputs: [source]
      health_port: 8088
",
        state.display()
    ))
}

#[test]
fn on_failure_restarts_a_failing_component_and_says_so() {
    let scratch = Scratch::new("rrestart");
    let pipeline = failing_source(&scratch, "on-failure:2", 2);
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");
    run.wait_for(
        "component `source` exited with code 7 while running; restarting it (restart 1 of 2",
    );
    run.wait_for("source healthy");
    run.wait_for("restarting it (restart 2 of 2, restart: on-failure:2)");
    run.wait_for("source healthy");
    // The third container runs on; the rest of the pipeline was never stopped.
    let counter = scratch.dir.join("state/runs");
    assert_eq!(fs::read_to_string(&counter).unwrap(), "3");
    run.signal("TERM");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    assert!(!run.stderr().contains("`sink` exited"), "{}", run.output());
}

#[test]
fn a_component_out_of_restarts_fails_the_run_and_leaves_nothing() {
    let scratch = Scratch::new("rrestartmax");
    let pipeline = failing_source(&scratch, "on-failure:1", 5);
    let stderr = scratch.run_failing(&pipeline);
    assert!(stderr.contains("(restart 1 of 1, "), "{stderr}");
    assert!(!stderr.contains("restart 2 of"), "{stderr}");
    assert!(
        stderr.contains("component `source` exited with code 7"),
        "{stderr}"
    );
    assert!(stderr.contains("failing on purpose"), "{stderr}");
    assert_eq!(
        fs::read_to_string(scratch.dir.join("state/runs")).unwrap(),
        "2"
    );
}

/// Runs every other test of this file again with `FLOWCTL_DOCKER_BIN=podman`.
#[test]
fn podman_passes_the_same_scenarios() {
    support::rerun_under_podman(
        "the reliability scenarios",
        &[
            "--skip",
            "podman_passes_the_same_scenarios",
            "--test-threads",
            "2",
        ],
        7,
    );
}
