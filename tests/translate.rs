//! `flowctl translate`: golden files for both targets, the Kubernetes manifests validated
//! offline against the Kubernetes schemas (`kubernetes-validate`), and the Compose file run for
//! real with the Compose tool on this machine (the example pipeline's events must arrive).
//!
//! Golden files: `tests/golden/<pipeline>.{compose,kubernetes}.yaml`, with the repository's
//! absolute path written as `/REPO`. Regenerate with
//! `FLOWCTL_UPDATE_GOLDEN=1 cargo test --release --test translate`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flowctl::plan::{self, Naming};
use flowctl::translate::{self, join_documents, Target, TranslateOptions};
use support::{
    flowctl_command as flowctl, repo, require_images_in, require_tool, unique, wait_bounded,
    TempDir,
};

/// Upper bound for a Compose run; reaching it fails the test (it is not a measurement).
const PATIENCE: Duration = Duration::from_secs(180);

/// The engine Compose drives: `docker-compose` (and the `docker compose` plugin) talk to the
/// Docker daemon whatever `FLOWCTL_DOCKER_BIN` says, so the images and leftovers are looked up
/// there.
const COMPOSE_ENGINE: &str = "docker";

/// `flowctl translate ARGS -o OUT` in the repository's folder, which must succeed; returns
/// what it wrote to stderr.
fn translate_ok(args: &[&str], out: &Path) -> String {
    let output = flowctl()
        .arg("translate")
        .args(args)
        .arg("-o")
        .arg(out)
        .current_dir(repo())
        .output()
        .expect("flowctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "flowctl translate {args:?}: {stderr}"
    );
    stderr
}

/// The translation of a pipeline of the repository, as one text, with the repository's path
/// replaced by `/REPO` so the golden files do not depend on where it is checked out.
fn translated(pipeline: &str, naming: &Naming, target: Target) -> String {
    let path = repo().join(pipeline);
    let plan = plan::load(&path, naming).unwrap_or_else(|e| panic!("{pipeline}: {e:#}"));
    let options = TranslateOptions {
        source_name: Path::new(pipeline)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..TranslateOptions::default()
    };
    let files = translate::translate(&plan, target, &options)
        .unwrap_or_else(|e| panic!("{pipeline} → {target}: {e:#}"));
    join_documents(&files).replace(&repo().display().to_string(), "/REPO")
}

