//! The S3 and GCS backends (`ARCHIVE_STORAGE_TYPE=S3|GCS`): a galexie data lake in a bucket,
//! read with the Apache Arrow `object_store` crate, which signs requests, follows the credential
//! chains and reuses connections (one HTTP client per source, shared by every stream).
//!
//! Each stream runs a prefetch task on the runtime that keeps a window of GETs in flight
//! (`PREFETCH_OBJECTS`, else one that adapts: [`window`](super::window)) ahead of the object
//! being decompressed and hands the objects over strictly in ledger
//! order, so network latency overlaps decompression and sending. A missing object ends the
//! task (the reader then waits, live mode, and asks again); the objects already in flight tell
//! a gap from the live edge.
//!
//! Failures are retried (object_store retries each request; a GET that still fails is tried
//! again) for `REMOTE_RETRY_TIMEOUT`, so a server that restarts mid-stream costs a pause, not a
//! ledger. Errors name the endpoint, bucket and key and, on access denied, where the credentials
//! came from; every message built from the library's errors is scrubbed of the secrets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::object_store::aws::AmazonS3Builder;
use ::object_store::gcp::GoogleCloudStorageBuilder;
use ::object_store::path::Path as ObjectPath;
use ::object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig,
};
use anyhow::{bail, Context};
use bytes::Bytes;
use stellar_ttp::datalake::{Layout, Manifest, EXTENSIONS, MANIFEST_FILE};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::window::Window;
use super::{Chunk, Feed, FeedError, Spawned};
use crate::source::config::{
    AwsCredentials, EnvLake, LakeSettings, ObjectService, ObjectStoreConfig, Prefetch, S3Config,
    Secret,
};

/// Pause between tries of a GET that failed after object_store's own retries.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A bucket (and prefix) holding a galexie data lake.
#[derive(Debug)]
pub struct ObjectLake {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    /// `s3` or `gs`, for `scheme://bucket/key` in messages.
    scheme: &'static str,
    bucket: String,
    prefix: String,
    /// The server, for messages: `S3_ENDPOINT_URL`, the emulator, or the service's default.
    endpoint: String,
    credentials: String,
    secrets: Vec<Secret>,
    retry_timeout: Duration,
    /// Index in [`EXTENSIONS`] of the extension the last object found had: tried first.
    extension: AtomicUsize,
    runtime: Handle,
}

/// One GET's outcome: the object, or `None` when no key with a known extension exists.
type Fetched = Result<Option<(String, Bytes)>, FeedError>;

/// A GET in flight for the file starting at a ledger.
type InFlight = (u32, Spawned<Option<(String, Bytes)>>);

