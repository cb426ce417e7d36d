//! One Swarm service per component of the file: its `service create` arguments, built from the
//! plan alone (a pure function, tested without an engine). A component with `replicas: N` is
//! one service with N replicas; its tasks answer to the component's id on the run's overlay
//! network, which resolves to every task's address (`--endpoint-mode dnsrr`: it needs no IPVS,
//! which some kernels lack, and behaves the same on every cluster). Ports are published in host
//! mode, on the node each task runs on, so flowctl reaches them without the routing mesh.

use std::collections::BTreeMap;
use std::path::Path;

use crate::labels;
use crate::plan::{ComponentPlan, RestartPolicy, RunPlan};

/// What one service runs: the file's component, with its replicas.
#[derive(Debug, Clone)]
pub struct ServicePlan<'a> {
    /// The component as written in the file (its first replica, for `replicas: N`).
    pub component: &'a ComponentPlan,
    /// The file's id: the network alias and the `io.flowctl.component` label.
    pub id: String,
    /// The service's name: the component's container name (with `--project`, prefixed).
    pub name: String,
}

/// The services of `plan`, in start order: replicas of one component become one service.
pub fn services_of(plan: &RunPlan) -> Vec<ServicePlan<'_>> {
    let mut services: Vec<ServicePlan> = Vec::new();
    for component in &plan.components {
        let id = component.replica_of.as_deref().unwrap_or(&component.id);
        if services.iter().any(|s| s.id == id) {
            continue;
        }
        let name = match &component.replica_of {
            // `<name>-1` is the first replica's container name.
            Some(_) => component
                .container_name
                .strip_suffix("-1")
                .unwrap_or(&component.container_name)
                .to_string(),
            None => component.container_name.clone(),
        };
        services.push(ServicePlan {
            component,
            id: id.to_string(),
            name,
        });
    }
    services
}

