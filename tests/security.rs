//! The security defaults. With a fake container CLI that records its argument vectors:
//! hostile strings in image names, arguments and env values reach the CLI as single arguments
//! and never reach a shell; env values are never on a command line nor in flowctl's output;
//! every container gets `no-new-privileges`, ports on 127.0.0.1 and read-only volumes. Against
//! the real engine: the same settings as the engine reports them, and a control plane that does
//! not listen on every address.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use support::{docker, Scratch};

/// A fake `docker` that records every call (one argument per line, calls separated by `--`)
/// and answers just enough for `flowctl run` to reach `docker run`, which it refuses, so the
/// run fails and cleans up without any real container.
struct FakeEngine {
    dir: PathBuf,
}

impl FakeEngine {
    fn new(name: &str) -> FakeEngine {
        let dir = std::env::temp_dir().join(format!("flowctl-sec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let calls = dir.join("calls");
        let created = dir.join("network-created");
        let script = format!(
            r#"#!/bin/sh
for arg in "$@"; do printf '%s\n' "$arg" >> '{calls}'; done
echo -- >> '{calls}'
case "$1 $2" in
  "version "*) echo 'Version: 0.0-fake' ;;
  "image inspect") echo 'sha256:{image_id}' ;;
  "container inspect") echo 'Error: No such container' >&2; exit 1 ;;
  "network create") touch '{created}'; echo fakenet ;;
  "network inspect")
    if [ -e '{created}' ]; then
      echo '[{{"Name":"n","IPAM":{{"Config":[{{"Gateway":"127.0.0.1"}}]}}}}]'
    else
      echo 'Error: network not found' >&2; exit 1
    fi ;;
  "network ls") [ -e '{created}' ] && echo fakenet ;;
  "network rm") rm -f '{created}' ;;
  "create "*) echo fakecontainer ;;
  "start "*) echo 'fake engine: refusing to start' >&2; exit 125 ;;
  *) ;;