impl ObjectLake {
    /// Connects to the bucket and reads the lake's `.config.json` (retrying as for any read).
    pub async fn open(
        config: &ObjectStoreConfig,
        env: &EnvLake,
    ) -> anyhow::Result<(ObjectLake, LakeSettings)> {
        let options = client_options()?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: usize::MAX,
            retry_timeout: config.retry_timeout,
        };
        let (store, scheme, endpoint, credentials, secrets): (Arc<dyn ObjectStore>, _, _, _, _) =
            match &config.service {
                ObjectService::S3(s3) => {
                    let plain_http = s3
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://"));
                    let store = s3_builder(s3, &config.bucket)
                        .with_client_options(options.with_allow_http(plain_http))
                        .with_retry(retry)
                        .build()
                        .with_context(|| format!("S3 bucket {}", config.bucket))?;
                    let endpoint = s3
                        .endpoint
                        .clone()
                        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", s3.region));
                    let secrets = s3.credentials.secrets().into_iter().cloned().collect();
                    (
                        Arc::new(store),
                        "s3",
                        endpoint,
                        s3.credentials.source(),
                        secrets,
                    )
                }
                ObjectService::Gcs(gcs) => {
                    let mut builder = GoogleCloudStorageBuilder::new()
                        .with_bucket_name(&config.bucket)
                        .with_client_options(match &gcs.emulator_host {
                            Some(host) => options.with_allow_http(host.starts_with("http://")),
                            None => options,
                        })
                        .with_retry(retry);
                    let endpoint = match (&gcs.emulator_host, &gcs.application_credentials) {
                        (Some(host), _) => {
                            // The emulator takes unsigned requests at its own base URL.
                            builder = builder
                                .with_config(
                                    ::object_store::gcp::GoogleConfigKey::BaseUrl,
                                    host.trim_end_matches('/'),
                                )
                                .with_skip_signature(true);
                            host.clone()
                        }
                        (None, Some(path)) => {
                            builder =
                                builder.with_application_credentials(path.display().to_string());
                            "https://storage.googleapis.com".to_string()
                        }
                        (None, None) => {
                            builder = builder.with_skip_signature(true);
                            "https://storage.googleapis.com".to_string()
                        }
                    };
                    let store = builder.build().with_context(|| {
                        format!(
                            "GCS bucket {} ({})",
                            config.bucket,
                            gcs.credentials_source()
                        )
                    })?;
                    (
                        Arc::new(store),
                        "gs",
                        endpoint,
                        gcs.credentials_source(),
                        Vec::new(),
                    )
                }
            };
        let mut lake = ObjectLake {
            store,
            layout: env.layout(),
            scheme,
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            endpoint,
            credentials,
            secrets,
            retry_timeout: config.retry_timeout,
            extension: AtomicUsize::new(0),
            runtime: Handle::current(),
        };
        let manifest = match lake.get(&lake.key(MANIFEST_FILE)).await {
            Ok(Some(bytes)) => {
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", lake.url(&lake.key(MANIFEST_FILE))))?;
                if let Some(compression) = manifest.compression.as_deref() {
                    if compression != "zstd" {
                        bail!(
                            "{}: unsupported compression {compression:?} (only zstd)",
                            lake.url(&lake.key(MANIFEST_FILE))
                        );
                    }
                }
                Some(manifest)
            }
            Ok(None) => None,
            Err(e) => bail!("{e}"),
        };
        let settings = env
            .resolve(manifest.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lake.layout = settings.layout;
        Ok((lake, settings))
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn storage_type(&self) -> &'static str {
        if self.scheme == "s3" {
            "S3"
        } else {
            "GCS"
        }
    }

