//! `resources:` of a component: Kubernetes requests and limits, checked (a request above its
//! limit is refused, as Kubernetes does) and kept as written for the translations.

use crate::spec::{CpuQuantity, MemoryQuantity, ResourcesSpec};

/// What the engine and the translations are asked to reserve and cap. Quantity syntax is
/// checked when the file is read (`spec::quantity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourcePlan {
    /// Engine `--cpus`.
    pub cpu_limit: Option<CpuQuantity>,
    /// Engine `--memory`.
    pub memory_limit: Option<MemoryQuantity>,
    /// No engine flag (CPU shares are relative, not a quantity); Kubernetes and Compose only.
    pub cpu_request: Option<CpuQuantity>,
    /// Engine `--memory-reservation`.
    pub memory_request: Option<MemoryQuantity>,
}

impl ResourcePlan {
    /// Whether anything is asked for.
    pub fn is_empty(&self) -> bool {
        *self == ResourcePlan::default()
    }
}

pub(super) fn resources(spec: Option<&ResourcesSpec>, problems: &mut Vec<String>) -> ResourcePlan {
    let Some(spec) = spec else {
        return ResourcePlan::default();
    };
    let plan = ResourcePlan {
        cpu_limit: spec.limits.cpu.clone(),
        memory_limit: spec.limits.memory.clone(),
        cpu_request: spec.requests.cpu.clone(),
        memory_request: spec.requests.memory.clone(),
    };
    if let (Some(request), Some(limit)) = (&plan.cpu_request, &plan.cpu_limit) {
        if request.millicores > limit.millicores {
            problems.push(format!(
                "resources.requests.cpu: `{}` is more than resources.limits.cpu `{}`",
                request.written, limit.written
            ));
        }
    }
    if let (Some(request), Some(limit)) = (&plan.memory_request, &plan.memory_limit) {
        if request.bytes > limit.bytes {
            problems.push(format!(
                "resources.requests.memory: `{}` is more than resources.limits.memory `{}`",
                request.written, limit.written
            ));
        }
    }
    // The engines refuse smaller memory limits; say so before anything is created.
    const ENGINE_MIN_MEMORY: u64 = 6 * 1024 * 1024;
    if let Some(limit) = plan
        .memory_limit
        .as_ref()
        .filter(|m| m.bytes < ENGINE_MIN_MEMORY)
    {
        problems.push(format!(
            "resources.limits.memory: `{}` is below the 6Mi the container engines accept",
            limit.written
        ));
    }
    plan
}
