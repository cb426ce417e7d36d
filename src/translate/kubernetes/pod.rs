//! A component's pod spec: its container, env, probes, resources, ports and mounts.

use serde_yaml::{Mapping, Value};

use super::storage::{secret_file_key, secret_name, secret_volume, Claim};
use super::PROBE_PERIOD_SECONDS;
use crate::plan::{ComponentPlan, HealthProtocol, PortPlan, SecretPlan, SecretTarget};
use crate::translate::{component_env, map, n, s, strings, TranslateOptions};

/// The pod `component` runs in: its container (image, command, env, probes, resources, ports,
/// mounts) and the volumes those mounts need.
pub(super) fn pod_spec(
    component: &ComponentPlan,
    options: &TranslateOptions,
    claims: &[Claim],
) -> Value {
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
pub(super) fn kubernetes_resources(resources: &crate::plan::ResourcePlan) -> Value {
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
pub(super) fn port_names(ports: &[PortPlan]) -> Vec<String> {
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

pub(super) fn is_port_name(name: &str) -> bool {
    name.len() <= 15
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
