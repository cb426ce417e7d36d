//! The containers' environment on its way to the engine: a private file (0600) per container,
//! removed as soon as the container exists, so values never appear on a command line; and the
//! folder those files go to.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Where a run writes its env files: `$TMPDIR` (else `/tmp`) when it exists, else a private
/// folder of the run's own in the current directory (a `FROM scratch` CI job image has no
/// `/tmp`), removed when the run ends.
#[derive(Debug)]
pub struct EnvDir {
    path: PathBuf,
    /// Made by the run, so removed by it.
    own: bool,
}

impl EnvDir {
    pub fn new(run_id: &str) -> Result<EnvDir> {
        let temp = std::env::temp_dir();
        if temp.is_dir() {
            return Ok(EnvDir {
                path: temp,
                own: false,
            });
        }
        let path = std::env::current_dir()
            .unwrap_or_default()
            .join(format!(".flowctl-{run_id}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| {
                format!(
                    "no folder for the containers' env files: {} does not exist and {} cannot be                      created; set TMPDIR to a writable folder",
                    temp.display(),
                    path.display()
                )
            })?;
        Ok(EnvDir { path, own: true })
    }
}

impl Drop for EnvDir {
    fn drop(&mut self) {
        if self.own {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A file holding a container's environment, readable only by us and removed as soon as
/// `create` has read it: values never appear on a command line.
pub struct EnvFile {
    pub path: PathBuf,
}

impl EnvFile {
    pub fn write(
        dir: &EnvDir,
        run_id: &str,
        component: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<EnvFile> {
        let path = dir.path.join(format!("flowctl-{run_id}-{component}.env"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let env_file = EnvFile { path };
        for (key, value) in env {
            writeln!(file, "{key}={value}")
                .with_context(|| format!("cannot write {}", env_file.path.display()))?;
        }
        Ok(env_file)
    }
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_private_and_removed() {
        let env = BTreeMap::from([("TOKEN".to_string(), "s3cret=x".to_string())]);
        let dir = EnvDir::new("unit").unwrap();
        let file = EnvFile::write(&dir, &super::super::new_run_id(), "unit", &env).unwrap();
        let path = file.path.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "TOKEN=s3cret=x\n");
        drop(file);
        assert!(!path.exists());
    }
}
