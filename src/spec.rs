//! The pipeline file as written: upstream flowctl's `flowctl/v1` `Pipeline` format, plus the
//! fields this flowctl adds (health timeout, stop grace period, `register`, `grpc`).
//!
//! Unknown keys are errors (with the nearest valid key suggested), so a typo never silently
//! changes what runs. Loading goes: the file is a `kind: Pipeline` file at all (one clear error
//! otherwise), then `${VAR}` substitution ([`interpolate`]), then the typed fields, whose
//! syntax (quantities, component references) is checked here so errors carry the line.
//! Meaning (ids, inputs, ports, paths) is checked in `plan/`.

pub mod interpolate;
pub mod locate;
pub mod quantity;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub use quantity::{CpuQuantity, MemoryQuantity};

/// Pipeline files larger than this are refused before parsing; real ones are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PipelineSpec,
}

/// `metadata:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// Written by upstream's `flowctl init`; informational.
    #[serde(default)]
    pub description: Option<String>,
    /// Upstream field; informational here.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Upstream field; informational here.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Upstream field; informational here.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `spec:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// Upstream field: `docker` (default), `process` (upstream's default: run here as
    /// containers too) or `kubernetes` (only for `flowctl translate`). Podman is chosen with
    /// `--docker-bin`.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub sources: Vec<ComponentSpec>,
    #[serde(default)]
    pub processors: Vec<ComponentSpec>,
    #[serde(default)]
    pub sinks: Vec<ComponentSpec>,
    /// Whole-pipeline jobs (upstream's `pipelines`): containers outside the data graph that
    /// start after what they `depends_on` and must finish, like sinks.
    #[serde(default)]
    pub pipelines: Vec<ComponentSpec>,
    /// Settings for every component, under each component's own `config`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml::Value>,
}

/// One source, processor or sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub id: String,
    /// `source`, `processor` or `sink` (must match the list it is in), or a component
    /// reference `[ORG/]NAME@VERSION` naming the image.
    #[serde(default, rename = "type")]
    pub kind: Option<ComponentType>,
    #[serde(default)]
    pub image: Option<String>,
    /// Replaces the image's entrypoint (Kubernetes meaning).
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's default arguments.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Components whose output this one reads; they start (and are healthy) first.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// HTTP path of the health endpoint (default `/health`).
    #[serde(default)]
    pub health_check: Option<String>,
    /// Container port serving the health endpoint.
    #[serde(default)]
    pub health_port: Option<u16>,
    /// How long to wait for the component to become ready (default 30s).
    #[serde(default)]
    pub health_timeout: Option<DurationValue>,
    /// SIGTERM-to-SIGKILL grace period when stopping (default 10s).
    #[serde(default)]
    pub stop_grace_period: Option<DurationValue>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// The component registers with flowctl's control plane; it counts as started only once
    /// it has.
    #[serde(default)]
    pub register: bool,
    /// A gRPC service flowctl verifies really streams.
    #[serde(default)]
    pub grpc: Option<GrpcSpec>,
    /// What to do when the container exits non-zero: `no` (default), `on-failure` or
    /// `on-failure:N` (at most N restarts).
    #[serde(default)]
    pub restart: Option<String>,
    /// Upstream fields, accepted for compatibility (informational).
    #[serde(default)]
    pub input_event_types: Vec<String>,
    #[serde(default)]
    pub output_event_types: Vec<String>,
    /// Upstream field; only 1 is supported.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Settings passed as environment variables (see `plan/config.rs`).
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    #[serde(default)]
    pub resources: Option<ResourcesSpec>,
    /// Components (or jobs) that must be ready before this one starts; unlike `inputs`, no
    /// data flows (upstream's field for `spec.pipelines` jobs).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Upstream's name for `restart` (`never`, `on-failure[:N]`, Kubernetes' `Never` /
    /// `OnFailure`).
    #[serde(default)]
    pub restart_policy: Option<String>,
}

