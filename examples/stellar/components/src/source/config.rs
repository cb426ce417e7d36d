//! The source's configuration, read from the environment with upstream's variable names
//! (docs/contract.md §4, §8): which backend (a data lake folder, S3, GCS or a Stellar RPC server),
//! where, with which credentials, and how a stream reads ahead. Reading the configuration never
//! touches the network; the lake's `.config.json` is read when the backend is opened
//! ([`super::backend::open`]), and [`EnvLake::resolve`] decides between it and the environment.
//!
//! Invariant: credentials and auth headers are held in [`Secret`]s, whose `Debug` never shows
//! them, so a configuration can be logged or printed in a test failure.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowctl_proto::component::parse_duration;
use stellar_ttp::datalake::{Layout, Manifest, MANIFEST_FILE};

use crate::grpc;

/// Upstream's fixed listen address.
pub const DEFAULT_LISTEN: &str = ":50052";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_READ_AHEAD: usize = 16;
/// RPC pages fetched concurrently ahead of a stream when `PREFETCH_OBJECTS` is unset.
pub const DEFAULT_PREFETCH: usize = 32;
/// Objects in flight at first from S3 or GCS when `PREFETCH_OBJECTS` is unset (the window then
/// adapts): on this machine's loopback S3 server 64 reach the server's rate, 32 two thirds.
pub const ADAPTIVE_START: usize = 64;
/// How long a failing remote request is retried before the stream (or start-up) fails.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ledgers asked for per `getLedgers` call.
pub const DEFAULT_RPC_PAGE_LIMIT: u32 = 10;
/// `AWS_REGION` when unset, as upstream.
pub const DEFAULT_AWS_REGION: &str = "us-east-1";

/// A credential or header value: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// `text` with this secret's value replaced, for messages built from a library's error.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "<redacted>")
    }
}

/// The source's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `PORT` (ours; upstream always listens on `:50052`).
    pub listen: SocketAddr,
    /// Where ledgers come from.
    pub backend: BackendConfig,
    /// The layout and passphrase the environment gives (the lake's `.config.json` wins).
    pub env_lake: EnvLake,
    /// `LEDGER_POLL_INTERVAL` (ours): how often a live stream looks for the next ledger.
    pub poll_interval: Duration,
    /// `READ_AHEAD_LEDGERS` (ours): ledgers read ahead of the client per stream.
    pub read_ahead: usize,
    /// `PREFETCH_OBJECTS` (ours): objects (or RPC pages) a stream fetches concurrently ahead of
    /// the one it decompresses, from S3, GCS or RPC. Unset: a window that adapts for S3 and
    /// GCS (see `backend::window`), 32 pages for RPC.
    pub prefetch: Prefetch,
}

/// A stream's prefetch setting: `objects` in flight, fixed or the start of an adaptive window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    pub objects: usize,
    pub adapts: bool,
}

impl Prefetch {
    /// `PREFETCH_OBJECTS=n`: `n` in flight, always.
    pub fn fixed(objects: usize) -> Prefetch {
        Prefetch {
            objects: objects.max(1),
            adapts: false,
        }
    }

    /// The default: an adaptive window.
    pub fn adaptive() -> Prefetch {
        Prefetch {
            objects: ADAPTIVE_START,
            adapts: true,
        }
    }
}

impl std::fmt::Display for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.adapts {
            write!(f, "{} objects, adapting", self.objects)
        } else {
            write!(f, "{} objects", self.objects)
        }
    }
}

/// `BACKEND_TYPE` with what each backend needs.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// `ARCHIVE_STORAGE_TYPE=FS` (ours): a data lake folder.
    Folder { root: PathBuf },
    /// `ARCHIVE_STORAGE_TYPE=S3` or `GCS`.
    ObjectStore(ObjectStoreConfig),
    /// `BACKEND_TYPE=RPC`.
    Rpc(RpcConfig),
}