    /// Where the lake is, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} at {} (credentials: {})",
            self.url(&self.prefix),
            self.endpoint,
            self.credentials
        )
    }

    /// The object key of `name` under the lake's prefix.
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn url(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.scheme, self.bucket)
    }

    fn scrub(&self, text: String) -> String {
        self.secrets
            .iter()
            .fold(text, |text, secret| secret.redact(&text))
    }

    /// GETs `key` (all of it), retrying what may pass for up to `REMOTE_RETRY_TIMEOUT`;
    /// `Ok(None)` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, FeedError> {
        let began = Instant::now();
        let path = ObjectPath::from(key);
        loop {
            let result = match self.store.get(&path).await {
                Ok(object) => object.bytes().await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(::object_store::Error::NotFound { .. }) => return Ok(None),
                Err(
                    e @ (::object_store::Error::PermissionDenied { .. }
                    | ::object_store::Error::Unauthenticated { .. }),
                ) => {
                    return Err(FeedError::new(
                        tonic::Code::PermissionDenied,
                        self.scrub(format!(
                            "access denied reading {} from bucket {} at {} with credentials from \
                             {}: {e}",
                            key, self.bucket, self.endpoint, self.credentials
                        )),
                    ))
                }
                Err(e) => e,
            };
            if began.elapsed() >= self.retry_timeout {
                return Err(FeedError::new(
                    tonic::Code::Unavailable,
                    self.scrub(format!(
                        "cannot read {} from bucket {} at {} (retried for {:?}): {error}",
                        key, self.bucket, self.endpoint, self.retry_timeout
                    )),
                ));
            }
            log::warn!(
                "{}",
                self.scrub(format!(
                    "reading {} from bucket {} at {}: {error}; trying again",
                    key, self.bucket, self.endpoint
                ))
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The object holding ledgers from `file_start`, whichever extension it has.
    async fn fetch(self: Arc<Self>, file_start: u32) -> Fetched {
        let preferred = self.extension.load(Ordering::Relaxed);
        for index in [preferred, 1 - preferred] {
            let key = self.key(&self.layout.object_key(file_start, EXTENSIONS[index]));
            if let Some(bytes) = self.get(&key).await? {
                self.extension.store(index, Ordering::Relaxed);
                return Ok(Some((self.url(&key), bytes)));
            }
        }
        Ok(None)
    }
}

/// HTTP client settings shared by S3 and GCS: the TLS roots are compiled in (Mozilla's, from
/// webpki-root-certs), since the source runs in a `FROM scratch` image without a CA bundle; a
/// private CA can be added with `SSL_CERT_FILE` (PEM).
fn client_options() -> anyhow::Result<ClientOptions> {
    let mut options = ClientOptions::new().with_no_system_certificates(true);
    for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        options = options.with_root_certificate(Certificate::from_der(root)?);
    }
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let pem = std::fs::read(&file)
            .with_context(|| format!("SSL_CERT_FILE: reading {}", file.to_string_lossy()))?;
        for certificate in Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("SSL_CERT_FILE: {}", file.to_string_lossy()))?
        {
            options = options.with_root_certificate(certificate);
        }
    }
    Ok(options)
}

/// An S3 client for `bucket` (client options, including plain HTTP, are set by the caller) as
/// upstream configures it: path style when asked for (and for an
/// endpoint that is an IP address, which has no bucket subdomains), else virtual-hosted style.
fn s3_builder(s3: &S3Config, bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s3.region);
    match &s3.endpoint {
        Some(endpoint) => {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            let host_name = host.split(['/', ':']).next().unwrap_or_default();
            let by_address =
                host_name == "localhost" || host_name.parse::<std::net::IpAddr>().is_ok();
            if s3.force_path_style || by_address {
                builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
            } else {
                // object_store takes a virtual-hosted endpoint with the bucket already in it.
                builder = builder
                    .with_endpoint(format!(
                        "{scheme}://{bucket}.{}",
                        host.trim_end_matches('/')
                    ))
                    .with_virtual_hosted_style_request(true);
            }
        }
        None => builder = builder.with_virtual_hosted_style_request(!s3.force_path_style),
    }
    match &s3.credentials {
        AwsCredentials::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            builder = builder
                .with_access_key_id(&access_key_id.0)
                .with_secret_access_key(&secret_access_key.0);
            if let Some(token) = session_token {
                builder = builder.with_token(&token.0);
            }
        }
        AwsCredentials::Chain(variables) => {
            for (name, value) in variables {
                if let Ok(key) = name.to_ascii_lowercase().parse() {
                    builder = builder.with_config(key, value);
                }
            }
        }
        AwsCredentials::Anonymous => builder = builder.with_skip_signature(true),
    }
    builder
}

/// What a stream's prefetch task hands over, in ledger order.
enum Prefetched {
    Object { name: String, bytes: Bytes },
    Missing { name: String, later: Option<u32> },
    Failed(FeedError),
}