/// `type:` of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentType {
    /// `source`, `processor` or `sink`.
    Role(String),
    /// `[ORG/]NAME@VERSION`: the image `REGISTRY/ORG/NAME:VERSION`.
    Reference {
        org: Option<String>,
        name: String,
        version: String,
    },
}

impl ComponentType {
    /// Parses a `type:` value; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ComponentType, String> {
        if ["source", "processor", "sink", "pipeline"].contains(&text) {
            return Ok(ComponentType::Role(text.to_string()));
        }
        let expected = "`source`, `processor`, `sink`, `pipeline` or a component reference \
                        `NAME@VERSION` / `ORG/NAME@VERSION` (e.g. `ttp-processor@v1.0.0`)";
        let Some((path, version)) = text.split_once('@') else {
            return Err(format!("`{text}` is not {expected}"));
        };
        let (org, name) = match path.split_once('/') {
            Some((org, name)) => (Some(org), name),
            None => (None, path),
        };
        // Image name components: lowercase letters, digits and separators.
        let name_ok = |part: &str| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        // A Docker tag: up to 128 word characters, `.` and `-`, not starting with `.` or `-`.
        let version_ok = !version.is_empty()
            && version.len() <= 128
            && !version.starts_with(['.', '-'])
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok(name) || !org.is_none_or(name_ok) {
            return Err(format!(
                "`{text}`: the name must be lowercase letters, digits, `.`, `_` or `-` ({expected})"
            ));
        }
        if !version_ok {
            return Err(format!(
                "`{text}`: the version after `@` must be an image tag such as `v1.0.0` ({expected})"
            ));
        }
        Ok(ComponentType::Reference {
            org: org.map(str::to_string),
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for ComponentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentType::Role(role) => f.write_str(role),
            ComponentType::Reference { org, name, version } => match org {
                Some(org) => write!(f, "{org}/{name}@{version}"),
                None => write!(f, "{name}@{version}"),
            },
        }
    }
}

impl<'de> Deserialize<'de> for ComponentType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Parsed inside the visitor, so serde's error carries the field's path and line.
        struct TypeVisitor;
        impl Visitor<'_> for TypeVisitor {
            type Value = ComponentType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`source`, `processor`, `sink` or `NAME@VERSION`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ComponentType, E> {
                ComponentType::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TypeVisitor)
    }
}

/// `resources:` (Kubernetes' shape).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default)]
    pub requests: ResourceList,
    #[serde(default)]
    pub limits: ResourceList,
}

/// `resources.requests` / `resources.limits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default)]
    pub cpu: Option<CpuQuantity>,
    #[serde(default)]
    pub memory: Option<MemoryQuantity>,
}

/// One entry of `secrets:`: a host file given to the component as a read-only file or as an
/// environment variable. Its content is never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    /// Relative paths resolve against the pipeline file's folder.
    pub host_path: String,
    /// Mount the file here (read-only) ...
    #[serde(default)]
    pub container_path: Option<String>,
    /// ... or pass its content as this environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// Octal permissions upstream sets on the file (`0400`); checked for syntax, and the
    /// file is mounted read-only either way.
    #[serde(default)]
    pub mode: Option<String>,
    /// Upstream fields; informational.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A missing required secret stops the run before anything starts; a missing optional
    /// one (upstream's default) is left out.
    #[serde(default)]
    pub required: bool,
}

/// One entry of `ports:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "containerPort", alias = "container_port")]
    pub container_port: u16,
    /// Pinned host port; by default the engine picks a free one.
    #[serde(default, rename = "hostPort", alias = "host_port")]
    pub host_port: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One entry of `volumes:` (a bind mount).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Upstream field; informational.
    #[serde(default)]
    pub name: Option<String>,
    /// Relative paths resolve against the pipeline file's folder.
    pub host_path: String,
    #[serde(alias = "mountPath")]
    pub container_path: String,
    /// Default `true`: a component only writes where the file says so.
    #[serde(default)]
    pub readonly: Option<bool>,
}

