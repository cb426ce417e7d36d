//! A folder to run `driver: process` pipelines in: our binaries in its `bin/` (as upstream's
//! files expect them), its own runtime directory for the run records, and what the tests check
//! afterwards (every process gone).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{flowctl_command, is_running, Flowctl, TempDir};

/// A folder to run flowctl in, with `bin/` and its own runtime directory.
pub struct Lab {
    dir: TempDir,
}

impl Lab {
    pub fn new(binaries: &[&str], prefix: &str) -> Lab {
        let dir = TempDir::new(prefix);
        let built = Path::new(env!("CARGO_BIN_EXE_flowctl"))
            .parent()
            .expect("a target folder")
            .to_path_buf();
        fs::create_dir_all(dir.0.join("bin")).unwrap();
        fs::create_dir_all(dir.0.join("runtime")).unwrap();
        for name in binaries {
            let binary = built.join(name);
            assert!(
                binary.is_file(),
                "{} is missing: build the workspace's binaries first (cargo build --release \
                 --workspace --bins, as scripts/test.sh does)",
                binary.display()
            );
            std::os::unix::fs::symlink(&binary, dir.0.join("bin").join(name)).unwrap();
        }
        Lab { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    pub fn runtime(&self) -> PathBuf {
        self.dir.0.join("runtime")
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("FLOWCTL_RUNTIME_DIR", self.runtime().display().to_string())]
    }

    /// Writes `name` with `text`.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts `flowctl ARGS` here.
    pub fn spawn(&self, args: &[&str]) -> Flowctl {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Flowctl::spawn_in(self.path(), &args, &env)
    }

    /// Runs `flowctl ARGS` here to completion.
    pub fn run(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let output = flowctl_command()
            .current_dir(self.path())
            .args(args)
            .envs(self.env())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The run records left in the runtime directory.
    pub fn records(&self) -> Vec<String> {
        fs::read_dir(self.runtime())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The `sources:` entry of our raw-ledger-source run from the lab's `./bin` as upstream's process
/// files write it, over the testnet lake from ledger 997 to `end` ("0" streams forever); no
/// trailing newline.
pub fn raw_ledger_source(end: &str) -> String {
    let lake = super::repo().join("examples/ledgers/testnet-997-999");
    format!(
        r#"    - id: raw-ledger-source
      type: source
      command: ["./bin/raw-ledger-source"]
      env:
        BACKEND_TYPE: ARCHIVE
        ARCHIVE_STORAGE_TYPE: FS
        ARCHIVE_BUCKET_NAME: "{lake}"
        LEDGERS_PER_FILE: "1"
        FILES_PER_PARTITION: "64000"
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        START_LEDGER: "997"
        END_LEDGER: "{end}""#,
        lake = lake.display()
    )
}

/// `(pid, start time)` of each process flowctl said it started ("NAME (pid N) ...").
pub fn started_processes(stderr: &str) -> BTreeMap<String, u32> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("flowctl ")?;
            let (id, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split(')').next()?.parse().ok()?;
            Some((id.to_string(), pid))
        })
        .collect()
}

/// Waits (bounded) until none of `pids` runs; panics naming what is left.
pub fn assert_gone(pids: &BTreeMap<String, u32>, within: Duration, output: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<_> = pids.iter().filter(|(_, pid)| is_running(**pid)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("processes left running: {left:?}\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