fn check_golden(pipeline: &str, naming: &Naming, target: Target) {
    let actual = translated(pipeline, naming, target);
    let stem = Path::new(pipeline)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let golden = repo().join(format!("tests/golden/{stem}.{target}.yaml"));
    if std::env::var_os("FLOWCTL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).expect("cannot write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (FLOWCTL_UPDATE_GOLDEN=1 writes it)",
            golden.display()
        )
    });
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
        panic!(
            "{} differs from the translation of {pipeline} at line {}:\n  golden: {:?}\n  actual: \
             {:?}\n(if the change is intended: FLOWCTL_UPDATE_GOLDEN=1 cargo test --release \
             --test translate)",
            golden.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

fn demo_project() -> Naming {
    Naming {
        project: Some("demo".into()),
        ..Naming::default()
    }
}

#[test]
fn example_pipeline_matches_golden_files() {
    check_golden(
        "examples/ttp-pipeline.yaml",
        &Naming::default(),
        Target::Compose,
    );
    check_golden(
        "examples/ttp-pipeline.yaml",
        &Naming::default(),
        Target::Kubernetes,
    );
}

#[test]
fn test_pipeline_matches_golden_files() {
    check_golden(
        "tests/golden/test-pipeline.yaml",
        &demo_project(),
        Target::Compose,
    );
    check_golden(
        "tests/golden/test-pipeline.yaml",
        &demo_project(),
        Target::Kubernetes,
    );
}

#[test]
fn compose_output_maps_flowctl_semantics() {
    let text = translated(
        "tests/golden/test-pipeline.yaml",
        &demo_project(),
        Target::Compose,
    );
    let file: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let services = &file["services"];
    let source = &services["source"];
    assert_eq!(source["container_name"], "demo-source");
    assert_eq!(source["networks"]["demo-bridge"]["aliases"][0], "source");
    assert_eq!(
        source["healthcheck"]["test"],
        serde_yaml::from_str::<serde_yaml::Value>("[CMD, /flowctl-test-component, healthcheck]")
            .unwrap()
    );
    assert_eq!(source["ports"][0], "127.0.0.1:19100:9100/tcp");
    assert_eq!(source["ports"][1], "127.0.0.1::8088/tcp");
    assert_eq!(source["volumes"][0]["source"], "/REPO/tests/golden/data");
    assert_eq!(source["volumes"][0]["read_only"], true);
    assert_eq!(source["volumes"][1]["read_only"], false);
    assert_eq!(source["environment"]["FLOWCTL_COMPONENT_ID"], "source");
    assert_eq!(
        source["environment"]["FLOWCTL_ENDPOINT"],
        "flowctl-control-plane:8080"
    );
    assert_eq!(source["labels"]["io.flowctl.component"], "source");
    assert!(source["labels"].get("io.flowctl.managed").is_none());
    // An input with a health check must be healthy; one without only started.
    let audit = &services["audit"];
    assert_eq!(
        audit["depends_on"]["processor"]["condition"],
        "service_healthy"
    );
    assert!(services["sink"].get("healthcheck").is_none());
    assert_eq!(services["processor"]["stop_grace_period"], "3s");
    assert_eq!(services["processor"]["restart"], "on-failure:2");
    assert!(source.get("restart").is_none());
    assert_eq!(
        services["flowctl-control-plane"]["image"],
        "flowctl/flowctl:dev"
    );
}

#[test]
fn kubernetes_output_refuses_ids_that_are_not_dns_labels() {
    let path = repo().join("tests/golden/test-pipeline.yaml");
    let mut plan = plan::load(&path, &Naming::default()).expect("fixture is valid");
    plan.components[1].id = "Processor_1".into();
    let error = translate::translate(&plan, Target::Kubernetes, &TranslateOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("component `Processor_1`: id: Kubernetes needs a Service name"),
        "{error}"
    );
}

#[test]
fn cli_writes_a_folder_or_a_file_and_never_prints_env_values() {
    let scratch = TempDir::new("flowctl-translate-cli-");
    let folder = scratch.0.join("manifests");
    let stderr = translate_ok(
        &["--to", "kubernetes", "tests/golden/test-pipeline.yaml"],
        &folder,
    );
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .expect("the folder was written")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00-volumes.yaml",
            "01-flowctl-control-plane.yaml",
            "02-source.yaml",
            "03-processor.yaml",
            "04-sink.yaml",
            "05-audit.yaml"
        ]
    );
    assert!(!stderr.contains("not-a-real-secret"), "{stderr}");

    let file = scratch.0.join("pipeline.compose.yaml");
    let stderr = translate_ok(
        &[
            "--to",
            "compose",
            "tests/golden/test-pipeline.yaml",
            "--no-control-plane",
        ],
        &file,
    );
    assert!(!stderr.contains("not-a-real-secret"), "{stderr}");
    let text = std::fs::read_to_string(&file).expect("the file was written");
    assert!(text.contains("API_TOKEN: not-a-real-secret"));
    assert!(text.contains("ENABLE_FLOWCTL: 'false'"));
    assert!(!text.contains("flowctl-control-plane:"));

    // Invalid pipelines fail before anything is written, naming the component and field.
    let bad = scratch.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: x}\nspec:\n  sources:\n    \
         - {id: s, image: img, inputs: [nope]}\n",
    )
    .expect("write");
    let output = flowctl()
        .args(["translate", "--to", "compose"])
        .arg(&bad)
        .arg("-o")
        .arg(scratch.0.join("never.yaml"))
        .output()
        .expect("flowctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("component `s`: inputs: unknown component `nope`"),
        "{stderr}"
    );
    assert!(!scratch.0.join("never.yaml").exists());
}

/// The offline Kubernetes schema validator, or `None` when `FLOWCTL_TEST_SKIP` names `k8s`;
/// without it the test fails ([`require_tool`]).
fn kubernetes_validate() -> Option<PathBuf> {
    let present = require_tool(
        "k8s",
        Command::new("kubernetes-validate").arg("--version"),
        "the Kubernetes manifests are validated offline with kubernetes-validate: \
         `pip install kubernetes-validate` (scripts/test.sh does)",
    );
    present.then(|| PathBuf::from("kubernetes-validate"))
}

