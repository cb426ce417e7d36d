//! Reading what the container CLI prints: `inspect` JSON (Docker's and Podman's shapes),
//! `port` lines and `pull` progress, into typed values. Pure functions: nothing here runs the
//! CLI.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What `inspect` says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The image as given to `run` (`Config.Image`).
    pub image: String,
    /// Published ports as `host_ip:host_port->container_port/protocol`.
    pub ports: Vec<String>,
    /// Its address on each network it is attached to, by network name.
    pub networks: BTreeMap<String, String>,
    /// Its mounts: where each comes from on the engine's host, and where it is inside.
    pub mounts: Vec<MountInfo>,
    /// When the current (or last) run of the container started and finished, as the engine
    /// writes them (RFC 3339); empty when unknown.
    pub started_at: String,
    pub finished_at: String,
    /// The image's content id (`Image`, `sha256:...`).
    pub image_id: String,
}

impl ContainerInfo {
    /// Its published ports as [`Engine::published_ports`](super::Engine::published_ports)
    /// gives them: host port by (container port, protocol), the first binding of each.
    pub fn published_ports(&self) -> BTreeMap<(u16, String), u16> {
        let mut ports = BTreeMap::new();
        for binding in &self.ports {
            // `host_ip:host_port->container_port/protocol`; the host ip may be IPv6.
            let Some((outside, inside)) = binding.split_once("->") else {
                continue;
            };
            let Some((port, protocol)) = inside.split_once('/') else {
                continue;
            };
            let host_port = outside.rsplit_once(':').map(|(_, p)| p.parse());
            if let (Ok(port), Some(Ok(host_port))) = (port.parse(), host_port) {
                ports
                    .entry((port, protocol.to_string()))
                    .or_insert(host_port);
            }
        }
        ports
    }
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// On the engine's host.
    pub source: String,
    /// Inside the container.
    pub destination: String,
}

/// A container's lifecycle state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
}

/// What `network inspect` says about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Parses `docker port CONTAINER` (Docker and Podman print the same): one line per binding,
/// e.g. `8088/tcp -> 127.0.0.1:49153` (and `8088/tcp -> [::1]:49153`); the first wins.
pub(crate) fn parse_port_lines(out: &str) -> BTreeMap<(u16, String), u16> {
    let mut ports = BTreeMap::new();
    for line in out.lines() {
        let Some((inside, outside)) = line.split_once("->") else {
            continue;
        };
        let Some((port, protocol)) = inside.trim().split_once('/') else {
            continue;
        };
        let host_port = outside.trim().rsplit_once(':').map(|(_, p)| p.parse());
        if let (Ok(port), Some(Ok(host_port))) = (port.parse(), host_port) {
            ports
                .entry((port, protocol.to_string()))
                .or_insert(host_port);
        }
    }
    ports
}

pub(crate) fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// Docker's and Podman's inspect output is an array of objects.
pub(crate) fn first(value: &Value) -> &Value {
    value.as_array().and_then(|a| a.first()).unwrap_or(value)
}

/// A field by name, case-insensitively (Docker writes `Name`, Podman 4 networks `name`).
pub(crate) fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

