//! Pulling images before anything is created, with Docker Compose's policies: `missing` (the
//! default) pulls the images that are not present locally, `always` every image, `never` none
//! (a missing image is then a preflight error). The control plane's image (remote engines)
//! follows the same policy. The images scripts/build-images.sh builds (`flowctl/*:dev`) are
//! never pulled (preflight says how to build a missing one).
//!
//! Every pull runs at once, one thread each, under the engine's pull deadline
//! (`--pull-timeout`, far longer than an ordinary call's), with one progress line per image:
//! redrawn in place on a terminal, plain lines otherwise. A failed pull names who needs the
//! image (the component and its `type:` as written, or the control plane), the registry and
//! what it answered, with any credentials in the answer masked. Nothing is created before every
//! pull has succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::engine::inspect::PullProgress;
use crate::engine::{Engine, EngineError};
use crate::logs::Console;
use crate::plan::RunPlan;

/// When images are pulled (`--pull`, `FLOWCTL_PULL`), as Docker Compose's `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull the images that are not present locally.
    #[default]
    Missing,
    /// Pull every image, present or not (a newer one may be in the registry).
    Always,
    /// Never pull: a missing image is an error before anything is created.
    Never,
}

impl PullPolicy {
    /// Whether an image that is `present` locally (or not) is pulled under this policy.
    pub fn pulls(self, present: bool) -> bool {
        match self {
            PullPolicy::Missing => !present,
            PullPolicy::Always => true,
            PullPolicy::Never => false,
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<PullPolicy, String> {
        match text {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "`{other}` is not a pull policy: missing (pull images not present locally), \
                 always or never"
            )),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        })
    }
}

/// Who needs an image: a component, or the control plane's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    Component {
        id: String,
        /// `type: [ORG/]NAME@VERSION` as written, when the image comes from a reference.
        reference: Option<String>,
    },
    ControlPlane,
}

impl fmt::Display for ImageUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageUser::Component {
                id,
                reference: Some(reference),
            } => write!(f, "component `{id}` (`type: {reference}`)"),
            ImageUser::Component { id, .. } => write!(f, "component `{id}`"),
            ImageUser::ControlPlane => f.write_str("the control plane"),
        }
    }
}

/// Every image the run needs and who needs it, in file order within each image.
pub fn image_users(
    plan: &RunPlan,
    control_plane_image: Option<&str>,
) -> BTreeMap<String, Vec<ImageUser>> {
    let mut users: BTreeMap<String, Vec<ImageUser>> = BTreeMap::new();
    for component in plan.containers() {
        users
            .entry(component.image.clone())
            .or_default()
            .push(ImageUser::Component {
                id: component.id.clone(),
                reference: component.reference.clone(),
            });
    }
    if let Some(image) = control_plane_image {
        users
            .entry(image.to_string())
            .or_default()
            .push(ImageUser::ControlPlane);
    }
    users
}

/// The registry an image reference names: its first part when that is a host (it has a `.` or
/// `:`, or is `localhost`: Docker's rule), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Whether `image` is one of the images scripts/build-images.sh builds here (`flowctl/*:dev`):
/// never pulled, since Docker Hub's `flowctl/` images are someone else's.
pub fn is_locally_built(image: &str) -> bool {
    image.starts_with("flowctl/") && image.ends_with(":dev")
}

/// Pulls `images` (each with who needs it), all at once; returns each one's content id. On a
/// terminal (`in_place`) the progress lines are redrawn where they are. Every failure is
/// reported together.
pub fn pull_all(
    engine: &Engine,
    images: &[(String, Vec<ImageUser>)],
    console: Console,
    in_place: bool,
) -> Result<BTreeMap<String, String>> {
    let board = Board::new(images, console, in_place);
    let results: Vec<Result<String, String>> = thread::scope(|scope| {
        let pulls: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(row, (image, users))| {
                let board = &board;
                scope.spawn(move || pull_one(engine, row, image, users, board))
            })
            .collect();
        while in_place && !pulls.iter().all(|pull| pull.is_finished()) {
            board.redraw();
            thread::sleep(Duration::from_millis(250));
        }
        pulls
            .into_iter()
            .map(|pull| {
                pull.join()
                    .unwrap_or_else(|_| Err("the thread pulling it panicked".into()))
            })
            .collect()
    });
    board.redraw();
    let mut ids = BTreeMap::new();
    let mut problems = Vec::new();
    for ((image, _), result) in images.iter().zip(results) {
        match result {
            Ok(id) => {
                ids.insert(image.clone(), id);
            }
            Err(problem) => problems.push(problem),
        }
    }
    match problems.as_slice() {
        [] => Ok(ids),
        [one] => bail!("{one}"),
        many => bail!("cannot pull:\n  - {}", many.join("\n  - ")),
    }
}