fn validate(validator: &Path, files: &[PathBuf]) -> Output {
    Command::new(validator)
        .args(["--strict", "--no-warn"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs")
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    let Some(validator) = kubernetes_validate() else {
        return;
    };
    let scratch = TempDir::new("flowctl-translate-k8s-");
    for pipeline in [
        "examples/ttp-pipeline.yaml",
        "tests/golden/test-pipeline.yaml",
        // Upstream's format: `resources` become the containers' requests and limits.
        "tests/pipelines/upstream/kubernetes-driver.yaml",
        "tests/pipelines/upstream/secrets-and-resources.yaml",
        // Replicas, whole-pipeline jobs, `depends_on` and a secret as a variable.
        "tests/pipelines/upstream/replicas-and-jobs.yaml",
    ] {
        let folder = scratch
            .0
            .join(Path::new(pipeline).file_stem().expect("stem"));
        translate_ok(&["--to", "kubernetes", pipeline], &folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .expect("written")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let output = validate(&validator, &files);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{pipeline}: manifests do not validate:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Every resource was checked: one "passed" line per document.
        let documents: usize = files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("read");
                text.matches("\napiVersion: ").count() + usize::from(text.starts_with("apiVersion"))
            })
            .sum();
        assert_eq!(
            stdout.matches(" passed for resource ").count(),
            documents,
            "{stdout}"
        );
    }

    // The validator is strict enough to catch a mistake (so this test can fail).
    let broken = scratch.0.join("broken.yaml");
    let good = std::fs::read_to_string(scratch.0.join("ttp-pipeline/03-ttp-processor.yaml"))
        .expect("read");
    std::fs::write(
        &broken,
        good.replacen("  replicas: 1\n", "  replicas: 1\n  replica: 1\n", 1),
    )
    .expect("write");
    let output = validate(&validator, &[broken]);
    assert!(
        !output.status.success(),
        "an unknown field passed validation: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn resources_reach_both_translations_and_compose_accepts_them() {
    let pipeline = "tests/pipelines/upstream/secrets-and-resources.yaml";
    let kubernetes = translated(pipeline, &Naming::default(), Target::Kubernetes);
    assert!(
        kubernetes.contains(
            "resources:\n          requests:\n            cpu: 250m\n            memory: 256Mi\n          limits:\n            cpu: '1.5'\n            memory: 1Gi\n"
        ),
        "{kubernetes}"
    );
    let compose = translated(pipeline, &Naming::default(), Target::Compose);
    assert!(
        compose.contains("deploy:\n      resources:\n        limits:\n          cpus: '1.5'\n          memory: 1073741824b\n        reservations:\n          cpus: '0.25'\n          memory: 268435456b\n"),
        "{compose}"
    );
    assert_compose_accepts(pipeline);
}

/// Translates `pipeline` into a Compose file that `compose config` must accept; the secrets the
/// test files pass as variables come from Compose's environment.
fn assert_compose_accepts(pipeline: &str) {
    let scratch = TempDir::new("flowctl-translate-config-");
    let file = scratch.0.join("compose.yaml");
    translate_ok(&["--to", "compose", pipeline], &file);
    let output = compose_command()
        .arg("-f")
        .arg(&file)
        .args(["config", "--quiet"])
        .env("RPC_TOKEN", "x")
        .env("REPORT_TOKEN", "x")
        .output()
        .expect("compose runs");
    assert!(
        output.status.success(),
        "compose refuses the translation of {pipeline}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn secrets_replicas_and_jobs_reach_both_translations_without_secret_contents() {
    let contents = [
        std::fs::read_to_string(repo().join("tests/pipelines/upstream/secrets/rpc-token"))
            .expect("fixture"),
        std::fs::read_to_string(repo().join("tests/pipelines/upstream/secrets/gcs-key.json"))
            .expect("fixture"),
    ];
    // `translated` writes the repository's folder as /REPO.
    let secret_key = "/REPO/tests/pipelines/upstream/secrets/gcs-key.json";
    let token = "/REPO/tests/pipelines/upstream/secrets/rpc-token";
    for pipeline in [
        "tests/pipelines/upstream/secrets-and-resources.yaml",
        "tests/pipelines/upstream/replicas-and-jobs.yaml",
    ] {
        for target in [Target::Compose, Target::Kubernetes] {
            let text = translated(pipeline, &Naming::default(), target);
            for content in &contents {
                assert!(
                    !text.contains(content.trim()),
                    "{pipeline} ({target}): a secret's content is in the output:\n{text}"
                );
            }
        }
    }

    let compose = translated(
        "tests/pipelines/upstream/secrets-and-resources.yaml",
        &Naming::default(),
        Target::Compose,
    );
    for expected in [
        format!("secrets:\n  gcs-credentials:\n    file: {secret_key}\n"),
        "    secrets:\n    - source: gcs-credentials\n      target: /secrets/gcs-key.json\n"
            .to_string(),
        "RPC_TOKEN: ${RPC_TOKEN:?the content of secret rpc-token}".to_string(),
        format!("export RPC_TOKEN=\"$(cat {token})\""),
    ] {
        assert!(
            compose.contains(&expected),
            "no {expected:?} in:\n{compose}"
        );
    }
    let kubernetes = translated(
        "tests/pipelines/upstream/secrets-and-resources.yaml",
        &Naming::default(),
        Target::Kubernetes,
    );
    for expected in [
        "        - name: RPC_TOKEN\n          valueFrom:\n            secretKeyRef:\n              name: rpc-token\n              key: rpc-token\n".to_string(),
        "        - name: secret-gcs-credentials\n          mountPath: /secrets/gcs-key.json\n          subPath: gcs-key.json\n          readOnly: true\n".to_string(),
        "      - name: secret-gcs-credentials\n        secret:\n          secretName: gcs-credentials\n          defaultMode: 256\n".to_string(),
        format!("kubectl create secret generic gcs-credentials --from-file={secret_key}"),
    ] {
        assert!(kubernetes.contains(&expected), "no {expected:?} in:\n{kubernetes}");
    }

    let pipeline = "tests/pipelines/upstream/replicas-and-jobs.yaml";
    let compose = translated(pipeline, &Naming::default(), Target::Compose);
    assert!(
        compose.contains("  transfers:\n") && compose.contains("    deploy:\n      replicas: 3\n"),
        "{compose}"
    );
    assert!(!compose.contains("transfers-1"), "{compose}");
    // Jobs end on their own: the header does not suggest stopping at the first exit.
    assert!(
        compose.contains("docker-compose -p NAME up -d, then wait until"),
        "{compose}"
    );
    let kubernetes = translated(pipeline, &Naming::default(), Target::Kubernetes);
    assert!(kubernetes.contains("  replicas: 3\n"), "{kubernetes}");
    assert!(
        kubernetes.contains("kind: Job\nmetadata:\n  name: schema-migration"),
        "{kubernetes}"
    );

    assert_compose_accepts(pipeline);
}

/// The Compose tool: `docker-compose` (v1, as installed here) or the `docker compose` plugin.
fn compose_command() -> Command {
    if let Ok(program) = std::env::var("FLOWCTL_COMPOSE_BIN") {
        return Command::new(program);
    }
    let v1 = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if v1 {
        return Command::new("docker-compose");
    }
    let v2 = Command::new(COMPOSE_ENGINE)
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        v2,
        "no Compose tool: install docker-compose (or the docker compose plugin), or set \
         FLOWCTL_COMPOSE_BIN"
    );
    let mut command = Command::new(COMPOSE_ENGINE);
    command.arg("compose");
    command
}

/// A Compose project under test: `down -v` on drop, whatever happened.
struct ComposeProject {
    name: String,
    file: PathBuf,
    scratch: TempDir,
}

impl ComposeProject {
    /// Translates `pipeline` with `--project <unique>` (so container names never clash) into
    /// a scratch folder.
    fn translate(pipeline: &str, extra: &[&str]) -> ComposeProject {
        let name = unique("fct");
        let scratch = TempDir::new("flowctl-translate-compose-");
        let file = scratch.0.join("compose.yaml");
        let mut args = vec!["--to", "compose", pipeline, "--project", &name];
        args.extend(extra);
        translate_ok(&args, &file);
        ComposeProject {
            name,
            file,
            scratch,
        }
    }

    fn command(&self) -> Command {
        let mut command = compose_command();
        command.arg("-f").arg(&self.file).args(["-p", &self.name]);
        command.current_dir(&self.scratch.0);
        command
    }

    /// `up --exit-code-from SINK`; returns the exit code and the combined output.
    fn up(&self, sink: &str) -> (Option<i32>, String) {
        let log = self.scratch.0.join("up.log");
        let log_file = std::fs::File::create(&log).expect("create log");
        let mut child = self
            .command()
            .args(["up", "--no-color", "--exit-code-from", sink])
            .stdout(Stdio::from(log_file.try_clone().expect("clone")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("the Compose tool runs");
        let code = wait_bounded(&mut child, PATIENCE, "the Compose run").code();
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    }

    fn containers_left(&self) -> String {
        let output = Command::new(COMPOSE_ENGINE)
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn networks_left(&self) -> String {
        let output = Command::new(COMPOSE_ENGINE)
            .args(["network", "ls", "-q", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn down(&self) -> Output {
        self.command()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .output()
            .expect("the Compose tool runs")
    }

    /// `down -v` succeeds and no container or network of the project is left.
    fn down_leaves_nothing(&self) {
        let down = self.down();
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert_eq!(self.containers_left(), "", "containers left behind");
        assert_eq!(self.networks_left(), "", "networks left behind");
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// What a (stopped, not yet removed) container wrote to stdout.
fn container_stdout(container: &str) -> String {
    let output = Command::new(COMPOSE_ENGINE)
        .args(["logs", container])
        .stderr(Stdio::null())
        .output()
        .expect("docker runs");
    assert!(output.status.success(), "docker logs {container} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn compose_output_runs_the_example_pipeline_end_to_end() {
    require_images_in(
        COMPOSE_ENGINE,
        &[
            "flowctl/stellar-live-source-datalake:dev",
            "flowctl/ttp-processor:dev",
            "flowctl/consumer-app:dev",
            "flowctl/flowctl:dev",
        ],
    );
    let project = ComposeProject::translate("examples/ttp-pipeline.yaml", &[]);
    let (code, log) = project.up("consumer-app");
    assert_eq!(code, Some(0), "docker-compose up failed:\n{log}");

    // The consumer's stdout from the engine, not from `up`: Compose v1's log multiplexer
    // splits long lines at read boundaries.
    let consumer = container_stdout(&format!("{}-consumer-app", project.name));
    let events: Vec<&str> = consumer.lines().collect();
    let expected = std::fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .expect("expected events");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        events, expected,
        "the consumer's events differ from the expected ones; full log:\n{log}"
    );

    // Registration works the same way as under `flowctl run`.
    let control_plane = container_stdout(&format!("{}-flowctl-control-plane", project.name));
    let control_plane: Vec<&str> = control_plane.lines().collect();
    for id in [
        "stellar-live-source-datalake",
        "ttp-processor",
        "consumer-app",
    ] {
        assert!(
            control_plane
                .iter()
                .any(|l| l.starts_with(&format!("{id} registered with the control plane"))),
            "{id} did not register:\n{}",
            control_plane.join("\n")
        );
    }

    project.down_leaves_nothing();
}

#[test]
fn compose_output_starts_in_health_order_and_resolves_ids() {
    require_images_in(COMPOSE_ENGINE, &["flowctl/test-component:dev"]);
    let project =
        ComposeProject::translate("tests/golden/test-pipeline.yaml", &["--no-control-plane"]);
    // `sink` only gets healthy dependencies if Compose honoured the health checks, and exits 0
    // only if `processor:8088` answered by its id (TEST_CONNECT; setup failures exit 3).
    let (code, log) = project.up("sink");
    assert_eq!(code, Some(0), "docker-compose up failed:\n{log}");
    // Creation order as Compose reports it: v1 prints `Creating NAME ...`, v2 `Container NAME
    // Created`; Compose creates a dependent only once its inputs are healthy.
    let order: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("Creating ").or_else(|| {
                l.strip_prefix("Container ")
                    .filter(|r| r.ends_with("Created"))
            })
        })
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&project.name))
        .collect();
    let position = |id: &str| {
        let name = format!("{}-{id}", project.name);
        order
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} was not created:\n{log}"))
    };
    assert!(position("source") < position("processor"), "{log}");
    assert!(position("processor") < position("sink"), "{log}");

    project.down_leaves_nothing();
}

#[test]
fn control_plane_serves_alone_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    let mut child = flowctl()
        .args([
            "control-plane",
            "--listen",
            "127.0.0.1:0",
            "--expect",
            "src=source",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowctl runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert!(
        first.starts_with("flowctl control plane listening on 127.0.0.1:")
            && first.contains("expecting src=source"),
        "{first}"
    );
    // It really serves: the port accepts connections.
    let address = first
        .split_whitespace()
        .nth(5)
        .expect("an address")
        .to_string();
    std::net::TcpStream::connect(&address).expect("the control plane accepts connections");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let code = wait_bounded(&mut child, PATIENCE, "flowctl control-plane").code();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read");
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains("flowctl control plane stopped"), "{rest}");
}
