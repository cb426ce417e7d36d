//! The pipeline files the sections run, written into the work folder: the example pipeline on
//! a lake and range, a fan-out of test components, the flowctl.v1 example (from
//! examples/ttp-pipeline-v1.yaml itself), the same as `driver: process`, and the example's
//! Compose translation.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::bench::{output, Bench};

/// Where a pipeline reads: a lake folder, its first ledger and its network.
#[derive(Debug, Clone)]
pub struct Range {
    pub lake: PathBuf,
    pub first: u32,
    pub last: u32,
    pub passphrase: String,
}

impl Range {
    /// The largest real lake of examples/ledgers: 30 ledgers, 7,740 transactions, 15,480 events.
    pub fn real(bench: &Bench) -> Range {
        Range {
            lake: bench
                .root
                .join("examples/ledgers/standalone-p25-10048-10077"),
            first: 10048,
            last: 10077,
            passphrase: "Standalone Network ; February 2017".into(),
        }
    }

    pub fn ledgers(&self) -> u32 {
        self.last - self.first + 1
    }
}

fn write(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// The example pipeline (first generation) on `range`; the consumer asks for the range up to
/// `end` (0: live) and prints only its summary. `extra_processor_env` is added to the
/// processor's env (`KEY: "value"` lines).
pub fn example(
    bench: &Bench,
    name: &str,
    range: &Range,
    end: u32,
    extra_processor_env: &[(&str, &str)],
) -> Result<PathBuf> {
    let (first, lake, passphrase) = (range.first, range.lake.display(), &range.passphrase);
    let mut processor_env = String::new();
    for (key, value) in extra_processor_env {
        let _ = writeln!(processor_env, "        {key}: \"{value}\"");
    }
    let text = format!(
        r#"apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: bench-ttp
spec:
  sources:
    - id: stellar-live-source-datalake
      image: {source}
      env:
        STORAGE_TYPE: FS
        BUCKET_NAME: /data/ledgers
        NETWORK_PASSPHRASE: "{passphrase}"
      volumes:
        - host_path: {lake}
          container_path: /data/ledgers
          readonly: true
      ports:
        - {{name: grpc, containerPort: 50052}}
        - {{name: health, containerPort: 8088}}
      health_check: /health
      health_port: 8088
      register: true
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify: {{start_ledger: {first}}}
  processors:
    - id: ttp-processor
      image: {processor}
      inputs: [stellar-live-source-datalake]
      env:
        NETWORK_PASSPHRASE: "{passphrase}"
        SOURCE_SERVICE_ADDRESS: stellar-live-source-datalake:50052
        PORT: ":50051"
{processor_env}      ports:
        - {{name: grpc, containerPort: 50051}}
        - {{name: health, containerPort: 8088}}
      health_check: /health
      health_port: 8088
      register: true
      grpc:
        port: 50051
        service: token_transfer_service.EventService
        verify: {{start_ledger: {first}, end_ledger: {second}}}
  sinks:
    - id: consumer-app
      image: {consumer}
      inputs: [ttp-processor]
      args: ["{first}", "{end}"]
      env:
        TTP_SERVICE_ADDRESS: ttp-processor:50051
        PRINT_EVENTS: "false"
      ports:
        - {{name: health, containerPort: 8088}}
      health_check: /health
      health_port: 8088
      register: true
"#,
        source = bench.image("stellar-live-source-datalake"),
        processor = bench.image("ttp-processor"),
        consumer = bench.image("consumer-app"),
        second = first + 1,
    );
    write(&bench.file(name), &text)
}

/// A fan-out of `n` test components: src -> p01..p(n-2) -> sink.
pub fn fanout(bench: &Bench, n: usize) -> Result<PathBuf> {
    let image = bench.image("test-component");
    let mut text = format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: bench-fanout-{n}\nspec:\n  \
         sources:\n    - {{id: src, image: \"{image}\", health_port: 8088}}\n  processors:\n"
    );
    let processors: Vec<String> = (1..=n.saturating_sub(2))
        .map(|i| format!("p{i:02}"))
        .collect();
    for p in &processors {
        let _ = writeln!(
            text,
            "    - {{id: {p}, image: \"{image}\", health_port: 8088, inputs: [src]}}"
        );
    }
    let _ = writeln!(
        text,
        "  sinks:\n    - {{id: sink, image: \"{image}\", health_port: 8088, inputs: [{}]}}",
        processors.join(", ")
    );
    write(&bench.file(&format!("fanout-{n}.yaml")), &text)
}

/// examples/ttp-pipeline-v1.yaml on `range`, its consumer only counting. Every substitution
/// must find its text: the example is the source of truth, not the bench.
pub fn v1(bench: &Bench, name: &str, range: &Range) -> Result<PathBuf> {
    let example = bench.root.join("examples/ttp-pipeline-v1.yaml");
    let mut text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let (first, last) = (range.first.to_string(), range.last.to_string());
    let tag = format!(":{}", bench.image_tag);
    let replacements = [
        (
            "  name: ttp-pipeline-v1\n",
            "  name: bench-ttp-v1\n".to_string(),
        ),
        (
            "host_path: ledgers/testnet-997-999",
            format!("host_path: {}", range.lake.display()),
        ),
        (
            "NETWORK_PASSPHRASE: \"Test SDF Network ; September 2015\"",
            format!("NETWORK_PASSPHRASE: \"{}\"", range.passphrase),
        ),
        (
            "START_LEDGER: \"997\"",
            format!("START_LEDGER: \"{first}\""),
        ),
        ("END_LEDGER: \"998\"", format!("END_LEDGER: \"{last}\"")),
        (
            "        PORT: \":50053\"\n",
            "        PORT: \":50053\"\n        PRINT_EVENTS: \"false\"\n".to_string(),
        ),
        (":dev\n", format!("{tag}\n")),
    ];
    for (from, to) in replacements {
        if !text.contains(from) {
            bail!(
                "{} changed: the bench cannot find `{}` in it",
                example.display(),
                from.trim()
            );
        }
        text = text.replace(from, &to);
    }
    write(&bench.file(name), &text)
}

/// The flowctl.v1 pipeline as `driver: process`: the same three binaries, from a bin/ folder
/// of the work directory, on `range`.
pub fn processes(bench: &Bench, name: &str, range: &Range) -> Result<PathBuf> {
    let bin = bench.file("bin");
    std::fs::create_dir_all(&bin)?;
    for binary in ["raw-ledger-source", "ttp-processor-v1", "consumer-app-v1"] {
        let link = bin.join(binary);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bench.binary(binary)?, &link)?;
    }
    let (bin, lake, passphrase) = (bin.display(), range.lake.display(), &range.passphrase);
    let (first, last) = (range.first, range.last);
    let text = format!(
        r#"apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: bench-processes
spec:
  driver: process
  sources:
    - id: raw-ledger-source
      command: ["{bin}/raw-ledger-source"]
      env:
        BACKEND_TYPE: ARCHIVE
        ARCHIVE_STORAGE_TYPE: FS
        ARCHIVE_BUCKET_NAME: "{lake}"
        LEDGERS_PER_FILE: "1"
        FILES_PER_PARTITION: "64000"
        NETWORK_PASSPHRASE: "{passphrase}"
        START_LEDGER: "{first}"
        END_LEDGER: "{last}"
  processors:
    - id: ttp-processor-v1
      command: ["{bin}/ttp-processor-v1"]
      inputs: [raw-ledger-source]
      env:
        NETWORK_PASSPHRASE: "{passphrase}"
  sinks:
    - id: consumer-app-v1
      command: ["{bin}/consumer-app-v1"]
      inputs: [ttp-processor-v1]
      env:
        PRINT_EVENTS: "false"
"#
    );
    write(&bench.file(name), &text)
}

/// `pipeline` translated by `flowctl translate --to compose` for project `project`, its health
/// checks every `interval` (a Compose duration). A translation that fails, or whose health
/// check interval the bench cannot set, fails the section.
/// `docker_host` is where Compose reaches the engine (`DOCKER_HOST`), for the cleanup.
pub fn compose(
    bench: &Bench,
    pipeline: &Path,
    project: &str,
    interval: &str,
    docker_host: Option<&str>,
) -> Result<PathBuf> {
    let file = bench.file(&format!("{project}.yaml"));
    let flowctl = bench.flowctl.to_string_lossy();
    let (pipeline_arg, file_arg) = (pipeline.to_string_lossy(), file.to_string_lossy());
    output(
        &flowctl,
        &[
            "translate",
            "--to",
            "compose",
            "--no-control-plane",
            "--project",
            project,
            "-o",
            &file_arg,
            &pipeline_arg,
        ],
    )?;
    let text = std::fs::read_to_string(&file)?;
    if !text.contains("interval: 1s\n") {
        bail!("flowctl's Compose translation has no `interval: 1s` health check to set");
    }
    bench.compose_project(project, &file, docker_host);
    let set = text.replace("interval: 1s\n", &format!("interval: {interval}\n"));
    write(&file, &set)
}