/// `grpc:` — the gRPC contract a component serves, for stream verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSpec {
    pub port: u16,
    /// Fully qualified service name, e.g. `raw_ledger_service.RawLedgerService`.
    pub service: String,
    #[serde(default)]
    pub verify: Option<VerifySpec>,
}

/// `grpc.verify:` — the ledger range used to prove data streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub start_ledger: u32,
    #[serde(default)]
    pub end_ledger: Option<u32>,
}

/// An `env:` value. YAML writes `PORT: 8080` as a number; the container sees text either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A duration written as `30s`, `500ms`, `2m`, `1m30s` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30s, 500ms or 2m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `1m30s` (Go-style) or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let invalid = || format!("{text:?} is not a duration such as 30s, 500ms or 2m");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let tail = &rest[digits..];
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let part = match &tail[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
        rest = &tail[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way components read `FLOWCTL_HEARTBEAT_INTERVAL` (Go style).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The pipeline file could not be read or parsed.
#[derive(Debug)]
pub struct SpecError {
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<PipelineFile, SpecError> {
    let origin = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| SpecError {
        message: format!("{origin}: cannot read the pipeline file: {e}"),
    })?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(SpecError {
            message: format!(
                "{origin}: the pipeline file is {} bytes; more than the {MAX_FILE_BYTES} bytes \
                 flowctl accepts",
                metadata.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        message: format!("{origin}: cannot read the pipeline file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| SpecError {
        message: format!(
            "{origin}: the pipeline file is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    parse(&text, &origin.to_string())
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: serde_yaml
/// refuses more than 128 levels anyway, but only after its scanner has spent time quadratic in
/// the depth (seconds for 40 KB of `[`, hours for 1 MiB).
pub const MAX_FLOW_DEPTH: usize = 128;

/// Parses pipeline text; `origin` names it in errors; `${VAR}` reads the process environment.
pub fn parse(text: &str, origin: &str) -> Result<PipelineFile, SpecError> {
    parse_with(text, origin, &|name| std::env::var(name).ok())
}

/// [`parse`] with the variables `${VAR}` reads given by `lookup`.
pub fn parse_with(
    text: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineFile, SpecError> {
    let fail = |message: String| SpecError {
        message: format!("{origin}: {message}"),
    };
    if let Some(line) = flow_too_deep(text) {
        return Err(fail(format!(
            "line {line}: `[` or `{{` nested more than {MAX_FLOW_DEPTH} levels deep"
        )));
    }
    let typed_from_text = || serde_yaml::from_str(text).map_err(|e| fail(explain(&e, text)));
    // The YAML structure first: it says whether this is a pipeline file at all, and carries
    // the values `${VAR}` substitution works on. Syntax errors are the typed parser's to word.
    let Ok(mut document) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return typed_from_text();
    };
    if let Some(problem) = not_a_pipeline(&document) {
        return Err(fail(problem));
    }
    let (changed, unresolved) = interpolate::interpolate(&mut document, lookup);
    if !unresolved.is_empty() {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let lines: Vec<String> = unresolved
            .iter()
            .map(|u| {
                let occurrence = seen.entry(u.written.as_str()).or_default();
                let line = interpolate::line_of(text, &u.written, *occurrence)
                    .map(|line| format!("line {line}: "))
                    .unwrap_or_default();
                *occurrence += 1;
                format!("{line}{}: {}", u.field, u.problem)
            })
            .collect();
        return Err(fail(lines.join(&format!("\n{origin}: "))));
    }
    if !changed {
        // Parsed from the text, serde's errors carry line and column.
        return typed_from_text();
    }
    // Substituted in the text when that gives the same document, so errors keep their lines;
    // else (a value that would change the YAML's structure) from the walked document.
    let substituted = interpolate::substitute_text(text, lookup).filter(|substituted| {
        serde_yaml::from_str::<serde_yaml::Value>(substituted)
            .is_ok_and(|parsed| interpolate::same_document(&parsed, &document))
    });
    match substituted {
        Some(substituted) => {
            serde_yaml::from_str(&substituted).map_err(|e| fail(explain(&e, &substituted)))
        }
        None => serde_yaml::from_value(document).map_err(|e| fail(explain(&e, text))),
    }
}

/// Why a parsed document is not a `kind: Pipeline` file, if it is not: said once, before any
/// field error. Documents that are not mappings are left to the typed parser's message.
fn not_a_pipeline(document: &serde_yaml::Value) -> Option<String> {
    let map = document.as_mapping()?;
    let kind = map.get("kind");
    if map.get("apiVersion").is_none() && kind.is_none() {
        return Some(
            "not a pipeline file: it has no `apiVersion` and `kind` (a pipeline file starts with \
             `apiVersion: flowctl/v1` and `kind: Pipeline`; a component's own config file is \
             given to the component instead, e.g. through `config:` or a volume)"
                .into(),
        );
    }
    match kind?.as_str() {
        Some("Pipeline") => None,
        Some(other) => Some(format!(
            "not a pipeline file: `kind: {other}` is not `kind: Pipeline`{}",
            if other == "SandboxServices" {
                " (upstream's `flowctl sandbox` services file; run its services with docker \
                 compose, and the pipeline with `flowctl run`)"
            } else {
                ""
            }
        )),
        None => Some("kind: must be the text `Pipeline`".into()),
    }
}

/// The line where flow collections first nest deeper than [`MAX_FLOW_DEPTH`], skipping quoted
/// text and comments (a rough scan: it only has to be cheap and never count too many).
fn flow_too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut previous = '\n';
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match (quote, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => {
                if chars.by_ref().any(|n| n == '\n') {
                    line += 1;
                }
                previous = '\n';
                continue;
            }
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
        previous = c;
    }
    None
}

/// serde_yaml's message, plus the component id for a `spec.sinks[2]` path and the nearest
/// valid key for an unknown one.
fn explain(error: &serde_yaml::Error, text: &str) -> String {
    let mut message = error.to_string();
    if let Some(with_id) = name_component(&message, text) {
        message = with_id;
    }
    if let Some(hint) = suggest_key(&message) {
        message.push_str(&hint);
    }
    message
}

/// `spec.sinks[2].ports[0]: ...` → `spec.sinks[2].ports[0] (component `sink`): ...`.
fn name_component(message: &str, text: &str) -> Option<String> {
    let (path, _) = message.split_once(": ")?;
    let rest = path.strip_prefix("spec.")?;
    let (list, after) = rest.split_once('[')?;
    let (index, _) = after.split_once(']')?;
    let index: usize = index.parse().ok()?;
    // Only the YAML structure is needed here, so a file that failed typed parsing still reads.
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let id = value
        .get("spec")?
        .get(list)?
        .get(index)?
        .get("id")?
        .as_str()?;
    Some(message.replacen(
        &format!("{path}: "),
        &format!("{path} (component `{id}`): "),
        1,
    ))
}

/// For "unknown field `x`, expected one of `a`, `b`": " (did you mean `a`?)".
fn suggest_key(message: &str) -> Option<String> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let unknown = &message[start..start + message[start..].find('`')?];
    if unknown == "<<" {
        return Some(" (YAML merge keys are not supported: write the fields out)".into());
    }
    let expected = &message[message.find("expected")?..];
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(unknown, &candidates).map(|best| format!(" (did you mean `{best}`?)"))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lower, &c.to_ascii_lowercase()), *c))
        .filter(|(distance, c)| *distance <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: demo
spec:
  description: a demo
  sources:
    - id: source
      image: flowctl/test-component:dev
      env:
        PORT: 8080
        DEBUG: true
        NAME: x
      ports:
        - containerPort: 50052
          name: grpc
      health_port: 8088
      health_timeout: 5s
      stop_grace_period: 3
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify: {start_ledger: 2}
  sinks:
    - id: sink
      type: sink
      image: flowctl/test-component:dev
      inputs: [source]
      register: true
"#;

    #[test]
    fn parses_upstream_format_with_our_extensions() {
        let file = parse(MINIMAL, "demo.yaml").unwrap();
        assert_eq!(file.metadata.name, "demo");
        let source = &file.spec.sources[0];
        assert_eq!(source.env["PORT"], EnvValue("8080".into()));
        assert_eq!(source.env["DEBUG"], EnvValue("true".into()));
        assert_eq!(source.ports[0].container_port, 50052);
        assert_eq!(
            source.health_timeout,
            Some(DurationValue(Duration::from_secs(5)))
        );
        assert_eq!(
            source.stop_grace_period,
            Some(DurationValue(Duration::from_secs(3)))
        );
        let grpc = source.grpc.as_ref().unwrap();
        assert_eq!(grpc.verify.as_ref().unwrap().start_ledger, 2);
        assert!(file.spec.sinks[0].register);
        assert_eq!(file.spec.sinks[0].inputs, ["source"]);
    }

    #[test]
    fn unknown_key_names_component_position_and_nearest_key() {
        let text = MINIMAL.replace("      inputs: [source]", "      imputs: [source]");
        let err = parse(&text, "demo.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with("demo.yaml: spec.sinks[0] (component `sink`): "),
            "{err}"
        );
        assert!(err.contains("unknown field `imputs`"), "{err}");
        assert!(err.contains("at line 29"), "{err}");
        assert!(err.ends_with("(did you mean `inputs`?)"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_field_and_line() {
        let text = MINIMAL.replace("containerPort: 50052", "containerPort: grpc");
        let err = parse(&text, "demo.yaml").unwrap_err().to_string();
        assert!(
            err.contains("spec.sources[0].ports[0].containerPort"),
            "{err}"
        );
        assert!(err.contains("component `source`"), "{err}");
        assert!(err.contains("line 16"), "{err}");

        let text = MINIMAL.replace("health_timeout: 5s", "health_timeout: soon");
        let err = parse(&text, "demo.yaml").unwrap_err().to_string();
        assert!(err.contains("health_timeout"), "{err}");
        assert!(err.contains("not a duration"), "{err}");

        let text = MINIMAL.replace("containerPort: 50052", "containerPort: 70000");
        let err = parse(&text, "demo.yaml").unwrap_err().to_string();
        assert!(err.contains("containerPort"), "{err}");
    }

    #[test]
    fn top_level_typos_are_suggested() {
        let text = MINIMAL.replace("metadata:", "metdata:");
        let err = parse(&text, "demo.yaml").unwrap_err().to_string();
        assert!(err.contains("(did you mean `metadata`?)"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("a: {}", "[".repeat(40_000));
        let err = parse(&deep, "d.yaml").unwrap_err().to_string();
        assert_eq!(
            err,
            "d.yaml: line 1: `[` or `{` nested more than 128 levels deep"
        );
        // Brackets in quotes and comments do not count; 128 levels are left to serde_yaml.
        let quoted = format!(
            "a: '{0}'\nb: \"{0}\\\"\" # {0}\nc: {1}1{2}",
            "[".repeat(200),
            "[".repeat(128),
            "]".repeat(128)
        );
        assert_eq!(flow_too_deep(&quoted), None);
    }

    #[test]
    fn nearest_key_only_for_close_words() {
        assert_eq!(nearest("imgae", &["image", "inputs"]), Some("image"));
        assert_eq!(nearest("zzzzzzzz", &["image", "inputs"]), None);
    }
}
