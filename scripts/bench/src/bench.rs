//! What every section uses: where the binaries are, the engine and Compose, how many runs a
//! figure takes, the work folder, the results, and the cleanup that removes everything the
//! bench made (by the label and name prefix unique to this invocation), also on Ctrl+C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// How many runs each figure takes, and how long the idle windows are.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    pub runs: usize,
    pub idle: Duration,
    pub version_runs: usize,
}

impl Effort {
    pub const FULL: Effort = Effort {
        runs: 5,
        idle: Duration::from_secs(60),
        version_runs: 51,
    };
    pub const QUICK: Effort = Effort {
        runs: 3,
        idle: Duration::from_secs(20),
        version_runs: 21,
    };
    pub const ONCE: Effort = Effort {
        runs: 1,
        idle: Duration::from_secs(10),
        version_runs: 5,
    };
}

/// A Compose project the bench brought up: its file and where Compose reached the engine.
struct ComposeProject {
    name: String,
    file: PathBuf,
    docker_host: Option<String>,
}

/// One invocation of the bench.
pub struct Bench {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub flowctl: PathBuf,
    /// The engine CLI of every section but the lifecycle's Podman runs (`FLOWCTL_DOCKER_BIN`).
    pub docker: String,
    pub compose: String,
    /// The tag of the flowctl/* images (`FLOWCTL_IMAGE_TAG`, as scripts/build-images.sh).
    pub image_tag: String,
    pub effort: Effort,
    pub work: PathBuf,
    /// Prefix of every project, container and network name of this invocation.
    pub tag: String,
    results: Mutex<BTreeMap<String, Map<String, Value>>>,
    compose_projects: Mutex<Vec<ComposeProject>>,
}

impl Bench {
    pub fn new(root: PathBuf, effort: Effort) -> Result<Bench> {
        let bin_dir = root.join("target/x86_64-unknown-linux-gnu/release");
        let tag = format!("fb{}", std::process::id());
        let work = std::env::temp_dir().join(format!("flowctl-bench.{tag}"));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let bench = Bench {
            flowctl: bin_dir.join("flowctl"),
            bin_dir,
            root,
            docker: std::env::var("FLOWCTL_DOCKER_BIN").unwrap_or_else(|_| "docker".into()),
            compose: std::env::var("COMPOSE").unwrap_or_else(|_| "docker-compose".into()),
            image_tag: std::env::var("FLOWCTL_IMAGE_TAG").unwrap_or_else(|_| "dev".into()),
            effort,
            work,
            tag,
            results: Mutex::default(),
            compose_projects: Mutex::default(),
        };
        bench.binary("flowctl")?;
        Ok(bench)
    }

    /// The release binary `name`, which must exist.
    pub fn binary(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: build the release binaries and images first \
                 (cargo build --release --workspace --bins; scripts/build-images.sh)",
                path.display()
            );
        }
        Ok(path)
    }

    /// A file of the work folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// A name unique to this invocation: `fb<pid><suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.tag)
    }

    /// An image of the example, under this invocation's tag.
    pub fn image(&self, name: &str) -> String {
        format!("flowctl/{name}:{}", self.image_tag)
    }

    /// Records figure `key` of `section` for the JSON results.
    pub fn record(&self, section: &str, key: &str, value: impl Into<Value>) {
        self.results
            .lock()
            .unwrap()
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.into());
    }

    /// Records a figure that may be unknown (`null` in the results).
    pub fn record_opt(&self, section: &str, key: &str, value: Option<f64>) {
        self.record(section, key, value.map_or(Value::Null, Value::from));
    }

    pub fn results(&self) -> Map<String, Value> {
        self.results
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
            .collect()
    }

    /// Remembers Compose project `project` of `file` (on the engine at `docker_host`), taken
    /// down by [`Bench::cleanup`].
    pub fn compose_project(&self, project: &str, file: &Path, docker_host: Option<&str>) {
        self.compose_projects.lock().unwrap().push(ComposeProject {
            name: project.to_string(),
            file: file.to_path_buf(),
            docker_host: docker_host.map(str::to_string),
        });
    }

    /// Removes what this invocation made on `engine`: Compose projects, containers and networks
    /// labelled `io.flowctl.bench=<tag>` (the floors'), and flowctl's own whose names start with
    /// the tag (a run that was interrupted). Returns how many flowctl containers were left.
    pub fn cleanup(&self, engines: &[&str]) -> usize {
        for project in self.compose_projects.lock().unwrap().drain(..) {
            let mut down = Command::new(&self.compose);
            if let Some(host) = &project.docker_host {
                down.env("DOCKER_HOST", host);
            }
            down.args(["-p", &project.name, "-f"]).arg(&project.file);
            let _ = quiet(down.args(["down", "-v", "--timeout", "2"]));
        }
        let mut left = 0;
        for engine in engines {
            self.remove_floor(engine);
            let name = format!("name=^{}", self.tag);
            let listing = [
                "ps",
                "-aq",
                "--filter",
                "label=io.flowctl.managed",
                "--filter",
                &name,
            ];
            left += ids(engine, &listing).len();
            remove_by(engine, &listing, &["rm", "-f"]);
        }
        left
    }

    /// Removes the floors' containers and networks (labelled `io.flowctl.bench=<tag>`).
    pub fn remove_floor(&self, engine: &str) {
        let label = format!("label=io.flowctl.bench={}", self.tag);
        remove_by(engine, &["ps", "-aq", "--filter", &label], &["rm", "-f"]);
        remove_by(
            engine,
            &["network", "ls", "-q", "--filter", &label],
            &["network", "rm"],
        );
    }

    /// Removes the work folder, unless `BENCH_KEEP` is set.
    pub fn remove_work(&self) {
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.work.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// The ids `engine` lists with `args`.
fn ids(engine: &str, args: &[&str]) -> Vec<String> {
    Command::new(engine)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn remove_by(engine: &str, listing: &[&str], remove: &[&str]) {
    let found = ids(engine, listing);
    if !found.is_empty() {
        let _ = quiet(Command::new(engine).args(remove).args(&found));
    }
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status()
}

/// Runs `program` with `args` and returns its standard output; an error with its command line
/// and standard error when it fails.
pub fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