pub(crate) fn string(value: &Value, key: &str) -> String {
    get(value, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `NetworkSettings.Ports` (`{"50052/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}`)
/// as `127.0.0.1:49153->50052/tcp`; unpublished ports (`null`) are left out.
fn published_ports(value: Option<&Value>) -> Vec<String> {
    let mut ports: Vec<String> = value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .flat_map(|(container_port, bindings)| {
            bindings
                .as_array()
                .into_iter()
                .flatten()
                .map(move |binding| {
                    format!(
                        "{}:{}->{container_port}",
                        string(binding, "HostIp"),
                        string(binding, "HostPort")
                    )
                })
        })
        .collect();
    ports.sort();
    ports
}

pub(crate) fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

pub(crate) fn container_info(value: &Value) -> ContainerInfo {
    let state = get(value, "State").unwrap_or(&Value::Null);
    ContainerInfo {
        id: string(value, "Id"),
        name: string(value, "Name").trim_start_matches('/').to_string(),
        labels: labels(get(value, "Config").and_then(|c| get(c, "Labels"))),
        image: get(value, "Config")
            .map(|config| string(config, "Image"))
            .unwrap_or_default(),
        ports: published_ports(
            get(value, "NetworkSettings").and_then(|settings| get(settings, "Ports")),
        ),
        networks: get(value, "NetworkSettings")
            .and_then(|settings| get(settings, "Networks"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, network)| (name.clone(), string(network, "IPAddress")))
            .collect(),
        mounts: get(value, "Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|mount| MountInfo {
                source: string(mount, "Source"),
                destination: string(mount, "Destination"),
            })
            .collect(),
        started_at: string(state, "StartedAt"),
        finished_at: string(state, "FinishedAt"),
        image_id: string(value, "Image"),
        state: ContainerState {
            status: string(state, "Status"),
            running: get(state, "Running")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            exit_code: get(state, "ExitCode").and_then(Value::as_i64).unwrap_or(0),
            oom_killed: get(state, "OOMKilled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
    }
}

/// The first network of `network inspect` output; `None` when it lists none.
pub(crate) fn network_info(parsed: &Value) -> Option<NetworkInfo> {
    let network = first(parsed);
    if network.is_null() {
        return None;
    }
    Some(NetworkInfo {
        id: string(network, "Id"),
        name: string(network, "Name"),
        labels: labels(get(network, "Labels")),
    })
}

/// The gateway address of the first network of `network inspect` output, IPv4 preferred (it
/// goes into an env var as host:port). Docker reports it under `IPAM.Config`, Podman under
/// `subnets`.
pub(crate) fn network_gateway(parsed: &Value) -> Option<String> {
    let network = first(parsed);
    let mut gateways: Vec<&str> = get(network, "IPAM")
        .and_then(|ipam| get(ipam, "Config"))
        .or_else(|| get(network, "subnets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|subnet| get(subnet, "Gateway").and_then(Value::as_str))
        .filter(|gateway| !gateway.is_empty())
        .collect();
    gateways.sort_by_key(|gateway| gateway.contains(':'));
    gateways
        .first()
        .map(|gateway| gateway.split('/').next().unwrap_or(gateway).to_string())
}

/// The content of the first file in a tar stream (`docker cp CONTAINER:FILE -`): a 512-byte
/// header whose size field (octal, bytes 124..136) says how much content follows it.
pub fn first_tar_entry(tar: &str) -> Option<String> {
    let bytes = tar.as_bytes();
    let header = bytes.get(..512)?;
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    let content = bytes.get(512..512 + size)?;
    String::from_utf8(content.to_vec()).ok()
}

/// The layers of one `pull`, from the lines its CLI prints without a terminal. Docker prints
/// `ID: Pulling fs layer`, `ID: Download complete`, `ID: Pull complete` (or `ID: Already
/// exists`) per layer on stdout; Podman prints `Copying blob sha256:ID` when it starts one
/// (and `... done` or `... skipped: already exists` when it knows it finished) on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layers the CLI has named.
    pub layers: BTreeSet<String>,
    /// Those of them that are complete.
    pub done: BTreeSet<String>,
}

impl PullProgress {
    /// Takes in one line; whether it changed what is known.
    pub fn feed(&mut self, line: &str) -> bool {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Copying blob ") {
            let mut words = rest.split_whitespace();
            let Some(blob) = words.next() else {
                return false;
            };
            // With a terminal Podman shortens the id to Docker's 12 characters.
            let blob: String = blob
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect();
            let finished = words.any(|w| w.starts_with("done") || w.starts_with("skipped"));
            return self.record(blob, finished);
        }
        let Some((id, status)) = line.split_once(": ") else {
            return false;
        };
        let is_layer_id = id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
        if !is_layer_id {
            return false;
        }
        let finished = matches!(status.trim(), "Pull complete" | "Already exists");
        self.record(id.to_string(), finished)
    }

    fn record(&mut self, layer: String, finished: bool) -> bool {
        let mut changed = self.layers.insert(layer.clone());
        if finished {
            changed |= self.done.insert(layer);
        }
        changed
    }

    /// `2/3 layers` (Docker), or `3 layers` while Podman does not say which are done; Docker
    /// names no layer when the engine already holds them all (the image under another name).
    pub fn describe(&self) -> String {
        let noun = if self.layers.len() == 1 {
            "layer"
        } else {
            "layers"
        };
        if self.layers.is_empty() {
            "every layer already present".to_string()
        } else if self.done.is_empty() {
            format!("{} {noun}", self.layers.len())
        } else {
            format!("{}/{} {noun}", self.done.len(), self.layers.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_of_an_inspect_match_the_port_command() {
        let info = ContainerInfo {
            ports: vec![
                "0.0.0.0:49153->8088/tcp".into(),
                ":::49153->8088/tcp".into(),
                "127.0.0.1:40001->50052/tcp".into(),
                "127.0.0.1:40002->53/udp".into(),
                "nonsense".into(),
            ],
            ..ContainerInfo::default()
        };
        let from_port_command = parse_port_lines(
            "8088/tcp -> 0.0.0.0:49153\n8088/tcp -> [::]:49153\n50052/tcp -> 127.0.0.1:40001\n53/udp -> 127.0.0.1:40002\n",
        );
        assert_eq!(info.published_ports(), from_port_command);
        assert_eq!(from_port_command.len(), 3);
    }

    #[test]
    fn docker_pull_lines_count_layers_and_completions() {
        let mut progress = PullProgress::default();
        assert_eq!(progress.describe(), "every layer already present");
        let lines = [
            "v1: Pulling from org/ttp-processor",
            "284d1f6b2f37: Pulling fs layer",
            "9a0b0ce99936: Already exists",
            "284d1f6b2f37: Download complete",
            "284d1f6b2f37: Pull complete",
            "Digest: sha256:017eea84248ac5dd81841a04911c7a1eeb8c27130e8616329c46a0460d64912b",
            "Status: Downloaded newer image for 127.0.0.1:5000/org/ttp-processor:v1",
        ];
        let changed: Vec<bool> = lines.iter().map(|l| progress.feed(l)).collect();
        assert_eq!(changed, [false, true, true, false, true, false, false]);
        assert_eq!(progress.describe(), "2/2 layers");
    }

    #[test]
    fn podman_pull_lines_count_blobs() {
        let mut progress = PullProgress::default();
        for line in [
            "Trying to pull 127.0.0.1:5000/org/y:1...",
            "Getting image source signatures",
            "Copying blob sha256:22da3b94ac0de2ebc232c2a7e6c0d7093ed8c8af5dcdca81f8168a6f21242467",
            "Copying config sha256:781c401fb550055a0dcb883214196da7244d5b21007c71f409d460f75691b5cf",
            "Writing manifest to image destination",
        ] {
            progress.feed(line);
        }
        assert_eq!(progress.describe(), "1 layer");
        progress.feed("Copying blob sha256:aa11bb22cc33dd44 skipped: already exists");
        progress.feed("Copying blob 22da3b94ac0d done");
        assert_eq!(progress.describe(), "2/2 layers");
    }
}
