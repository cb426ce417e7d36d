//! `flowctl translate`: the same validated pipeline as the configuration of an existing engine
//! — a Docker Compose file ([`compose`]) or Kubernetes manifests ([`kubernetes`]) — keeping
//! flowctl's semantics: start order by health, component ids as DNS names, ports, env,
//! volumes, labels, and a control plane the components register with.
//!
//! Both translators read a [`RunPlan`] (never the YAML) and build `serde_yaml` values whose
//! mappings keep insertion order, so the output is deterministic and reads in the usual order
//! (`apiVersion`, `kind`, `metadata`, `spec`).

pub mod compose;
pub mod kubernetes;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

use crate::contract;
use crate::plan::{ComponentPlan, Naming, RunPlan};

/// The image that runs `flowctl control-plane` (built by `scripts/build-images.sh`).
pub const DEFAULT_CONTROL_PLANE_IMAGE: &str = "flowctl/flowctl:dev";
pub use crate::contract::{CONTROL_PLANE_PORT, CONTROL_PLANE_SERVICE};

/// What to translate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Compose file (compose-spec; runs with `docker-compose` 1.29 and `docker compose`).
    Compose,
    /// Kubernetes manifests (Deployments, Jobs, Services, PersistentVolumeClaims).
    Kubernetes,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        match text {
            "compose" | "docker-compose" => Ok(Target::Compose),
            "kubernetes" | "k8s" => Ok(Target::Kubernetes),
            other => Err(format!(
                "`{other}` is not a translation target (use `compose` or `kubernetes`)"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Compose => "compose",
            Target::Kubernetes => "kubernetes",
        })
    }
}

/// Settings of one translation.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// The image running `flowctl control-plane`; `None` leaves the control plane out and sets
    /// `ENABLE_FLOWCTL=false` in every component.
    pub control_plane_image: Option<String>,
    /// `FLOWCTL_HEARTBEAT_INTERVAL` given to components (the control plane's TTL is three).
    pub heartbeat_interval: Duration,
    /// How the pipeline file is named in the generated header (display only).
    pub source_name: String,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            control_plane_image: Some(DEFAULT_CONTROL_PLANE_IMAGE.to_string()),
            heartbeat_interval: Duration::from_secs(10),
            source_name: "the pipeline file".to_string(),
        }
    }
}

/// One generated file: its suggested name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: String,
    pub text: String,
}

/// Translates `plan` to `target`. Compose gives one file; Kubernetes one file per component
/// (plus the control plane and the volume claims), which [`write_output`] can also join.
pub fn translate(
    plan: &RunPlan,
    target: Target,
    options: &TranslateOptions,
) -> Result<Vec<OutputFile>> {
    if let Some(component) = plan.component(CONTROL_PLANE_SERVICE) {
        bail!(
            "component `{}`: id: `{CONTROL_PLANE_SERVICE}` is the name of flowctl's control \
             plane in translated pipelines; rename the component",
            component.id
        );
    }
    // One service per component of the file: replicas become a count again.
    let plan = &plan.folded();
    match target {
        Target::Compose => compose::translate(plan, options).map(|file| vec![file]),
        Target::Kubernetes => kubernetes::translate(plan, options),
    }
}

/// `flowctl translate`: loads and validates `pipeline` as `flowctl run` would, translates it
/// and writes the result (see [`write_output`]). Returns the paths written.
pub fn translate_file(
    pipeline: &Path,
    naming: &Naming,
    target: Target,
    options: &TranslateOptions,
    out: Option<&Path>,
    stdout_is_terminal: bool,
) -> Result<Vec<PathBuf>> {
    let plan = crate::plan::load(pipeline, naming)?;
    if let Some(process) = plan.components.iter().find(|c| c.process.is_some()) {
        anyhow::bail!(
            "{}: component `{}`: command: it runs as a process of this machine (spec.driver \
             `process`, no image), and a {} file describes containers: give it an `image:` to \
             translate it, or run the file with `flowctl run`",
            pipeline.display(),
            process.id,
            target
        );
    }
    let options = TranslateOptions {
        source_name: pipeline
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| pipeline.display().to_string()),
        ..options.clone()
    };
    let files = translate(&plan, target, &options)?;
    write_output(&files, out, stdout_is_terminal)
}

