//! Where flowctl runs relative to the container engine. That decides how flowctl reaches the
//! components (health probes, stream verification, status), how they reach its control plane,
//! where published ports can be reached, and how bind mounts are resolved:
//!
//! - **on the engine's host** (a local socket): published ports on 127.0.0.1, the control plane
//!   on the pipeline network's gateway address;
//! - **in a container of the same engine** (its socket mounted into a CI job): flowctl attaches
//!   its own container to the pipeline network, serves the control plane on its address there
//!   and reaches the components at their network addresses; bind mounts are resolved through
//!   its own container's mounts, since the engine resolves them on its host;
//! - **against a remote engine** (`DOCKER_HOST`/`CONTAINER_HOST` `tcp://` or `ssh://`, e.g. a
//!   `docker:dind` service): published ports live on the engine's host, so they are published
//!   on that host's address as the client resolves it (no wider), and the control plane runs as
//!   a container on the pipeline network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::engine::{Engine, EngineKind, MountInfo};

/// What `--engine-location` (`FLOWCTL_ENGINE_LOCATION`) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocationSetting {
    /// Detect it.
    #[default]
    Auto,
    Host,
    /// In a container of the engine; the container's id or name when detection cannot find it.
    Container(Option<String>),
    /// A remote engine; the address its published ports are reached at, when the engine's
    /// host name says nothing useful.
    Remote(Option<IpAddr>),
}

impl FromStr for LocationSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<LocationSetting, String> {
        let (kind, value) = match text.split_once(':') {
            Some((kind, value)) => (kind, Some(value)),
            None => (text, None),
        };
        match (kind, value) {
            ("auto", None) => Ok(LocationSetting::Auto),
            ("host", None) => Ok(LocationSetting::Host),
            ("container", id) => Ok(LocationSetting::Container(id.map(String::from))),
            ("remote", None) => Ok(LocationSetting::Remote(None)),
            ("remote", Some(ip)) => ip
                .parse()
                .map(|ip| LocationSetting::Remote(Some(ip)))
                .map_err(|_| format!("`{ip}` is not an IP address")),
            _ => Err(format!(
                "`{text}` is not auto, host, container[:ID] or remote[:IP]"
            )),
        }
    }
}

/// Where flowctl runs relative to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// On the engine's host.
    Host,
    /// In a container of the same engine.
    Container {
        /// The container's full id.
        id: String,
        /// Its mounts, to resolve bind mounts on the engine's host.
        mounts: Vec<MountInfo>,
    },
    /// The engine is elsewhere.
    Remote {
        /// `DOCKER_HOST` (or `CONTAINER_HOST`) as given.
        endpoint: String,
        /// The engine host's address as this machine reaches it.
        address: IpAddr,
    },
}

