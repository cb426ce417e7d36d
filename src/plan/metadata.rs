//! What a component's image says about itself in `/metadata.json` (upstream's convention):
//! its role, the events it consumes and produces, and how `config:` keys map to environment
//! variables. Applied to a plan once the images are known to be present (the engine reads
//! the files: `crate::metadata`); the plan stays free of the engine.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::resolve::publish;
use super::{config, process, ComponentPlan, PlanError, Role, RunPlan};
use crate::contract::HEALTH_PORT;
use crate::spec;

/// `/metadata.json` of an image; fields this flowctl does not use are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentMetadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// `source`, `processor` or `sink`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The event types it emits; upstream's current images name them `output_types`.
    #[serde(default, alias = "output_types")]
    pub produces: Vec<String>,
    /// The event types it reads; upstream's current images name them `input_types`.
    #[serde(default, alias = "input_types")]
    pub consumes: Vec<String>,
    /// Config key → environment variable.
    #[serde(default)]
    pub env_mapping: BTreeMap<String, String>,
    /// Config key → its description; with a schema, unknown keys are errors.
    #[serde(default)]
    pub config_schema: BTreeMap<String, ConfigField>,
    /// The file names its event types `input_types`/`output_types`, as upstream's current
    /// (flowctl.v1) images write it.
    #[serde(skip)]
    pub current_generation: bool,
}

/// One entry of `config_schema`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigField {
    #[serde(default)]
    pub env: Option<String>,
    /// Its default, as the image's own code uses it (`":50051"`, `8088`).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl ComponentMetadata {
    /// Parses the file's text; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<ComponentMetadata, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("/metadata.json is not valid: {e}"))?;
        let current_generation = ["input_types", "output_types"]
            .iter()
            .any(|key| value.get(key).is_some());
        let mut metadata: ComponentMetadata = serde_json::from_value(value)
            .map_err(|e| format!("/metadata.json is not valid: {e}"))?;
        metadata.current_generation = current_generation;
        Ok(metadata)
    }

    /// The default of the schema entry whose variable is one of `variables` (first match
    /// wins), as a port.
    fn default_port(&self, variables: &[&str]) -> Option<u16> {
        variables.iter().find_map(|variable| {
            let field = self
                .config_schema
                .values()
                .find(|f| f.env.as_deref() == Some(*variable))?;
            match field.default.as_ref()? {
                serde_json::Value::String(text) => process::parse_port(text),
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            }
        })
    }

    /// Config key → variable: `config_schema`'s `env`, then `env_mapping`.
    fn mapping(&self) -> BTreeMap<String, String> {
        let mut mapping = self.env_mapping.clone();
        for (key, field) in &self.config_schema {
            if let Some(env) = &field.env {
                mapping.insert(key.clone(), env.clone());
            }
        }
        mapping
    }
}

impl RunPlan {
    /// Applies each component's image metadata (by image reference; images without one
    /// keep the defaults): config mapped to the variables the image names, unknown config
    /// keys refused where the image has a schema, the role checked, event types filled in
    /// and checked along every input. Every problem is reported at once.
    pub fn apply_metadata(
        &mut self,
        metadata: &BTreeMap<String, ComponentMetadata>,
    ) -> Result<(), PlanError> {
        let mut errors = Vec::new();
        for component in &mut self.components {
            let Some(meta) = metadata.get(&component.image) else {
                continue;
            };
            let at = format!("component `{}`", component.file_id());
            apply_to_component(component, meta, &mut errors, &at);
        }
        for consumer in &self.components {
            for input in &consumer.inputs {
                let Some(producer) = self.component(input) else {
                    continue;
                };
                let (outputs, inputs) = (&producer.output_event_types, &consumer.input_event_types);
                if !outputs.is_empty()
                    && !inputs.is_empty()
                    && !outputs.iter().any(|o| inputs.contains(o))
                {
                    errors.push(format!(
                        "component `{}`: inputs: `{}` produces {} but `{}` consumes {}",
                        consumer.file_id(),
                        producer.file_id(),
                        outputs.join(", "),
                        consumer.file_id(),
                        inputs.join(", ")
                    ));
                }
            }
        }
        // flowctl dials a flowctl.v1 component's streaming inputs itself (the relay), so they
        // must speak flowctl.v1 too: a first-generation component's stream cannot be relayed.
        // An input without `grpc` (a server it uses, e.g. an S3 server) only orders the start.
        for consumer in self.components.iter().filter(|c| c.is_relayed()) {
            for input in &consumer.inputs {
                if self
                    .component(input)
                    .is_some_and(|c| c.grpc.is_some() && !c.is_relayed())
                {
                    errors.push(format!(
                        "component `{}`: inputs: `{input}` is not a flowctl.v1 component, and \
                         flowctl relays only between flowctl.v1 components",
                        consumer.file_id()
                    ));
                }
            }
        }
        // The reverse: what a flowctl.v1 component emits reaches only flowctl.v1 components
        // (the relay has nowhere else to deliver it), so an edge from one into a component
        // that is not would drain its events into nothing.
        for consumer in self.components.iter().filter(|c| !c.is_relayed()) {
            for input in &consumer.inputs {
                if self.component(input).is_some_and(ComponentPlan::is_relayed) {
                    errors.push(format!(
                        "component `{}`: inputs: `{input}` is a flowctl.v1 component, whose \
                         events flowctl relays, but `{}` serves no flowctl.v1 service, so \
                         nothing would deliver them to it: give it `grpc: {{service: \
                         flowctl.v1.ConsumerService (or ProcessorService), port: N}}`, or list \
                         `{input}` under `depends_on` if it only has to start first",
                        consumer.file_id(),
                        consumer.file_id()
                    ));
                }
            }
        }
        // Replicas of one component have the same problems: say each once.
        let mut seen = std::collections::BTreeSet::new();
        errors.retain(|e| seen.insert(e.clone()));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlanError { errors })
        }
    }
}

