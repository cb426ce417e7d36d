//! A pipeline as Kubernetes manifests.
//!
//! What maps to what:
//! - sources and processors → a Deployment (`replicas` of the file, `Recreate`); sinks and
//!   `spec.pipelines` jobs → a Job (`replicas` pods that must each complete), because
//!   flowctl treats a sink that exits 0 as done, where a Deployment would restart it and
//!   consume the range again;
//! - each component with ports → a Service named by the component id, so the addresses the
//!   file uses (`ttp-processor:50051`) resolve the same way in the cluster;
//! - the health check → a readiness probe (`httpGet`), so a Service only sends traffic to a
//!   ready component. Start order is readiness plus restarts: a component whose input is not
//!   ready yet retries or exits non-zero and Kubernetes restarts it (Deployments always, Jobs
//!   `OnFailure`), which converges on the same order `flowctl run` enforces up front;
//! - secrets → references to Kubernetes Secrets the user creates (the header of each file
//!   gives the `kubectl create secret` command): a file mounted read-only with `subPath`, or
//!   `valueFrom.secretKeyRef`; no secret content is ever written to a manifest;
//! - host-path volumes → PersistentVolumeClaims the user fills (a host folder cannot be
//!   shipped into a cluster), mounted read-only where the file says so;
//! - the control plane → a `flowctl-control-plane` Deployment and Service running
//!   `flowctl control-plane`, which `FLOWCTL_ENDPOINT` points at.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};

use super::{
    component_env, control_plane_args, flowctl_labels, map, n, render, s, strings, OutputFile,
    TranslateOptions, CONTROL_PLANE_PORT, CONTROL_PLANE_SERVICE,
};
use crate::plan::{
    ComponentPlan, HealthProtocol, PortPlan, Protocol, Role, RunPlan, SecretPlan, SecretTarget,
};

/// Storage requested for a data lake claim: a placeholder the note asks the user to size.
const CLAIM_STORAGE: &str = "1Gi";
/// Readiness probe period; Kubernetes' minimum is 1 s.
const PROBE_PERIOD_SECONDS: u64 = 2;
/// Restarts of a failing sink before its Job fails (Kubernetes' default).
const JOB_BACKOFF_LIMIT: u64 = 6;

