//! A pipeline as a Compose file (compose-spec, as read by `docker-compose` 1.29 and
//! `docker compose`).
//!
//! What maps to what:
//! - each component → a service with `container_name` = flowctl's container name and a network
//!   alias = the component id, so the same DNS names work;
//! - `inputs` and `depends_on` → `depends_on` with `condition: service_healthy` (or
//!   `service_started` for one without a health check), which is flowctl's start order by
//!   health;
//! - `replicas: N` → `deploy.replicas: N` without `container_name` (Compose names replicas);
//! - the health check → a Compose `healthcheck` running the component's own `healthcheck`
//!   subcommand ([`super::healthcheck_command`]);
//! - ports → published on 127.0.0.1 only, on an engine-picked host port unless pinned;
//! - volumes → bind mounts of absolute host paths, read-only unless the file says otherwise;
//! - secrets → Compose file secrets (mounted read-only at `container_path`); a secret given as
//!   a variable → `${VAR:?…}`, taken from the environment of `up`: no secret content is ever
//!   written to the file;
//! - the control plane → a `flowctl-control-plane` service running `flowctl control-plane`.

use anyhow::Result;
use serde_yaml::{Mapping, Value};

use super::{
    component_env, control_plane_args, flowctl_labels, healthcheck_command, map, n, render, s,
    sinks, strings, OutputFile, TranslateOptions, CONTROL_PLANE_PORT, CONTROL_PLANE_SERVICE,
};
use crate::contract::PUBLISH_HOST_IP;
use crate::duration;
use crate::plan::{ComponentPlan, RestartPolicy, Role, RunPlan, SecretPlan, SecretTarget};

/// How often Compose runs a health check. Compose 1.29 has no faster start-up interval, and a
/// check is one exec of a static binary, so a short interval costs little and keeps start-up
/// quick.
const HEALTH_INTERVAL: &str = "1s";
/// How long one check may take.
const HEALTH_CHECK_TIMEOUT: &str = "3s";
/// Failed checks in a row (after the start period) that make a component unhealthy.
const HEALTH_RETRIES: u64 = 3;

/// The Compose file of `plan`.
pub fn translate(plan: &RunPlan, options: &TranslateOptions) -> Result<OutputFile> {
    let mut services = Mapping::new();
    if let Some(image) = &options.control_plane_image {
        services.insert(
            s(CONTROL_PLANE_SERVICE),
            control_plane_service(plan, options, image),
        );
    }
    for component in &plan.components {
        services.insert(s(component.id.as_str()), service(plan, component, options));
    }
    let network = map([
        ("driver", s("bridge")),
        ("labels", Value::Mapping(flowctl_labels_network(plan))),
    ]);
    let mut file = Mapping::new();
    file.insert(s("services"), Value::Mapping(services));
    file.insert(s("networks"), map([(plan.network.as_str(), network)]));
    let secrets = file_secrets(plan);
    if !secrets.is_empty() {
        file.insert(s("secrets"), Value::Mapping(secrets));
    }
    let file = Value::Mapping(file);
    Ok(OutputFile {
        name: format!("{}.compose.yaml", plan.pipeline),
        text: render(&header(plan, options), &file)?,
    })
}

/// The top-level `secrets:`: each file secret by its key, from its host file (Compose mounts
/// it read-only at the service's `target`).
fn file_secrets(plan: &RunPlan) -> Mapping {
    let mut secrets = Mapping::new();
    for component in &plan.components {
        for secret in &component.secrets {
            if let SecretTarget::File(_) = secret.target {
                secrets.insert(
                    s(secret_key(plan, component, secret)),
                    map([("file", s(secret.host_path.display().to_string()))]),
                );
            }
        }
    }
    secrets
}

/// A file secret's name in the Compose file: its own, unless another component gives the same
/// name to another file; then prefixed by the component id.
fn secret_key(plan: &RunPlan, component: &ComponentPlan, secret: &SecretPlan) -> String {
    let clash = plan
        .components
        .iter()
        .flat_map(|c| &c.secrets)
        .any(|other| {
            other.name == secret.name
                && other.host_path != secret.host_path
                && matches!(other.target, SecretTarget::File(_))
        });
    if clash {
        format!("{}-{}", component.id, secret.name)
    } else {
        secret.name.clone()
    }
}

fn flowctl_labels_network(plan: &RunPlan) -> Mapping {
    let mut labels = Mapping::new();
    labels.insert(s(crate::labels::PIPELINE), s(plan.pipeline.as_str()));
    if let Some(project) = &plan.project {
        labels.insert(s(crate::labels::PROJECT), s(project.as_str()));
    }
    labels
}

fn container_name(plan: &RunPlan, id: &str) -> String {
    match &plan.project {
        Some(project) => format!("{project}-{id}"),
        None => id.to_string(),
    }
}

fn networks(plan: &RunPlan, alias: &str) -> Value {
    map([(plan.network.as_str(), map([("aliases", strings(&[alias]))]))])
}

