//! Everything that can be checked before anything is created: images present (or to be
//! pulled, by the pull policy), pinned host ports free, container and network names not taken.
//! Checking deletes nothing; the sweep of dead CI jobs' leftovers is a step of its own
//! ([`sweep_dead_job_runs`]).
//! The engine is asked about every image and name at once, one CLI call each on threads of
//! their own, and every problem is reported together, before any pull.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, UdpSocket};
use std::thread;

use anyhow::{bail, Result};

use crate::contract::PUBLISH_HOST_IP;
use crate::engine::{ContainerInfo, Engine, EngineError};
use crate::gc;
use crate::labels;
use crate::location::Location;
use crate::logs::Console;
use crate::owner::{Liveness, RunOwner};
use crate::plan::{Protocol, RunPlan};

use super::pull::{is_locally_built, PullPolicy};

/// What the checks found about the images.
#[derive(Debug, Default)]
pub struct Checked {
    /// The content id of each image present locally.
    pub image_ids: BTreeMap<String, String>,
    /// The images `policy` pulls (missing ones, or all of them for `always`), sorted.
    pub to_pull: Vec<String>,
}

/// Checks `plan` against `engine` and where flowctl runs (and that `control_plane_image` is
/// there, when the control plane runs as a container); the error lists every problem. A
/// missing image is a problem only when `policy` does not pull it.
pub fn check(
    engine: &Engine,
    plan: &RunPlan,
    location: &Location,
    control_plane_image: Option<&str>,
    policy: PullPolicy,
    console: Console,
) -> Result<Checked> {
    if let Location::Remote { endpoint, .. } = location {
        warn_remote_mounts(plan, endpoint, console);
    }
    let mut images: BTreeSet<&str> = plan.containers().map(|c| c.image.as_str()).collect();
    images.extend(control_plane_image);
    let (present, taken, network) = thread::scope(|scope| {
        let images: Vec<_> = images
            .into_iter()
            .map(|image| (image, scope.spawn(move || engine.image_id(image))))
            .collect();
        let names: Vec<_> = plan
            .containers()
            .map(|c| scope.spawn(move || engine.inspect_container(&c.container_name)))
            .collect();
        let network = scope.spawn(|| engine.inspect_network(&plan.network));
        let present = images
            .into_iter()
            .map(|(image, check)| Ok((image, joined(check)?)))
            .collect::<Result<BTreeMap<&str, Option<String>>>>();
        let taken = names
            .into_iter()
            .map(joined)
            .collect::<Result<Vec<Option<ContainerInfo>>>>();
        (present, taken, joined(network))
    });
    let (present, taken, network) = (present?, taken?, network?);
    let mut problems = Vec::new();

    // The images scripts/build-images.sh builds exist only here: Docker Hub's `flowctl/`
    // images are someone else's, so they are never pulled in their place.
    let pulls = |image: &str, present: bool| !is_locally_built(image) && policy.pulls(present);
    let absent = |image: &str| present[image].is_none() && !pulls(image, false);
    let why_not = |image: &str| {
        if is_locally_built(image) {
            "flowctl/*:dev images are built here, never pulled".to_string()
        } else {
            format!("--pull {policy} does not pull it")
        }
    };
    if let Some(image) = control_plane_image.filter(|image| absent(image)) {
        problems.push(format!(
            "the control plane image `{image}` is not present on the engine, and {} (the \
             control plane runs as a container next to a remote engine; \
             scripts/build-images.sh builds flowctl/flowctl:dev, --control-plane-image names \
             another)",
            why_not(image)
        ));
    }
    for component in plan.containers().filter(|c| absent(&c.image)) {
        let problem = if is_locally_built(&component.image) {
            format!(
                "component `{}`: image `{}` is not present locally (build it with \
                 scripts/build-images.sh); {}",
                component.id,
                component.image,
                why_not(&component.image)
            )
        } else {
            format!(
                "component `{}`: image `{}` is not present locally, and {} (pull it with `{} \
                 pull {}`, or let flowctl pull it with --pull missing)",
                component.id,
                component.image,
                why_not(&component.image),
                engine.program().display(),
                component.image
            )
        };
        problems.push(problem);
    }

    for component in plan.containers() {
        for (i, volume) in component.volumes.iter().enumerate() {
            if let Err(why) = location.engine_path(&volume.host_path) {
                problems.push(format!(
                    "component `{}`: volumes[{i}].host_path: `{}` {why}",
                    component.id,
                    volume.host_path.display()
                ));
            }
        }
        for secret in &component.secrets {
            if let Err(why) = location.engine_path(&secret.host_path) {
                problems.push(format!(
                    "component `{}`: secret `{}`: `{}` {why}",
                    component.id,
                    secret.name,
                    secret.host_path.display()
                ));
            }
        }
    }

    // Pinned ports can be checked only where they are published: on this host.
    let ports_here = *location == Location::Host;
    for component in plan.containers().filter(|_| ports_here) {
        for port in &component.ports {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let free = match port.protocol {
                Protocol::Udp => UdpSocket::bind((PUBLISH_HOST_IP, host_port)).is_ok(),
                Protocol::Tcp => TcpListener::bind((PUBLISH_HOST_IP, host_port)).is_ok(),
            };
            if !free {
                problems.push(format!(
                    "component `{}`: hostPort {host_port}/{} is already in use on {PUBLISH_HOST_IP}",
                    component.id, port.protocol
                ));
            }
        }
    }

    for taken in taken.into_iter().flatten() {
        problems.push(format!(
            "container name `{}` is taken by {}",
            taken.name,
            describe_owner(gc::run_liveness(engine, &taken.labels), &taken.labels)
        ));
    }
    if let Some(network) = network {
        problems.push(format!(
            "network name `{}` is taken by {}",
            network.name,
            describe_owner(gc::run_liveness(engine, &network.labels), &network.labels)
        ));
    }

    let checked = Checked {
        to_pull: present
            .iter()
            .filter(|(image, id)| pulls(image, id.is_some()))
            .map(|(image, _)| image.to_string())
            .collect(),
        image_ids: present
            .into_iter()
            .filter_map(|(image, id)| Some((image.to_string(), id?)))
            .collect(),
    };
    match problems.as_slice() {
        [] => Ok(checked),
        [one] => bail!("{one}"),
        many => bail!("cannot start:\n  - {}", many.join("\n  - ")),
    }
}