/// The manifests of `plan`: the volume claims (if any), the control plane (unless disabled),
/// then one file per component in start order. File names sort in apply order.
pub fn translate(plan: &RunPlan, options: &TranslateOptions) -> Result<Vec<OutputFile>> {
    check_names(plan)?;
    let claims = claims(plan);
    let mut files = Vec::new();
    let mut index = 0;
    let mut next_name = |stem: &str| {
        let name = format!("{index:02}-{stem}.yaml");
        index += 1;
        name
    };

    if !claims.is_empty() {
        let mut header = file_header(plan, options, "the data lake volume claims");
        header.extend([
            String::new(),
            "NOTE: flowctl cannot copy a host folder into a cluster. Each claim below stands for"
                .into(),
            "a host path of the pipeline file (annotation io.flowctl.host-path): before the".into(),
            "pipeline starts, fill it with that folder's contents (e.g. `kubectl cp` into a pod"
                .into(),
            "mounting it, or bind it to a PersistentVolume that already holds the data), and"
                .into(),
            format!("resize the {CLAIM_STORAGE} request to fit."),
        ]);
        let documents: Vec<Value> = claims.iter().map(|c| claim(plan, c)).collect();
        files.push(OutputFile {
            name: next_name("volumes"),
            text: render_documents(&header, &documents)?,
        });
    }

    if let Some(image) = &options.control_plane_image {
        let labels = flowctl_labels(plan, None);
        let labels = with_recommended(plan, CONTROL_PLANE_SERVICE, "control-plane", labels);
        let container = map([
            ("name", s(CONTROL_PLANE_SERVICE)),
            ("image", s(image.as_str())),
            ("args", strings(&control_plane_args(plan, options))),
            (
                "ports",
                Value::Sequence(vec![map([
                    ("name", s("grpc")),
                    ("containerPort", n(CONTROL_PLANE_PORT)),
                    ("protocol", s("TCP")),
                ])]),
            ),
            (
                "readinessProbe",
                map([
                    ("tcpSocket", map([("port", n(CONTROL_PLANE_PORT))])),
                    ("periodSeconds", n(PROBE_PERIOD_SECONDS)),
                ]),
            ),
        ]);
        let pod = map([
            ("enableServiceLinks", Value::Bool(false)),
            ("containers", Value::Sequence(vec![container])),
        ]);
        let ports = [PortPlan {
            name: Some("grpc".into()),
            container_port: CONTROL_PLANE_PORT,
            host_port: None,
            protocol: Protocol::Tcp,
        }];
        let documents = [
            deployment(plan, CONTROL_PLANE_SERVICE, 1, &labels, pod),
            service(plan, CONTROL_PLANE_SERVICE, &labels, &ports),
        ];
        let mut header = file_header(plan, options, "the flowctl control plane");
        header.push(format!(
            "Components register here: FLOWCTL_ENDPOINT={CONTROL_PLANE_SERVICE}:\
             {CONTROL_PLANE_PORT}. The image runs `flowctl control-plane`; build it with"
        ));
        header.push(
            "scripts/build-images.sh and push it (or `kind load docker-image`) where the cluster \
             pulls from."
                .into(),
        );
        files.push(OutputFile {
            name: next_name(CONTROL_PLANE_SERVICE),
            text: render_documents(&header, &documents)?,
        });
    }

    for component in &plan.components {
        let labels = flowctl_labels(plan, Some(component));
        let labels = with_recommended(plan, &component.id, component.role.as_str(), labels);
        let pod = pod_spec(component, options, &claims);
        let mut documents = vec![match component.role {
            Role::Sink | Role::Pipeline => job(&component.id, component.replicas, &labels, pod),
            Role::Source | Role::Processor => {
                deployment(plan, &component.id, component.replicas, &labels, pod)
            }
        }];
        if !component.ports.is_empty() {
            documents.push(service(plan, &component.id, &labels, &component.ports));
        }
        let what = format!("{} `{}`", component.role.as_str(), component.id);
        let mut header = file_header(plan, options, &what);
        let mut after = Vec::new();
        if !component.inputs.is_empty() {
            after.push(format!("Inputs: {}.", component.inputs.join(", ")));
        }
        if !component.depends_on.is_empty() {
            after.push(format!("Depends on: {}.", component.depends_on.join(", ")));
        }
        if !after.is_empty() {
            header.push(format!(
                "{} It may start before they are ready; it retries or exits and is restarted.",
                after.join(" ")
            ));
        }
        let commands = secret_commands(component);
        if !commands.is_empty() {
            header.push(
                "Its secrets are not in this file; create them in the namespace first:".into(),
            );
            header.extend(commands);
        }
        if component.ports.iter().any(|p| p.host_port.is_some()) {
            header.push(
                "Pinned host ports are not carried over: reach the Service, or `kubectl \
                 port-forward`."
                    .into(),
            );
        }
        files.push(OutputFile {
            name: next_name(&component.id),
            text: render_documents(&header, &documents)?,
        });
    }
    Ok(files)
}

fn file_header(plan: &RunPlan, options: &TranslateOptions, what: &str) -> Vec<String> {
    vec![
        format!(
            "Pipeline `{}` for Kubernetes: {what}. Generated by `flowctl translate --to \
             kubernetes`",
            plan.pipeline
        ),
        format!(
            "from {}; regenerate rather than edit. Apply with `kubectl apply -f` on the folder \
             or file.",
            options.source_name
        ),
    ]
}

fn render_documents(header: &[String], documents: &[Value]) -> Result<String> {
    let mut text = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i == 0 {
            text.push_str(&render(header, document)?);
        } else {
            text.push_str("---\n");
            text.push_str(&render(&[], document)?);
        }
    }
    Ok(text)
}