/// The arguments after `service create` for `service`, on `network`, with `labels` (the run's),
/// its environment in `env_file`, and `hosts` (`NAME:ADDRESS`, the tasks already running) in
/// its `/etc/hosts`.
pub fn create_args(
    service: &ServicePlan,
    network: &str,
    labels: &BTreeMap<String, String>,
    env_file: &Path,
    hosts: &[String],
) -> Vec<String> {
    let component = service.component;
    let mut args: Vec<String> = vec!["--name".into(), service.name.clone()];
    let mut all_labels = labels.clone();
    all_labels.insert(labels::COMPONENT.into(), service.id.clone());
    all_labels.insert(labels::ROLE.into(), component.role.as_str().into());
    for (key, value) in &all_labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
        args.push("--container-label".into());
        args.push(format!("{key}={value}"));
    }
    args.push("--network".into());
    args.push(format!("name={network},alias={}", service.id));
    args.extend(["--endpoint-mode".into(), "dnsrr".into()]);
    for host in hosts {
        args.extend(["--host".into(), host.clone()]);
    }
    args.extend(["--replicas".into(), component.replicas.to_string()]);
    match component.restart {
        RestartPolicy::Never => args.extend(["--restart-condition".into(), "none".into()]),
        policy => args.extend([
            "--restart-condition".into(),
            "on-failure".into(),
            "--restart-max-attempts".into(),
            policy.max_restarts().to_string(),
        ]),
    }
    args.push("--stop-grace-period".into());
    args.push(format!("{}ms", component.stop_grace.as_millis()));
    args.push("--env-file".into());
    args.push(env_file.display().to_string());
    for volume in &component.volumes {
        let mut mount = format!(
            "type=bind,source={},target={}",
            volume.host_path.display(),
            volume.container_path
        );
        if volume.readonly {
            mount.push_str(",readonly");
        }
        args.push("--mount".into());
        args.push(mount);
    }
    for port in &component.ports {
        let mut publish = format!(
            "mode=host,target={},protocol={}",
            port.container_port,
            port.protocol.as_str()
        );
        if let Some(host) = port.host_port {
            publish.push_str(&format!(",published={host}"));
        }
        args.push("--publish".into());
        args.push(publish);
    }
    for constraint in &component.placement.constraints {
        args.push("--constraint".into());
        args.push(constraint.clone());
    }
    for spread in &component.placement.spread {
        args.push("--placement-pref".into());
        args.push(format!("spread={spread}"));
    }
    let resources = &component.resources;
    if let Some(cpu) = &resources.cpu_limit {
        args.extend(["--limit-cpu".into(), cpu.cores()]);
    }
    if let Some(memory) = &resources.memory_limit {
        args.extend(["--limit-memory".into(), memory.bytes.to_string()]);
    }
    if let Some(cpu) = &resources.cpu_request {
        args.extend(["--reserve-cpu".into(), cpu.cores()]);
    }
    if let Some(memory) = &resources.memory_request {
        args.extend(["--reserve-memory".into(), memory.bytes.to_string()]);
    }
    if let Some(entrypoint) = &component.entrypoint {
        args.extend(["--entrypoint".into(), entrypoint.clone()]);
    }
    // The image as the node has it: no registry is asked for a digest first (one may not be
    // reachable; `--pull` and `--registry` decide where images come from).
    args.push("--no-resolve-image".into());
    args.push(component.image.clone());
    args.extend(component.args.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, Naming};

    fn plan_of(yaml: &str) -> RunPlan {
        let dir = std::env::temp_dir().join(format!("flowctl-swarm-svc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lake")).unwrap();
        let file = dir.join("p.yaml");
        std::fs::write(&file, yaml).unwrap();
        let plan = plan::load(&file, &Naming::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        plan
    }

    const PIPELINE: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  sources:\n    - id: src\n      image: img/src:1\n      volumes: [{host_path: lake, container_path: /data}]\n      ports: [{containerPort: 50052}]\n      health_port: 8088\n      placement:\n        constraints: ['node.labels.lab == n2']\n        preferences: [{spread: node.labels.zone}]\n  processors:\n    - id: proc\n      image: img/proc:1\n      inputs: [src]\n      replicas: 3\n      restart: on-failure:2\n  sinks:\n    - id: sink\n      image: img/sink:1\n      inputs: [proc]\n      args: ['1', '2']\n";

    #[test]
    fn replicas_are_one_service_and_every_field_is_an_argument() {
        let plan = plan_of(PIPELINE);
        let services = services_of(&plan);
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["src", "proc", "sink"]);
        let labels = BTreeMap::from([("io.flowctl.run".to_string(), "r1".to_string())]);
        let args = create_args(&services[0], "net", &labels, Path::new("/tmp/e.env"), &[]);
        let joined = args.join(" ");
        for expected in [
            "--name src",
            "--label io.flowctl.run=r1",
            "--container-label io.flowctl.component=src",
            "--label io.flowctl.role=source",
            "--network name=net,alias=src",
            "--endpoint-mode dnsrr",
            "--replicas 1",
            "--restart-condition none",
            "--env-file /tmp/e.env",
            "readonly",
            "--publish mode=host,target=50052,protocol=tcp",
            "--publish mode=host,target=8088,protocol=tcp",
            "--constraint node.labels.lab==n2",
            "--placement-pref spread=node.labels.zone",
            "--no-resolve-image img/src:1",
        ] {
            assert!(joined.contains(expected), "{expected} in {joined}");
        }
        assert!(args.contains(&"--mount".to_string()));
        let hosts = ["src:10.0.1.5".to_string(), "src:10.0.1.6".to_string()];
        let proc_args =
            create_args(&services[1], "net", &labels, Path::new("/e"), &hosts).join(" ");
        assert!(
            proc_args.contains("--host src:10.0.1.5 --host src:10.0.1.6"),
            "{proc_args}"
        );
        assert!(!joined.contains("--host"), "{joined}");
        assert!(proc_args.contains("--replicas 3"), "{proc_args}");
        assert!(proc_args.contains("--network name=net,alias=proc"));
        assert!(proc_args.contains("--restart-condition on-failure --restart-max-attempts 2"));
        let sink_args = create_args(&services[2], "net", &labels, Path::new("/e"), &[]);
        assert_eq!(&sink_args[sink_args.len() - 3..], ["img/sink:1", "1", "2"]);
    }
}
