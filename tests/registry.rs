//! Pulling from a real registry. The test starts Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 on a free port, with filesystem storage in a scratch
//! folder; pushes the example images to it under its own organisation and version; removes
//! those registry tags locally (never the shared `flowctl/*:dev` ones); then runs a pipeline
//! that names its components only by `NAME@VERSION` + `config:` with
//! `flowctl run --registry 127.0.0.1:PORT/ORG`:
//! - `--pull never` fails before anything is created;
//! - the default `--pull missing` pulls the three images (progress lines), runs them, and the
//!   consumer prints exactly the upstream events of testnet ledgers 997-998;
//! - with the registry stopped (and the images absent again), the run fails naming the
//!   registry's address and the component.
//!
//! Drop guards stop the registry, remove the registry tags, the runs' containers and networks
//! and the scratch folder, also when the test fails; the test then checks that nothing is left.
//! It runs again under Podman ([`podman_pulls_from_a_local_registry`]), which is told that the
//! plain-HTTP registry is insecure the way a user does it: a `registries.conf` of the test's,
//! named by `CONTAINERS_REGISTRIES_CONF`. Docker treats 127.0.0.0/8 registries as insecure by
//! itself.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{docker_bin, flowctl_command, repo, require_images, unique, wait_bounded, TempDir};

/// The registry's binary, as Debian's `docker-registry` package installs it.
const REGISTRY_BIN: &str = "docker-registry";
/// The example's components: the name of each image (`flowctl/NAME:dev`) and its id in the
/// test's pipeline.
const COMPONENTS: [(&str, &str); 3] = [
    ("stellar-live-source-datalake", "ledgers"),
    ("ttp-processor", "ttp"),
    ("consumer-app", "consumer"),
];
/// The version the images are pushed under.
const VERSION: &str = "v1.0.0";
/// Upper bound for one whole run, only so that a broken run fails instead of hanging.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The registry, running until dropped.
struct Registry {
    child: Child,
    dir: TempDir,
    /// `127.0.0.1:PORT`.
    address: String,
}

impl Registry {
    /// Starts the registry on a free loopback port and waits until it answers `GET /v2/`.
    fn start() -> Registry {
        let dir = TempDir::new("flowctl-registry-");
        for _attempt in 0..5 {
            // The port is free now; another process could take it before the registry binds
            // it, in which case the registry exits and the next attempt picks another.
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let address = format!("127.0.0.1:{port}");
            if let Some(child) = serve(&dir.0, &address) {
                return Registry {
                    child,
                    dir,
                    address,
                };
            }
        }
        panic!("the registry did not start; its log:\n{}", read_log(&dir.0));
    }

    /// Stops the registry process and waits for it (idempotent).
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Whether the registry process is still running.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Runs the registry on `address` with its configuration and storage in `dir`; the process
/// once it answers `GET /v2/` with 200 (within 30 s), else `None` (and it is stopped).
fn serve(dir: &Path, address: &str) -> Option<Child> {
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.join("registry.log")).unwrap();
    let mut child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return None;
        }
        if http_status(address, "/v2/") == Some(200) {
            return Some(child);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
}

/// The status code of `GET path` on `address`, `None` when nothing answers.
fn http_status(address: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The environment the engine CLI needs here: under Podman, the test's `registries.conf`.
struct EngineEnv(Vec<(String, String)>);

impl EngineEnv {
    /// Under Podman, writes a `registries.conf` marking `registry` insecure (plain HTTP) into
    /// `dir` and names it in `CONTAINERS_REGISTRIES_CONF`.
    fn for_registry(registry: &str, dir: &Path) -> EngineEnv {
        if !docker_bin().contains("podman") {
            return EngineEnv(Vec::new());
        }
        let conf = dir.join("registries.conf");
        fs::write(
            &conf,
            format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
        )
        .unwrap();
        EngineEnv(vec![(
            "CONTAINERS_REGISTRIES_CONF".into(),
            conf.display().to_string(),
        )])
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Runs the container CLI; returns (success, stdout + stderr).
    fn engine(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(docker_bin())
            .args(args)
            .envs(self.pairs())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", docker_bin()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// Runs the container CLI; it must succeed.
    fn engine_ok(&self, args: &[&str]) {
        let (ok, text) = self.engine(args);
        assert!(ok, "{} {args:?} failed: {text}", docker_bin());
    }

    fn image_present(&self, image: &str) -> bool {
        self.engine(&["image", "inspect", "--format", "{{.Id}}", image])
            .0
    }
}

/// The registry's tags of the example images on this engine: removed on drop (only these
/// names: the images keep their `flowctl/*:dev` tags).
struct RegistryTags<'a> {
    env: &'a EngineEnv,
    images: Vec<String>,
}

impl RegistryTags<'_> {
    fn remove(&self) {
        for image in &self.images {
            if self.env.image_present(image) {
                self.env.engine_ok(&["rmi", image]);
            }
        }
    }
}

impl Drop for RegistryTags<'_> {
    fn drop(&mut self) {
        for image in &self.images {
            let _ = self.env.engine(&["rmi", image]);
        }
    }
}