/// Pulls one image, keeping its progress row current; its content id, or what went wrong.
fn pull_one(
    engine: &Engine,
    row: usize,
    image: &str,
    users: &[ImageUser],
    board: &Board,
) -> Result<String, String> {
    let started = Instant::now();
    let mut progress = PullProgress::default();
    let pulled = engine.pull_image(image, &mut |line| {
        if progress.feed(line) {
            board.progress(row, &progress, started);
        }
    });
    if let Err(error) = pulled {
        board.finish(row, format!("cannot pull {image}"));
        return Err(pull_failure(image, users, &error));
    }
    let failed = |e: EngineError| format!("{}: pulled `{image}`, but {e}", who(users));
    let id = engine
        .image_id(image)
        .map_err(failed)?
        .ok_or_else(|| format!("{}: pulled `{image}`, but it is not there", who(users)))?;
    let size = engine
        .image_size(image)
        .map(|bytes| format!("{:.1} MB, ", bytes as f64 / 1e6))
        .unwrap_or_default();
    board.finish(
        row,
        format!(
            "pulled {image} ({size}{}) in {:.1} s for {}",
            progress.describe(),
            started.elapsed().as_secs_f64(),
            who(users)
        ),
    );
    Ok(id)
}

/// `component `a` (`type: x@1`), component `b``.
fn who(users: &[ImageUser]) -> String {
    users
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error of a failed pull: who needs the image, the image and its registry, what the
/// registry answered (the CLI's error lines, credentials masked) and the command line.
pub fn pull_failure(image: &str, users: &[ImageUser], error: &EngineError) -> String {
    let registry = registry_of(image);
    let answer = match (error.timed_out, error.code) {
        (Some(limit), _) => format!(
            "`{}` did not finish within {} s and was stopped (--pull-timeout / \
             FLOWCTL_PULL_TIMEOUT sets this deadline)",
            error.command,
            limit.as_secs()
        ),
        (None, Some(code)) => format!(
            "{} (`{}` exited with {code})",
            registry_answer(&error.stderr),
            error.command
        ),
        (None, None) => error.to_string(),
    };
    redact_credentials(&format!(
        "{}: cannot pull `{image}` from {registry}: {answer}",
        who(users)
    ))
}

/// What the registry answered, from the CLI's stderr: its error lines (Podman also prints
/// progress and retry warnings there), else all of it.
fn registry_answer(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("error") && !lower.contains("level=warning")
        })
        .collect();
    if errors.is_empty() {
        stderr.trim().to_string()
    } else {
        errors.join("; ")
    }
}

