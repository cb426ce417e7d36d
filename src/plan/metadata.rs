//! What a component's image says about itself in `/metadata.json` (upstream's convention):
//! its role, the events it consumes and produces, and how `config:` keys map to environment
//! variables. Applied to a plan once the images are known to be present (the engine reads
//! the files: `crate::metadata`); the plan stays free of the engine.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{config, ComponentPlan, PlanError, Role, RunPlan};
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
}

/// One entry of `config_schema`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigField {
    #[serde(default)]
    pub env: Option<String>,
}

impl ComponentMetadata {
    /// Parses the file's text; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<ComponentMetadata, String> {
        serde_json::from_str(text).map_err(|e| format!("/metadata.json is not valid: {e}"))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Naming;
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