/// `deploy.resources`: cores as `cpus`, memory in bytes (Compose has no `Mi` suffix).
fn compose_resources(resources: &crate::plan::ResourcePlan) -> Value {
    let list = |cpu: &Option<crate::spec::CpuQuantity>,
                memory: &Option<crate::spec::MemoryQuantity>| {
        let mut list = Mapping::new();
        if let Some(cpu) = cpu {
            list.insert(s("cpus"), s(cpu.cores()));
        }
        if let Some(memory) = memory {
            list.insert(s("memory"), s(format!("{}b", memory.bytes)));
        }
        list
    };
    let mut out = Mapping::new();
    for (key, entries) in [
        (
            "limits",
            list(&resources.cpu_limit, &resources.memory_limit),
        ),
        (
            "reservations",
            list(&resources.cpu_request, &resources.memory_request),
        ),
    ] {
        if !entries.is_empty() {
            out.insert(s(key), Value::Mapping(entries));
        }
    }
    Value::Mapping(out)
}

fn service(plan: &RunPlan, component: &ComponentPlan, options: &TranslateOptions) -> Value {
    let mut service = Mapping::new();
    let mut put = |key: &str, value: Value| {
        service.insert(s(key), value);
    };
    put("image", s(component.image.as_str()));
    // Compose names replicas itself (`<project>-<service>-<n>`); a fixed name would clash.
    if component.replicas == 1 {
        put("container_name", s(component.container_name.as_str()));
    }
    if let Some(entrypoint) = &component.entrypoint {
        put("entrypoint", strings(&[entrypoint]));
    }
    if !component.args.is_empty() || component.entrypoint.is_some() {
        // With an entrypoint set, an empty `command` keeps the image's CMD from being appended,
        // as with `docker run --entrypoint`.
        put("command", strings(&component.args));
    }
    // Compose interpolates `$` in the file it reads; `$$` keeps a value as it is. A secret
    // passed as a variable is never written here: Compose takes it from the environment of
    // `up`, and refuses to start without it.
    let secret_vars = component
        .secrets
        .iter()
        .filter_map(|secret| match &secret.target {
            SecretTarget::Env(var) => Some((
                var.clone(),
                s(format!("${{{var}:?the content of secret {}}}", secret.name)),
            )),
            SecretTarget::File(_) => None,
        });
    put(
        "environment",
        map(component_env(component, options)
            .into_iter()
            .map(|(k, v)| (k, s(v.replace('$', "$$"))))
            .chain(secret_vars)),
    );
    let files: Vec<Value> = component
        .secrets
        .iter()
        .filter_map(|secret| match &secret.target {
            SecretTarget::File(path) => Some(map([
                ("source", s(secret_key(plan, component, secret))),
                ("target", s(path.as_str())),
            ])),
            SecretTarget::Env(_) => None,
        })
        .collect();
    if !files.is_empty() {
        put("secrets", Value::Sequence(files));
    }
    put(
        "labels",
        Value::Mapping(flowctl_labels(plan, Some(component))),
    );
    put("networks", networks(plan, &component.id));
    if !component.ports.is_empty() {
        let ports: Vec<String> = component
            .ports
            .iter()
            .map(|port| {
                let host_port = port.host_port.map(|p| p.to_string()).unwrap_or_default();
                format!(
                    "{PUBLISH_HOST_IP}:{host_port}:{}/{}",
                    port.container_port, port.protocol
                )
            })
            .collect();
        put("ports", strings(&ports));
    }
    if !component.volumes.is_empty() {
        let volumes = component
            .volumes
            .iter()
            .map(|volume| {
                map([
                    ("type", s("bind")),
                    ("source", s(volume.host_path.display().to_string())),
                    ("target", s(volume.container_path.as_str())),
                    ("read_only", Value::Bool(volume.readonly)),
                ])
            })
            .collect();
        put("volumes", Value::Sequence(volumes));
    }
    let mut deploy = Mapping::new();
    if component.replicas > 1 {
        deploy.insert(s("replicas"), n(component.replicas));
    }
    if !component.resources.is_empty() {
        deploy.insert(s("resources"), compose_resources(&component.resources));
    }
    if !deploy.is_empty() {
        put("deploy", Value::Mapping(deploy));
    }
    if let Some(command) = healthcheck_command(component) {
        let mut test = vec!["CMD".to_string()];
        test.extend(command);
        put(
            "healthcheck",
            map([
                ("test", strings(&test)),
                ("interval", s(HEALTH_INTERVAL)),
                ("timeout", s(HEALTH_CHECK_TIMEOUT)),
                ("retries", n(HEALTH_RETRIES)),
                // Failures within the start period do not count: flowctl's health timeout.
                (
                    "start_period",
                    s(duration::format(component.health_timeout)),
                ),
            ]),
        );
    }
    let mut depends_on = Mapping::new();
    if options.control_plane_image.is_some() {
        // Components retry registration, so the control plane only has to be started.
        depends_on.insert(
            s(CONTROL_PLANE_SERVICE),
            map([("condition", s("service_started"))]),
        );
    }
    for input in component.inputs.iter().chain(&component.depends_on) {
        let healthy = plan
            .component(input)
            .is_some_and(|c| healthcheck_command(c).is_some());
        let condition = if healthy {
            "service_healthy"
        } else {
            "service_started"
        };
        depends_on.insert(s(input.as_str()), map([("condition", s(condition))]));
    }
    if !depends_on.is_empty() {
        put("depends_on", Value::Mapping(depends_on));
    }
    if component.restart != RestartPolicy::Never {
        // The same policy, enforced by the engine instead of flowctl.
        put("restart", s(component.restart.to_string()));
    }
    // Docker's stop timeout is whole seconds (a fraction fails `docker-compose up`): round up.
    let grace = component.stop_grace.as_secs() + u64::from(component.stop_grace.subsec_nanos() > 0);
    put("stop_grace_period", s(format!("{grace}s")));
    Value::Mapping(service)
}

