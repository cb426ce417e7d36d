//! The environment every component reads (docs/contract.md §4).

use std::time::Duration;

/// Settings shared by every component, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentEnv {
    /// `HEALTH_PORT`.
    pub health_port: u16,
    /// `ENABLE_FLOWCTL=true` (case-insensitive).
    pub enable_flowctl: bool,
    /// `FLOWCTL_ENDPOINT`, `host:port` (a scheme is accepted too).
    pub flowctl_endpoint: String,
    /// `FLOWCTL_HEARTBEAT_INTERVAL`.
    pub heartbeat_interval: Duration,
    /// `FLOWCTL_COMPONENT_ID`, injected by flowctl.
    pub component_id: Option<String>,
}

impl ComponentEnv {
    /// Reads the process environment; `default_health_port` applies when `HEALTH_PORT` is unset.
    /// The error names the variable that is malformed.
    pub fn from_env(default_health_port: u16) -> Result<ComponentEnv, String> {
        Self::from_lookup(default_health_port, |key| std::env::var(key).ok())
    }

    /// Like [`ComponentEnv::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(
        default_health_port: u16,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ComponentEnv, String> {
        let health_port = match lookup("HEALTH_PORT") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| format!("HEALTH_PORT: {value:?} is not a port number"))?,
            None => default_health_port,
        };
        let enable_flowctl = lookup("ENABLE_FLOWCTL")
            .map(|value| value.trim().eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        let flowctl_endpoint = lookup("FLOWCTL_ENDPOINT")
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| "localhost:8080".to_string());
        let heartbeat_interval = match lookup("FLOWCTL_HEARTBEAT_INTERVAL") {
            Some(value) => {
                parse_duration(&value).map_err(|e| format!("FLOWCTL_HEARTBEAT_INTERVAL: {e}"))?
            }
            None => Duration::from_secs(10),
        };
        if heartbeat_interval.is_zero() {
            return Err("FLOWCTL_HEARTBEAT_INTERVAL: must be greater than zero".to_string());
        }
        let component_id = lookup("FLOWCTL_COMPONENT_ID").filter(|value| !value.is_empty());
        Ok(ComponentEnv {
            health_port,
            enable_flowctl,
            flowctl_endpoint,
            heartbeat_interval,
            component_id,
        })
    }
}

/// Parses a Go duration (`10s`, `1m30s`, `250ms`, `1.5s`) or, as the upstream Node consumer
/// reads it, a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    if let Ok(millis) = text.parse::<u64>() {
        return Ok(Duration::from_millis(millis));
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} is missing a unit (ms, s, m, h)"))?;
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "{text:?} has an unknown unit {unit:?} (ms, s, m, h)"
                ))
            }
        };
        total += value * seconds;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_bare_milliseconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5000"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let env = ComponentEnv::from_lookup(8088, |_| None).unwrap();
        assert_eq!(env.health_port, 8088);
        assert!(!env.enable_flowctl);
        assert_eq!(env.flowctl_endpoint, "localhost:8080");
        assert_eq!(env.heartbeat_interval, Duration::from_secs(10));

        let env = ComponentEnv::from_lookup(8088, |key| match key {
            "ENABLE_FLOWCTL" => Some("TRUE".into()),
            "FLOWCTL_COMPONENT_ID" => Some("ttp-processor".into()),
            _ => None,
        })
        .unwrap();
        assert!(env.enable_flowctl);
        assert_eq!(env.component_id.as_deref(), Some("ttp-processor"));

        let err = ComponentEnv::from_lookup(8088, |key| (key == "HEALTH_PORT").then(|| "x".into()))
            .unwrap_err();
        assert!(err.starts_with("HEALTH_PORT"), "{err}");
        let err = ComponentEnv::from_lookup(8088, |key| {
            (key == "FLOWCTL_HEARTBEAT_INTERVAL").then(|| "soon".into())
        })
        .unwrap_err();
        assert!(err.starts_with("FLOWCTL_HEARTBEAT_INTERVAL"), "{err}");
    }
}
