//! What CI keeps of a run once its containers and their logs are gone: `--summary FILE`, a JSON
//! record of the run (pipeline, run id, engine, per component its image and digest, start,
//! ready and exit times, exit code, restarts, registration, verification results and event
//! counts; the outcome and exit code). The record is filled in as the run goes and written
//! by a guard, so every exit path writes it: completion, failure, signal, and a panic
//! (outcome `panicked`). Env values never appear in it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// One component's part of the record.
#[derive(Debug, Clone, Default)]
pub struct ComponentRecord {
    pub role: String,
    pub image: String,
    /// The image's content id (`sha256:...`), as the engine reported it before the run.
    pub image_id: Option<String>,
    pub container: String,
    pub started_at: Option<SystemTime>,
    pub ready_at: Option<SystemTime>,
    pub exited_at: Option<SystemTime>,
    pub exit_code: Option<i64>,
    pub restarts: u32,
    /// The service id it registered as with the control plane.
    pub service_id: Option<String>,
    /// Counters from its last heartbeat (`total_processed`, `total_events_emitted`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// The Swarm nodes its tasks ran on (`run --swarm`; empty on one engine).
    pub nodes: Vec<String>,
    /// A process component (`driver: process`): its command and the pid of each process it
    /// ran (restarts included), in order.
    pub command: Option<String>,
    pub pids: Vec<u32>,
}

/// One stream verification.
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    /// `component → consumers`.
    pub flow: String,
    pub ok: bool,
    /// The report line or the failure.
    pub detail: String,
    /// Events counted on a bounded event stream.
    pub events: Option<u64>,
}

/// The whole record.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub file: String,
    pub pipeline: String,
    pub project: Option<String>,
    pub run_id: String,
    pub engine_cli: String,
    pub engine_kind: String,
    pub engine_version: String,
    pub location: String,
    pub started_at: Option<SystemTime>,
    /// In start order.
    pub components: Vec<(String, ComponentRecord)>,
    pub verification: Vec<VerificationRecord>,
    /// What the run said was suspicious without failing it (e.g. a processor that emitted
    /// nothing from what it consumed).
    pub warnings: Vec<String>,
    /// `completed`, `failed`, `interrupted` (`panicked` when none was set).
    pub outcome: Option<&'static str>,
    pub exit_code: Option<u8>,
    pub error: Option<String>,
}

impl RunRecord {
    /// The record of component `id`, added if new.
    pub fn component(&mut self, id: &str) -> &mut ComponentRecord {
        let index = match self.components.iter().position(|(c, _)| c == id) {
            Some(index) => index,
            None => {
                self.components
                    .push((id.to_string(), ComponentRecord::default()));
                self.components.len() - 1
            }
        };
        &mut self.components[index].1
    }

    /// The record as JSON.
    pub fn to_json(&self, ended_at: SystemTime) -> Value {
        let components: Vec<Value> = self
            .components
            .iter()
            .map(|(id, c)| {
                let mut entry = json!({
                    "id": id,
                    "role": c.role,
                    "image": c.image,
                    "image_id": c.image_id,
                    "container": c.container,
                    "started_at": c.started_at.map(rfc3339),
                    "ready_at": c.ready_at.map(rfc3339),
                    "exited_at": c.exited_at.map(rfc3339),
                    "exit_code": c.exit_code,
                    "restarts": c.restarts,
                    "registered": c.service_id.is_some(),
                    "service_id": c.service_id,
                    "metrics": c.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
                });
                if !c.nodes.is_empty() {
                    entry["nodes"] = json!(c.nodes);
                }
                if let Some(command) = &c.command {
                    entry["command"] = json!(command);
                    entry["pids"] = json!(c.pids);
                }
                entry
            })
            .collect();
        let verification: Vec<Value> = self
            .verification
            .iter()
            .map(|v| json!({"flow": v.flow, "ok": v.ok, "detail": v.detail, "events": v.events}))
            .collect();
        let duration_ms = self
            .started_at
            .and_then(|start| ended_at.duration_since(start).ok())
            .map(|d| d.as_millis() as u64);
        json!({
            "file": self.file,
            "pipeline": self.pipeline,
            "project": self.project,
            "run_id": self.run_id,
            "engine": {
                "cli": self.engine_cli,
                "kind": self.engine_kind,
                "version": self.engine_version,
                "location": self.location,
            },
            "started_at": self.started_at.map(rfc3339),
            "ended_at": rfc3339(ended_at),
            "duration_ms": duration_ms,
            "outcome": self.outcome.unwrap_or("panicked"),
            "exit_code": self.exit_code.unwrap_or(101),
            "error": self.error,
            "components": components,
            "verification": verification,
            "warnings": self.warnings,
        })
    }
}

/// The record shared by the run's steps, and where it is written.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    record: Arc<Mutex<RunRecord>>,
}

impl Recorder {
    /// The record, to fill in.
    pub fn lock(&self) -> MutexGuard<'_, RunRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes the record to its file when dropped (whatever ended the run).
#[derive(Debug)]
pub struct SummaryWriter {
    recorder: Recorder,
    path: Option<PathBuf>,
}

impl SummaryWriter {
    pub fn new(recorder: Recorder, path: Option<PathBuf>) -> SummaryWriter {
        SummaryWriter { recorder, path }
    }

    /// Writes the file now; the error names it.
    fn write(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = self.recorder.lock().to_json(SystemTime::now());
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write the summary {}: {e}", path.display()))
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            eprintln!("flowctl warning: {e}");
        }
    }
}

/// `2026-11-28T05:32:14.526Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = date_of(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (H. Hinnant's algorithm).
fn date_of(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_707_246_039_526);
        assert_eq!(rfc3339(at), "2024-02-06T19:00:39.526Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_record_without_an_outcome_is_a_panic() {
        let mut record = RunRecord {
            pipeline: "p".into(),
            ..RunRecord::default()
        };
        record.component("source").exit_code = Some(0);
        record.component("source").restarts = 2;
        let json = record.to_json(SystemTime::now());
        assert_eq!(json["outcome"], "panicked");
        assert_eq!(json["exit_code"], 101);
        assert_eq!(json["components"][0]["id"], "source");
        assert_eq!(json["components"][0]["restarts"], 2);
        assert_eq!(json["components"].as_array().unwrap().len(), 1);
    }
}
