//! `flowctl run --swarm` on a real three-node Docker Swarm: the lab of `scripts/swarm-lab.sh`
//! (three dockerd in network namespaces of their own, joined into one Swarm), which these
//! tests start themselves (idempotently; `scripts/test.sh` takes it down afterwards). Each
//! run has a `--project` of its own, so tests run side by side, and each checks on every
//! node's own engine that nothing of its run is left.

mod support;

use std::process::Command;
use std::sync::OnceLock;

use support::*;

const IMAGES: &[&str] = &[
    "flowctl/stellar-live-source-datalake:dev",
    "flowctl/ttp-processor:dev",
    "flowctl/consumer-app:dev",
    "flowctl/flowctl:dev",
];

/// The lab: `(manager DOCKER_HOST, node sockets)`, or `None` when skipped knowingly.
fn lab() -> Option<&'static (String, Vec<String>)> {
    static LAB: OnceLock<Option<(String, Vec<String>)>> = OnceLock::new();
    LAB.get_or_init(|| {
        let script = repo().join("scripts/swarm-lab.sh");
        if !require_tool(
            "swarm",
            Command::new(&script).arg("up"),
            "the Swarm lab needs root, dockerd, nsenter and iproute2 (scripts/test.sh starts it; \
             by hand: sudo scripts/swarm-lab.sh up)",
        ) {
            return None;
        }
        require_images(IMAGES);
        let load = Command::new(&script)
            .arg("load")
            .args(IMAGES)
            .output()
            .unwrap();
        assert!(
            load.status.success(),
            "swarm-lab.sh load failed: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        let nodes = Command::new(&script).arg("nodes").output().unwrap();
        let sockets: Vec<String> = String::from_utf8_lossy(&nodes.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(|s| format!("unix://{s}")))
            .collect();
        assert_eq!(sockets.len(), 3, "three nodes: {sockets:?}");
        let manager = "tcp://10.231.0.11:2375".to_string();
        Some((manager, sockets))
    })
    .as_ref()
}