/// Component ids become Service names (DNS-1035 labels) and the pipeline name a label value;
/// refuse what Kubernetes would, naming the component and the field.
fn check_names(plan: &RunPlan) -> Result<()> {
    let mut problems = Vec::new();
    for component in &plan.components {
        if !is_dns_label(&component.id) {
            problems.push(format!(
                "component `{}`: id: Kubernetes needs a Service name of at most 63 lower-case \
                 letters, digits and `-`, starting with a letter and ending with a letter or \
                 digit (the id is the component's DNS name); rename it",
                component.id
            ));
        }
    }
    if !is_label_value(&plan.pipeline) {
        problems.push(format!(
            "metadata.name: `{}` must end with a letter or digit to be a Kubernetes label value",
            plan.pipeline
        ));
    }
    match problems.as_slice() {
        [] => Ok(()),
        [one] => bail!("{one}"),
        many => bail!("{} problems:\n  - {}", many.len(), many.join("\n  - ")),
    }
}

fn is_dns_label(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The app.kubernetes.io labels, then flowctl's.
fn with_recommended(plan: &RunPlan, name: &str, role: &str, ours: Mapping) -> Mapping {
    let mut labels = Mapping::new();
    labels.insert(s("app.kubernetes.io/name"), s(name));
    labels.insert(s("app.kubernetes.io/component"), s(role));
    labels.insert(s("app.kubernetes.io/part-of"), s(plan.pipeline.as_str()));
    labels.insert(s("app.kubernetes.io/managed-by"), s("flowctl"));
    labels.extend(ours);
    labels
}

/// Pods are selected by pipeline and component: stable, and unique within a namespace.
fn selector(plan: &RunPlan, name: &str) -> Value {
    map([
        (crate::labels::PIPELINE, s(plan.pipeline.as_str())),
        (crate::labels::COMPONENT, s(name)),
    ])
}

fn metadata(name: &str, labels: &Mapping) -> Value {
    map([
        ("name", s(name)),
        ("labels", Value::Mapping(labels.clone())),
    ])
}

fn template(labels: &Mapping, pod: Value) -> Value {
    map([
        (
            "metadata",
            map([("labels", Value::Mapping(labels.clone()))]),
        ),
        ("spec", pod),
    ])
}

fn deployment(plan: &RunPlan, name: &str, replicas: u32, labels: &Mapping, pod: Value) -> Value {
    map([
        ("apiVersion", s("apps/v1")),
        ("kind", s("Deployment")),
        ("metadata", metadata(name, labels)),
        (
            "spec",
            map([
                ("replicas", n(replicas)),
                // Never more copies than asked for, even during an update: an extra source
                // would duplicate the stream.
                ("strategy", map([("type", s("Recreate"))])),
                ("selector", map([("matchLabels", selector(plan, name))])),
                ("template", template(labels, pod)),
            ]),
        ),
    ])
}

/// A Job: `replicas` pods run side by side and each must complete, as each replica of a sink
/// must finish under `flowctl run`.
fn job(name: &str, replicas: u32, labels: &Mapping, mut pod: Value) -> Value {
    if let Value::Mapping(spec) = &mut pod {
        spec.insert(s("restartPolicy"), s("OnFailure"));
    }
    let mut spec = Mapping::new();
    if replicas > 1 {
        spec.insert(s("parallelism"), n(replicas));
        spec.insert(s("completions"), n(replicas));
    }
    spec.insert(s("backoffLimit"), n(JOB_BACKOFF_LIMIT));
    spec.insert(s("template"), template(labels, pod));
    map([
        ("apiVersion", s("batch/v1")),
        ("kind", s("Job")),
        ("metadata", metadata(name, labels)),
        ("spec", Value::Mapping(spec)),
    ])
}

fn service(plan: &RunPlan, name: &str, labels: &Mapping, ports: &[PortPlan]) -> Value {
    let names = port_names(ports);
    let ports = ports
        .iter()
        .zip(&names)
        .map(|(port, port_name)| {
            map([
                ("name", s(port_name.as_str())),
                ("port", n(port.container_port)),
                ("targetPort", n(port.container_port)),
                ("protocol", s(port.protocol.as_str().to_ascii_uppercase())),
            ])
        })
        .collect();
    map([
        ("apiVersion", s("v1")),
        ("kind", s("Service")),
        ("metadata", metadata(name, labels)),
        (
            "spec",
            map([
                ("selector", selector(plan, name)),
                ("ports", Value::Sequence(ports)),
            ]),
        ),
    ])
}

fn pod_spec(component: &ComponentPlan, options: &TranslateOptions, claims: &[Claim]) -> Value {
    let mut container = Mapping::new();
    let mut put = |key: &str, value: Value| {
        container.insert(s(key), value);
    };
    put("name", s(component.id.as_str()));
    put("image", s(component.image.as_str()));
    if let Some(entrypoint) = &component.entrypoint {
        put("command", strings(&[entrypoint]));
    }
    if !component.args.is_empty() {
        put("args", strings(&component.args));
    }
    let secret_env = component
        .secrets
        .iter()
        .filter_map(|secret| match &secret.target {
            SecretTarget::Env(var) => Some(map([
                ("name", s(var.as_str())),
                (
                    "valueFrom",
                    map([(
                        "secretKeyRef",
                        map([
                            ("name", s(secret_name(secret))),
                            ("key", s(secret_file_key(secret))),
                        ]),
                    )]),
                ),
            ])),
            SecretTarget::File(_) => None,
        });
    let env = component_env(component, options)
        .into_iter()
        .map(|(name, value)| map([("name", s(name)), ("value", s(value))]))
        .chain(secret_env)
        .collect();
    put("env", Value::Sequence(env));
    if !component.ports.is_empty() {
        let names = port_names(&component.ports);
        let ports = component
            .ports
            .iter()
            .zip(&names)
            .map(|(port, name)| {
                map([
                    ("name", s(name.as_str())),
                    ("containerPort", n(port.container_port)),
                    ("protocol", s(port.protocol.as_str().to_ascii_uppercase())),
                ])
            })
            .collect();
        put("ports", Value::Sequence(ports));
    }
    if !component.resources.is_empty() {
        put("resources", kubernetes_resources(&component.resources));
    }
    if let Some(health) = &component.health {
        // Failing readiness never kills a pod, so the threshold only decides how quickly a
        // component that stops answering is taken out of its Service.
        let probe = match health.protocol {
            HealthProtocol::Http => (
                "httpGet",
                map([
                    ("path", s(health.path.as_str())),
                    ("port", n(health.container_port)),
                ]),
            ),
            HealthProtocol::Grpc => ("grpc", map([("port", n(health.container_port))])),
        };
        put(
            "readinessProbe",
            map([
                probe,
                ("periodSeconds", n(PROBE_PERIOD_SECONDS)),
                ("timeoutSeconds", n(3u64)),
                ("failureThreshold", n(3u64)),
            ]),
        );
    }
    let mut pod_volumes: Vec<&Claim> = Vec::new();
    let mut mounts: Vec<Value> = component
        .volumes
        .iter()
        .filter_map(|volume| {
            let claim = claims.iter().find(|c| c.host_path == volume.host_path)?;
            if !pod_volumes.iter().any(|c| c.name == claim.name) {
                pod_volumes.push(claim);
            }
            Some(map([
                ("name", s(claim.name.as_str())),
                ("mountPath", s(volume.container_path.as_str())),
                ("readOnly", Value::Bool(volume.readonly)),
            ]))
        })
        .collect();
    let file_secrets: Vec<(&SecretPlan, &String)> = component
        .secrets
        .iter()
        .filter_map(|secret| match &secret.target {
            SecretTarget::File(path) => Some((secret, path)),
            SecretTarget::Env(_) => None,
        })
        .collect();
    // One file of the Secret, at the path the component expects.
    mounts.extend(file_secrets.iter().map(|(secret, path)| {
        map([
            ("name", s(secret_volume(secret))),
            ("mountPath", s(path.as_str())),
            ("subPath", s(secret_file_key(secret))),
            ("readOnly", Value::Bool(true)),
        ])
    }));
    if !mounts.is_empty() {
        put("volumeMounts", Value::Sequence(mounts));
    }

    let mut pod = Mapping::new();
    // Service links would inject variables such as `<SERVICE>_PORT=tcp://…` into every
    // container, which can collide with the components' own (`PORT`, `HEALTH_PORT`).
    pod.insert(s("enableServiceLinks"), Value::Bool(false));
    pod.insert(
        s("terminationGracePeriodSeconds"),
        n(component.stop_grace.as_secs() + u64::from(component.stop_grace.subsec_nanos() > 0)),
    );
    pod.insert(
        s("containers"),
        Value::Sequence(vec![Value::Mapping(container)]),
    );
    let volumes: Vec<Value> = pod_volumes
        .iter()
        .map(|claim| {
            map([
                ("name", s(claim.name.as_str())),
                (
                    "persistentVolumeClaim",
                    map([
                        ("claimName", s(claim.name.as_str())),
                        ("readOnly", Value::Bool(claim.read_only)),
                    ]),
                ),
            ])
        })
        .chain(file_secrets.iter().map(|(secret, _)| {
            let mut source = Mapping::new();
            source.insert(s("secretName"), s(secret_name(secret)));
            if let Some(mode) = secret.mode {
                source.insert(s("defaultMode"), n(mode));
            }
            map([
                ("name", s(secret_volume(secret))),
                ("secret", Value::Mapping(source)),
            ])
        }))
        .collect();
    if !volumes.is_empty() {
        pod.insert(s("volumes"), Value::Sequence(volumes));
    }
    Value::Mapping(pod)
}

/// `resources:` as the file wrote the quantities (they are Kubernetes' own syntax).
fn kubernetes_resources(resources: &crate::plan::ResourcePlan) -> Value {
    let list = |cpu: &Option<crate::spec::CpuQuantity>,
                memory: &Option<crate::spec::MemoryQuantity>| {
        let mut list = Mapping::new();
        if let Some(cpu) = cpu {
            list.insert(s("cpu"), s(cpu.written.as_str()));
        }
        if let Some(memory) = memory {
            list.insert(s("memory"), s(memory.written.as_str()));
        }
        list
    };
    let mut out = Mapping::new();
    for (key, entries) in [
        (
            "requests",
            list(&resources.cpu_request, &resources.memory_request),
        ),
        (
            "limits",
            list(&resources.cpu_limit, &resources.memory_limit),
        ),
    ] {
        if !entries.is_empty() {
            out.insert(s(key), Value::Mapping(entries));
        }
    }
    Value::Mapping(out)
}

/// Names of ports: the file's name when Kubernetes accepts it (IANA service name: at most 15
/// lower-case letters, digits and `-`, with a letter), else `p<port>`; unique per list.
fn port_names(ports: &[PortPlan]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for port in ports {
        let name = port
            .name
            .as_deref()
            .filter(|name| is_port_name(name) && !names.iter().any(|n| n == name))
            .map(str::to_string)
            .unwrap_or_else(|| format!("p{}", port.container_port));
        let name = if names.contains(&name) {
            format!("p{}-{}", port.container_port, port.protocol)
        } else {
            name
        };
        names.push(name);
    }
    names
}

fn is_port_name(name: &str) -> bool {
    name.len() <= 15
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A PersistentVolumeClaim standing for one host path.
#[derive(Debug, Clone)]
struct Claim {
    name: String,
    host_path: PathBuf,
    /// Every mount of it is read-only.
    read_only: bool,
    /// Components mounting it.
    users: Vec<String>,
}

/// One claim per distinct host path, named `<pipeline>-<folder name>` (made DNS-safe and
/// unique), in the order the components mount them.
fn claims(plan: &RunPlan) -> Vec<Claim> {
    let mut claims: Vec<Claim> = Vec::new();
    for component in &plan.components {
        for volume in &component.volumes {
            if let Some(claim) = claims.iter_mut().find(|c| c.host_path == volume.host_path) {
                claim.read_only &= volume.readonly;
                if !claim.users.contains(&component.id) {
                    claim.users.push(component.id.clone());
                }
                continue;
            }
            let folder = volume
                .host_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into());
            let base = dns_name(&format!("{}-{folder}", plan.pipeline));
            let mut name = base.clone();
            let mut suffix = 2;
            while claims.iter().any(|c| c.name == name) {
                name = dns_name(&format!("{base}-{suffix}"));
                suffix += 1;
            }
            claims.push(Claim {
                name,
                host_path: volume.host_path.clone(),
                read_only: volume.readonly,
                users: vec![component.id.clone()],
            });
        }
    }
    claims
}

/// The Secret a secret of the file is read from: its name, as Kubernetes accepts it.
fn secret_name(secret: &SecretPlan) -> String {
    dns_name(&secret.name)
}

/// The key of the Secret holding the content: the host file's name, which is the key
/// `kubectl create secret generic NAME --from-file=PATH` gives it.
fn secret_file_key(secret: &SecretPlan) -> String {
    secret
        .host_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| secret.name.clone())
}

