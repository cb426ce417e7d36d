//! `flowctl init`: commented starter pipelines in upstream's current style (components named
//! by reference, `NAME@VERSION`, and configured with `config:`) that run as they are with the
//! images scripts/build-images.sh builds. Never overwrites a file.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A starter pipeline.
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub text: &'static str,
}

/// Every preset; the first is the default.
pub const PRESETS: [Preset; 1] = [Preset {
    name: "datalake",
    summary: "token transfer events from the repository's testnet ledgers 997-998 in a local \
              data lake folder",
    text: DATALAKE,
}];

const DATALAKE: &str = r#"# A starter pipeline written by `flowctl init --preset datalake`.
#
# Real Stellar testnet ledgers from a data lake folder, through three containers:
#   ledgers   streams raw ledgers over gRPC (raw_ledger_service.RawLedgerService)
#   ttp       turns them into token transfer events (token_transfer_service.EventService)
#   consumer  prints each event as a JSON line and a summary, then exits
#
# Components are named by reference, `[ORG/]NAME@VERSION`: the image ORG/NAME:VERSION (here
# the images scripts/build-images.sh builds; `--registry HOST[/ORG]` takes them from a
# registry instead). Each image's /metadata.json says which environment variable a `config:`
# key sets; `env:` still sets variables directly and wins over `config:`.
#
#   scripts/build-images.sh          # once
#   flowctl validate pipeline.yaml
#   flowctl run pipeline.yaml
#
# The ledgers: FLOWCTL_LEDGERS, or the repository's examples/ledgers/testnet-997-999 (a
# relative path is relative to this file's folder).
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: stellar-datalake
  description: Token transfer events from testnet ledgers 997-998 in a local data lake

spec:
  driver: docker
  # Every component gets these, under its own `config`.
  config:
    network_passphrase: "Test SDF Network ; September 2015"

  sources:
    - id: ledgers
      type: flowctl/stellar-live-source-datalake@dev
      config:
        storage_type: FS
        bucket_name: /data/ledgers
        ledgers_per_file: 1
        files_per_partition: 64000
      volumes:
        - host_path: ${FLOWCTL_LEDGERS:-examples/ledgers/testnet-997-999}
          container_path: /data/ledgers
      health_port: 8088
      register: true
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify: {start_ledger: 997}

  processors:
    - id: ttp
      type: flowctl/ttp-processor@dev
      inputs: [ledgers]
      config:
        # Components reach each other by id on the pipeline's network.
        source_service_address: ledgers:50052
        port: ":50051"
        # Sets TTP_WORKERS: the image's metadata maps this key.
        workers: 2
      health_port: 8088
      register: true
      grpc:
        port: 50051
        service: token_transfer_service.EventService
        verify: {start_ledger: 997, end_ledger: 998}

  sinks:
    - id: consumer
      type: flowctl/consumer-app@dev
      inputs: [ttp]
      # <start_ledger> <end_ledger>, inclusive; an end of 0 follows the lake live.
      args: ["997", "998"]
      config:
        ttp_service_address: ttp:50051
      health_port: 8088
      register: true
"#;

/// The preset called `name`; the error lists them.
pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).with_context(|| {
        let known: Vec<String> = PRESETS
            .iter()
            .map(|p| format!("{} ({})", p.name, p.summary))
            .collect();
        format!(
            "--preset: unknown preset `{name}`; known: {}",
            known.join(", ")
        )
    })
}

/// Writes `preset` to `output` (`-`: stdout); an existing file is left alone.
pub fn write(preset: &Preset, output: &Path) -> Result<()> {
    if output == Path::new("-") {
        std::io::stdout()
            .write_all(preset.text.as_bytes())
            .context("cannot write to stdout")?;
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output);
    let mut file = match file {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists; flowctl init does not overwrite files (choose another with -o)",
            output.display()
        ),
        other => other.with_context(|| format!("cannot create {}", output.display()))?,
    };
    file.write_all(preset.text.as_bytes())
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "wrote {} (preset {}: {}); check it with `flowctl validate {}`",
        output.display(),
        preset.name,
        preset.summary,
        output.display()
    );
    Ok(())
}