impl Location {
    /// Where ports are published: the engine host's loopback, unless the engine is remote.
    pub fn publish_ip(&self) -> IpAddr {
        match self {
            Location::Remote { address, .. } => *address,
            Location::Host | Location::Container { .. } => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The id of flowctl's own container, when it runs in one of the engine's.
    pub fn own_container(&self) -> Option<&str> {
        match self {
            Location::Container { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether flowctl reaches components at their network addresses (not published ports).
    pub fn on_pipeline_network(&self) -> bool {
        matches!(self, Location::Container { .. })
    }

    /// Whether the control plane runs as a container (flowctl's own address may not be
    /// reachable from the engine's host).
    pub fn control_plane_in_container(&self) -> bool {
        matches!(self, Location::Remote { .. })
    }

    /// The path on the engine's host of `path` as flowctl sees it: the same on the host; in a
    /// container, through the mount that holds it. The error says why it cannot be mounted.
    pub fn engine_path(&self, path: &Path) -> Result<PathBuf, String> {
        let Location::Container { id, mounts } = self else {
            return Ok(path.to_path_buf());
        };
        let holder = mounts
            .iter()
            .filter(|m| !m.destination.is_empty() && path.starts_with(&m.destination))
            .max_by_key(|m| m.destination.len());
        match holder {
            Some(mount) => {
                let rest = path.strip_prefix(&mount.destination).unwrap_or(path);
                Ok(Path::new(&mount.source).join(rest))
            }
            None => Err(format!(
                "is not on a mount of flowctl's container {}: the engine resolves bind mounts on \
                 its own host, where this path does not exist; mount the workspace into the job \
                 container (at the same path: `-v \"$PWD:$PWD\" -w \"$PWD\"`), or use a volume",
                short(id)
            )),
        }
    }

    /// One line for the start of a run.
    pub fn describe(&self) -> String {
        match self {
            Location::Host => "flowctl runs on the engine's host: it reaches components through \
                               ports published on 127.0.0.1"
                .to_string(),
            Location::Container { id, .. } => format!(
                "flowctl runs in container {} of this engine (its socket is mounted): it joins \
                 the pipeline network and reaches components at their network addresses",
                short(id)
            ),
            Location::Remote { endpoint, address } => format!(
                "the engine is remote ({endpoint}): ports are published on {address}, its \
                 address, and the control plane runs as a container on the pipeline network"
            ),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Location::Host => "host",
            Location::Container { .. } => "container",
            Location::Remote { .. } => "remote",
        })
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Finds out where flowctl runs relative to `engine`, as `setting` allows.
pub fn detect(engine: &Engine, setting: &LocationSetting) -> Result<Location> {
    let remote = remote_endpoint(engine.kind());
    match setting {
        LocationSetting::Host => Ok(Location::Host),
        LocationSetting::Remote(address) => {
            let endpoint = remote.unwrap_or_else(|| "--engine-location remote".to_string());
            let address = match address {
                Some(address) => *address,
                None => resolve_engine_host(&endpoint)?,
            };
            Ok(Location::Remote { endpoint, address })
        }
        LocationSetting::Container(id) => {
            let candidates = match id {
                Some(id) => vec![id.clone()],
                None => own_container_candidates(),
            };
            match find_own_container(engine, &candidates)? {
                Some(location) => Ok(location),
                None => bail!(
                    "--engine-location container: the engine knows no container {} (give its \
                     id or name: --engine-location container:ID)",
                    candidates.join(" or ")
                ),
            }
        }
        LocationSetting::Auto => {
            if let Some(endpoint) = remote {
                let address = resolve_engine_host(&endpoint)?;
                return Ok(Location::Remote { endpoint, address });
            }
            if !in_a_container() {
                return Ok(Location::Host);
            }
            Ok(find_own_container(engine, &own_container_candidates())?.unwrap_or(Location::Host))
        }
    }
}

/// `DOCKER_HOST` (Docker) or `CONTAINER_HOST` (Podman) when it names an engine over the
/// network.
fn remote_endpoint(kind: EngineKind) -> Option<String> {
    let variables: &[&str] = match kind {
        EngineKind::Docker => &["DOCKER_HOST"],
        EngineKind::Podman => &["CONTAINER_HOST", "DOCKER_HOST"],
    };
    variables
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| value.starts_with("tcp://") || value.starts_with("ssh://"))
}

/// The address of the host in `tcp://HOST:PORT` or `ssh://USER@HOST:PORT`, as this machine
/// resolves it (IPv4 preferred).
fn resolve_engine_host(endpoint: &str) -> Result<IpAddr> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let addresses: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "cannot resolve the engine's host `{host}` ({endpoint}); give the address its \
                 published ports are reached at: --engine-location remote:IP"
            )
        })?
        .map(|a| a.ip())
        .collect();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addresses.first())
        .copied()
        .with_context(|| format!("`{host}` ({endpoint}) resolves to no address"))
}

/// Whether this process may run in a container (Docker's and Podman's marker files, or a
/// container id in its cgroup). Only a hint: the engine must also know the container.
fn in_a_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || !ids_in(&read("/proc/self/cgroup")).is_empty()
}

/// Possible ids of the container this process runs in: the container folder that the engine
/// bind-mounts `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from (Docker:
/// `/var/lib/docker/containers/<id>/hostname`, Podman: `.../overlay-containers/<id>/userdata/
/// hostname`), its cgroup, and its host name (Docker's and Podman's default is the short id).
/// Only those mounts: on a host, the mount table also lists every running container's layers.
fn own_container_candidates() -> Vec<String> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .unwrap_or_else(|| read("/proc/sys/kernel/hostname").trim().to_string());
    candidates_from(
        &read("/proc/self/mountinfo"),
        &read("/proc/self/cgroup"),
        &hostname,
    )
}