/// A remote engine resolves bind mounts on its own host, which flowctl cannot check.
fn warn_remote_mounts(plan: &RunPlan, endpoint: &str, console: Console) {
    let mounting: Vec<&str> = plan
        .components
        .iter()
        .filter(|c| !c.volumes.is_empty())
        .map(|c| c.id.as_str())
        .collect();
    if !mounting.is_empty() {
        console.warn(format!(
            "{} mount host paths: a remote engine ({endpoint}) resolves them on its own host, so \
             they must exist there at the same paths",
            mounting.join(", ")
        ));
    }
}

/// When flowctl runs in a container (a CI job): removes what runs made from CI job containers
/// that are gone left on this engine (a killed job takes its reaper with it); says what it
/// removed. The one step before start-up that deletes anything; on the host it does nothing.
pub fn sweep_dead_job_runs(engine: &Engine, location: &Location, console: Console) {
    if *location == Location::Host {
        return;
    }
    let options = gc::GcOptions {
        job_orphans_only: true,
        ..gc::GcOptions::default()
    };
    match gc::gc(engine, options) {
        Ok(report) => {
            for run in &report.removed {
                console.info(format!(
                    "removed the leftovers of run {} (pipeline {}): its CI job container is gone",
                    run.run_id, run.pipeline
                ));
            }
            for error in report.errors {
                console.warn(format!("removing leftovers of dead CI jobs: {error}"));
            }
        }
        Err(e) => console.warn(format!("cannot look for leftovers of dead CI jobs: {e}")),
    }
}

/// The result of a check run on a scoped thread.
fn joined<T>(check: thread::ScopedJoinHandle<'_, Result<T, EngineError>>) -> Result<T> {
    match check.join() {
        Ok(result) => Ok(result?),
        Err(_) => bail!("a start-up check panicked"),
    }
}

