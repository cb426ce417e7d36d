//! The command line without a container engine: `flowctl validate` on good and bad files
//! (the invalid corpus is checked in tests/bad_input.rs), and clear errors when the container
//! CLI is missing or its daemon is unreachable.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use support::{flowctl, repo};

#[test]
fn validate_prints_the_start_order_without_touching_the_engine() {
    for file in [
        "tests/pipelines/three-stage.yaml",
        "examples/ttp-pipeline.yaml",
    ] {
        // A missing file fails below (validate exits 1), never skipped.
        let path = repo().join(file);
        let (status, stdout, stderr) = flowctl(
            &["validate", &path.display().to_string()],
            // Proves no engine call: this CLI does not exist.
            &[("FLOWCTL_DOCKER_BIN", "/nonexistent/docker")],
        );
        assert!(status.success(), "{file}: {stderr}");
        assert!(stdout.contains("is valid"), "{stdout}");
    }
    let (_, stdout, _) = flowctl(
        &[
            "validate",
            &repo()
                .join("tests/pipelines/three-stage.yaml")
                .display()
                .to_string(),
        ],
        &[],
    );
    assert!(
        stdout.contains("start order source → processor → sink"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_errors_with_exit_code_1() {
    let path = repo().join("tests/pipelines/invalid/cycle.yaml");
    let (status, _, stderr) = flowctl(&["validate", &path.display().to_string()], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("cycle: a → b → c → a"), "{stderr}");
}

#[test]
fn a_missing_container_cli_is_a_clear_error() {
    let path = repo().join("tests/pipelines/three-stage.yaml");
    let (status, _, stderr) = flowctl(
        &[
            "run",
            &path.display().to_string(),
            "--docker-bin",
            "/nonexistent/docker",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the container engine is not available")
            && stderr.contains("the container CLI was not found"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_daemon_is_a_clear_error_before_anything_is_created() {
    let dir = std::env::temp_dir().join(format!("flowctl-cli-fake-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("docker");
    let calls = dir.join("calls");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho 'Cannot connect to the Docker daemon at \
             unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = repo().join("tests/pipelines/three-stage.yaml");
    let (status, _, stderr) = flowctl(
        &["run", &path.display().to_string()],
        &[("FLOWCTL_DOCKER_BIN", fake.to_str().unwrap())],
    );
    let recorded = fs::read_to_string(&calls).unwrap_or_default();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("docker version` failed with exit code 1")
            && stderr.contains("Is the docker daemon running?"),
        "{stderr}"
    );
    // Nothing but the availability check and the read-only checks that run alongside it.
    let calls: Vec<&str> = recorded.lines().collect();
    assert!(calls.contains(&"version"), "{recorded}");
    assert!(
        calls
            .iter()
            .all(|c| *c == "version" || c.split(' ').nth(1) == Some("inspect")),
        "{recorded}"
    );
}
