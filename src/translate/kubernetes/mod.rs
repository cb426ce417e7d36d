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

use anyhow::{bail, Result};
use serde_yaml::Value;

use super::{
    control_plane_args, flowctl_labels, map, n, render, s, strings, OutputFile, TranslateOptions,
    CONTROL_PLANE_PORT, CONTROL_PLANE_SERVICE,
};
use crate::plan::{PortPlan, Protocol, Role, RunPlan};

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

mod objects;
mod pod;
mod storage;

use objects::{deployment, job, service, with_recommended};
use pod::pod_spec;
use storage::{claim, claims, secret_commands};

#[cfg(test)]
mod tests {
    use super::pod::port_names;
    use super::storage::dns_name;
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
