//! Section 5, source backends: the source alone (`stellar-live-source-datalake bench-read`: prefetch,
//! zstd, cutting; no gRPC) on a generated lake read from an S3 server on loopback (s3s-fs,
//! `S3S_FS_BIN` or on PATH) against the same lake from the folder, and against the server's
//! ceiling: curl fetching every object with 64 GETs in flight. In turns.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::Bench;
use crate::lake;
use crate::runs::{run_logged, Stop};
use crate::stats::{ratio, Samples, Table};

/// s3s-fs, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(bench: &Bench) -> Result<()> {
    println!(
        "== 5. source backends: the same generated lake from S3 (s3s-fs on loopback) vs the folder"
    );
    let source = bench.binary("stellar-live-source-datalake")?;
    let s3s = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "s3s-fs".into());
    // s3s-fs serves each folder of its root as a bucket: the lake is the bucket `lake`.
    let root = bench.file("s3root");
    let lake = lake::generate(bench, &root.join("lake"))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _server = Server(
        Command::new(&s3s)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {s3s} (cargo install s3s-fs --features binary, or set S3S_FS_BIN)"
                )
            })?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("s3s-fs did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let objects = objects(&root.join("lake"))?;
    let urls = bench.file("urls.cfg");
    let config: String = objects
        .iter()
        .map(|o| format!("url = \"http://127.0.0.1:{port}/lake/{o}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&urls, config)?;
    println!(
        "   lake: datalake-gen --profile mainnet-like, {} ledgers of 1 file each, {} MiB zstd;",
        lake.range.ledgers(),
        lake.bytes / 1_048_576
    );
    let prefetch =
        std::env::var("PREFETCH_OBJECTS").unwrap_or_else(|_| "adaptive (from 64)".into());
    println!("         S3: s3s-fs at 127.0.0.1:{port}, anonymous, path style; prefetch {prefetch} objects");
    println!("         ceiling: what the server gives curl with 64 GETs in flight (every object of the lake)");
    let (first, last) = (lake.range.first.to_string(), lake.range.last.to_string());
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut samples = Samples::default();
    for _ in 0..bench.effort.runs {
        let mut s3 = Command::new(&source);
        s3.args(["bench-read", &first, &last])
            .env("STORAGE_TYPE", "S3")
            .env("BUCKET_NAME", "lake")
            .env("S3_ENDPOINT_URL", &endpoint)
            .env("S3_FORCE_PATH_STYLE", "true");
        samples.push("s3", "ledgers/s", bench_read(s3)?);
        let mut folder = Command::new(&source);
        folder
            .args(["bench-read", &first, &last])
            .env("STORAGE_TYPE", "FS")
            .env("BUCKET_NAME", root.join("lake"));
        samples.push("folder", "ledgers/s", bench_read(folder)?);
        let mut curl = Command::new("curl");
        curl.args(["-s", "--fail", "--parallel", "--parallel-max", "64", "-K"])
            .arg(&urls);
        let logged =
            run_logged(curl, Stop::AtEnd, |_| {}).context("running curl (apt-get install curl)")?;
        logged.check("curl reading the lake from s3s-fs")?;
        samples.push("curl", "objects/s", objects.len() as f64 / logged.seconds());
    }
    let (s, f, c) = (
        samples.median("s3", "ledgers/s"),
        samples.median("folder", "ledgers/s"),
        samples.median("curl", "objects/s"),
    );
    let mut table = Table::new([
        &format!("median of {}", bench.effort.runs),
        "S3",
        "folder",
        "ratio",
    ]);
    table.compare("ledgers/s", s, f, 0);
    table.row(["", "S3", "curl x64", "ratio"]);
    table.compare("objects/s", s, c, 0);
    table.print();
    println!("   (each run: process start, opening the lake, reading every ledger of the range; taken in turns)");
    bench.record_opt("backends", "s3_ledgers_per_s", s);
    bench.record_opt("backends", "folder_ledgers_per_s", f);
    bench.record_opt("backends", "curl_objects_per_s", c);
    bench.record_opt("backends", "s3_per_folder", ratio(s, f));
    bench.record_opt("backends", "s3_per_ceiling", ratio(s, c));
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

/// The ledgers/s that `bench-read` reports (its JSON line on standard output).
fn bench_read(command: Command) -> Result<f64> {
    let logged = run_logged(command, Stop::AtEnd, |_| {})?;
    logged.check("stellar-live-source-datalake bench-read")?;
    logged
        .lines
        .iter()
        .find_map(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(l).ok()?["ledgers_per_second"].as_f64()
        })
        .with_context(|| {
            format!(
                "bench-read printed no ledgers_per_second:\n{}",
                logged.tail(10)
            )
        })
}

/// Every object of the lake, as `partition/file`.
fn objects(lake: &std::path::Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for partition in std::fs::read_dir(lake)? {
        let partition = partition?;
        if !partition.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(partition.path())? {
            let file = file?;
            found.push(format!(
                "{}/{}",
                partition.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            ));
        }
    }
    if found.is_empty() {
        bail!("the generated lake {} has no objects", lake.display());
    }
    Ok(found)
}
