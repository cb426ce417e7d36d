//! `spec.driver`: how upstream would run the pipeline, and what this flowctl does with it.
//! Every driver's components run here as containers; `kubernetes` files are for
//! `flowctl translate --to kubernetes` only.

use std::fmt;

/// The file's `spec.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// `docker` (also the default): containers, as always.
    #[default]
    Docker,
    /// `process`, upstream's default: local binaries there; containers of the same components
    /// here.
    Process,
    /// `kubernetes`: `run` refuses; `translate --to kubernetes` honours it.
    Kubernetes,
}

impl Driver {
    /// Parses the field; the error is the field's problem.
    pub(super) fn parse(text: &str) -> Result<Driver, String> {
        match text {
            "docker" => Ok(Driver::Docker),
            "process" => Ok(Driver::Process),
            "kubernetes" => Ok(Driver::Kubernetes),
            other => Err(format!(
                "`{other}` is not supported (use `docker`, `process` or `kubernetes`; Podman is \
                 chosen with `--docker-bin podman`)"
            )),
        }
    }

    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::Process => "process",
            Driver::Kubernetes => "kubernetes",
        }
    }

    /// Said once when `run` starts a file with this driver.
    pub fn run_notice(self) -> Option<&'static str> {
        match self {
            Driver::Process => Some(
                "spec.driver `process`: flowctl runs the same components as containers, from \
                 the images their references name",
            ),
            _ => None,
        }
    }

    /// Why `run` refuses this driver, if it does.
    pub fn run_refusal(self) -> Option<&'static str> {
        match self {
            Driver::Kubernetes => Some(
                "spec.driver is `kubernetes`: flowctl runs containers on this engine; for a \
                 cluster, write the manifests with `flowctl translate --to kubernetes` and apply \
                 them",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
