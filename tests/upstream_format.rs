//! Upstream flowctl's current pipeline format. Every file in tests/pipelines/upstream/
//! (written in upstream's style: component references, `config`, the `process` driver,
//! `secrets`, `resources`, `${VAR}`) must pass `flowctl validate` (the real binary), and its
//! plan must say what those fields mean here: images from references and `--registry`, config
//! as environment variables, secrets and limits. Malformed variants live in
//! tests/pipelines/invalid/upstream-*.yaml (checked by tests/bad_input.rs).

mod support;

use std::fs;
use std::path::PathBuf;

use flowctl::plan::{self, Driver, Naming, SecretTarget};
use support::{flowctl, repo};

fn upstream_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("tests/pipelines/upstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_upstream_style_file_validates() {
    let files = upstream_files();
    assert!(files.len() >= 6, "only {} files", files.len());
    for path in files {
        // A CLI that does not exist proves validation never calls the engine.
        let (status, stdout, stderr) = flowctl(
            &["validate", &path.display().to_string()],
            &[("FLOWCTL_DOCKER_BIN", "/nonexistent/docker")],
        );
        assert!(status.success(), "{}: {stderr}", path.display());
        assert!(stdout.contains("is valid"), "{stdout}");
        assert!(!stderr.contains("upstream-corpus-token"), "{stderr}");
    }
}