/// Writes the translation: to `out` (a file; for Kubernetes, a folder when `out` is an
/// existing folder or has no `.yaml`/`.yml` extension), else to stdout. Returns the paths
/// written. Stdout is refused when it is a terminal: the output holds `env:` values, which
/// flowctl never prints to a screen.
pub fn write_output(
    files: &[OutputFile],
    out: Option<&Path>,
    stdout_is_terminal: bool,
) -> Result<Vec<PathBuf>> {
    let Some(out) = out else {
        if stdout_is_terminal {
            bail!(
                "not printing the translation to a terminal: it contains the components' env \
                 values; write it with -o PATH or redirect stdout"
            );
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(join_documents(files).as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
        return Ok(Vec::new());
    };
    let is_yaml_file = matches!(
        out.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    if files.len() > 1 && (out.is_dir() || !is_yaml_file) {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the folder {}", out.display()))?;
        let mut written = Vec::new();
        for file in files {
            let path = out.join(&file.name);
            write_file(&path, &file.text)?;
            written.push(path);
        }
        return Ok(written);
    }
    write_file(out, &join_documents(files))?;
    Ok(vec![out.to_path_buf()])
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// All files as one multi-document YAML stream.
pub fn join_documents(files: &[OutputFile]) -> String {
    let mut text = String::new();
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        text.push_str(&file.text);
    }
    text
}

/// The environment of a component in a translated pipeline: the file's values, then what
/// flowctl injects (overriding the file, as `flowctl run` does).
pub(crate) fn component_env(
    component: &ComponentPlan,
    options: &TranslateOptions,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = component
        .env
        .iter()
        .filter(|(key, _)| !contract::INJECTED_ENV.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let access = options
        .control_plane_image
        .as_ref()
        .map(|_| contract::ControlPlaneAccess {
            endpoint: format!("{CONTROL_PLANE_SERVICE}:{CONTROL_PLANE_PORT}"),
            heartbeat_interval: options.heartbeat_interval,
        });
    env.extend(contract::injected_env(&component.id, access.as_ref()));
    env
}

/// The arguments of `flowctl control-plane` in a translated pipeline (see
/// [`contract::control_plane_args`]).
pub(crate) fn control_plane_args(plan: &RunPlan, options: &TranslateOptions) -> Vec<String> {
    contract::control_plane_args(plan.expected_roles(), options.heartbeat_interval)
}

/// The command a Compose healthcheck runs in the component's own container: its `healthcheck`
/// subcommand, since a `FROM scratch` image has no shell or curl. The binary is `command[0]`
/// when the file sets `command`, else `/<image name>` — flowctl's images put their one binary
/// there (`flowctl/ttp-processor:dev` → `/ttp-processor`). `None` without a health check.
pub fn healthcheck_command(component: &ComponentPlan) -> Option<Vec<String>> {
    component.health.as_ref()?;
    let binary = match &component.entrypoint {
        Some(entrypoint) => entrypoint.clone(),
        None => format!("/{}", image_name(&component.image)),
    };
    Some(vec![binary, "healthcheck".to_string()])
}

/// `registry:5000/org/name:tag@sha256:…` → `name`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// The labels flowctl puts on what it describes. Not `io.flowctl.managed`: Compose and
/// Kubernetes own these resources' lifecycle, and `flowctl gc` must never remove them.
pub(crate) fn flowctl_labels(plan: &RunPlan, component: Option<&ComponentPlan>) -> Mapping {
    let mut labels = Mapping::new();
    labels.insert(s(crate::labels::PIPELINE), s(plan.pipeline.as_str()));
    if let Some(project) = &plan.project {
        labels.insert(s(crate::labels::PROJECT), s(project.as_str()));
    }
    match component {
        Some(component) => {
            labels.insert(s(crate::labels::COMPONENT), s(component.id.as_str()));
            labels.insert(s(crate::labels::ROLE), s(component.role.as_str()));
        }
        None => {
            labels.insert(s(crate::labels::COMPONENT), s(CONTROL_PLANE_SERVICE));
        }
    }
    labels
}

/// Renders one YAML document after a `#` comment header.
pub(crate) fn render(header: &[String], value: &Value) -> Result<String> {
    let mut text = String::new();
    for line in header {
        for wrapped in wrap(line, HEADER_WIDTH) {
            text.push('#');
            if !wrapped.is_empty() {
                text.push(' ');
                text.push_str(&wrapped);
            }
            text.push('\n');
        }
    }
    text.push_str(&serde_yaml::to_string(value).context("cannot render YAML")?);
    Ok(text)
}

/// Header comment lines are wrapped to this many characters (after `# `).
const HEADER_WIDTH: usize = 96;

/// Word-wraps `line`; continuation lines keep its indentation plus two spaces. A line indented
/// by four spaces or more is a command to copy, kept whole.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let indent = line.len() - line.trim_start().len();
    if indent >= 4 {
        return vec![line.to_string()];
    }
    let mut lines = vec![String::new()];
    for word in line.split_whitespace() {
        let current = lines.last_mut().expect("lines is never empty");
        if current.is_empty() {
            current.push_str(&line[..indent]);
        } else if current.chars().count() + 1 + word.chars().count() > width {
            lines.push(" ".repeat(indent + 2));
        } else {
            current.push(' ');
        }
        lines
            .last_mut()
            .expect("lines is never empty")
            .push_str(word);
    }
    lines
}

/// A YAML string.
pub(crate) fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// A YAML integer.
pub(crate) fn n(number: impl Into<u64>) -> Value {
    Value::Number(number.into().into())
}

/// A YAML list of strings.
pub(crate) fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Sequence(items.iter().map(|i| s(i.as_ref())).collect())
}

/// A YAML mapping, in the order given.
pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Mapping(
        entries
            .into_iter()
            .map(|(k, v)| (Value::String(k.into()), v))
            .collect(),
    )
}

/// The pipeline's sinks and jobs: a translated pipeline, like `flowctl run`, is done when they
/// end.
pub(crate) fn sinks(plan: &RunPlan) -> Vec<&ComponentPlan> {
    plan.components
        .iter()
        .filter(|c| c.role.must_finish())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(image_name("flowctl/ttp-processor:dev"), "ttp-processor");
        assert_eq!(image_name("registry:5000/org/x"), "x");
        assert_eq!(image_name("busybox"), "busybox");
        assert_eq!(image_name("a/b:1@sha256:abc"), "b");
    }

    #[test]
    fn header_lines_wrap_with_indentation() {
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "  ccc"]);
        assert_eq!(wrap("  x: yyyy zzzz", 9), ["  x: yyyy", "    zzzz"]);
    }

    #[test]
    fn targets_parse() {
        assert_eq!("compose".parse::<Target>(), Ok(Target::Compose));
        assert_eq!("k8s".parse::<Target>(), Ok(Target::Kubernetes));
        assert!("nomad".parse::<Target>().unwrap_err().contains("`nomad`"));
    }
}
