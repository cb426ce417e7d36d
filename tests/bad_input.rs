//! Malformed pipeline files. Every file in tests/pipelines/invalid/
//! states its expected error in `# expect:` lines and must make `flowctl validate` (the real
//! binary) exit 1 with that error; files too large for the repository are generated here; and
//! a deterministic mutator feeds the parser and the plan tens of thousands of broken variants
//! of real pipelines to show that no input makes them panic.

mod support;

use std::fs;
use std::os::unix::net::UnixListener;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use flowctl::plan::{Naming, RunPlan};
use flowctl::spec::{self, MAX_FILE_BYTES};
use support::{flowctl, repo, TempDir};

fn validate(path: &Path) -> (Option<i32>, String) {
    // A CLI that does not exist proves validation never calls the engine.
    let (status, _, stderr) = flowctl(
        &["validate", &path.display().to_string()],
        &[("FLOWCTL_DOCKER_BIN", "/nonexistent/docker")],
    );
    (status.code(), stderr)
}

#[test]
fn the_corpus_fails_validate_with_each_files_expected_error() {
    let dir = repo().join("tests/pipelines/invalid");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "only {} files in the corpus",
        files.len()
    );
    for path in &files {
        let text = String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:`",
            path.display()
        );
        let (code, stderr) = validate(path);
        assert_eq!(code, Some(1), "{}: {stderr}", path.display());
        assert!(
            stderr.starts_with(&format!("error: {}: ", path.display())),
            "the error does not name the file: {stderr}"
        );
        for expect in expected {
            assert!(
                stderr.contains(expect),
                "{}: expected {expect:?} in:\n{stderr}",
                path.display()
            );
        }
        // Env values in the corpus are `secret-line...`; they must never be printed.
        assert!(
            !stderr.contains("secret-line"),
            "env value leaked: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_parsing() {
    let dir = TempDir::new("flowctl-bad-huge-");
    let path = dir.0.join("huge.yaml");
    // Valid YAML, so only the size check can refuse it.
    let mut text = String::from("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: huge}\n");
    text.push_str("spec:\n  description: |\n");
    while text.len() as u64 <= MAX_FILE_BYTES {
        text.push_str("    lorem ipsum dolor sit amet, consectetur adipiscing elit\n");
    }
    fs::write(&path, &text).unwrap();
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("bytes; more than the {MAX_FILE_BYTES} bytes")),
        "{stderr}"
    );
}

#[test]
fn a_large_legal_file_still_validates() {
    let dir = TempDir::new("flowctl-bad-large-");
    let path = dir.0.join("large.yaml");
    let mut text =
        String::from("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: large}\nspec:\n");
    text.push_str("  sources:\n    - {id: c0, image: img}\n  processors:\n");
    for i in 1..2000 {
        text.push_str(&format!(
            "    - {{id: c{i}, image: img, inputs: [c{}], env: {{K: v}}}}\n",
            i - 1
        ));
    }
    assert!((text.len() as u64) < MAX_FILE_BYTES);
    fs::write(&path, &text).unwrap();
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_socket_is_never_mounted() {
    let dir = TempDir::new("flowctl-bad-socket-");
    let socket = dir.0.join("engine.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    let path = dir.0.join("p.yaml");
    fs::write(
        &path,
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: s}\nspec:\n  sources:\n    - \
         {id: src, image: img, volumes: [{host_path: engine.sock, container_path: \
         /var/run/docker.sock}]}\n",
    )
    .unwrap();
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "component `src`: volumes[0].host_path: `{}` is a socket",
            socket.display()
        )),
        "{stderr}"
    );
}

/// xorshift64*: deterministic, so a failure reproduces from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// YAML and pipeline fragments a mutation may insert.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    "\"",
    "\t",
    "\n",
    "\n  ",
    "\n    - ",
    "#",
    "&a ",
    "*a",
    "&b [*a, *a, *a]",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "!tag ",
    "~",
    "null",
    "? ",
    "|",
    ">",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "0x10",
    "-1",
    "65536",
    "99999999999999999999",
    "1e400",
    ".nan",
    "id: ",
    "image: ",
    "inputs: [",
    "ports: [{containerPort: ",
    "hostPort: ",
    "volumes: [{host_path: ",
    "container_path: ",
    "..",
    "/",
    "env: {",
    "health_port: ",
    "health_timeout: ",
    "stop_grace_period: ",
    "grpc: {port: ",
    "register: ",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "--privileged",
    "a=b",
];

/// One random change to `input`.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    let at = rng.below(out.len() + 1);
    match rng.below(7) {
        0 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] ^= 1 << rng.below(8);
        }
        1 if !out.is_empty() => {
            let end = (at + rng.below(40)).min(out.len());
            out.drain(at.min(end)..end);
        }
        2 => {
            let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
            out.splice(at..at, token.iter().copied());
        }
        3 if !out.is_empty() => {
            let start = rng.below(out.len());
            let end = (start + rng.below(80)).min(out.len());
            let chunk = out[start..end].to_vec();
            out.splice(at..at, chunk);
        }
        4 => {
            // Splice a piece of another seed in.
            let other = &seeds[rng.below(seeds.len())];
            let start = rng.below(other.len());
            let end = (start + rng.below(200)).min(other.len());
            out.splice(at..at, other[start..end].iter().copied());
        }
        5 => {
            // Swap two lines: breaks indentation and structure while keeping the words.
            let text = String::from_utf8_lossy(&out).into_owned();
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.len() > 1 {
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
            }
            out = lines.join("\n").into_bytes();
        }
        _ => out.push(rng.next() as u8),
    }
    out
}

#[test]
fn no_mutated_pipeline_makes_the_parser_or_the_plan_panic() {
    let mut seeds: Vec<Vec<u8>> = [
        "tests/pipelines/three-stage.yaml",
        "examples/ttp-pipeline.yaml",
        "examples/ttp-pipeline-v1.yaml",
    ]
    .iter()
    .map(|p| {
        let path = repo().join(p);
        fs::read(&path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display()))
    })
    .collect();
    let mut corpus: Vec<PathBuf> = fs::read_dir(repo().join("tests/pipelines/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    corpus.sort();
    // Not the bombs: each costs serde_yaml its repetition limit, and they are in the corpus.
    corpus.retain(|p| !p.to_string_lossy().contains("yaml-bomb"));
    seeds.extend(corpus.iter().map(|p| fs::read(p).unwrap()));
    // Upstream's current format (references, config, secrets, resources, `${VAR}`).
    let mut upstream: Vec<PathBuf> = fs::read_dir(repo().join("tests/pipelines/upstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    upstream.sort();
    seeds.extend(upstream.iter().map(|p| fs::read(p).unwrap()));
    assert!(seeds.len() > 10);

    let base_dir = repo().join("tests/pipelines");
    let naming = Naming::default();
    let mut rng = Rng(0x5eed_f10c_7c71_0001);
    let (mut parsed, mut planned) = (0usize, 0usize);
    let iterations = 20_000;
    for iteration in 0..iterations {
        let seed = &seeds[rng.below(seeds.len())];
        let mut input = seed.clone();
        for _ in 0..1 + rng.below(4) {
            input = mutate(&mut rng, &input, &seeds);
        }
        // The file loader rejects non-UTF-8 before parsing, as `spec::load` does.
        let text = String::from_utf8_lossy(&input).into_owned();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let file = spec::parse(&text, "fuzz.yaml").ok()?;
            Some(RunPlan::build(&file, &base_dir, &naming).is_ok())
        }));
        match outcome {
            Ok(Some(ok)) => {
                parsed += 1;
                planned += usize::from(ok);
            }
            Ok(None) => {}
            Err(_) => panic!("iteration {iteration} panicked on input:\n{text}"),
        }
    }
    // The mutator must not only produce garbage: some variants parse, some even plan.
    eprintln!("{iterations} variants: {parsed} parsed, {planned} planned");
    assert!(parsed > iterations / 20, "only {parsed} parsed");
    assert!(planned > 0);
}