esac
exit 0
"#,
            calls = calls.display(),
            created = created.display(),
            // An id of this fake's own, so no run's cached metadata answers for its image.
            image_id = support::unique("fake"),
        );
        let path = dir.join("docker");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        FakeEngine { dir }
    }

    fn bin(&self) -> String {
        self.dir.join("docker").display().to_string()
    }

    /// Each call's argument vector.
    fn calls(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .split("--\n")
            .filter(|call| !call.is_empty())
            .map(|call| call.lines().map(String::from).collect())
            .collect()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn hostile_strings_stay_single_arguments_and_env_values_stay_secret() {
    let fake = FakeEngine::new("hostile");
    let marker = fake.dir.join("pwned");
    let m = marker.display();
    let lake = fake.dir.join("lake");
    fs::create_dir_all(&lake).unwrap();
    let pipeline = fake.dir.join("p.yaml");
    // Each of these would create the marker if any part of flowctl ran it through a shell.
    // `$$` is the file's literal `$` (Compose's rule), so the engine gets `$(touch ...)`.
    fs::write(
        &pipeline,
        format!(
            r#"apiVersion: flowctl/v1
kind: Pipeline
metadata: {{name: hostile}}
spec:
  sources:
    - id: src
      image: 'img$$(touch$${{IFS}}{m})`touch$${{IFS}}{m}`'
      command: ['/bin/x;touch {m}']
      args: ['$$(touch {m})', '"; touch {m}; echo "', "' && touch {m} '"]
      env:
        TOKEN: 'tok-value-$$(touch {m})'
        QUOTED: "q-value'; touch {m}; '"
        SPACES: ' sp-value  with  spaces '
      ports: [{{containerPort: 8088}}]
      volumes: [{{host_path: lake, container_path: /data}}]
"#
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = support::flowctl(
        &[
            "run",
            &pipeline.display().to_string(),
            "--no-color",
            "--control-plane-port",
            "0",
        ],
        &[
            ("FLOWCTL_DOCKER_BIN", &fake.bin()),
            (
                "XDG_CACHE_HOME",
                &fake.dir.join("cache").display().to_string(),
            ),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(!marker.exists(), "a hostile string reached a shell");

    let calls = fake.calls();
    // The component's container, not the probe that reads the image's /metadata.json.
    let is_probe = |c: &&Vec<String>| c.iter().any(|a| a.starts_with("flowctl-probe-"));
    let run = calls
        .iter()
        .find(|c| c.first().map(String::as_str) == Some("create") && !is_probe(c))
        .unwrap_or_else(|| panic!("no create call in {calls:?}"));
    let probe = calls
        .iter()
        .find(is_probe)
        .unwrap_or_else(|| panic!("no metadata probe in {calls:?}"));
    // The image and every argument arrive whole, as one argument each, after the image.
    let image = format!("img$(touch${{IFS}}{m})`touch${{IFS}}{m}`");
    assert_eq!(probe.last(), Some(&image), "{probe:?}");
    let at = run
        .iter()
        .position(|a| *a == image)
        .expect("image as one argument");
    assert_eq!(
        run[at + 1..],
        [
            format!("$(touch {m})"),
            format!("\"; touch {m}; echo \""),
            format!("' && touch {m} '")
        ]
    );
    let entrypoint = run.iter().position(|a| a == "--entrypoint").unwrap();
    assert_eq!(run[entrypoint + 1], format!("/bin/x;touch {m}"));

    // Security defaults on the command line.
    let pair = |flag: &str| -> Vec<&str> {
        run.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    };
    assert_eq!(pair("--security-opt"), ["no-new-privileges"]);
    assert_eq!(pair("--publish"), ["127.0.0.1::8088/tcp"]);
    assert_eq!(pair("--volume"), [format!("{}:/data:ro", lake.display())]);
    assert!(!run.iter().any(|a| a.contains("privileged")), "{run:?}");

    // Env values travel in a private env file, never as arguments, and are never printed.
    assert!(pair("--env-file").len() == 1, "{run:?}");
    assert!(!run.iter().any(|a| a == "--env" || a == "-e"), "{run:?}");
    for call in &calls {
        for arg in call {
            assert!(
                !arg.contains("-value"),
                "an env value on a command line: {call:?}"
            );
        }
    }
    let output = format!("{stdout}\n{stderr}");
    assert!(output.contains("TOKEN"), "env keys are listed: {output}");
    for value in ["tok-value", "q-value", "sp-value"] {
        assert!(!output.contains(value), "{value} printed:\n{output}");
    }
    // The env file is gone once the run is over.
    let env_file = pair("--env-file")[0].to_string();
    assert!(!PathBuf::from(&env_file).exists(), "{env_file} left behind");
}

#[test]
fn env_values_are_not_in_validation_errors() {
    let dir = std::env::temp_dir().join(format!("flowctl-sec-validate-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("p.yaml");
    fs::write(
        &pipeline,
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: v}\nspec:\n  sources:\n    - \
         {id: src, image: img, env: {TOKEN: \"line1-value\\nline2-value\", 'BAD KEY': \
         other-value}, imgae: x}\n",
    )
    .unwrap();
    let (status, stdout, stderr) =
        support::flowctl(&["validate", &pipeline.display().to_string()], &[]);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("unknown field `imgae`"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("-value"), "{stderr}");
}

/// Reads the listening TCP sockets on `port` from /proc/net/tcp and tcp6: their local
/// addresses in the kernel's hex notation.
fn listeners(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((address, hex_port)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(hex_port, 16) == Ok(port) {
                found.push(address.to_string());
            }
        }
    }
    found
}

#[test]
fn the_real_engine_gets_the_security_defaults() {
    let scratch = Scratch::new("secdefaults");
    let lake = scratch.dir.join("lake");
    fs::create_dir_all(&lake).unwrap();
    let pipeline = scratch.pipeline(
        "
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      health_port: 8088
      register: true
      volumes: [{host_path: lake, container_path: /data}]
",
    );
    let mut run = scratch.run(&pipeline, &[], &[]);
    run.wait_for("is up");
    let container = scratch.container("sink");
    let inspect = |format: &str| docker(&["inspect", "--format", format, &container]);
    assert!(
        inspect("{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"),
        "{}",
        inspect("{{json .HostConfig}}")
    );
    assert_eq!(inspect("{{.HostConfig.Privileged}}").trim(), "false");
    assert_eq!(inspect("{{.Config.User}}").trim(), "65534:65534");
    let bindings = inspect("{{json .HostConfig.PortBindings}}");
    assert!(bindings.contains("\"HostIp\":\"127.0.0.1\""), "{bindings}");
    assert!(!bindings.contains("0.0.0.0"), "{bindings}");
    let mounts = inspect("{{range .Mounts}}{{.Destination}} {{.RW}};{{end}}");
    assert!(mounts.contains("/data false"), "{mounts}");

    // The control plane listens on the network's gateway only, never on every address.
    let stderr = run.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("control plane listening on"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let endpoint = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"));
    let (ip, port) = endpoint.rsplit_once(':').unwrap();
    assert_ne!(ip, "0.0.0.0", "{line}");
    let port: u16 = port.parse().unwrap();
    let sockets = listeners(port);
    assert!(!sockets.is_empty(), "nothing listens on {port}");
    for address in &sockets {
        assert!(
            address.chars().any(|c| c != '0'),
            "the control plane listens on every address ({address}) on port {port}"
        );
    }
    run.signal("TERM");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}