/// [`own_container_candidates`] from the texts it reads.
fn candidates_from(mountinfo: &str, cgroup: &str, hostname: &str) -> Vec<String> {
    let own_mounts: String = mountinfo
        .lines()
        .filter(|line| {
            // Field 5 is the mount point.
            line.split_whitespace().nth(4).is_some_and(|point| {
                ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&point)
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut candidates = ids_in(&own_mounts);
    candidates.extend(ids_in(cgroup));
    if hostname.len() >= 12 && hostname.chars().all(|c| c.is_ascii_hexdigit()) {
        candidates.push(hostname.to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    candidates
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every 64-hex-digit word in `text` that sits in a container path or cgroup name.
fn ids_in(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in text.lines() {
        let context_ok = ["containers/", "docker", "libpod"]
            .iter()
            .any(|marker| line.contains(marker));
        if !context_ok {
            continue;
        }
        for piece in line.split(|c: char| c == '/' || c.is_whitespace() || c == '-' || c == '.') {
            let id = piece.len() == 64 && piece.chars().all(|c| c.is_ascii_hexdigit());
            if id && !ids.iter().any(|known| known == piece) {
                ids.push(piece.to_string());
            }
        }
    }
    ids
}

/// The first of `candidates` that the engine knows as a running container.
fn find_own_container(engine: &Engine, candidates: &[String]) -> Result<Option<Location>> {
    for candidate in candidates {
        let info = engine
            .inspect_container(candidate)
            .context("cannot ask the engine about flowctl's own container")?;
        if let Some(info) = info.filter(|i| i.state.running) {
            return Ok(Some(Location::Container {
                id: info.id,
                mounts: info.mounts,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("auto".parse(), Ok(LocationSetting::Auto));
        assert_eq!("host".parse(), Ok(LocationSetting::Host));
        assert_eq!("container".parse(), Ok(LocationSetting::Container(None)));
        assert_eq!(
            "container:ci-job".parse(),
            Ok(LocationSetting::Container(Some("ci-job".into())))
        );
        assert_eq!(
            "remote:10.0.0.5".parse(),
            Ok(LocationSetting::Remote(Some("10.0.0.5".parse().unwrap())))
        );
        let err = "remote:docker".parse::<LocationSetting>().unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
        let err = "cloud".parse::<LocationSetting>().unwrap_err();
        assert!(
            err.contains("auto, host, container[:ID] or remote[:IP]"),
            "{err}"
        );
    }

    #[test]
    fn engine_hosts_are_read_from_tcp_and_ssh_endpoints() {
        let ip = |e: &str| resolve_engine_host(e).unwrap().to_string();
        assert_eq!(ip("tcp://127.0.0.1:2375"), "127.0.0.1");
        assert_eq!(ip("ssh://ci@127.0.0.2:22"), "127.0.0.2");
        assert_eq!(ip("tcp://[::1]:2375"), "::1");
        assert_eq!(ip("tcp://localhost:2375"), "127.0.0.1");
    }

    #[test]
    fn container_ids_come_from_mounts_and_cgroups() {
        let id = "3f4e".repeat(16);
        let mountinfo = format!(
            "612 598 0:51 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4"
        );
        let expected = vec![id.clone()];
        assert_eq!(ids_in(&mountinfo), expected);
        assert_eq!(
            ids_in(&format!("0::/system.slice/docker-{id}.scope")),
            expected
        );
        assert_eq!(ids_in(&format!("12:pids:/docker/{id}")), expected);
        assert!(ids_in("0::/user.slice/session-3.scope").is_empty());
    }

    #[test]
    fn only_the_own_hostname_mount_names_the_container_not_other_containers_layers() {
        let own = "ab12".repeat(16);
        let other = "cd34".repeat(16);
        let in_container = format!(
            "700 690 0:51 /var/lib/docker/containers/{own}/hostname /etc/hostname rw - ext4\n\
             701 690 0:51 /var/lib/docker/containers/{own}/hosts /etc/hosts rw - ext4"
        );
        assert_eq!(
            candidates_from(&in_container, "0::/", "ab12ab12ab12"),
            [own.clone(), "ab12ab12ab12".to_string()]
        );
        // A host (itself maybe a container) lists every running container's layers and shm.
        let host = format!(
            "800 29 0:60 / /var/lib/containers/storage/overlay/{other}/merged rw - overlay\n\
             801 29 0:61 / /var/lib/docker/containers/{other}/mounts/shm rw - tmpfs"
        );
        assert!(candidates_from(&host, "0::/", "vm").is_empty());
    }

    #[test]
    fn bind_mounts_are_resolved_through_the_containers_mounts() {
        let location = Location::Container {
            id: "a".repeat(64),
            mounts: vec![
                MountInfo {
                    source: "/home/ci/builds/repo".into(),
                    destination: "/work".into(),
                },
                MountInfo {
                    source: "/var/run/docker.sock".into(),
                    destination: "/var/run/docker.sock".into(),
                },
            ],
        };
        assert_eq!(
            location.engine_path(Path::new("/work/examples/ledgers")),
            Ok(PathBuf::from("/home/ci/builds/repo/examples/ledgers"))
        );
        let err = location.engine_path(Path::new("/data/lake")).unwrap_err();
        assert!(err.contains("-v \"$PWD:$PWD\""), "{err}");
        assert_eq!(
            Location::Host.engine_path(Path::new("/data/lake")),
            Ok(PathBuf::from("/data/lake"))
        );
    }
}