/// `scheme://user:password@host` becomes `scheme://***@host`: a registry's answer may quote
/// a URL with credentials in it, which are never printed.
fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                rest = &after[user_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The progress rows, one per image: redrawn in place on a terminal, else printed as plain
/// lines when they change (at most one a second per image, besides the first and last).
struct Board {
    console: Console,
    in_place: bool,
    rows: Mutex<Rows>,
}

struct Rows {
    images: Vec<String>,
    text: Vec<String>,
    /// Each image's start, for the elapsed time shown on a terminal; `None` once it ended.
    running: Vec<Option<Instant>>,
    /// When each row was last printed as a plain line.
    printed: Vec<Instant>,
    /// How many rows are on the screen (terminal only).
    drawn: usize,
}

impl Board {
    fn new(images: &[(String, Vec<ImageUser>)], console: Console, in_place: bool) -> Board {
        let now = Instant::now();
        let text: Vec<String> = images
            .iter()
            .map(|(image, users)| format!("pulling {image} for {} ...", who(users)))
            .collect();
        if !in_place {
            for line in &text {
                console.info(line);
            }
        }
        Board {
            console,
            in_place,
            rows: Mutex::new(Rows {
                running: vec![Some(now); text.len()],
                printed: vec![now; text.len()],
                images: images.iter().map(|(image, _)| image.clone()).collect(),
                text,
                drawn: 0,
            }),
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A row's layers changed.
    fn progress(&self, row: usize, progress: &PullProgress, started: Instant) {
        let mut rows = self.rows();
        let Some(image) = rows.images.get(row) else {
            return;
        };
        let line = format!("pulling {image}: {}", progress.describe());
        rows.text[row] = line.clone();
        if !self.in_place && rows.printed[row].elapsed() >= Duration::from_secs(1) {
            rows.printed[row] = Instant::now();
            drop(rows);
            self.console
                .info(format!("{line} ({:.0} s)", started.elapsed().as_secs_f64()));
        }
    }

    /// A row's last word.
    fn finish(&self, row: usize, line: String) {
        let mut rows = self.rows();
        if row >= rows.text.len() {
            return;
        }
        rows.text[row] = line.clone();
        rows.running[row] = None;
        drop(rows);
        if self.in_place {
            self.redraw();
        } else {
            self.console.info(line);
        }
    }

    /// Draws every row over the previous drawing (terminal only).
    fn redraw(&self) {
        if !self.in_place {
            return;
        }
        let mut rows = self.rows();
        let mut screen = String::new();
        if rows.drawn > 0 {
            screen.push_str(&format!("\x1b[{}A", rows.drawn));
        }
        for (text, running) in rows.text.iter().zip(&rows.running) {
            let elapsed = running
                .map(|start| format!(" ({} s)", start.elapsed().as_secs()))
                .unwrap_or_default();
            let prefix = if self.console.color {
                "\x1b[1mflowctl\x1b[0m"
            } else {
                "flowctl"
            };
            screen.push_str(&format!("\r\x1b[2K{prefix} {text}{elapsed}\n"));
        }
        rows.drawn = rows.text.len();
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(screen.as_bytes());
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeCli;

    /// Docker's `pull` without a terminal: one layer, pulled; `bad` images are unknown to
    /// the registry. `image inspect` answers an id and a size.
    const FAKE_REGISTRY: &str = r#"case "$1" in
  pull) case "$2" in
      *bad*) echo "Error response from daemon: manifest for $2 not found: manifest unknown" >&2
             exit 1 ;;
      *) echo "v1: Pulling from org/x"; echo "284d1f6b2f37: Pulling fs layer"
         echo "284d1f6b2f37: Pull complete"; echo "Status: Downloaded newer image for $2" ;;
    esac ;;
  image) case "$4" in
      "{{.Id}}") echo "sha256:0a7ec29063d4" ;;
      "{{.Size}}") echo 4330000 ;;
    esac ;;
