//! A real PostgreSQL for a test: Debian's `postgresql` binaries (`/usr/lib/postgresql/N/bin`),
//! a throw-away data directory made by `initdb` (password authentication over TCP, so the DSN a
//! test gives carries a secret), listening on 127.0.0.1 only, on a free port, no Unix socket.
//! Stopped (fast shutdown) and removed on drop. PostgreSQL refuses to run as root: as root the
//! server runs as the `postgres` user the package creates (`setpriv`).
//!
//! Missing binaries fail the test with the install hint, unless `FLOWCTL_TEST_SKIP` names
//! `postgres` (scripts/test.sh installs the package).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_tool, unique, TempDir};

const HINT: &str =
    "install Debian's PostgreSQL: `sudo apt-get install postgresql` (scripts/test.sh \
                    does it as root)";

/// A running throw-away server.
pub struct Postgres {
    server: Child,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
    log: PathBuf,
    _dir: TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Starts a server for the test `test`; `None` when `FLOWCTL_TEST_SKIP` names `postgres`.
    pub fn start(test: &str) -> Option<Postgres> {
        let bin = bin_dir();
        let probe = bin.as_ref().map_or_else(
            || PathBuf::from("/usr/lib/postgresql/N/bin/initdb"),
            |b| b.join("initdb"),
        );
        if !require_tool("postgres", Command::new(&probe).arg("--version"), HINT) {
            return None;
        }
        let bin = bin.expect("found by require_tool");
        let dir = TempDir::new(test);
        let data = dir.0.join("data");
        let password = unique("pw-secret-");
        let pwfile = dir.0.join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of {} to postgres failed",
                dir.0.display()
            );
        }
        let as_server_user = |program: &Path| {
            if root {
                let mut command = Command::new("setpriv");
                command
                    .args([
                        "--reuid=postgres",
                        "--regid=postgres",
                        "--clear-groups",
                        "--",
                    ])
                    .arg(program);
                command
            } else {
                Command::new(program)
            }
        };
        let output = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=trust",
            ])
            .args(["--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.0.join("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let server = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut postgres = Postgres {
            server,
            bin,
            port,
            password,
            log,
            _dir: dir,
        };
        postgres.wait_ready();
        Some(postgres)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.server.try_wait() {
                panic!("postgres exited ({status}): {}", self.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres is not ready after 30 s: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server logged.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The DSN of the `postgres` database as the `postgres` user, with the password.
    pub fn dsn(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres?sslmode=disable",
            self.password, self.port
        )
    }

    /// Runs `sql` with `psql` and returns its unaligned output (`|` between columns).
    pub fn query(&self, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