fn load(name: &str, naming: &Naming) -> plan::RunPlan {
    let path = repo().join("tests/pipelines/upstream").join(name);
    plan::load(&path, naming).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn references_resolve_to_upstream_images_or_the_given_registry() {
    let plan = load("init-testnet-duckdb.yaml", &Naming::default());
    assert_eq!(plan.driver, Driver::Process);
    let source = plan.component("stellar-source").unwrap();
    assert_eq!(source.image, "withobsrvr/stellar-live-source:v1.0.0");
    assert_eq!(
        source.reference.as_deref(),
        Some("stellar-live-source@v1.0.0")
    );

    let local = Naming {
        registry: Some("127.0.0.1:5000/test-org".into()),
        ..Naming::default()
    };
    let plan = load("multi-asset.yaml", &local);
    assert_eq!(
        plan.component("ledgers").unwrap().image,
        "127.0.0.1:5000/test-org/stellar-live-source-datalake:v1.2.0"
    );
    // The reference's own organisation wins over the registry's.
    assert_eq!(
        plan.component("transfers").unwrap().image,
        "127.0.0.1:5000/acme/token-transfer-filter:2025.06.1"
    );
    // An explicit image wins over a reference.
    let plan = load("docker-images.yaml", &local);
    assert_eq!(
        plan.component("ttp").unwrap().image,
        "flowctl/ttp-processor:dev"
    );

    let bad = Naming {
        registry: Some("not a registry".into()),
        ..Naming::default()
    };
    let path = repo().join("tests/pipelines/upstream/multi-asset.yaml");
    let err = format!("{:#}", plan::load(&path, &bad).unwrap_err());
    assert!(err.contains("--registry: `not a registry`"), "{err}");
}

#[test]
fn config_becomes_environment_variables_and_env_wins() {
    let plan = load("multi-asset.yaml", &Naming::default());
    let transfers = &plan.component("transfers").unwrap().env;
    // spec.config applies to every component.
    assert_eq!(
        transfers["NETWORK_PASSPHRASE"],
        "Test SDF Network ; September 2015"
    );
    // Explicit env wins over spec.config's log_level.
    assert_eq!(transfers["LOG_LEVEL"], "debug");
    assert_eq!(transfers["INCLUDE_FEES"], "false");
    assert_eq!(transfers["BATCH"], r#"{"size":100,"flush":"5s"}"#);
    assert!(transfers["ASSETS"].starts_with(r#"[{"code":"USDC","issuer":"#));
    let ledgers = &plan.component("ledgers").unwrap().env;
    assert_eq!(ledgers["LEDGERS_PER_FILE"], "1");
    assert_eq!(ledgers["LOG_LEVEL"], "info");
}

#[test]
fn variables_follow_compose_rules() {
    // Defaults apply when unset; the test binary's own environment does not set these.
    let plan = load("init-mainnet-postgres.yaml", &Naming::default());
    let sink = &plan.component("postgres-sink").unwrap().env;
    assert_eq!(sink["POSTGRES_HOST"], "localhost");
    assert_eq!(sink["POSTGRES_PORT"], "5432");

    let text =
        fs::read_to_string(repo().join("tests/pipelines/upstream/init-mainnet-postgres.yaml"))
            .unwrap();
    let lookup = |name: &str| (name == "POSTGRES_HOST").then(|| "db.internal".to_string());
    let file = flowctl::spec::parse_with(&text, "p.yaml", &lookup).unwrap();
    assert_eq!(
        file.spec.sinks[0].config["postgres_host"],
        serde_yaml::Value::String("db.internal".into())
    );
    // `$$` is a literal `$`.
    let plan = load("secrets-and-resources.yaml", &Naming::default());
    assert_eq!(
        plan.component("enricher").unwrap().env["PRICE_TEMPLATE"],
        "$ per unit"
    );
}

#[test]
fn secrets_and_resources_are_planned() {
    let plan = load("secrets-and-resources.yaml", &Naming::default());
    let source = plan.component("gcs-source").unwrap();
    assert_eq!(source.secrets.len(), 1);
    assert_eq!(
        source.secrets[0].target,
        SecretTarget::File("/secrets/gcs-key.json".into())
    );
    assert_eq!(source.resources.cpu_limit.as_ref().unwrap().cores(), "1.5");
    assert_eq!(
        source.resources.memory_limit.as_ref().unwrap().bytes,
        1 << 30
    );
    assert_eq!(
        source.resources.memory_request.as_ref().unwrap().bytes,
        256 << 20
    );
    let enricher = plan.component("enricher").unwrap();
    // The optional secret whose file is missing is left out, and said so.
    assert_eq!(enricher.secrets.len(), 1);
    assert_eq!(
        enricher.secrets[0].target,
        SecretTarget::Env("RPC_TOKEN".into())
    );
    assert_eq!(
        enricher.secrets[0].read_env_value().unwrap(),
        "upstream-corpus-token"
    );
    // The secret's content is not in the plan's env (it goes to the env file at creation).
    assert!(!enricher
        .env
        .values()
        .any(|v| v.contains("upstream-corpus-token")));
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("`optional-extra` is left out")));
}

#[test]
fn run_refuses_the_kubernetes_driver_before_touching_the_engine() {
    let path = repo().join("tests/pipelines/upstream/kubernetes-driver.yaml");
    let (status, _, stderr) = flowctl(
        &["run", &path.display().to_string()],
        &[("FLOWCTL_DOCKER_BIN", "/nonexistent/docker")],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("flowctl translate --to kubernetes"),
        "{stderr}"
    );
}

#[test]
fn the_engine_gets_the_limits_and_the_secrets() {
    let scratch = support::Scratch::new("limits");
    fs::write(scratch.dir.join("token"), "limits-test-token\n").unwrap();
    fs::write(scratch.dir.join("key.json"), "{}\n").unwrap();
    let pipeline = scratch.pipeline(
        "
  driver: process
  sinks:
    - id: sink
      type: sink
      image: flowctl/test-component:dev
      health_port: 8088
      register: true
      resources:
        requests: {memory: 64Mi}
        limits: {cpu: 500m, memory: 256Mi}
      secrets:
        - {name: token, host_path: token, env: API_TOKEN, required: true}
        - {name: key, host_path: key.json, container_path: /secrets/key.json}
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");
    let container = scratch.container("sink");
    let inspect = |format: &str| support::docker(&["inspect", "--format", format, &container]);
    assert_eq!(inspect("{{.HostConfig.NanoCpus}}").trim(), "500000000");
    assert_eq!(inspect("{{.HostConfig.Memory}}").trim(), "268435456");
    assert_eq!(
        inspect("{{.HostConfig.MemoryReservation}}").trim(),
        "67108864"
    );
    let mounts = inspect("{{range .Mounts}}{{.Destination}} {{.RW}};{{end}}");
    assert!(mounts.contains("/secrets/key.json false"), "{mounts}");
    let env = inspect("{{json .Config.Env}}");
    assert!(env.contains("\"API_TOKEN=limits-test-token\""), "{env}");
    run.signal("TERM");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    let output = run.output();
    // Said once: the `process` driver runs containers here.
    assert_eq!(
        output.matches("spec.driver `process`").count(),
        1,
        "{output}"
    );
    assert!(
        !output.contains("limits-test-token"),
        "secret printed: {output}"
    );
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn image_metadata_is_read_without_starting_anything() {
    support::require_images(&["flowctl/ttp-processor:dev", "flowctl/test-component:dev"]);
    let engine = flowctl::engine::Engine::detect(support::docker_bin(), Default::default())
        .expect("the engine is available");
    // Probes are named after the process that makes them: this test's.
    let probes = format!("name=flowctl-probe-{}-", std::process::id());
    let text = engine
        .image_file(
            "flowctl/ttp-processor:dev",
            flowctl::metadata::METADATA_PATH,
            &Default::default(),
        )
        .unwrap()
        .expect("the image ships /metadata.json");
    let metadata = plan::ComponentMetadata::parse(&text).unwrap();
    assert_eq!(metadata.kind.as_deref(), Some("processor"));
    assert_eq!(metadata.env_mapping["workers"], "TTP_WORKERS");
    assert_eq!(
        engine
            .image_file(
                "flowctl/test-component:dev",
                flowctl::metadata::METADATA_PATH,
                &Default::default(),
            )
            .unwrap(),
        None
    );
    // The probe containers are gone.
    assert_eq!(support::docker(&["ps", "-aq", "--filter", &probes]), "");
}

/// `flowctl init`'s starter pipeline, written to `dir`, with the repository's ledgers.
fn starter(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    let (status, _, stderr) = flowctl(&["init", "-o", &path.display().to_string()], &[]);
    assert!(status.success(), "{stderr}");
    // Never overwritten.
    let (status, _, stderr) = flowctl(&["init", "-o", &path.display().to_string()], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    path
}

fn ledgers() -> String {
    repo()
        .join("examples/ledgers/testnet-997-999")
        .display()
        .to_string()
}

#[test]
fn the_starter_pipeline_validates_and_runs_to_the_upstream_events() {
    support::require_images(&[
        "flowctl/stellar-live-source-datalake:dev",
        "flowctl/ttp-processor:dev",
        "flowctl/consumer-app:dev",
    ]);
    let scratch = support::Scratch::new("init");
    let path = starter(&scratch.dir);
    let ledgers = ledgers();
    let (status, stdout, stderr) = flowctl(
        &["validate", &path.display().to_string()],
        &[("FLOWCTL_LEDGERS", &ledgers)],
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("ledgers → ttp → consumer"), "{stdout}");

    let mut run = scratch.run(&path, &[], &[("FLOWCTL_LEDGERS", &ledgers)]);
    let status = run.wait();
    let output = run.output();
    assert!(status.success(), "{output}");
    let stdout = run.stdout();
    let events: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, line)| prefix.trim() == "consumer" && line.starts_with('{'))
        .map(|(_, line)| line)
        .collect();
    let expected = fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .unwrap();
    assert_eq!(events, expected.lines().collect::<Vec<_>>(), "{output}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn an_unknown_config_key_is_refused_with_the_images_nearest_key() {
    support::require_images(&["flowctl/ttp-processor:dev"]);
    let scratch = support::Scratch::new("cfgkey");
    let path = starter(&scratch.dir);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("        workers: 2", "        workres: 2");
    fs::write(&path, text).unwrap();
    let mut run = scratch.run(&path, &[], &[("FLOWCTL_LEDGERS", &ledgers())]);
    assert_eq!(run.wait().code(), Some(1), "{}", run.output());
    let stderr = run.stderr();
    assert!(
        stderr.contains(
            "component `ttp`: config.workres: the image `flowctl/ttp-processor:dev` has no \
             setting `workres` (did you mean `workers`?"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("created"), "{stderr}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}