/// Says who holds a name and what to do about it.
fn describe_owner(liveness: Liveness, labels: &BTreeMap<String, String>) -> String {
    if labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
        return "something flowctl did not create; remove or rename it, or use --project".into();
    }
    let pipeline = labels.get(labels::PIPELINE).cloned().unwrap_or_default();
    let run = labels.get(labels::RUN).cloned().unwrap_or_default();
    let pid = RunOwner::from_labels(labels)
        .map(|o| o.pid)
        .unwrap_or_default();
    match liveness {
        Liveness::Alive => format!(
            "a running flowctl (pipeline `{pipeline}`, pid {pid}); use --project to run \
             another copy"
        ),
        _ => format!(
            "a leftover of an earlier flowctl run (pipeline `{pipeline}`, run {run}); run \
             `flowctl gc` to remove it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeCli;
    use crate::plan::Naming;
    use std::path::Path;

    /// An engine holding only `present:1` and `flowctl/present:dev` (no containers, no
    /// networks).
    const TWO_IMAGES: &str = r#"case "$1 $2 $5" in
  "image inspect present:1") echo sha256:aaa ;;
  "image inspect flowctl/present:dev") echo sha256:bbb ;;
  "image inspect "*) echo "Error response from daemon: No such image: $5" >&2; exit 1 ;;
  *) echo "Error: No such object: $3" >&2; exit 1 ;;
esac"#;

    fn plan() -> RunPlan {
        let file = crate::spec::parse(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: pulls\nspec:\n  \
             sources:\n    - id: src\n      image: present:1\n  sinks:\n    - id: sink\n      \
             image: absent:1\n      inputs: [src]\n    - id: local\n      image: \
             flowctl/present:dev\n      inputs: [src]\n",
            "p.yaml",
        )
        .unwrap();
        RunPlan::build(&file, Path::new("."), &Naming::default()).unwrap()
    }

    fn check_with(policy: PullPolicy, control_plane: Option<&str>) -> Result<Checked> {
        let fake = FakeCli::new(
            &format!("preflight-{policy}-{}", control_plane.is_some()),
            TWO_IMAGES,
        );
        let console = Console { color: false };
        check(
            &fake.engine(),
            &plan(),
            &Location::Host,
            control_plane,
            policy,
            console,
        )
    }

    #[test]
    fn the_pull_policy_decides_which_images_are_pulled_or_missing() {
        let missing = check_with(PullPolicy::Missing, None).unwrap();
        assert_eq!(missing.to_pull, ["absent:1"]);
        assert_eq!(missing.image_ids["present:1"], "sha256:aaa");
        assert!(!missing.image_ids.contains_key("absent:1"));

        // Every image but the ones scripts/build-images.sh builds.
        let always = check_with(PullPolicy::Always, Some("cp:dev")).unwrap();
        assert_eq!(always.to_pull, ["absent:1", "cp:dev", "present:1"]);

        // A missing flowctl/*:dev image is never pulled from Docker Hub in its place.
        let local = check_with(PullPolicy::Missing, Some("flowctl/flowctl:dev"))
            .unwrap_err()
            .to_string();
        assert!(
            local.contains(
                "the control plane image `flowctl/flowctl:dev` is not present on the engine, and \
                 flowctl/*:dev images are built here, never pulled"
            ),
            "{local}"
        );

        let never = check_with(PullPolicy::Never, Some("cp:dev"))
            .unwrap_err()
            .to_string();
        assert!(
            never.contains(
                "component `sink`: image `absent:1` is not present locally, and --pull never \
                 does not pull it"
            ),
            "{never}"
        );
        assert!(
            never.contains("the control plane image `cp:dev`"),
            "{never}"
        );
        assert!(!never.contains("`src`"), "{never}");
    }

    #[test]
    fn a_taken_name_says_whose_it_is_and_what_to_do() {
        let stranger = describe_owner(Liveness::Dead, &BTreeMap::new());
        assert!(stranger.contains("flowctl did not create"), "{stranger}");

        let live = labels::run_labels("demo", None, "r1", RunOwner::current().labels());
        let text = describe_owner(Liveness::Alive, &live);
        assert!(
            text.contains("a running flowctl") && text.contains("--project"),
            "{text}"
        );

        let dead = labels::run_labels("demo", None, "r0", RunOwner::current().labels());
        let text = describe_owner(Liveness::Dead, &dead);
        assert!(
            text.contains("leftover") && text.contains("flowctl gc") && text.contains("r0"),
            "{text}"
        );
    }
}