/// `docker -H HOST ARGS`, stdout; panics on failure.
fn on(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker -H {host} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What of project `project` is left anywhere, once the nodes had [`NODE_SETTLE`] to remove
/// the containers of tasks the manager already forgot (Swarm's node agents do that after the
/// manager deleted the task, asynchronously).
fn left_of(project: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + NODE_SETTLE;
    loop {
        let left = left_now(project);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// How long the nodes get to remove stopped task containers after flowctl exited.
const NODE_SETTLE: std::time::Duration = std::time::Duration::from_secs(15);

/// What of project `project` exists now: services and networks on the manager, containers on
/// every node.
fn left_now(project: &str) -> Vec<String> {
    let (manager, sockets) = lab().unwrap();
    let filter = format!("label=io.flowctl.project={project}");
    let mut left: Vec<String> = Vec::new();
    for (what, args) in [
        ("service", vec!["service", "ls", "-q", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
    ] {
        left.extend(on(manager, &args).lines().map(|l| format!("{what} {l}")));
    }
    for socket in sockets {
        left.extend(
            on(socket, &["ps", "-aq", "--filter", &filter])
                .lines()
                .map(|l| format!("container {l} on {socket}")),
        );
    }
    left
}

/// The example pipeline with each component pinned to a node (`None`: no placement), its
/// lake by absolute path; `consumer_args` replaces the consumer's arguments.
fn example(dir: &TempDir, nodes: [Option<&str>; 3], consumer_args: &str) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(repo().join("examples/ttp-pipeline.yaml")).unwrap();
    let lake = repo().join("examples/ledgers/testnet-997-999");
    text = text.replace(
        "host_path: ledgers/testnet-997-999",
        &format!("host_path: {}", lake.display()),
    );
    text = text.replace(
        "args: [\"997\", \"998\"]",
        &format!("args: {consumer_args}"),
    );
    for (image, node) in [
        "stellar-live-source-datalake",
        "ttp-processor",
        "consumer-app",
    ]
    .iter()
    .zip(nodes)
    {
        let Some(node) = node else { continue };
        let line = format!("      image: flowctl/{image}:dev\n");
        assert!(text.contains(&line), "{line}");
        text = text.replace(
            &line,
            &format!(
                "{line}      placement:\n        constraints: [\"node.labels.lab == {node}\"]\n"
            ),
        );
    }
    let path = dir.0.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn swarm_run(pipeline: &std::path::Path, project: &str, extra: &[&str]) -> Flowctl {
    let (manager, _) = lab().unwrap();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--swarm".into(),
        "--no-color".into(),
        "--project".into(),
        project.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(pipeline.display().to_string());
    Flowctl::spawn(&args, &[("DOCKER_HOST", manager.as_str())])
}

#[test]
fn each_component_on_its_own_node_gives_the_upstream_events_and_leaves_nothing_on_any_node() {
    if lab().is_none() {
        return;
    }
    let dir = TempDir::new("flowctl-swarm-place-");
    let pipeline = example(
        &dir,
        [Some("n2"), Some("n3"), Some("n1")],
        "[\"997\", \"998\"]",
    );
    let project = unique("swp");
    let summary = dir.0.join("summary.json");
    let mut run = swarm_run(
        &pipeline,
        &project,
        &["--summary", summary.to_str().unwrap()],
    );
    let status = run.wait();
    assert!(status.success(), "{}", run.output());
    let stdout = run.stdout();
    // Each component's lines carry the node it was placed on.
    for (id, node) in [
        ("stellar-live-source-datalake", "lab-n2"),
        ("ttp-processor", "lab-n3"),
        ("consumer-app", "lab-n1"),
    ] {
        let prefix = format!("{id}@{node} ");
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "{prefix}\n{stdout}"
        );
    }
    let events: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("consumer-app@lab-n1 "))
        .filter_map(|l| l.split_once(" | ").map(|(_, text)| text.to_string()))
        .filter(|text| text.starts_with('{'))
        .collect();
    assert_eq!(events, testnet_997_998_events(), "{}", run.output());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(record["outcome"], "completed");
    let nodes: Vec<(String, String)> = record["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["nodes"][0].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            (
                "stellar-live-source-datalake".to_string(),
                "lab-n2".to_string()
            ),
            ("ttp-processor".to_string(), "lab-n3".to_string()),
            ("consumer-app".to_string(), "lab-n1".to_string()),
        ]
    );
    for component in record["components"].as_array().unwrap() {
        assert_eq!(component["registered"], true, "{component}");
    }
    assert_eq!(left_of(&project), Vec::<String>::new());
}

#[test]
fn a_sink_swarm_rejects_fails_the_run_naming_component_and_node_and_nothing_is_left() {
    if lab().is_none() {
        return;
    }
    let dir = TempDir::new("flowctl-swarm-reject-");
    let pipeline = example(&dir, [None, None, Some("n3")], "[\"997\", \"998\"]");
    // An image no node has: Swarm rejects the task on the node it placed it on.
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("flowctl/consumer-app:dev", "flowctl/not-on-any-node:dev");
    std::fs::write(&pipeline, text).unwrap();
    let project = unique("swr");
    let mut run = swarm_run(&pipeline, &project, &[]);
    let status = run.wait();
    assert!(!status.success(), "{}", run.output());
    let stderr = run.stderr();
    assert!(
        stderr.contains("component `consumer-app` rejected on node lab-n3:"),
        "{stderr}"
    );
    assert!(stderr.contains("No such image"), "{stderr}");
    assert_eq!(left_of(&project), Vec::<String>::new());
}

#[test]
fn sigint_mid_run_leaves_nothing_on_any_node_and_spares_a_bystander_service() {
    let Some((manager, _)) = lab() else {
        return;
    };
    // Someone else's service, labelled like flowctl's but of no run of this test.
    let bystander = unique("bystander-");
    on(
        manager,
        &[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            &bystander,
            "--label",
            "io.flowctl.managed=true",
            "--restart-condition",
            "none",
            "--no-resolve-image",
            "flowctl/flowctl:dev",
            "control-plane",
        ],
    );
    let dir = TempDir::new("flowctl-swarm-int-");
    // Live mode: the consumer waits for ledgers that never come.
    let pipeline = example(
        &dir,
        [Some("n1"), Some("n2"), Some("n3")],
        "[\"997\", \"0\"]",
    );
    let project = unique("swi");
    let mut run = swarm_run(&pipeline, &project, &[]);
    run.wait_for("all 3 component(s) up");
    run.signal("INT");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.output());
    assert_eq!(left_of(&project), Vec::<String>::new());
    let names = on(manager, &["service", "ls", "--format", "{{.Name}}"]);
    assert!(names.lines().any(|n| n == bystander), "{names}");
    on(manager, &["service", "rm", &bystander]);
}

#[test]
fn gc_removes_the_services_of_a_run_whose_flowctl_and_reaper_were_killed() {
    let Some((manager, _)) = lab() else {
        return;
    };
    let dir = TempDir::new("flowctl-swarm-gc-");
    // Live mode: the run stays up until it is killed.
    let pipeline = example(&dir, [Some("n2"), None, None], "[\"997\", \"0\"]");
    let project = unique("swg");
    let mut run = swarm_run(&pipeline, &project, &[]);
    run.wait_for("reaper pid ");
    let reaper = run.reaper_pid().expect("a pid after `reaper pid `");
    run.wait_for("all 3 component(s) up");
    kill9(reaper);
    run.signal("KILL");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&run.wait()),
        Some(9)
    );
    // The killed reaper is gone before it could remove anything.
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_running(reaper) {
        assert!(
            std::time::Instant::now() < gone,
            "reaper {reaper} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = left_now(&project);
    assert_eq!(
        left.iter().filter(|l| l.starts_with("service ")).count(),
        4,
        "the killed run's 3 services and control plane: {left:?}"
    );

    let (status, stdout, stderr) = flowctl(&["gc"], &[("DOCKER_HOST", manager.as_str())]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let removed = stdout
        .lines()
        .find(|l| l.starts_with("removed run ") && l.contains(&project))
        .unwrap_or_else(|| panic!("no removed run of {project}: {stdout}"));
    assert!(
        removed.contains("services [") && removed.contains("consumer-app"),
        "{removed}"
    );
    assert_eq!(left_of(&project), Vec::<String>::new());
}
