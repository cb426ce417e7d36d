//! flowctl's own diagnostic lines (the `log` crate's records): printed on stderr as
//! `flowctl: <level>: <message>` up to the level `FLOWCTL_LOG` names (`error`, `warn`, `info`,
//! `debug`, `trace`; `warn` when unset). They say what flowctl tried and saw (addresses,
//! fallbacks), never an env value or a credential. What a user must read goes through
//! [`Console`](crate::logs::Console) instead, whatever `FLOWCTL_LOG` says.

use log::{LevelFilter, Log, Metadata, Record};

/// The variable that sets the level.
pub const LEVEL_VAR: &str = "FLOWCTL_LOG";

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("flowctl: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// The level `value` names; `None` for anything else.
pub fn level(value: &str) -> Option<LevelFilter> {
    value.trim().parse().ok()
}

/// Installs the logger at the level of `FLOWCTL_LOG`; an unknown level is said once and the
/// default kept. `main` calls this once.
pub fn install() {
    let setting = std::env::var(LEVEL_VAR).ok();
    let chosen = setting.as_deref().map(level);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(chosen.flatten().unwrap_or(LevelFilter::Warn));
    }
    if let (Some(value), Some(None)) = (setting, chosen) {
        eprintln!(
            "flowctl: warn: {LEVEL_VAR}={value:?} is not one of off, error, warn, info, debug, \
             trace; using warn"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_read_case_insensitively_and_nonsense_is_refused() {
        assert_eq!(level("debug"), Some(LevelFilter::Debug));
        assert_eq!(level(" WARN "), Some(LevelFilter::Warn));
        assert_eq!(level("off"), Some(LevelFilter::Off));
        assert_eq!(level("loud"), None);
    }
}