/// The pod volume of a file secret.
fn secret_volume(secret: &SecretPlan) -> String {
    dns_name(&format!("secret-{}", secret.name))
}

/// The commands that create the Secrets the component reads (flowctl never writes secret
/// contents into manifests), for the file's header.
fn secret_commands(component: &ComponentPlan) -> Vec<String> {
    component
        .secrets
        .iter()
        .map(|secret| {
            format!(
                "    kubectl create secret generic {} --from-file={}",
                secret_name(secret),
                secret.host_path.display()
            )
        })
        .collect()
}

/// `text` as a DNS-1123 label: lower case, runs of other characters as one `-`, at most 63.
fn dns_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    // Keep the end (the folder name tells claims apart), within 63 characters.
    if name.len() > 63 {
        name = name[name.len() - 63..].to_string();
    }
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "data".into()
    } else {
        name
    }
}

fn claim(plan: &RunPlan, claim: &Claim) -> Value {
    let mut labels = Mapping::new();
    labels.insert(s("app.kubernetes.io/part-of"), s(plan.pipeline.as_str()));
    labels.insert(s("app.kubernetes.io/managed-by"), s("flowctl"));
    labels.insert(s(crate::labels::PIPELINE), s(plan.pipeline.as_str()));
    let annotations: BTreeMap<&str, String> = BTreeMap::from([
        (
            "io.flowctl.host-path",
            claim.host_path.display().to_string(),
        ),
        (
            "io.flowctl.note",
            format!(
                "Fill this claim with the contents of the host folder in io.flowctl.host-path \
                 before starting the pipeline; flowctl cannot copy it into the cluster. Used by: \
                 {}.",
                claim.users.join(", ")
            ),
        ),
    ]);
    // More than one pod mounting the claim needs a volume shared across nodes.
    let access = if claim.users.len() > 1 {
        if claim.read_only {
            "ReadOnlyMany"
        } else {
            "ReadWriteMany"
        }
    } else {
        "ReadWriteOnce"
    };
    map([
        ("apiVersion", s("v1")),
        ("kind", s("PersistentVolumeClaim")),
        (
            "metadata",
            map([
                ("name", s(claim.name.as_str())),
                ("labels", Value::Mapping(labels)),
                (
                    "annotations",
                    map(annotations.into_iter().map(|(k, v)| (k, s(v)))),
                ),
            ]),
        ),
        (
            "spec",
            map([
                ("accessModes", strings(&[access])),
                (
                    "resources",
                    map([("requests", map([("storage", s(CLAIM_STORAGE))]))]),
                ),
            ]),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert_eq!(
            dns_name("ttp-pipeline-testnet_997.999"),
            "ttp-pipeline-testnet-997-999"
        );
        assert_eq!(dns_name("__"), "data");
        assert_eq!(dns_name(&"a".repeat(80)).len(), 63);
        assert!(is_dns_label("ttp-processor"));
        assert!(!is_dns_label("TTP"));
        assert!(!is_dns_label("9lives"));
        assert!(!is_dns_label("a_b"));
    }

    #[test]
    fn port_names_are_valid_and_unique() {
        let port = |name: Option<&str>, number: u16| PortPlan {
            name: name.map(str::to_string),
            container_port: number,
            host_port: None,
            protocol: Protocol::Tcp,
        };
        let names = port_names(&[
            port(Some("grpc"), 1),
            port(Some("grpc"), 2),
            port(Some("Health_Port"), 3),
            port(None, 4),
        ]);
        assert_eq!(names, ["grpc", "p2", "p3", "p4"]);
    }
}
