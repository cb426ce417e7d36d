//! The engine as a Swarm manager: services, their tasks, nodes and overlay networks, through
//! the same CLI calls as everything else (`service create`, `service ps`, `inspect`, `node
//! inspect`, `service logs`). What a task is, as flowctl needs it, is parsed here from the
//! JSON `inspect` prints.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{inspect, Engine, EngineError, Streaming};
use crate::engine::CommandExt;

/// What this engine is in a Swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmRole {
    /// A manager: services can be created here.
    Manager,
    /// Part of a Swarm, but only a worker.
    Worker,
    /// Not in a Swarm (`inactive`, `pending`, `error`, `locked`).
    None,
}

/// One task of a service, from `inspect` of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    /// The replica number (1-based).
    pub slot: u64,
    /// Empty until the task is assigned.
    pub node_id: String,
    /// `new` .. `running`, then `complete`, `failed`, `shutdown`, `rejected`, `orphaned`, ...
    pub state: String,
    /// `running` or `shutdown` (or `complete` for one-off tasks).
    pub desired_state: String,
    /// Swarm's message for a task that failed or was rejected.
    pub error: String,
    pub exit_code: Option<i64>,
    /// Host-mode published ports: container port -> port on the task's node.
    pub ports: BTreeMap<u16, u16>,
    /// The task's address on each network it is attached to, by network name.
    pub addresses: BTreeMap<String, String>,
}

impl Task {
    /// Whether the task ended for good (it will not run again as this task).
    pub fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "complete" | "failed" | "shutdown" | "rejected" | "orphaned" | "remove"
        )
    }
}

/// A service's id, name and labels.
pub type ServiceInfo = (String, String, BTreeMap<String, String>);

/// A node's name and the address other machines reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub hostname: String,
    pub address: String,
}

impl Engine {
    /// Whether this engine is a Swarm manager, a worker or in no Swarm.
    pub fn swarm_role(&self) -> Result<SwarmRole, EngineError> {
        let out = self.call([
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ])?;
        Ok(match out.trim() {
            "active true" => SwarmRole::Manager,
            "active false" => SwarmRole::Worker,
            _ => SwarmRole::None,
        })
    }