/// An object storage bucket holding a galexie data lake.
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    pub service: ObjectService,
    /// `ARCHIVE_BUCKET_NAME` (fallback `BUCKET_NAME`), without any `/path` suffix.
    pub bucket: String,
    /// `ARCHIVE_PATH` (and any `/path` after the bucket name): the lake's prefix, without
    /// leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `REMOTE_RETRY_TIMEOUT` (ours).
    pub retry_timeout: Duration,
}

/// Which object storage service, with its own settings.
#[derive(Debug, Clone)]
pub enum ObjectService {
    S3(S3Config),
    Gcs(GcsConfig),
}

#[derive(Debug, Clone)]
pub struct S3Config {
    /// `AWS_REGION` (fallback `AWS_DEFAULT_REGION`, default `us-east-1`).
    pub region: String,
    /// `S3_ENDPOINT_URL`: any S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// `S3_FORCE_PATH_STYLE`: `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub force_path_style: bool,
    pub credentials: AwsCredentials,
}

/// Where S3 requests get their credentials.
#[derive(Debug, Clone)]
pub enum AwsCredentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
    Keys {
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// A web identity token file (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`) or the
    /// container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_*`): object_store's chain,
    /// given these variables.
    Chain(Vec<(String, String)>),
    /// None given: unsigned requests, for public buckets.
    Anonymous,
}

impl AwsCredentials {
    /// Where the credentials come from, for errors: never the values.
    pub fn source(&self) -> String {
        match self {
            AwsCredentials::Keys {
                session_token: None,
                ..
            } => "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment".into(),
            AwsCredentials::Keys { .. } => {
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN from the environment"
                    .into()
            }
            AwsCredentials::Chain(vars) => format!(
                "the AWS credential chain ({})",
                vars.iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            AwsCredentials::Anonymous => {
                "none (anonymous, unsigned requests: no AWS_ACCESS_KEY_ID is set)".into()
            }
        }
    }

    /// The secret values, for scrubbing library messages.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            AwsCredentials::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => [
                Some(access_key_id),
                Some(secret_access_key),
                session_token.as_ref(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GcsConfig {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service account (or authorized user) JSON file;
    /// `None`: anonymous requests, for public buckets.
    pub application_credentials: Option<PathBuf>,
    /// `STORAGE_EMULATOR_HOST`: the emulator's base URL (`http://` added when no scheme is
    /// given); requests to it are unsigned.
    pub emulator_host: Option<String>,
}

impl GcsConfig {
    /// Where the credentials come from, for errors: never the values.
    pub fn credentials_source(&self) -> String {
        match (&self.emulator_host, &self.application_credentials) {
            (Some(_), _) => "none (STORAGE_EMULATOR_HOST: unsigned requests)".into(),
            (None, Some(path)) => format!("GOOGLE_APPLICATION_CREDENTIALS={}", path.display()),
            (None, None) => {
                "none (anonymous requests: GOOGLE_APPLICATION_CREDENTIALS is not set)".into()
            }
        }
    }
}

/// A Stellar RPC server's `getLedgers`.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// `RPC_ENDPOINT`: the JSON-RPC URL.
    pub endpoint: String,
    /// `RPC_AUTH_HEADER`: `Name: value`, or a bare value sent as `Authorization`.
    pub auth_header: Option<Secret>,
    /// `RPC_PAGE_LIMIT` (ours): ledgers per `getLedgers` call.
    pub page_limit: u32,
    /// `REMOTE_RETRY_TIMEOUT` (ours).
    pub retry_timeout: Duration,
}

/// What the environment says of the lake; the lake's `.config.json` wins where it speaks.
#[derive(Debug, Clone, Default)]
pub struct EnvLake {
    /// `LEDGERS_PER_FILE`.
    pub ledgers_per_file: Option<u32>,
    /// `FILES_PER_PARTITION`.
    pub files_per_partition: Option<u32>,
    /// `NETWORK_PASSPHRASE`.
    pub network_passphrase: Option<String>,
}

/// A lake's layout and network, decided from its manifest and the environment.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    pub layout: Layout,
    pub network_passphrase: String,
    /// Where the manifest overrode the environment, to be logged at start-up.
    pub notes: Vec<String>,
}

impl EnvLake {
    /// The layout without a manifest: the variables, else upstream's defaults.
    pub fn layout(&self) -> Layout {
        Layout {
            ledgers_per_file: self.ledgers_per_file.unwrap_or(64),
            files_per_partition: self.files_per_partition.unwrap_or(10),
        }
    }