fn apply_to_component(
    component: &mut ComponentPlan,
    meta: &ComponentMetadata,
    errors: &mut Vec<String>,
    at: &str,
) {
    let image = &component.image;
    if let Some(kind) = &meta.kind {
        match Role::from_name(kind) {
            Some(role) if role != component.role => errors.push(format!(
                "{at}: type: the image `{image}` is a {role} (its /metadata.json), but the \
                 component is in spec.{}",
                component.role.list()
            )),
            _ => {}
        }
    }
    if !meta.config_schema.is_empty() {
        let known: Vec<&str> = meta.config_schema.keys().map(String::as_str).collect();
        for key in &component.own_config_keys {
            if !meta.config_schema.contains_key(key) {
                let hint = spec::nearest(key, &known)
                    .map(|best| format!("did you mean `{best}`? "))
                    .unwrap_or_default();
                errors.push(format!(
                    "{at}: config.{key}: the image `{image}` has no setting `{key}` ({hint}known: \
                     {})",
                    known.join(", ")
                ));
            }
        }
    }
    // Config written under the default names moves to the names the image asks for.
    for name in &component.config_env {
        component.env.remove(name);
    }
    component.config_env = config::apply(&component.config, &meta.mapping(), &mut component.env);
    if component.input_event_types.is_empty() {
        component.input_event_types = meta.consumes.clone();
    }
    if component.output_event_types.is_empty() {
        component.output_event_types = meta.produces.clone();
    }
    if meta.current_generation && component.grpc.is_none() && component.role != Role::Pipeline {
        current_generation_shape(component, meta, errors, at);
    }
}

