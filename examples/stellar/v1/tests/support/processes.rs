//! The component binaries as processes on 127.0.0.1, configured only by their environment (the
//! way flowctl starts them). Every process is stopped when its value drops.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running binary; killed when dropped. Its stdout and stderr are read as it writes them (a
/// full pipe would stall it); stderr can be watched while it runs.
pub struct Process {
    name: &'static str,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<()>>,
    stderr_text: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `binary` with exactly `env` (nothing inherited), its output captured.
    pub fn start(name: &'static str, binary: &str, env: &[(&str, String)]) -> Process {
        let mut child = Command::new(binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = out.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().map(|err| {
            let text = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut text = text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        });
        Process {
            name,
            child,
            stdout,
            stderr,
            stderr_text,
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_text.lock().unwrap().clone()
    }

    /// The text after `marker` on the first stderr line holding it, up to the next space or
    /// `:` + space, once it appears (bounded). A process that exits first fails the test with
    /// its stderr.
    pub fn wait_for_log(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.stderr_so_far().lines().find_map(|line| {
                let (_, after) = line.split_once(marker)?;
                let end = after.find([' ', ',']).unwrap_or(after.len());
                Some(after[..end].trim_end_matches(':').to_string())
            });
            if let Some(found) = found {
                return found;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before logging {marker:?}:\n{}",
                    self.name,
                    self.stderr_so_far()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {marker:?} within 30 s:\n{}",
                self.name,
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address its gRPC server listens on, from its `serving ... on ADDRESS` line (start it
    /// with port 0 so that no other process can take the port first).
    pub fn grpc_address(&mut self) -> SocketAddr {
        let address = self.wait_for_log("Service on ");
        address
            .parse()
            .unwrap_or_else(|e| panic!("{}: {address:?} is not an address: {e}", self.name))
    }

    /// Sends SIGTERM, waits for the exit (bounded) and returns stdout and stderr.
    pub fn stop(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} ignores SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        let stdout = self
            .stdout
            .take()
            .map(|r| r.join().unwrap())
            .unwrap_or_default();
        if let Some(reader) = self.stderr.take() {
            reader.join().unwrap();
        }
        (stdout, self.stderr_so_far())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 free right now (the binary binds it a moment later; another process
/// may take it first: prefer port 0 and [`Process::grpc_address`] where the test can).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What flowctl gives every v1 component: its id, `PORT`, `HEALTH_PORT` (any free port) and
/// registration with the control plane at `control_plane`.
pub fn component_env(
    id: &str,
    grpc: SocketAddr,
    control_plane: SocketAddr,
) -> Vec<(&'static str, String)> {
    vec![
        ("COMPONENT_ID", id.to_string()),
        ("PORT", grpc.to_string()),
        ("HEALTH_PORT", "0".to_string()),
        ("ENABLE_FLOWCTL", "true".to_string()),
        ("FLOWCTL_ENDPOINT", control_plane.to_string()),
        ("FLOWCTL_HEARTBEAT_INTERVAL", "100ms".to_string()),
    ]
}