/// A running prefetch task: the file it hands over next, and its output.
struct Running {
    next_file: u32,
    rx: mpsc::Receiver<Prefetched>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One stream's reads from a bucket.
pub struct ObjectFeed {
    lake: Arc<ObjectLake>,
    prefetch: Prefetch,
    running: Option<Running>,
    name: String,
    bytes: Bytes,
}

impl ObjectFeed {
    pub fn new(lake: Arc<ObjectLake>, prefetch: Prefetch) -> ObjectFeed {
        ObjectFeed {
            lake,
            prefetch,
            running: None,
            name: String::new(),
            bytes: Bytes::new(),
        }
    }
}

impl Feed for ObjectFeed {
    fn next(&mut self, ledger: u32) -> Result<Chunk<'_>, FeedError> {
        let file = self.lake.layout.file_start(ledger);
        if self.running.as_ref().map(|p| p.next_file) != Some(file) {
            let (tx, rx) = mpsc::channel(1);
            let task =
                self.lake
                    .runtime
                    .spawn(prefetch(self.lake.clone(), file, self.prefetch, tx));
            self.running = Some(Running {
                next_file: file,
                rx,
                task,
            });
        }
        let Some(prefetch) = self.running.as_mut() else {
            unreachable!("started above");
        };
        let received = prefetch.rx.blocking_recv();
        prefetch.next_file = file.saturating_add(self.lake.layout.ledgers_per_file);
        match received {
            Some(Prefetched::Object { name, bytes }) => {
                self.name = name;
                self.bytes = bytes;
                Ok(Chunk::Object {
                    name: &self.name,
                    compressed: &self.bytes,
                })
            }
            Some(Prefetched::Missing { name, later }) => {
                self.running = None;
                Ok(Chunk::NotYet { name, later })
            }
            Some(Prefetched::Failed(error)) => {
                self.running = None;
                Err(error)
            }
            None => {
                self.running = None;
                Err(FeedError::new(
                    tonic::Code::Unavailable,
                    format!(
                        "the prefetch task for {} ended (is the source shutting down?)",
                        self.lake.url(&self.lake.prefix)
                    ),
                ))
            }
        }
    }

    fn forget(&mut self) {
        self.running = None;
    }
}

/// GETs the objects from `first` on, as many at a time as the window says, and sends them in
/// order; stops at the first missing one (reporting a later one among those in flight, if any), at an error, or
/// when the feed goes away.
async fn prefetch(
    lake: Arc<ObjectLake>,
    first: u32,
    setting: Prefetch,
    tx: mpsc::Sender<Prefetched>,
) {
    let step = lake.layout.ledgers_per_file;
    let mut files = std::iter::successors(Some(first), move |file| file.checked_add(step));
    let mut window = Window::new(setting);
    // Spawned, so that GETs progress while the hand-over waits for the reader; aborted when
    // dropped, so that a closed stream stops its GETs.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        while in_flight.len() < window.size() {
            let Some(file) = files.next() else { break };
            in_flight.push_back((file, Spawned(lake.runtime.spawn(lake.clone().fetch(file)))));
        }
        let Some((file, task)) = in_flight.pop_front() else {
            return;
        };
        let message = match task.join().await {
            Ok(Some((name, bytes))) => {
                window.handed_over(bytes.len(), Instant::now());
                Prefetched::Object { name, bytes }
            }
            Ok(None) => {
                // A gap or the live edge: a later object among those in flight tells which
                // (with one in flight, the next is asked for).
                if in_flight.is_empty() {
                    if let Some(next) = files.next() {
                        let task = Spawned(lake.runtime.spawn(lake.clone().fetch(next)));
                        in_flight.push_back((next, task));
                    }
                }
                let mut later = None;
                while let Some((found, task)) = in_flight.pop_front() {
                    match task.join().await {
                        Ok(Some(_)) => {
                            later = Some(found);
                            break;
                        }
                        Ok(None) => continue,
                        Err(_) => break,
                    }
                }
                let key = lake.key(&lake.layout.object_key(file, EXTENSIONS[0]));
                let _ = tx
                    .send(Prefetched::Missing {
                        name: lake.url(&key),
                        later,
                    })
                    .await;
                return;
            }
            Err(error) => {
                let _ = tx.send(Prefetched::Failed(error)).await;
                return;
            }
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}