    /// Creates an attachable overlay network with `labels`; returns its id.
    pub fn create_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let mut args: Vec<String> = ["network", "create", "--driver", "overlay", "--attachable"]
            .map(String::from)
            .into();
        for (key, value) in labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        args.push(name.into());
        Ok(self.call(&args)?.trim().to_string())
    }

    /// `service create` with `args` (everything after `create`); returns the service id.
    pub fn create_service(&self, args: &[String]) -> Result<String, EngineError> {
        let mut all: Vec<String> = ["service", "create", "--detach", "--quiet"]
            .map(String::from)
            .into();
        all.extend(args.iter().cloned());
        Ok(self.call(&all)?.trim().to_string())
    }

    /// Every task of `services` (ids or names), current and past.
    pub fn service_tasks(&self, services: &[String]) -> Result<Vec<Task>, EngineError> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<String> = ["service", "ps", "--quiet", "--no-trunc"]
            .map(String::from)
            .into();
        args.extend(services.iter().cloned());
        let ids = inspect::lines(&self.call(&args)?);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<&str> = vec!["inspect", "--type", "task"];
        args.extend(ids.iter().map(String::as_str));
        match self.call_json(&args) {
            Ok(parsed) => Ok(tasks_of(&parsed)),
            // A task removed between the two calls: read again next time.
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Hostname and address of each node in `ids`.
    pub fn nodes(&self, ids: &[String]) -> Result<BTreeMap<String, NodeInfo>, EngineError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut args: Vec<&str> = vec![
            "node",
            "inspect",
            "--format",
            "{{.ID}}\t{{.Description.Hostname}}\t{{.Status.Addr}}",
        ];
        args.extend(ids.iter().map(String::as_str));
        Ok(inspect::lines(&self.call(&args)?)
            .into_iter()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                let id = fields.next()?.to_string();
                let hostname = fields.next()?.to_string();
                let address = fields.next()?.to_string();
                Some((id, NodeInfo { hostname, address }))
            })
            .collect())
    }

    /// Services carrying every label in `labels`, as `(id, name, labels)`.
    pub fn list_services(&self, labels: &[String]) -> Result<Vec<ServiceInfo>, EngineError> {
        let mut args = vec!["service".to_string(), "ls".into(), "--quiet".into()];
        for label in labels {
            args.extend(["--filter".into(), format!("label={label}")]);
        }
        // A service removed between `ls` and `inspect` (another run ending) fails the whole
        // `inspect`: list again, so the others are not missed.
        let mut attempts = 0;
        let parsed = loop {
            let ids = inspect::lines(&self.call(&args)?);
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut inspect_args: Vec<&str> = vec!["service", "inspect"];
            inspect_args.extend(ids.iter().map(String::as_str));
            match self.call_json(&inspect_args) {
                Ok(parsed) => break parsed,
                Err(e) if e.is_not_found() && attempts < 10 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        Ok(parsed
            .as_array()
            .into_iter()
            .flatten()
            .map(|service| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let labels = service["Spec"]["Labels"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                    .unwrap_or_default();
                (text(&service["ID"]), text(&service["Spec"]["Name"]), labels)
            })
            .collect())
    }

    /// Those of the tasks `ids` that the manager still knows (a removed service's tasks stay
    /// until their node has shut them down and removed their containers).
    pub fn existing_tasks(&self, ids: &[String]) -> Result<Vec<String>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<&str> = vec!["inspect", "--type", "task", "--format", "{{.ID}}"];
        args.extend(ids.iter().map(String::as_str));
        let mut command = self.command(&args);
        let output = command.output_within(self.deadlines.call)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Exit 1 with "No such task" (or "task X not found") for the ones gone; anything else
        // is an error.
        if !output.status.success()
            && stderr
                .lines()
                .any(|l| !l.trim().is_empty() && !super::command::is_not_found_text(l))
        {
            return Err(EngineError {
                command: command.command_line(),
                code: output.status.code(),
                stderr: stderr.trim().to_string(),
                spawn_error: None,
                timed_out: None,
            });
        }
        Ok(inspect::lines(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Removes `services` (their tasks stop and go in the background).
    pub fn remove_services(&self, services: &[String]) -> Result<(), EngineError> {
        if services.is_empty() {
            return Ok(());
        }
        let mut args = vec!["service".to_string(), "rm".into()];
        args.extend(services.iter().cloned());
        self.call(&args).map(|_| ())
    }

    /// `service logs` of `service`: every task's output from its start, with
    /// `NAME.SLOT.TASK@NODE | ` before each line; following it when `follow`.
    pub fn service_logs(&self, service: &str, follow: bool) -> Result<Streaming, EngineError> {
        let mut args = vec!["service", "logs", "--no-trunc"];
        if follow {
            args.push("--follow");
        }
        args.push(service);
        self.command(args).spawn_streaming()
    }

    /// The whole `service logs` of `service` at once, as (stdout, stderr).
    pub fn service_logs_all(&self, service: &str) -> Result<(String, String), EngineError> {
        let output = self
            .command(["service", "logs", "--no-trunc", service])
            .output_within(self.deadlines.call)?;
        Ok((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

/// The tasks in `inspect`'s JSON array.
pub fn tasks_of(parsed: &Value) -> Vec<Task> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    parsed
        .as_array()
        .into_iter()
        .flatten()
        .map(|task| {
            let status = &task["Status"];
            let ports = status["PortStatus"]["Ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let target = u16::try_from(p["TargetPort"].as_u64()?).ok()?;
                    let published = u16::try_from(p["PublishedPort"].as_u64()?).ok()?;
                    Some((target, published))
                })
                .collect();
            // "10.0.1.5/24" on each attachment; the first address of each network.
            let addresses = task["NetworksAttachments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    let network = a["Network"]["Spec"]["Name"].as_str()?;
                    let address = a["Addresses"].as_array()?.first()?.as_str()?;
                    let ip = address.split('/').next()?;
                    Some((network.to_string(), ip.to_string()))
                })
                .collect();
            Task {
                id: text(&task["ID"]),
                service_id: text(&task["ServiceID"]),
                slot: task["Slot"].as_u64().unwrap_or(0),
                node_id: text(&task["NodeID"]),
                state: text(&status["State"]),
                desired_state: text(&task["DesiredState"]),
                error: text(&status["Err"]),
                exit_code: status["ContainerStatus"]["ExitCode"].as_i64(),
                ports,
                addresses,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeCli;

    #[test]
    fn a_service_removed_between_ls_and_inspect_does_not_hide_the_others() {
        // `ls` names a and b; b is gone by the first `inspect`, so the second `ls` names a only.
        let fake = FakeCli::new(
            "swarm-ls-race",
            r#"dir=$(dirname "$0")
case "$1 $2" in
  "service ls") if [ -f "$dir/gone" ]; then echo a; else printf 'a\nb\n'; fi ;;
  "service inspect")
    if [ "$4" = b ]; then touch "$dir/gone"; echo "Error: no such service: b" >&2; exit 1; fi
    echo '[{"ID":"a","Spec":{"Name":"run-a","Labels":{"io.flowctl.run":"r"}}}]' ;;
esac"#,
        );
        let services = fake.engine().list_services(&[]).unwrap();
        assert_eq!(services.len(), 1, "{services:?}");
        assert_eq!(services[0].1, "run-a");
    }

    #[test]
    fn a_task_is_read_from_inspect() {
        // Trimmed from `docker inspect --type task` (Docker 20.10).
        let parsed: Value = serde_json::from_str(
            r#"[{"ID":"t1","ServiceID":"s1","Slot":2,"NodeID":"n3","DesiredState":"running",
                "Status":{"State":"failed","Err":"task: non-zero exit (3)",
                  "ContainerStatus":{"ContainerID":"c","PID":0,"ExitCode":3},
                  "PortStatus":{"Ports":[{"Protocol":"tcp","TargetPort":8088,
                    "PublishedPort":30001,"PublishMode":"host"}]}},
                "NetworksAttachments":[{"Network":{"ID":"w","Spec":{"Name":"run-net"}},
                  "Addresses":["10.0.1.5/24"]}]},
               {"ID":"t2","ServiceID":"s1","Slot":1,"DesiredState":"running",
                "Status":{"State":"pending","PortStatus":{}}}]"#,
        )
        .unwrap();
        let tasks = tasks_of(&parsed);
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].slot, 2);
        assert_eq!(tasks[0].node_id, "n3");
        assert_eq!(tasks[0].exit_code, Some(3));
        assert_eq!(tasks[0].ports, BTreeMap::from([(8088, 30001)]));
        assert!(tasks[0].ended());
        assert_eq!(
            tasks[0].addresses,
            BTreeMap::from([("run-net".to_string(), "10.0.1.5".to_string())])
        );
        assert_eq!(tasks[1].node_id, "");
        assert!(!tasks[1].ended());
        assert!(tasks[1].ports.is_empty());
    }
}
