//! `secrets:` of a component: host files given to it read-only, as a file or as one
//! environment variable. A missing required secret is a plan error, so nothing starts; a
//! missing optional one is left out. Contents are read only when the container is created
//! ([`SecretPlan::read_env_value`]) and never appear in a message.

use std::path::{Path, PathBuf};

use crate::spec::SecretSpec;

/// The largest secret flowctl passes as an environment variable.
const MAX_ENV_SECRET_BYTES: u64 = 64 * 1024;

/// Where a secret goes in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretTarget {
    /// Mounted read-only at this path.
    File(String),
    /// Its content is this variable, through the private env file.
    Env(String),
}

/// One secret that exists on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    pub name: String,
    /// Absolute.
    pub host_path: PathBuf,
    pub target: SecretTarget,
    /// `mode:` as permission bits (`0400` → 0o400), for translations; `flowctl run` mounts
    /// read-only whatever it says.
    pub mode: Option<u32>,
}

impl SecretPlan {
    /// The variable's value: the file's text without one trailing line break. The error
    /// names the secret and the file, never the content.
    pub fn read_env_value(&self) -> Result<String, String> {
        let fail = |why: &str| {
            format!(
                "secret `{}` ({}): {why}",
                self.name,
                self.host_path.display()
            )
        };
        let bytes = std::fs::read(&self.host_path).map_err(|e| fail(&e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text"))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if text.contains(['\n', '\r', '\0']) {
            return Err(fail(
                "has several lines, which an environment variable cannot carry (mount it with \
                 `container_path` instead)",
            ));
        }
        Ok(text.to_string())
    }
}

/// The secrets that exist; problems for malformed entries and missing required files.
/// `notes` gets one line per optional secret left out.
pub(super) fn secrets(
    specs: &[SecretSpec],
    base_dir: &Path,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Vec<SecretPlan> {
    let mut plans = Vec::new();
    for (i, secret) in specs.iter().enumerate() {
        let field = format!("secrets[{i}]");
        if secret.name.trim().is_empty() {
            problems.push(format!("{field}.name: must not be empty"));
        }
        let target = match (&secret.container_path, &secret.env) {
            (Some(path), None) => {
                if !path.starts_with('/') || path.split('/').any(|p| p == "..") {
                    problems.push(format!(
                        "{field}.container_path: `{path}` must be an absolute path without `..`"
                    ));
                } else if path.contains([':', ',', '\n', '\0']) {
                    problems.push(format!(
                        "{field}.container_path: `{path}` must not contain `:`, `,` or line \
                         breaks"
                    ));
                }
                SecretTarget::File(path.clone())
            }
            (None, Some(var)) => {
                let valid = !var.is_empty()
                    && !var.starts_with(|c: char| c.is_ascii_digit())
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    problems.push(format!(
                        "{field}.env: `{var}` is not an environment variable name"
                    ));
                }
                SecretTarget::Env(var.clone())
            }
            _ => {
                problems.push(format!(
                    "{field}: give exactly one of `container_path` (a read-only file) or `env` \
                     (its content as a variable)"
                ));
                continue;
            }
        };
        let mode = secret.mode.as_ref().and_then(|mode| {
            let digits = mode.strip_prefix('0').unwrap_or(mode);
            let octal =
                (3..=4).contains(&digits.len()) && digits.chars().all(|c| ('0'..='7').contains(&c));
            let bits = octal.then(|| u32::from_str_radix(digits, 8).ok()).flatten();
            if bits.is_none() {
                problems.push(format!(
                    "{field}.mode: `{mode}` is not octal permissions such as `0400`"
                ));
            }
            bits
        });
        if secret.host_path.is_empty() || secret.host_path.contains([':', ',', '\n', '\0']) {
            problems.push(format!(
                "{field}.host_path: must be a path without `:`, `,` or line breaks"
            ));
            continue;
        }
        let host_path = absolute(base_dir, &secret.host_path);
        let metadata = std::fs::metadata(&host_path);
        match (&metadata, secret.required) {
            (Err(_), true) => {
                problems.push(format!(
                    "{field}.host_path: required secret `{}`: `{}` does not exist",
                    secret.name,
                    host_path.display()
                ));
                continue;
            }
            (Err(_), false) => {
                notes.push(format!(
                    "secret `{}` is left out: `{}` does not exist (it is not `required`)",
                    secret.name,
                    host_path.display()
                ));
                continue;
            }
            (Ok(m), _) if matches!(target, SecretTarget::Env(_)) && !m.is_file() => {
                problems.push(format!(
                    "{field}.host_path: `{}` must be a file to pass as `env`",
                    host_path.display()
                ));
            }
            (Ok(m), _)
                if matches!(target, SecretTarget::Env(_)) && m.len() > MAX_ENV_SECRET_BYTES =>
            {
                problems.push(format!(
                    "{field}.host_path: `{}` is larger than the {MAX_ENV_SECRET_BYTES} bytes \
                     flowctl passes as a variable (mount it with `container_path`)",
                    host_path.display()
                ));
            }
            (Ok(_), _) => {}
        }
        plans.push(SecretPlan {
            name: secret.name.clone(),
            host_path,
            target,
            mode,
        });
    }
    plans
}

fn absolute(base_dir: &Path, host_path: &str) -> PathBuf {
    let joined = base_dir.join(host_path);
    joined.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(&joined))
            .unwrap_or(joined)
    })
}