/// Removes what a failed run of `project` left, by its unique label only.
struct Leftovers<'a> {
    env: &'a EngineEnv,
    project: String,
}

impl Leftovers<'_> {
    /// Containers and networks labelled with the project.
    fn list(&self) -> Vec<String> {
        let label = format!("label=io.flowctl.project={}", self.project);
        let (_, containers) =
            self.env
                .engine(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
        let (_, networks) =
            self.env
                .engine(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]);
        containers
            .lines()
            .map(|name| format!("container {name}"))
            .chain(networks.lines().map(|name| format!("network {name}")))
            .collect()
    }
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        for entry in self.list() {
            if let Some((kind, name)) = entry.split_once(' ') {
                let _ = match kind {
                    "container" => self.env.engine(&["rm", "-f", name]),
                    _ => self.env.engine(&["network", "rm", name]),
                };
            }
        }
    }
}

/// The test's pipeline: components named only by `NAME@VERSION` and configured with
/// `config:` (the keys the example images' metadata lists), the repository's testnet lake.
fn pipeline(dir: &Path, name: &str) -> PathBuf {
    let lake = repo().join("examples/ledgers/testnet-997-999");
    let text = format!(
        r#"apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: {name}
  description: the example pipeline, its images pulled from a registry
spec:
  config:
    network_passphrase: "Test SDF Network ; September 2015"
  sources:
    - id: ledgers
      type: stellar-live-source-datalake@{VERSION}
      config:
        storage_type: FS
        bucket_name: /data/ledgers
        ledgers_per_file: 1
        files_per_partition: 64000
      volumes:
        - host_path: {lake}
          container_path: /data/ledgers
      health_port: 8088
      register: true
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify: {{start_ledger: 997}}
  processors:
    - id: ttp
      type: ttp-processor@{VERSION}
      inputs: [ledgers]
      config:
        source_service_address: ledgers:50052
        port: ":50051"
      health_port: 8088
      register: true
      grpc:
        port: 50051
        service: token_transfer_service.EventService
        verify: {{start_ledger: 997, end_ledger: 998}}
  sinks:
    - id: consumer
      type: consumer-app@{VERSION}
      inputs: [ttp]
      args: ["997", "998"]
      config:
        ttp_service_address: ttp:50051
      health_port: 8088
      register: true
"#,
        lake = lake.display()
    );
    let path = dir.join("pipeline.yaml");
    fs::write(&path, text).unwrap();
    path
}

/// `flowctl run PIPELINE --project P --registry R EXTRA...` to its end (at most
/// [`RUN_LIMIT`]): status, stdout, stderr.
fn run(
    pipeline: &Path,
    project: &str,
    registry: &str,
    extra: &[&str],
    env: &EngineEnv,
) -> (ExitStatus, String, String) {
    let mut child = flowctl_command()
        .args(["run", "--no-color", "--control-plane-port", "0"])
        .args(["--project", project, "--registry", registry])
        .args(extra)
        .arg(pipeline)
        .envs(env.pairs())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start flowctl");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_bounded(&mut child, RUN_LIMIT, "flowctl run");
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    eprintln!(
        "--- flowctl run {} ({status}) stderr ---\n{stderr}",
        extra.join(" ")
    );
    (status, stdout, stderr)
}