fn control_plane_service(plan: &RunPlan, options: &TranslateOptions, image: &str) -> Value {
    map([
        ("image", s(image)),
        (
            "container_name",
            s(container_name(plan, CONTROL_PLANE_SERVICE)),
        ),
        ("command", strings(&control_plane_args(plan, options))),
        ("labels", Value::Mapping(flowctl_labels(plan, None))),
        ("networks", networks(plan, CONTROL_PLANE_SERVICE)),
        // Published so `flowctl status` on the host can ask it (see `docker-compose port`).
        (
            "ports",
            strings(&[format!("{PUBLISH_HOST_IP}::{CONTROL_PLANE_PORT}/tcp")]),
        ),
    ])
}

fn header(plan: &RunPlan, options: &TranslateOptions) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Pipeline `{}` for Docker Compose, generated by `flowctl translate --to compose` \
             from {}.",
            plan.pipeline, options.source_name
        ),
        "Regenerate it rather than edit it. It contains the components' env values.".into(),
        String::new(),
    ];
    let sinks = sinks(plan);
    let has_jobs = sinks.iter().any(|c| c.role == Role::Pipeline);
    match sinks.as_slice() {
        [sink] => lines.push(format!(
            "Run:  docker-compose -p NAME up --exit-code-from {}   (ends when the {} does)",
            sink.id,
            if has_jobs { "job" } else { "sink" }
        )),
        // A job ends on its own, often first: --abort-on-container-exit would stop the
        // pipeline then.
        _ if has_jobs => lines.push(
            "Run:  docker-compose -p NAME up -d, then wait until `docker-compose -p NAME ps` shows \
             every sink and job exited with code 0 (jobs end on their own, so \
             --abort-on-container-exit would stop the pipeline when the first one does)"
                .into(),
        ),
        _ => lines.push("Run:  docker-compose -p NAME up --abort-on-container-exit".into()),
    }
    lines.push("Stop: docker-compose -p NAME down -v".into());
    let secret_vars: Vec<String> = plan
        .components
        .iter()
        .flat_map(|c| &c.secrets)
        .filter_map(|secret| match &secret.target {
            SecretTarget::Env(var) => {
                Some(format!("{var}=\"$(cat {})\"", secret.host_path.display()))
            }
            SecretTarget::File(_) => None,
        })
        .collect();
    if !secret_vars.is_empty() {
        lines.push(String::new());
        lines.push(
            "Secrets passed as variables are not in this file: export them before `up`, e.g."
                .into(),
        );
        lines.push(format!("    export {}", secret_vars.join(" ")));
    }
    lines.push(String::new());
    lines.push(
        "Start order: a service starts once its inputs are healthy. Health checks run the \
         component's own `healthcheck` subcommand (FROM scratch images have no shell or curl):"
            .into(),
    );
    for component in &plan.components {
        match healthcheck_command(component) {
            Some(command) => lines.push(format!("  {}: {}", component.id, command.join(" "))),
            None => lines.push(format!(
                "  {}: no health check; counts as started when its container runs",
                component.id
            )),
        }
    }
    lines.push(String::new());
    match &options.control_plane_image {
        Some(image) => lines.push(format!(
            "Control plane: `{CONTROL_PLANE_SERVICE}` runs `flowctl control-plane` ({image}); \
             components register and heartbeat there (FLOWCTL_ENDPOINT={CONTROL_PLANE_SERVICE}:\
             {CONTROL_PLANE_PORT}). See `docker-compose logs {CONTROL_PLANE_SERVICE}`."
        )),
        None => lines.push(
            "Control plane: none (--control-plane none); components run with \
             ENABLE_FLOWCTL=false."
                .into(),
        ),
    }
    lines.push(
        "Ports are published on 127.0.0.1 only; unpinned ones on a port the engine picks: \
         `docker-compose -p NAME port SERVICE PORT`."
            .into(),
    );
    lines
}
