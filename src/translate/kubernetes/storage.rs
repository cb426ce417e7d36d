//! What a pod mounts that the cluster must hold: PersistentVolumeClaims for host folders and
//! references to the Secrets the user creates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::CLAIM_STORAGE;
use crate::plan::{ComponentPlan, RunPlan, SecretPlan};
use crate::translate::{map, s, strings};

/// A PersistentVolumeClaim standing for one host path.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) name: String,
    pub(super) host_path: PathBuf,
    /// Every mount of it is read-only.
    pub(super) read_only: bool,
    /// Components mounting it.
    pub(super) users: Vec<String>,
}

/// One claim per distinct host path, named `<pipeline>-<folder name>` (made DNS-safe and
/// unique), in the order the components mount them.
pub(super) fn claims(plan: &RunPlan) -> Vec<Claim> {
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
pub(super) fn secret_name(secret: &SecretPlan) -> String {
    dns_name(&secret.name)
}

/// The key of the Secret holding the content: the host file's name, which is the key
/// `kubectl create secret generic NAME --from-file=PATH` gives it.
pub(super) fn secret_file_key(secret: &SecretPlan) -> String {
    secret
        .host_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| secret.name.clone())
}

/// The pod volume of a file secret.
pub(super) fn secret_volume(secret: &SecretPlan) -> String {
    dns_name(&format!("secret-{}", secret.name))
}

/// The commands that create the Secrets the component reads (flowctl never writes secret
/// contents into manifests), for the file's header.
pub(super) fn secret_commands(component: &ComponentPlan) -> Vec<String> {
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
pub(super) fn dns_name(text: &str) -> String {
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

pub(super) fn claim(plan: &RunPlan, claim: &Claim) -> Value {
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