esac"#;

    fn component(id: &str, reference: Option<&str>) -> ImageUser {
        ImageUser::Component {
            id: id.into(),
            reference: reference.map(String::from),
        }
    }

    #[test]
    fn every_image_is_pulled_with_its_own_call_then_inspected() {
        let fake = FakeCli::new("pull-ok", FAKE_REGISTRY);
        let images = vec![
            (
                "127.0.0.1:5000/org/ttp-processor:v1".to_string(),
                vec![component("ttp", Some("ttp-processor@v1"))],
            ),
            (
                "ghcr.io/acme/flowctl:1".to_string(),
                vec![ImageUser::ControlPlane],
            ),
        ];
        let ids = pull_all(&fake.engine(), &images, Console { color: false }, false).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids["ghcr.io/acme/flowctl:1"], "sha256:0a7ec29063d4");
        let mut calls = fake.calls();
        calls.sort();
        let expected: Vec<Vec<&str>> = vec![
            vec![
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "127.0.0.1:5000/org/ttp-processor:v1",
            ],
            vec![
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "ghcr.io/acme/flowctl:1",
            ],
            vec![
                "image",
                "inspect",
                "--format",
                "{{.Size}}",
                "127.0.0.1:5000/org/ttp-processor:v1",
            ],
            vec![
                "image",
                "inspect",
                "--format",
                "{{.Size}}",
                "ghcr.io/acme/flowctl:1",
            ],
            vec!["pull", "127.0.0.1:5000/org/ttp-processor:v1"],
            vec!["pull", "ghcr.io/acme/flowctl:1"],
        ];
        assert_eq!(calls, expected);
    }

    #[test]
    fn every_failed_pull_is_reported_and_the_others_still_run() {
        let fake = FakeCli::new("pull-bad", FAKE_REGISTRY);
        let images = vec![
            (
                "127.0.0.1:5000/org/bad-source:v1".to_string(),
                vec![component("src", Some("bad-source@v1"))],
            ),
            (
                "127.0.0.1:5000/org/sink:v1".to_string(),
                vec![component("sink", None)],
            ),
            ("bad-image:latest".to_string(), vec![component("hub", None)]),
        ];
        let err = pull_all(&fake.engine(), &images, Console { color: false }, false)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot pull:\n  - "), "{err}");
        assert!(
            err.contains(
                "component `src` (`type: bad-source@v1`): cannot pull \
                 `127.0.0.1:5000/org/bad-source:v1` from 127.0.0.1:5000: Error response from \
                 daemon: manifest for 127.0.0.1:5000/org/bad-source:v1 not found"
            ),
            "{err}"
        );
        assert!(
            err.contains("component `hub`: cannot pull `bad-image:latest` from docker.io"),
            "{err}"
        );
        assert!(!err.contains("`sink`"), "{err}");
        assert!(fake.calls().contains(&vec![
            "pull".to_string(),
            "127.0.0.1:5000/org/sink:v1".into()
        ]));
    }

    #[test]
    fn policies_decide_as_compose_does() {
        for (text, present, absent) in [
            ("missing", false, true),
            ("always", true, true),
            ("never", false, false),
        ] {
            let policy: PullPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
            assert_eq!(policy.pulls(true), present, "{text}, present");
            assert_eq!(policy.pulls(false), absent, "{text}, absent");
        }
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
        let err = "newer".parse::<PullPolicy>().unwrap_err();
        assert!(err.contains("missing") && err.contains("never"), "{err}");
    }

    #[test]
    fn registries_follow_dockers_rule() {
        assert_eq!(
            registry_of("127.0.0.1:5000/org/ttp-processor:v1"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/me/x:1"), "ghcr.io");
        assert_eq!(registry_of("localhost/flowctl/x:dev"), "localhost");
        assert_eq!(registry_of("withobsrvr/ttp-processor:v1"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }

    #[test]
    fn a_failed_pull_names_component_reference_registry_and_answer() {
        let users = [
            ImageUser::Component {
                id: "ttp".into(),
                reference: Some("ttp-processor@v1".into()),
            },
            ImageUser::ControlPlane,
        ];
        let error = EngineError {
            command: "docker pull 127.0.0.1:5999/org/ttp-processor:v1".into(),
            code: Some(1),
            stderr: "Trying to pull 127.0.0.1:5999/org/ttp-processor:v1...\n\
                     time=\"x\" level=warning msg=\"Failed, retrying in 1s ... (1/3). Error: x\"\n\
                     Error: pinging container registry 127.0.0.1:5999: Get \
                     \"http://bob:s3cret@127.0.0.1:5999/v2/\": connection refused"
                .into(),
            spawn_error: None,
            timed_out: None,
        };
        let text = pull_failure("127.0.0.1:5999/org/ttp-processor:v1", &users, &error);
        assert_eq!(
            text,
            "component `ttp` (`type: ttp-processor@v1`), the control plane: cannot pull \
             `127.0.0.1:5999/org/ttp-processor:v1` from 127.0.0.1:5999: Error: pinging container \
             registry 127.0.0.1:5999: Get \"http://***@127.0.0.1:5999/v2/\": connection refused \
             (`docker pull 127.0.0.1:5999/org/ttp-processor:v1` exited with 1)"
        );

        let local = [ImageUser::Component {
            id: "sink".into(),
            reference: None,
        }];
        let timed_out = EngineError {
            command: "docker pull ghcr.io/acme/sink:1".into(),
            code: None,
            stderr: String::new(),
            spawn_error: None,
            timed_out: Some(Duration::from_secs(900)),
        };
        let text = pull_failure("ghcr.io/acme/sink:1", &local, &timed_out);
        assert!(
            text.starts_with("component `sink`: cannot pull `ghcr.io/acme/sink:1` from ghcr.io"),
            "{text}"
        );
        assert!(text.contains("--pull-timeout"), "{text}");
    }

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            redact_credentials("https://u:p@reg.io/v2/ and http://reg.io/x and a@b"),
            "https://***@reg.io/v2/ and http://reg.io/x and a@b"
        );
    }
}