/// An image of upstream's current generation (its /metadata.json says so) in a component that
/// declares no `grpc:`: a flowctl.v1 component of its role, as upstream's current files expect
/// (they never declare one), on the ports its env sets, else the defaults its metadata gives.
/// Without that, its events would be taken for a first-generation component's and never
/// relayed.
fn current_generation_shape(
    component: &mut ComponentPlan,
    meta: &ComponentMetadata,
    errors: &mut Vec<String>,
    at: &str,
) {
    let image = component.image.clone();
    let mut env = component.env.clone();
    let defaults = |variables: &[&str], env: &mut BTreeMap<String, String>| {
        if variables.iter().all(|v| !env.contains_key(*v)) {
            if let Some(port) = meta.default_port(variables) {
                env.insert(variables[0].to_string(), port.to_string());
            }
        }
    };
    defaults(&process::PORT_VARIABLES, &mut env);
    defaults(&[HEALTH_PORT], &mut env);
    let (mut grpc, mut health) = (None, component.health.clone());
    process::v1_shape(component.role, &env, &mut grpc, &mut health, errors);
    let Some(grpc) = grpc else {
        return;
    };
    if grpc.container_port == 0 {
        return errors.push(format!(
            "{at}: grpc: the image `{image}` is a flowctl.v1 {} (its /metadata.json), but              neither env GRPC_PORT/PORT nor its metadata say which port it serves: set PORT in              env, or declare `grpc: {{service: {}, port: N}}`",
            component.role,
            grpc.service.name()
        ));
    }
    if health.as_ref().is_some_and(|h| h.container_port == 0) {
        return errors.push(format!(
            "{at}: health_port: the image `{image}` is a flowctl.v1 {} (its /metadata.json),              but neither env HEALTH_PORT nor its metadata say where it serves /health: set              HEALTH_PORT in env",
            component.role
        ));
    }
    publish(&mut component.ports, grpc.container_port, "grpc");
    if let Some(h) = health.as_ref().filter(|h| h.path == "/health") {
        publish(&mut component.ports, h.container_port, "health");
        component
            .env
            .entry(HEALTH_PORT.into())
            .or_insert_with(|| h.container_port.to_string());
    }
    component.grpc = Some(grpc);
    component.health = health;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{GrpcService, HealthProtocol, Naming};
    use std::path::Path;

    fn plan(spec: &str) -> RunPlan {
        let text =
            format!("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: m}}\nspec:\n{spec}");
        let file = spec::parse(&text, "m.yaml").unwrap();
        RunPlan::build(&file, Path::new("."), &Naming::default()).unwrap()
    }

    /// Upstream's images without `grpc.service` in the file: the sink is not relayed, so the
    /// processor's events would go nowhere (the run used to hang): refused, naming both.
    #[test]
    fn a_flowctl_v1_component_feeding_one_that_is_not_is_refused() {
        let mut plan = plan(
            "  sources:\n    - {id: src, image: s, grpc: {port: 1, service: flowctl.v1.SourceService}}\n  \
             sinks:\n    - {id: sink, image: k, inputs: [src]}\n    - {id: later, image: k, \
             depends_on: [src]}\n",
        );
        let error = plan.apply_metadata(&BTreeMap::new()).unwrap_err();
        assert_eq!(error.errors.len(), 1, "{error}");
        assert!(
            error.errors[0].starts_with(
                "component `sink`: inputs: `src` is a flowctl.v1 component, whose events \
                 flowctl relays, but `sink` serves no flowctl.v1 service"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_flowctl_v1_component_fed_by_a_first_generation_stream_is_refused_before_anything_runs() {
        let mut mixed = plan(
            "  sources:\n    - {id: old, image: src, grpc: {port: 50052, service: raw_ledger_service.RawLedgerService}}\n  processors:\n    - {id: new, image: proc, inputs: [old], grpc: {port: 50051, service: flowctl.v1.ProcessorService}}\n",
        );
        let error = mixed
            .apply_metadata(&BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("component `new`: inputs: `old` is not a flowctl.v1 component"),
            "{error}"
        );
        // A server without `grpc` (an S3 server the source reads) only orders the start.
        let mut served = plan(
            "  sources:\n    - {id: s3, image: s3}\n    - {id: src, image: src, inputs: [s3], grpc: {port: 50052, service: flowctl.v1.SourceService}}\n",
        );
        served.apply_metadata(&BTreeMap::new()).unwrap();
    }

    /// Upstream's current images say what they are in /metadata.json (`input_types` /
    /// `output_types`); its current files declare no `grpc:` for them.
    #[test]
    fn upstreams_current_images_are_flowctl_v1_components_on_their_metadata_ports() {
        let source = r#"{"type": "source", "output_types": ["stellar.ledger.v1"], "input_types": [],
            "config_schema": {"grpc_port": {"env": "GRPC_PORT", "default": ":50052"},
                              "health_port": {"env": "HEALTH_PORT", "default": 8088}}}"#;
        let sink = r#"{"type": "sink", "input_types": ["stellar.ledger.v1"], "output_types": [],
            "config_schema": {"port": {"env": "PORT", "default": ":50053"}}}"#;
        let mut current = plan(
            "  sources:\n    - {id: src, image: up/source}\n  sinks:\n    - {id: out, image: up/sink, inputs: [src], env: {PORT: \":7000\"}}\n",
        );
        let metadata = BTreeMap::from([
            (
                "up/source".to_string(),
                ComponentMetadata::parse(source).unwrap(),
            ),
            (
                "up/sink".to_string(),
                ComponentMetadata::parse(sink).unwrap(),
            ),
        ]);
        current.apply_metadata(&metadata).unwrap();
        let src = current.component("src").unwrap();
        let grpc = src.grpc.as_ref().unwrap();
        assert_eq!(
            (grpc.service, grpc.container_port),
            (GrpcService::V1Source, 50052)
        );
        let health = src.health.as_ref().unwrap();
        assert_eq!(
            (health.container_port, health.path.as_str()),
            (8088, "/health")
        );
        let published: Vec<u16> = src.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(published, [50052, 8088]);
        assert_eq!(src.env["HEALTH_PORT"], "8088");
        // The file's env wins over the metadata's default; a sink is probed by gRPC health.
        let out = current.component("out").unwrap();
        let grpc = out.grpc.as_ref().unwrap();
        assert_eq!(
            (grpc.service, grpc.container_port),
            (GrpcService::V1Consumer, 7000)
        );
        assert_eq!(out.health.as_ref().unwrap().protocol, HealthProtocol::Grpc);

        // The first generation's names keep a component as it was.
        let mut old = plan("  sources:\n    - {id: src, image: old}\n");
        let metadata = BTreeMap::from([(
            "old".to_string(),
            ComponentMetadata::parse(r#"{"type": "source", "produces": ["x"]}"#).unwrap(),
        )]);
        old.apply_metadata(&metadata).unwrap();
        assert!(old.component("src").unwrap().grpc.is_none());

        // No port anywhere: said, with what to set.
        let mut unknown = plan("  sinks:\n    - {id: out, image: bare}\n");
        let metadata = BTreeMap::from([(
            "bare".to_string(),
            ComponentMetadata::parse(r#"{"type": "sink", "input_types": ["x"]}"#).unwrap(),
        )]);
        let error = unknown.apply_metadata(&metadata).unwrap_err().to_string();
        assert!(
            error.contains("component `out`: grpc: the image `bare` is a flowctl.v1 sink"),
            "{error}"
        );
    }

    const PROCESSOR: &str = r#"{"name": "p", "type": "processor",
        "consumes": ["raw"], "produces": ["events"],
        "env_mapping": {"workers": "TTP_WORKERS"},
        "config_schema": {"workers": {"env": "TTP_WORKERS"}, "network_passphrase": {"env": "NETWORK_PASSPHRASE"}}}"#;

    #[test]
    fn config_keys_map_to_the_variables_the_image_names() {
        let mut plan = plan(
            "  config: {log_level: debug}\n  sources:\n    - {id: s, image: src}\n  processors:\n    - id: p\n      image: proc\n      inputs: [s]\n      config: {workers: 2, network_passphrase: x}\n      env: {NETWORK_PASSPHRASE: explicit}\n",
        );
        assert_eq!(plan.component("p").unwrap().env["WORKERS"], "2");
        let metadata = BTreeMap::from([(
            "proc".to_string(),
            ComponentMetadata::parse(PROCESSOR).unwrap(),
        )]);
        plan.apply_metadata(&metadata).unwrap();
        let p = plan.component("p").unwrap();
        assert_eq!(p.env["TTP_WORKERS"], "2");
        assert!(!p.env.contains_key("WORKERS"));
        assert_eq!(p.env["NETWORK_PASSPHRASE"], "explicit");
        // spec.config keys are not checked against a component's schema.
        assert_eq!(p.env["LOG_LEVEL"], "debug");
        assert_eq!(p.input_event_types, ["raw"]);
        assert_eq!(p.output_event_types, ["events"]);
    }

    #[test]
    fn unknown_keys_roles_and_event_types_are_refused() {
        let mut plan = plan(
            "  sources:\n    - {id: s, image: proc, output_event_types: [other]}\n  sinks:\n    - id: k\n      image: proc\n      inputs: [s]\n      config: {worker: 2}\n",
        );
        let metadata = BTreeMap::from([(
            "proc".to_string(),
            ComponentMetadata::parse(PROCESSOR).unwrap(),
        )]);
        let err = plan.apply_metadata(&metadata).unwrap_err().to_string();
        for expected in [
            "component `s`: type: the image `proc` is a processor (its /metadata.json), but the component is in spec.sources",
            "component `k`: config.worker: the image `proc` has no setting `worker` (did you mean `workers`?",
            "component `k`: inputs: `s` produces other but `k` consumes raw",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        assert!(ComponentMetadata::parse("{").is_err());
    }

    #[test]
    fn upstreams_names_of_the_event_types_are_read() {
        let upstream = ComponentMetadata::parse(
            r#"{"type": "processor", "input_types": ["stellar.ledger.v1"],
                "output_types": ["stellar.ledger.batch.v1"]}"#,
        )
        .unwrap();
        assert_eq!(upstream.consumes, ["stellar.ledger.v1"]);
        assert_eq!(upstream.produces, ["stellar.ledger.batch.v1"]);
        // The shipped metadata of our component under upstream's name uses them.
        let ours = ComponentMetadata::parse(include_str!(
            "../../examples/stellar/v1/metadata/raw-ledger-source.json"
        ))
        .unwrap();
        assert_eq!(ours.produces, ["stellar.ledger.v1"]);
        assert!(ours.consumes.is_empty());
    }
}
