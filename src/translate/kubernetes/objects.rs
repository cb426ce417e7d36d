//! The Kubernetes objects a component becomes: Deployment, Job and Service, with their
//! metadata, selectors and recommended labels.

use serde_yaml::{Mapping, Value};

use super::pod::port_names;
use super::JOB_BACKOFF_LIMIT;
use crate::plan::{PortPlan, RunPlan};
use crate::translate::{map, n, s};

/// The app.kubernetes.io labels, then flowctl's.
pub(super) fn with_recommended(plan: &RunPlan, name: &str, role: &str, ours: Mapping) -> Mapping {
    let mut labels = Mapping::new();
    labels.insert(s("app.kubernetes.io/name"), s(name));
    labels.insert(s("app.kubernetes.io/component"), s(role));
    labels.insert(s("app.kubernetes.io/part-of"), s(plan.pipeline.as_str()));
    labels.insert(s("app.kubernetes.io/managed-by"), s("flowctl"));
    labels.extend(ours);
    labels
}

/// Pods are selected by pipeline and component: stable, and unique within a namespace.
pub(super) fn selector(plan: &RunPlan, name: &str) -> Value {
    map([
        (crate::labels::PIPELINE, s(plan.pipeline.as_str())),
        (crate::labels::COMPONENT, s(name)),
    ])
}

pub(super) fn metadata(name: &str, labels: &Mapping) -> Value {
    map([
        ("name", s(name)),
        ("labels", Value::Mapping(labels.clone())),
    ])
}

pub(super) fn template(labels: &Mapping, pod: Value) -> Value {
    map([
        (
            "metadata",
            map([("labels", Value::Mapping(labels.clone()))]),
        ),
        ("spec", pod),
    ])
}

pub(super) fn deployment(
    plan: &RunPlan,
    name: &str,
    replicas: u32,
    labels: &Mapping,
    pod: Value,
) -> Value {
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
pub(super) fn job(name: &str, replicas: u32, labels: &Mapping, mut pod: Value) -> Value {
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

pub(super) fn service(plan: &RunPlan, name: &str, labels: &Mapping, ports: &[PortPlan]) -> Value {
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
