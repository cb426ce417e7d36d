//! `replicas: N`: N containers of one component. After every component is resolved, a
//! replicated component becomes N components `<id>-1` … `<id>-N` (own container, health check,
//! labels, status row, `COMPONENT_ID`) that all answer to `<id>` on the pipeline network, so
//! the engine's DNS spreads the connections of whoever dials `<id>` over them, as
//! `docker compose --scale` does. An input naming `<id>` waits for every replica. Translations
//! fold the replicas back into one service with a count ([`RunPlan::folded`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{is_valid_name, ComponentPlan, RunPlan};

/// The most replicas one component may ask for: each is a container on this machine.
pub const MAX_REPLICAS: u32 = 64;

/// Checks `replicas:` of one component (`None` when absent); the count to run.
pub(super) fn count(
    replicas: Option<u32>,
    component: &ComponentPlan,
    problems: &mut Vec<String>,
) -> u32 {
    let Some(count) = replicas else {
        return 1;
    };
    if !(1..=MAX_REPLICAS).contains(&count) {
        problems.push(format!(
            "replicas: {count} must be a whole number from 1 to {MAX_REPLICAS}"
        ));
        return 1;
    }
    if count == 1 {
        return 1;
    }
    if let Some(host_port) = component.ports.iter().find_map(|p| p.host_port) {
        problems.push(format!(
            "replicas: {count} replicas cannot share the pinned hostPort {host_port} (leave \
             hostPort out to let the engine pick one per replica)"
        ));
    }
    if let Some(grpc) = component.grpc.as_ref().filter(|_| component.is_relayed()) {
        problems.push(format!(
            "replicas: {count}: flowctl relays {} one stream per component, so a relayed \
             flowctl.v1 component runs once",
            grpc.service
        ));
    }
    count
}

/// Expands every component whose `replicas` is above 1 and points inputs at every replica;
/// the problems are the replica ids that are not valid names or clash with another id.
pub(super) fn expand(
    components: Vec<ComponentPlan>,
    errors: &mut Vec<String>,
) -> Vec<ComponentPlan> {
    let declared: BTreeSet<String> = components.iter().map(|c| c.id.clone()).collect();
    let mut replica_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut expanded = Vec::with_capacity(components.len());
    for component in components {
        if component.replicas <= 1 {
            expanded.push(component);
            continue;
        }
        let ids: Vec<String> = (1..=component.replicas)
            .map(|n| format!("{}-{n}", component.id))
            .collect();
        for id in &ids {
            if declared.contains(id) {
                errors.push(format!(
                    "component `{}`: replicas: replica `{id}` has the id of another component",
                    component.id
                ));
            } else if !is_valid_name(id) {
                errors.push(format!(
                    "component `{}`: replicas: replica id `{id}` is longer than 63 characters; \
                     shorten the id",
                    component.id
                ));
            }
        }
        for (n, id) in (1..).zip(&ids) {
            let mut replica = component.clone();
            replica.id = id.clone();
            replica.container_name = format!("{}-{n}", component.container_name);
            replica.replica_of = Some(component.id.clone());
            expanded.push(replica);
        }
        replica_ids.insert(component.id.clone(), ids);
    }
    let to_replicas = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .flat_map(|id| match replica_ids.get(id) {
                Some(replicas) => replicas.clone(),
                None => vec![id.clone()],
            })
            .collect()
    };
    for component in &mut expanded {
        component.inputs = to_replicas(&component.inputs);
        component.depends_on = to_replicas(&component.depends_on);
    }
    expanded
}

impl ComponentPlan {
    /// The component's id in the file: the same for every replica.
    pub fn file_id(&self) -> &str {
        self.replica_of.as_deref().unwrap_or(&self.id)
    }
}

impl RunPlan {
    /// The plan as the file declares it: each replicated component once, under its file id and
    /// container name, with `replicas` saying how many; inputs name file ids. For translations,
    /// which hand the count to Compose or Kubernetes.
    pub fn folded(&self) -> RunPlan {
        let mut components: Vec<ComponentPlan> = Vec::new();
        for component in &self.components {
            if components.iter().any(|c| c.id == component.file_id()) {
                continue;
            }
            let mut folded = component.clone();
            if let Some(of) = folded.replica_of.take() {
                let suffix = format!("-{}", component.id.rsplit('-').next().unwrap_or_default());
                folded.container_name = folded
                    .container_name
                    .strip_suffix(&suffix)
                    .unwrap_or(&folded.container_name)
                    .to_string();
                folded.id = of;
            }
            folded.inputs = self.file_ids(&folded.inputs);
            folded.depends_on = self.file_ids(&folded.depends_on);
            components.push(folded);
        }
        RunPlan {
            components,
            ..self.clone()
        }
    }

    /// `ids` with each replica replaced by its component's file id, each once.
    fn file_ids(&self, ids: &[String]) -> Vec<String> {
        let mut folded: Vec<String> = Vec::new();
        for id in ids {
            let id = self.component(id).map_or(id.as_str(), |c| c.file_id());
            if !folded.iter().any(|f| f == id) {
                folded.push(id.to_string());
            }
        }
        folded
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::plan::{Naming, RunPlan};
    use crate::spec;

    fn plan(components: &str) -> Result<RunPlan, crate::plan::PlanError> {
        let yaml = format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: demo}}\nspec:\n{components}"
        );
        let file = spec::parse(&yaml, "test.yaml").unwrap();
        RunPlan::build(&file, Path::new("."), &Naming::default())
    }

    #[test]
    fn replicas_become_components_that_inputs_wait_for() {
        let plan = plan(
            "  sources:\n    - {id: src, image: img}\n  processors:\n    - {id: proc, image: img, inputs: [src], replicas: 3}\n  sinks:\n    - {id: sink, image: img, inputs: [proc]}\n",
        )
        .unwrap();
        let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["src", "proc-1", "proc-2", "proc-3", "sink"]);
        let sink = plan.component("sink").unwrap();
        assert_eq!(sink.inputs, ["proc-1", "proc-2", "proc-3"]);
        assert_eq!(sink.depth, 2);
        let second = plan.component("proc-2").unwrap();
        assert_eq!(second.file_id(), "proc");
        assert_eq!(second.container_name, "proc-2");
        assert_eq!(second.depth, 1);
        assert_eq!(plan.levels()[1].len(), 3);

        let folded = plan.folded();
        let ids: Vec<&str> = folded.components.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["src", "proc", "sink"]);
        let proc = folded.component("proc").unwrap();
        assert_eq!((proc.replicas, proc.container_name.as_str()), (3, "proc"));
        assert_eq!(folded.component("sink").unwrap().inputs, ["proc"]);
    }

    #[test]
    fn replicas_that_cannot_run_are_named() {
        let err = plan(
            "  sources:\n    - {id: a, image: img, replicas: 0}\n    - {id: b, image: img, replicas: 2, ports: [{containerPort: 80, hostPort: 8080}]}\n    - {id: c, image: img, replicas: 2, grpc: {port: 1, service: flowctl.v1.SourceService}}\n    - {id: d, image: img, replicas: 2}\n    - {id: d-2, image: img}\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "component `a`: replicas: 0 must be a whole number from 1 to 64",
            "component `b`: replicas: 2 replicas cannot share the pinned hostPort 8080",
            "component `c`: replicas: 2: flowctl relays flowctl.v1.SourceService",
            "component `d`: replicas: replica `d-2` has the id of another component",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }
}
