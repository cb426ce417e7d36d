//! The `datalake-gen` binary: flags, exit codes, and the summary it prints.

use std::fs;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_datalake-gen"))
}

#[test]
fn writes_a_lake_and_the_expected_events_and_summarises_them() {
    let dir = std::env::temp_dir().join(format!("datagen-cli-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let out = bin()
        .args(["--out", dir.join("lake").to_str().unwrap()])
        .args(["--start", "128", "--ledgers", "3", "--seed", "5"])
        .args(["--ledgers-per-file", "2", "--files-per-partition", "4"])
        .args(["--expected", dir.join("events.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 3 ledgers round up to 2 whole files of 2.
    assert!(
        stderr.contains("4 ledgers (128-131) in 2 files"),
        "{stderr}"
    );
    assert!(dir
        .join("lake/FFFFFF7F--128-135/FFFFFF7F--128-129.xdr.zstd")
        .is_file());
    assert!(dir
        .join("lake/FFFFFF7F--128-135/FFFFFF7D--130-131.xdr.zstd")
        .is_file());
    let events = fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.lines().count() > 50);
    assert!(events
        .lines()
        .all(|l| l.starts_with("{\"meta\": {\"ledger_sequence\": 1")));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_profile_or_start_fails_with_a_message_naming_it() {
    let out = bin()
        .args([
            "--out",
            "/nonexistent/never",
            "--start",
            "2",
            "--ledgers",
            "1",
        ])
        .args(["--profile", "huge"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile \"huge\""));

    let out = bin()
        .args([
            "--out",
            "/nonexistent/never",
            "--start",
            "3",
            "--ledgers",
            "1",
        ])
        .args(["--ledgers-per-file", "64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start 3"));
}