    /// The manifest's layout and passphrase where it gives them, else the environment's; a
    /// note for every variable the manifest contradicts.
    pub fn resolve(&self, manifest: Option<&Manifest>) -> Result<LakeSettings, String> {
        let env_layout = self.layout();
        let env_passphrase = self.network_passphrase.clone();
        let Some(manifest) = manifest else {
            let network_passphrase = env_passphrase.ok_or(format!(
                "NETWORK_PASSPHRASE is required: the data lake has no {MANIFEST_FILE}"
            ))?;
            return Ok(LakeSettings {
                layout: env_layout,
                network_passphrase,
                notes: Vec::new(),
            });
        };
        let mut notes = Vec::new();
        let layout = manifest.layout_or(env_layout);
        for (variable, env_value, used, field) in [
            (
                "LEDGERS_PER_FILE",
                self.ledgers_per_file,
                layout.ledgers_per_file,
                "ledgersPerBatch",
            ),
            (
                "FILES_PER_PARTITION",
                self.files_per_partition,
                layout.files_per_partition,
                "batchesPerPartition",
            ),
        ] {
            if let Some(value) = env_value.filter(|value| *value != used) {
                notes.push(format!(
                    "{variable}={value} disagrees with {MANIFEST_FILE} ({field} {used}); \
                     using {MANIFEST_FILE}"
                ));
            }
        }
        let network_passphrase = match (manifest.network_passphrase.clone(), env_passphrase) {
            (Some(from_manifest), Some(from_env)) => {
                if from_manifest != from_env {
                    notes.push(format!(
                        "NETWORK_PASSPHRASE {from_env:?} disagrees with {MANIFEST_FILE} \
                         ({from_manifest:?}); using {MANIFEST_FILE}"
                    ));
                }
                from_manifest
            }
            (Some(from_manifest), None) => from_manifest,
            (None, Some(from_env)) => from_env,
            (None, None) => {
                return Err(format!(
                    "NETWORK_PASSPHRASE is required: the data lake's {MANIFEST_FILE} does not \
                     name one"
                ))
            }
        };
        layout.validate().map_err(|e| format!("{e:#}"))?;
        Ok(LakeSettings {
            layout,
            network_passphrase,
            notes,
        })
    }
}

impl SourceConfig {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<SourceConfig, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`SourceConfig::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SourceConfig, String> {
        let get = |key: &str| {
            lookup(key)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let env_lake = EnvLake {
            ledgers_per_file: parse_number::<u32>(get("LEDGERS_PER_FILE"), "LEDGERS_PER_FILE")?,
            files_per_partition: parse_number::<u32>(
                get("FILES_PER_PARTITION"),
                "FILES_PER_PARTITION",
            )?,
            network_passphrase: get("NETWORK_PASSPHRASE"),
        };
        env_lake.layout().validate().map_err(|e| format!("{e:#}"))?;
        let retry_timeout = positive_duration(&get, "REMOTE_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT)?;
        let backend = backend_config(&get, retry_timeout)?;
        let listen = grpc::listen_addr(
            "PORT",
            &get("PORT").unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        )?;
        let poll_interval = positive_duration(&get, "LEDGER_POLL_INTERVAL", DEFAULT_POLL_INTERVAL)?;
        let read_ahead = positive_number(&get, "READ_AHEAD_LEDGERS", DEFAULT_READ_AHEAD)?;
        let prefetch = match get("PREFETCH_OBJECTS") {
            Some(_) => {
                Prefetch::fixed(positive_number(&get, "PREFETCH_OBJECTS", DEFAULT_PREFETCH)?)
            }
            None => Prefetch::adaptive(),
        };
        Ok(SourceConfig {
            listen,
            backend,
            env_lake,
            poll_interval,
            read_ahead,
            prefetch,
        })
    }
}

/// `BACKEND_TYPE`, else the legacy `STORAGE_TYPE`, and the chosen backend's variables.
fn backend_config(
    get: &impl Fn(&str) -> Option<String>,
    retry_timeout: Duration,
) -> Result<BackendConfig, String> {
    let storage = || {
        get("ARCHIVE_STORAGE_TYPE")
            .map(|value| ("ARCHIVE_STORAGE_TYPE", value))
            .or_else(|| get("STORAGE_TYPE").map(|value| ("STORAGE_TYPE", value)))
    };
    match get("BACKEND_TYPE").map(|value| value.to_ascii_uppercase()) {
        Some(kind) if kind == "RPC" => rpc_config(get, retry_timeout),
        Some(kind) if kind == "ARCHIVE" => match storage() {
            Some((variable, value)) => archive_config(get, variable, &value, retry_timeout),
            None => Err(
                "ARCHIVE_STORAGE_TYPE is required with BACKEND_TYPE=ARCHIVE: S3, GCS or FS"
                    .to_string(),
            ),
        },
        Some(other) => Err(format!(
            "BACKEND_TYPE: unknown backend {other:?} (ARCHIVE or RPC)"
        )),
        None => match storage() {
            Some((variable, value)) => archive_config(get, variable, &value, retry_timeout),
            None => Err(
                "STORAGE_TYPE is required: FS (with BUCKET_NAME the data lake folder), \
                 S3 or GCS (with BUCKET_NAME the bucket); or BACKEND_TYPE=RPC with RPC_ENDPOINT"
                    .to_string(),
            ),
        },
    }
}

fn archive_config(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    storage: &str,
    retry_timeout: Duration,
) -> Result<BackendConfig, String> {
    let kind = storage.to_ascii_uppercase();
    if !matches!(kind.as_str(), "FS" | "S3" | "GCS") {
        return Err(format!(
            "{variable}: unknown storage type {storage:?} (S3, GCS or FS)"
        ));
    }
    let bucket = get("ARCHIVE_BUCKET_NAME")
        .or_else(|| get("BUCKET_NAME"))
        .ok_or_else(|| {
            format!(
                "BUCKET_NAME is required (or ARCHIVE_BUCKET_NAME): {}",
                if kind == "FS" {
                    "for FS, the data lake's base folder"
                } else {
                    "the bucket holding the data lake"
                }
            )
        })?;
    let path = get("ARCHIVE_PATH").unwrap_or_default();
    if kind == "FS" {
        let root = PathBuf::from(&bucket).join(path.trim_start_matches('/'));
        if !root.is_dir() {
            return Err(format!(
                "BUCKET_NAME: {} is not a folder (is the data lake mounted?)",
                root.display()
            ));
        }
        return Ok(BackendConfig::Folder { root });
    }
    // Galexie names a lake `bucket/path`; the part after the bucket comes before ARCHIVE_PATH.
    let (bucket, in_name) = bucket.split_once('/').unwrap_or((bucket.as_str(), ""));
    let prefix = [in_name, path.as_str()]
        .iter()
        .map(|part| part.trim_matches('/'))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    let service = if kind == "S3" {
        ObjectService::S3(s3_config(get)?)
    } else {
        ObjectService::Gcs(GcsConfig {
            application_credentials: get("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
            emulator_host: get("STORAGE_EMULATOR_HOST").map(|host| {
                if host.contains("://") {
                    host
                } else {
                    format!("http://{host}")
                }
            }),
        })
    };
    Ok(BackendConfig::ObjectStore(ObjectStoreConfig {
        service,
        bucket: bucket.to_string(),
        prefix,
        retry_timeout,
    }))
}

/// The standard AWS variables that point object_store's credential chain somewhere.
const AWS_CHAIN_VARIABLES: [&str; 6] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

fn s3_config(get: &impl Fn(&str) -> Option<String>) -> Result<S3Config, String> {
    let endpoint = get("S3_ENDPOINT_URL");
    if let Some(endpoint) = &endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "S3_ENDPOINT_URL: {endpoint:?} must start with http:// or https://"
            ));
        }
    }
    let force_path_style = match get("S3_FORCE_PATH_STYLE") {
        None => false,
        Some(value) => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(format!(
                    "S3_FORCE_PATH_STYLE: {value:?} is not true or false"
                ))
            }
        },
    };
    let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => AwsCredentials::Keys {
            access_key_id: Secret(access_key_id),
            secret_access_key: Secret(secret_access_key),
            session_token: get("AWS_SESSION_TOKEN").map(Secret),
        },
        (Some(_), None) => {
            return Err("AWS_SECRET_ACCESS_KEY is required with AWS_ACCESS_KEY_ID".to_string())
        }
        (None, Some(_)) => {
            return Err("AWS_ACCESS_KEY_ID is required with AWS_SECRET_ACCESS_KEY".to_string())
        }
        (None, None) => {
            let chain: Vec<(String, String)> = AWS_CHAIN_VARIABLES
                .iter()
                .filter_map(|name| get(name).map(|value| (name.to_string(), value)))
                .collect();
            if chain.is_empty() {
                AwsCredentials::Anonymous
            } else {
                AwsCredentials::Chain(chain)
            }
        }
    };
    Ok(S3Config {
        region: get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_AWS_REGION.to_string()),
        endpoint,
        force_path_style,
        credentials,
    })
}

fn rpc_config(
    get: &impl Fn(&str) -> Option<String>,
    retry_timeout: Duration,
) -> Result<BackendConfig, String> {
    let endpoint = get("RPC_ENDPOINT").ok_or(
        "RPC_ENDPOINT is required with BACKEND_TYPE=RPC: the Stellar RPC server's URL".to_string(),
    )?;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "RPC_ENDPOINT: {endpoint:?} must start with http:// or https://"
        ));
    }
    let page_limit = positive_number(get, "RPC_PAGE_LIMIT", DEFAULT_RPC_PAGE_LIMIT)?;
    Ok(BackendConfig::Rpc(RpcConfig {
        endpoint,
        auth_header: get("RPC_AUTH_HEADER").map(Secret),
        page_limit,
        retry_timeout,
    }))
}

fn parse_number<T: std::str::FromStr>(
    value: Option<String>,
    variable: &str,
) -> Result<Option<T>, String> {
    value
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("{variable}: {value:?} is not a valid number"))
        })
        .transpose()
}

fn positive_number<T: std::str::FromStr + PartialEq + Default>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: T,
) -> Result<T, String> {
    let value = parse_number::<T>(get(variable), variable)?.unwrap_or(default);
    if value == T::default() {
        return Err(format!("{variable}: must be at least 1"));
    }
    Ok(value)
}

fn positive_duration(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: Duration,
) -> Result<Duration, String> {
    let value = match get(variable) {
        Some(value) => parse_duration(&value).map_err(|e| format!("{variable}: {e}"))?,
        None => default,
    };
    if value.is_zero() {
        return Err(format!("{variable}: must be greater than zero"));
    }
    Ok(value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    pub fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        match SourceConfig::from_lookup(lookup(pairs)) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e,
        }
    }

    /// A folder under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "stellar-components-source-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn required_variables_are_named() {
        let err = config_error(&[]);
        assert!(err.starts_with("STORAGE_TYPE is required"), "{err}");
        let err = config_error(&[("STORAGE_TYPE", "FS")]);
        assert!(err.starts_with("BUCKET_NAME is required"), "{err}");
        let err = config_error(&[("STORAGE_TYPE", "S3")]);
        assert!(err.starts_with("BUCKET_NAME is required"), "{err}");
        let err = config_error(&[("BACKEND_TYPE", "ARCHIVE")]);
        assert!(err.starts_with("ARCHIVE_STORAGE_TYPE is required"), "{err}");
        let err = config_error(&[("BACKEND_TYPE", "rpc")]);
        assert!(err.starts_with("RPC_ENDPOINT is required"), "{err}");
        let err = config_error(&[("STORAGE_TYPE", "FTP")]);
        assert!(err.starts_with("STORAGE_TYPE: unknown"), "{err}");
        let err = config_error(&[("BACKEND_TYPE", "ARCHIVE"), ("ARCHIVE_STORAGE_TYPE", "ftp")]);
        assert!(err.starts_with("ARCHIVE_STORAGE_TYPE: unknown"), "{err}");
        let err = config_error(&[("BACKEND_TYPE", "LEDGERS")]);
        assert!(err.starts_with("BACKEND_TYPE: unknown"), "{err}");
        let err = config_error(&[
            ("STORAGE_TYPE", "S3"),
            ("BUCKET_NAME", "b"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ]);
        assert!(
            err.starts_with("AWS_SECRET_ACCESS_KEY is required"),
            "{err}"
        );
    }

    #[test]
    fn upstream_variables_choose_the_backend() {
        // The legacy STORAGE_TYPE=S3 means an archive in S3; ARCHIVE_* win over the legacy names.
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "S3"),
            ("BUCKET_NAME", "legacy"),
            ("ARCHIVE_BUCKET_NAME", "lake-bucket/galexie"),
            ("ARCHIVE_PATH", "/testnet/"),
            ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
        ]))
        .unwrap();
        let BackendConfig::ObjectStore(store) = &config.backend else {
            panic!("{config:?}");
        };
        assert_eq!(store.bucket, "lake-bucket");
        assert_eq!(store.prefix, "galexie/testnet");
        let ObjectService::S3(s3) = &store.service else {
            panic!("{store:?}");
        };
        assert_eq!(s3.region, DEFAULT_AWS_REGION);
        assert!(s3.force_path_style);
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        // The configuration prints without its secrets.
        let printed = format!("{config:?}");
        assert!(!printed.contains("wJalrXUtnFEMI") && !printed.contains("AKIDEXAMPLE"));
        assert!(s3.credentials.source().contains("AWS_ACCESS_KEY_ID"));
        assert_eq!(config.prefetch, Prefetch::adaptive());
        assert_eq!(config.prefetch.objects, ADAPTIVE_START);

        let config = SourceConfig::from_lookup(lookup(&[
            ("BACKEND_TYPE", "ARCHIVE"),
            ("ARCHIVE_STORAGE_TYPE", "gcs"),
            ("ARCHIVE_BUCKET_NAME", "public-lake"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:9023"),
            ("PREFETCH_OBJECTS", "3"),
        ]))
        .unwrap();
        let BackendConfig::ObjectStore(store) = &config.backend else {
            panic!("{config:?}");
        };
        let ObjectService::Gcs(gcs) = &store.service else {
            panic!("{store:?}");
        };
        assert_eq!(gcs.emulator_host.as_deref(), Some("http://127.0.0.1:9023"));
        assert_eq!(store.prefix, "");
        assert_eq!(config.prefetch, Prefetch::fixed(3));

        let config = SourceConfig::from_lookup(lookup(&[
            ("BACKEND_TYPE", "RPC"),
            ("STORAGE_TYPE", "FS"),
            ("RPC_ENDPOINT", "https://rpc.example/"),
            ("RPC_AUTH_HEADER", "Bearer s3cr3t-token"),
        ]))
        .unwrap();
        let BackendConfig::Rpc(rpc) = &config.backend else {
            panic!("{config:?}");
        };
        assert_eq!(rpc.page_limit, DEFAULT_RPC_PAGE_LIMIT);
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert_eq!(
            rpc.auth_header
                .as_ref()
                .unwrap()
                .redact("got Bearer s3cr3t-token back"),
            "got <redacted> back"
        );
    }

    #[test]
    fn anonymous_s3_is_the_default_without_credentials() {
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "S3"),
            ("BUCKET_NAME", "public"),
            ("AWS_REGION", "eu-west-1"),
        ]))
        .unwrap();
        let BackendConfig::ObjectStore(ObjectStoreConfig {
            service: ObjectService::S3(s3),
            ..
        }) = &config.backend
        else {
            panic!("{config:?}");
        };
        assert!(matches!(s3.credentials, AwsCredentials::Anonymous));
        assert_eq!(s3.region, "eu-west-1");
        assert!(!s3.force_path_style);
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let dir = TempDir::new("malformed");
        let base = [
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", dir.path()),
            ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
        ];
        for (variable, value) in [
            ("LEDGERS_PER_FILE", "many"),
            ("LEDGERS_PER_FILE", "0"),
            ("FILES_PER_PARTITION", "-1"),
            ("FILES_PER_PARTITION", "0"),
            ("PORT", "http"),
            ("LEDGER_POLL_INTERVAL", "often"),
            ("READ_AHEAD_LEDGERS", "0"),
            ("PREFETCH_OBJECTS", "0"),
            ("REMOTE_RETRY_TIMEOUT", "0s"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((variable, value));
            let err = config_error(&pairs);
            assert!(err.contains(variable), "{variable}={value}: {err}");
        }
        let err = config_error(&[("STORAGE_TYPE", "FS"), ("BUCKET_NAME", "/nonexistent/lake")]);
        assert!(err.starts_with("BUCKET_NAME: /nonexistent/lake"), "{err}");
        for (variable, value) in [
            ("S3_ENDPOINT_URL", "127.0.0.1:9000"),
            ("S3_FORCE_PATH_STYLE", "maybe"),
        ] {
            let err = config_error(&[
                ("STORAGE_TYPE", "S3"),
                ("BUCKET_NAME", "b"),
                (variable, value),
            ]);
            assert!(err.starts_with(variable), "{err}");
        }
        let err = config_error(&[("BACKEND_TYPE", "RPC"), ("RPC_ENDPOINT", "rpc:8000")]);
        assert!(err.starts_with("RPC_ENDPOINT"), "{err}");
    }

    #[test]
    fn env_layout_applies_without_a_manifest() {
        let dir = TempDir::new("env-layout");
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "fs"),
            ("BUCKET_NAME", dir.path()),
        ]))
        .unwrap();
        assert_eq!(config.env_lake.layout(), Layout::default());
        assert_eq!(config.listen.port(), 50052);
        let err = config.env_lake.resolve(None).unwrap_err();
        assert!(err.starts_with("NETWORK_PASSPHRASE is required"), "{err}");

        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", dir.path()),
            ("NETWORK_PASSPHRASE", "Standalone Network ; February 2017"),
            ("LEDGERS_PER_FILE", "1"),
            ("FILES_PER_PARTITION", "64000"),
            ("PORT", ":6000"),
        ]))
        .unwrap();
        let lake = config.env_lake.resolve(None).unwrap();
        assert_eq!(
            lake.layout,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000
            }
        );
        assert!(lake.notes.is_empty());
        assert_eq!(config.listen.port(), 6000);
    }

    #[test]
    fn the_manifest_wins_and_disagreement_is_reported() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"networkPassphrase": "Test SDF Network ; September 2015", "compression": "zstd",
                "ledgersPerBatch": 1, "batchesPerPartition": 64000}"#,
        )
        .unwrap();
        let env = EnvLake {
            ledgers_per_file: Some(64),
            files_per_partition: None,
            network_passphrase: Some("Public Global Stellar Network ; September 2015".into()),
        };
        let lake = env.resolve(Some(&manifest)).unwrap();
        assert_eq!(
            lake.layout,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000
            }
        );
        assert_eq!(lake.network_passphrase, "Test SDF Network ; September 2015");
        assert_eq!(lake.notes.len(), 2, "{:?}", lake.notes);
        assert!(lake.notes[0].starts_with("LEDGERS_PER_FILE=64 disagrees"));
        assert!(lake.notes[1].starts_with("NETWORK_PASSPHRASE"));

        // Agreeing (or absent) variables give no note.
        let env = EnvLake {
            ledgers_per_file: Some(1),
            ..EnvLake::default()
        };
        assert!(env.resolve(Some(&manifest)).unwrap().notes.is_empty());
    }
}
