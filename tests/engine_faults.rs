//! An engine that misbehaves, against the real engine behind a wrapper: a `start` that never
//! returns (a daemon that stopped answering) must not hold flowctl, and a `docker` that is
//! really Podman must be treated as Podman everywhere, the reaper included.

mod support;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::{docker_bin, is_running, Scratch, LONG_RUNNING};

/// Failure bound for "within seconds" (a loaded 2-core machine stops containers slowly); not a
/// measurement.
const PROMPT: Duration = Duration::from_secs(45);

/// The real CLI's path, for wrappers (which must not find themselves in `PATH`).
fn real_cli() -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {}", docker_bin())])
        .output()
        .expect("cannot run sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{} is not in PATH", docker_bin());
    path
}

/// A CLI that passes every call to the real one except `start`, which records its pid and
/// hangs as a daemon that stopped answering would.
fn hanging_start_cli(dir: &Path) -> PathBuf {
    hanging_cli(dir, "start")
}

/// A CLI that passes every call to the real one except `verb`, which records its pid and hangs.
fn hanging_cli(dir: &Path, verb: &str) -> PathBuf {
    let path = dir.join("hanging-docker");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = {verb} ]; then echo $$ >> '{}'; exec sleep 300; fi\nexec '{}' \"$@\"\n",
        dir.join("hung.pids").display(),
        real_cli()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hung_pids(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("hung.pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PROMPT, "{what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_sigterm_ends_a_run_whose_engine_call_hangs_and_leaves_nothing() {
    let scratch = Scratch::new("hungterm");
    let cli = hanging_start_cli(&scratch.dir);
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let cli_env = cli.display().to_string();
    let mut run = scratch.run(&pipeline, &[], &[("FLOWCTL_DOCKER_BIN", &cli_env)]);
    run.wait_for("starting source");
    wait_until("the hung `start` never ran", || {
        !hung_pids(&scratch.dir).is_empty()
    });

    let signalled = Instant::now();
    run.signal("TERM");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.output());
    assert!(
        signalled.elapsed() < PROMPT,
        "one SIGTERM took {:?}\n{}",
        signalled.elapsed(),
        run.output()
    );
    assert_eq!(
        scratch.leftovers(),
        Vec::<String>::new(),
        "{}",
        run.output()
    );
    for pid in hung_pids(&scratch.dir) {
        assert!(!is_running(pid), "the hung CLI call {pid} outlived flowctl");
    }
}

#[test]
fn a_hung_engine_call_fails_the_run_at_its_deadline_naming_the_command() {
    let scratch = Scratch::new("hungdeadline");
    let cli = hanging_start_cli(&scratch.dir);
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let cli_env = cli.display().to_string();
    let mut run = scratch.run(
        &pipeline,
        &[],
        &[
            ("FLOWCTL_DOCKER_BIN", &cli_env),
            ("FLOWCTL_ENGINE_TIMEOUT", "2s"),
        ],
    );
    assert_eq!(run.wait().code(), Some(1), "{}", run.output());
    let stderr = run.stderr();
    assert!(
        stderr.contains("component `source`: cannot start its container")
            && stderr.contains("hanging-docker start")
            && stderr.contains("did not finish within 2 s")
            && stderr.contains("not answering"),
        "{stderr}"
    );
    assert_eq!(scratch.leftovers(), Vec::<String>::new(), "{stderr}");
    for pid in hung_pids(&scratch.dir) {
        assert!(!is_running(pid), "the hung CLI call {pid} outlived flowctl");
    }
}

/// A CLI whose `rm` hangs once `armed` exists, and passes everything else to the real one.
fn cli_with_armed_hanging_rm(dir: &Path, armed: &Path) -> PathBuf {
    let path = dir.join("armed-docker");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = rm ] && [ -e '{}' ]; then echo $$ >> '{}'; exec sleep 300; fi\nexec '{}' \"$@\"\n",
        armed.display(),
        dir.join("hung.pids").display(),
        real_cli()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The first signal stops, the second forces a removal, the third exits at once: also while
/// the forced removal hangs in an `rm` the engine never answers (the removal must not run on
/// the thread that hears signals). What is left, the reaper removes once the engine answers.
#[test]
fn a_third_signal_exits_at_once_while_the_forced_removal_hangs() {
    let scratch = Scratch::new("thirdsig");
    let armed = scratch.dir.join("armed");
    let cli = cli_with_armed_hanging_rm(&scratch.dir, &armed);
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let cli_env = cli.display().to_string();
    let mut run = scratch.run(&pipeline, &[], &[("FLOWCTL_DOCKER_BIN", &cli_env)]);
    run.wait_for("is up");
    fs::write(&armed, "").unwrap();
    run.signal("INT");
    wait_until("teardown's `rm` never ran", || {
        !hung_pids(&scratch.dir).is_empty()
    });
    run.signal("INT");
    wait_until("the forced removal's `rm` never ran", || {
        hung_pids(&scratch.dir).len() >= 2
    });
    let signalled = Instant::now();
    run.signal("INT");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.output());
    assert!(
        signalled.elapsed() < PROMPT,
        "the third signal took {:?}\n{}",
        signalled.elapsed(),
        run.output()
    );
    fs::remove_file(&armed).unwrap();
    for pid in hung_pids(&scratch.dir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    wait_until("the reaper left containers", || {
        scratch.leftovers().is_empty()
    });
}

/// Reading image metadata creates a probe container per image never seen. Killed (-9) while
/// such a probe exists (here: its `cp` hangs), flowctl leaves it to its reaper: the probe
/// carries the run's labels from the start, and the reaper removes it with the rest.
#[test]
fn a_probe_container_of_a_killed_run_is_labelled_and_reaped() {
    let scratch = Scratch::new("probereap");
    let cli = hanging_cli(&scratch.dir, "cp");
    let pipeline = scratch.pipeline(LONG_RUNNING);
    let cli_env = cli.display().to_string();
    // An empty cache: the test image's metadata has never been read.
    let cache = scratch.dir.join("cache").display().to_string();
    let mut run = scratch.run(
        &pipeline,
        &[],
        &[("FLOWCTL_DOCKER_BIN", &cli_env), ("XDG_CACHE_HOME", &cache)],
    );
    wait_until("the probe's `cp` never ran", || {
        !hung_pids(&scratch.dir).is_empty()
    });
    let probes = format!("name=flowctl-probe-{}-", run.pid);
    let listed = support::docker(&["ps", "-aq", "--filter", &probes]);
    assert!(
        !listed.trim().is_empty(),
        "no probe container\n{}",
        run.output()
    );
    let left = scratch.leftovers();
    assert!(
        left.len() == 1 && left[0].starts_with("container flowctl-probe-"),
        "the probe does not carry the run's labels: {left:?}\n{}",
        run.output()
    );
    run.signal("KILL");
    let _ = run.wait();
    wait_until("the reaper left the probe container", || {
        scratch.leftovers().is_empty()
            && support::docker(&["ps", "-aq", "--filter", &probes])
                .trim()
                .is_empty()
    });
    for pid in hung_pids(&scratch.dir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

#[test]
fn podman_reaps_a_killed_runs_probe_too() {
    support::rerun_under_podman(
        "the probe reaping test",
        &[
            "--exact",
            "a_probe_container_of_a_killed_run_is_labelled_and_reaped",
        ],
        1,
    );
}

/// Whether podman is installed (see [`support::require_tool`]).
fn podman_present() -> bool {
    support::require_tool(
        "podman",
        Command::new("podman").arg("version"),
        ".ci/install-podman.sh installs it",
    )
}

/// A `docker` that is a symlink to `podman`. flowctl must detect Podman once,
/// before the reaper or the signal policy get their copy of the engine.
#[test]
fn a_docker_symlink_to_podman_is_podman_for_cleanup_and_the_reaper() {
    if !podman_present() {
        return;
    }
    let scratch = Scratch::new("dockerpodman");
    let bin = scratch.dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let podman = {
        let out = Command::new("sh")
            .args(["-c", "command -v podman"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    symlink(&podman, bin.join("docker")).unwrap();
    let docker = bin.join("docker").display().to_string();
    let env = [("FLOWCTL_DOCKER_BIN", docker.as_str())];
    let leftovers = || scratch.leftovers_on("podman");
    let pipeline = scratch.pipeline(LONG_RUNNING);

    // A container removed by hand, then a forced stop (the second signal).
    let mut run = scratch.run(&pipeline, &[], &env);
    run.wait_for("is up");
    let reaper = run.reaper_pid().expect("flowctl names its reaper");
    let cmdline = fs::read(format!("/proc/{reaper}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--engine-kind podman"),
        "the reaper does not know it drives Podman: {cmdline}"
    );
    let removed = Command::new("podman")
        .args(["rm", "--force", &scratch.container("sink")])
        .output()
        .unwrap();
    assert!(removed.status.success());
    run.signal("INT");
    run.signal("INT");
    let _ = run.wait();
    wait_until("containers left after a forced stop", || {
        leftovers().is_empty()
    });

    // kill -9 with a container already gone: the reaper removes the rest.
    let mut run = scratch.run(&pipeline, &[], &env);
    run.wait_for("is up");
    let removed = Command::new("podman")
        .args(["rm", "--force", &scratch.container("source")])
        .output()
        .unwrap();
    assert!(removed.status.success());
    run.signal("KILL");
    let _ = run.wait();
    wait_until("the reaper left containers", || leftovers().is_empty());
}
