//! The pipeline file as written: upstream flowctl's `flowctl/v1` `Pipeline` format, plus the
//! fields this flowctl adds (health timeout, stop grace period, `register`, `grpc`).
//!
//! Unknown keys are errors (with the nearest valid key suggested), so a typo never silently
//! changes what runs. Loading goes: the file is a `kind: Pipeline` file at all (one clear error
//! otherwise), then `${VAR}` substitution ([`interpolate`]), then the typed fields, whose
//! syntax (quantities, component references) is checked here so errors carry the line.
//! Meaning (ids, inputs, ports, paths) is checked in `plan/`.

pub mod interpolate;
mod load;
pub mod locate;
pub mod quantity;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub use load::{load, nearest, parse, parse_with, SpecError, MAX_FLOW_DEPTH};
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
    /// Where a process component runs (`spec.driver: process`, no image); its relative
    /// `command` is resolved there. Default: the directory flowctl runs in.
    #[serde(default)]
    pub working_dir: Option<String>,
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
    /// it has. Default: no, except for a process component of upstream's shape (`driver:
    /// process`, no `grpc:`), which registers as upstream's SDK components do.
    #[serde(default)]
    pub register: Option<bool>,
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
    /// Where a Swarm may run the component's tasks (`run --swarm`, `translate --to swarm`).
    #[serde(default)]
    pub placement: Option<PlacementSpec>,
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

/// `placement:` (Swarm's shape): constraints every task's node must meet, and spread
/// preferences.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// E.g. `node.labels.zone == east`, `node.role != manager`.
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<PreferenceSpec>,
}

/// One `placement.preferences` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSpec {
    /// Spread tasks evenly over the values of this node attribute (`node.labels.zone`).
    pub spread: String,
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
                crate::duration::parse(v)
                    .map(DurationValue)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::load::flow_too_deep;
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
        assert_eq!(file.spec.sinks[0].register, Some(true));
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
