//! Unit tests only: a fake container CLI, a shell script that records each call's argument
//! vector and answers from a script body, so the argument vectors flowctl builds and the way it
//! reads answers are checked without an engine. Its folder is unique per test name and process,
//! and removed on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{Deadlines, Engine, EngineKind};

/// A fake container CLI: records its arguments to a file and answers from a script.
pub(crate) struct FakeCli {
    /// Its folder; the CLI is `docker` in it.
    pub(crate) dir: PathBuf,
}

impl FakeCli {
    /// A CLI named `docker` whose answer is `script_body` (POSIX shell; `$1`... are the
    /// arguments). `name` must be unique among the tests.
    pub(crate) fn new(name: &str, script_body: &str) -> FakeCli {
        let dir = std::env::temp_dir().join(format!("flowctl-fake-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // One `printf` writes the whole call with its `--` terminator in a single append, so
        // calls made at once (parallel pulls) never interleave their lines.
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" -- >> '{}'\n{script_body}\n",
            dir.join("calls").display()
        );
        let path = dir.join("docker");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        FakeCli { dir }
    }

    /// An engine (Docker's dialect) driving this CLI.
    pub(crate) fn engine(&self) -> Engine {
        Engine::known(
            self.dir.join("docker"),
            EngineKind::Docker,
            Deadlines::default(),
        )
    }

    /// Each call's arguments.
    pub(crate) fn calls(&self) -> Vec<Vec<String>> {
        let text = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        text.split("--\n")
            .filter(|call| !call.is_empty())
            .map(|call| call.lines().map(String::from).collect())
            .collect()
    }
}

impl Drop for FakeCli {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