/// The consumer's JSON event lines, from flowctl's multiplexed `<id> | <line>` output.
fn events(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, line)| prefix.trim() == "consumer" && line.starts_with('{'))
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn pulls_from_a_local_registry_runs_and_fails_clearly_without_it() {
    let hint = format!(
        "the registry test needs the CNCF distribution registry: `apt-get install \
         docker-registry` (Debian's package, /usr/bin/{REGISTRY_BIN}; scripts/test.sh installs \
         it as root)"
    );
    if !support::require_tool(
        "registry",
        Command::new(REGISTRY_BIN).arg("--version"),
        &hint,
    ) {
        return;
    }
    let local: Vec<String> = COMPONENTS
        .iter()
        .map(|(name, _)| format!("flowctl/{name}:dev"))
        .collect();
    require_images(&local.iter().map(String::as_str).collect::<Vec<_>>());

    let mut registry = Registry::start();
    let address = registry.address.clone();
    let scratch = TempDir::new("flowctl-registry-test-");
    let env = EngineEnv::for_registry(&address, &scratch.0);
    // Lower case: registries take only lower-case repository names.
    let org = unique("ft-reg-");
    let tags = RegistryTags {
        env: &env,
        images: COMPONENTS
            .iter()
            .map(|(name, _)| format!("{address}/{org}/{name}:{VERSION}"))
            .collect(),
    };
    for (local, remote) in local.iter().zip(&tags.images) {
        env.engine_ok(&["tag", local, remote]);
        env.engine_ok(&["push", remote]);
    }
    tags.remove();
    for (local, remote) in local.iter().zip(&tags.images) {
        assert!(!env.image_present(remote), "{remote} is still tagged");
        assert!(
            env.image_present(local),
            "{local} went with its registry tag"
        );
    }

    let project = unique("ft-registry-");
    let leftovers = Leftovers {
        env: &env,
        project: project.clone(),
    };
    let file = pipeline(&scratch.0, &project);
    let registry_arg = format!("{address}/{org}");

    // --pull never: the images are absent, so nothing is created.
    let (status, _, stderr) = run(&file, &project, &registry_arg, &["--pull", "never"], &env);
    assert_eq!(status.code(), Some(1), "{stderr}");
    for ((_, id), image) in COMPONENTS.iter().zip(&tags.images) {
        assert!(
            stderr.contains(&format!(
                "component `{id}`: image `{image}` is not present locally, and --pull never \
                 does not pull it"
            )),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("pulling"), "{stderr}");
    assert!(!stderr.contains(" created "), "{stderr}");
    assert_eq!(leftovers.list(), Vec::<String>::new());
    assert!(tags.images.iter().all(|image| !env.image_present(image)));

    // The default policy pulls what is missing, then runs it.
    let (status, stdout, stderr) = run(&file, &project, &registry_arg, &[], &env);
    assert!(status.success(), "flowctl run failed: {status}\n{stderr}");
    for ((name, id), image) in COMPONENTS.iter().zip(&tags.images) {
        let pulling = format!("pulling {image} for component `{id}` (`type: {name}@{VERSION}`)");
        let pulled = format!("for component `{id}` (`type: {name}@{VERSION}`)");
        let started = support::line_index(&stderr, &pulling);
        let done = support::line_index(&stderr, &format!("pulled {image} ("));
        assert!(started < done, "{stderr}");
        let line = stderr.lines().nth(done).unwrap_or_default();
        assert!(line.contains(" MB, ") && line.contains("layer"), "{line}");
        assert!(line.ends_with(&pulled), "{line}");
        assert!(env.image_present(image), "{image} was not pulled");
    }
    // Every pull ended before the network, the first thing the run creates, was made.
    let network = support::line_index(&stderr, &format!("network {project}-bridge created"));
    let last_pull = support::line_index(&stderr, "pulled ");
    assert!(
        stderr.lines().skip(network).all(|l| !l.contains("pulled ")),
        "{stderr}"
    );
    assert!(last_pull < network, "{stderr}");
    let expected = fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .unwrap();
    assert_eq!(
        events(&stdout),
        expected.lines().collect::<Vec<_>>(),
        "consumer output differs from the upstream events\nstderr:\n{stderr}"
    );
    assert_eq!(leftovers.list(), Vec::<String>::new());

    // The registry stopped, the images absent again: the pull fails naming the registry.
    tags.remove();
    registry.stop();
    assert!(!registry.running());
    let (status, _, stderr) = run(&file, &project, &registry_arg, &[], &env);
    assert_eq!(status.code(), Some(1), "{stderr}");
    for ((name, id), image) in COMPONENTS.iter().zip(&tags.images) {
        let failure = format!(
            "component `{id}` (`type: {name}@{VERSION}`): cannot pull `{image}` from {address}: "
        );
        assert!(stderr.contains(&failure), "{failure}\n{stderr}");
    }
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert_eq!(leftovers.list(), Vec::<String>::new());

    // Nothing is left: no tag, no registry process, nothing listening on its port.
    drop(leftovers);
    drop(tags);
    let registry_dir = registry.dir.0.clone();
    drop(registry);
    for (local, (name, _)) in local.iter().zip(COMPONENTS) {
        let remote = format!("{address}/{org}/{name}:{VERSION}");
        assert!(!env.image_present(&remote), "{remote} is left");
        assert!(env.image_present(local), "{local} is gone");
    }
    assert_eq!(http_status(&address, "/v2/"), None);
    assert!(!registry_dir.exists(), "{} is left", registry_dir.display());
}

/// The registry test again with `FLOWCTL_DOCKER_BIN=podman`.
#[test]
fn podman_pulls_from_a_local_registry() {
    support::rerun_under_podman(
        "the registry test",
        &[
            "pulls_from_a_local_registry_runs_and_fails_clearly_without_it",
            "--exact",
        ],
        1,
    );
}
