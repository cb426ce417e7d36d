//! A minimal stderr logger. The components run as PID 1 in `FROM scratch` images, so stderr is
//! what `docker logs` and flowctl show; one line per record, UTC timestamp first.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};
use stellar_ttp::json::civil_from_days;

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            utc_timestamp(SystemTime::now()),
            record.level(),
            record.args()
        );
        // One write per line keeps concurrent records from interleaving.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger; `LOG_LEVEL` (`error`, `warn`, `info`, `debug`, `trace`) picks the level,
/// `info` by default. A second call is a no-op (tests start several components in one process).
pub fn init() {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(LevelFilter::Info);
    // A static, since `log` needs a logger that lives as long as the process.
    static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();
    if log::set_logger(LOGGER.get_or_init(|| StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// `2026-11-27T00:20:29.123Z` for `time`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-06T19:00:39Z is the close time of testnet ledger 997.
        let t = UNIX_EPOCH + Duration::from_millis(1_707_246_039_250);
        assert_eq!(utc_timestamp(t), "2024-02-06T19:00:39.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
