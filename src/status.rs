//! The status table: one row per component with its container, ports, health, registration
//! and the key heartbeat metrics (docs/contract.md §3), for `flowctl run` and `flowctl status`.
//! Rendering only: where the rows come from is `run/notices.rs` (a run's own view) and
//! `status_client.rs` (`flowctl status`, through the labels of running containers).

use std::fmt::Write as _;
use std::time::Duration;

use crate::control_plane::ServiceSnapshot;
use crate::logs::Console;

/// What the table shows about one component.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// The component id (or `(service id)` for an unmatched registration).
    pub component: String,
    /// Container name; `-` for a service with no container of this run.
    pub container: String,
    /// The image it runs.
    pub image: String,
    /// Published ports, e.g. `127.0.0.1:49153->50052`.
    pub ports: Vec<String>,
    /// What the container engine / health check says (`running`, `healthy`, `exited (1)`, ...).
    pub state: String,
    /// Whether the pipeline says this component registers with the control plane.
    pub expects_registration: bool,
    /// Its current registration.
    pub service: Option<ServiceSnapshot>,
}

/// Heartbeat metrics shown as "processed": the count (ledgers for the source and the processor,
/// events for the consumer, as upstream counts them) and the last ledger seen.
const TOTAL_PROCESSED: &str = "total_processed";
const LAST_LEDGER_KEYS: &[&str] = &["last_successful_sequence", "last_processed_ledger"];
/// Events: what a processor emits, what a consumer receives.
const EVENTS_EMITTED: &str = "total_events_emitted";
const EVENTS_RECEIVED: &str = "total_events_received";

impl StatusRow {
    fn health(&self) -> String {
        match &self.service {
            Some(service) if !service.healthy => match service.last_heartbeat_age {
                Some(age) => format!("unhealthy (silent {})", age_text(age)),
                None => "unhealthy (no heartbeat)".to_string(),
            },
            _ => self.state.clone(),
        }
    }

    fn registered(&self) -> String {
        match (&self.service, self.expects_registration) {
            (Some(service), _) => format!("yes ({})", service.service_id),
            (None, true) => "no".to_string(),
            (None, false) => "-".to_string(),
        }
    }

    fn heartbeat(&self) -> String {
        match self.service.as_ref().and_then(|s| s.last_heartbeat_age) {
            Some(age) => format!("{} ago", age_text(age)),
            None => "-".to_string(),
        }
    }

    fn metric(&self, key: &str) -> Option<f64> {
        self.service.as_ref()?.metrics.get(key).copied()
    }

    fn processed(&self) -> String {
        let processed = self.metric(TOTAL_PROCESSED);
        let last = LAST_LEDGER_KEYS
            .iter()
            .find_map(|key| self.metric(key))
            .filter(|last| *last > 0.0);
        match (processed, last) {
            (Some(n), Some(last)) => format!("{} (ledger {})", count(n), count(last)),
            (Some(n), None) => count(n),
            (None, Some(last)) => format!("ledger {}", count(last)),
            (None, None) => "-".to_string(),
        }
    }

    fn events(&self) -> String {
        match (self.metric(EVENTS_EMITTED), self.metric(EVENTS_RECEIVED)) {
            (Some(out), Some(received)) => format!("{} out, {} in", count(out), count(received)),
            (Some(out), None) => format!("{} out", count(out)),
            (None, Some(received)) => format!("{} in", count(received)),
            (None, None) => "-".to_string(),
        }
    }
}

/// A metric as a whole number (they are counters and ledger numbers carried as doubles).
fn count(value: f64) -> String {
    format!("{value:.0}")
}

fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    if secs < 60 {
        format!("{}s", secs)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

const HEADERS: [&str; 9] = [
    "COMPONENT",
    "CONTAINER",
    "IMAGE",
    "PORTS",
    "HEALTH",
    "REGISTERED",
    "HEARTBEAT",
    "PROCESSED",
    "EVENTS",
];

/// Columns left out, in this order, when the table is wider than the terminal (as `docker ps`
/// truncates): the image and the container name are the least useful while watching a run.
/// COMPONENT (0) and HEALTH (4) always stay.
const DROP_ORDER: [usize; 7] = [2, 1, 3, 6, 8, 5, 7];
/// No cell is shortened below this many characters.
const MIN_CELL: usize = 8;
/// Spaces between columns.
const GAP: usize = 2;

/// Renders `rows` as an aligned plain-text table (no colour, so it can be piped). With a
/// `width` (a terminal's), the least useful columns are left out and then the widest cells
/// shortened until each line fits; without one (piped, or `--wide`), every column in full.
pub fn render(rows: &[StatusRow], width: Option<usize>) -> String {
    let mut lines: Vec<[String; 9]> = vec![HEADERS.map(str::to_string)];
    lines.extend(rows.iter().map(|row| {
        [
            row.component.clone(),
            row.container.clone(),
            row.image.clone(),
            if row.ports.is_empty() {
                "-".to_string()
            } else {
                row.ports.join(", ")
            },
            row.health(),
            row.registered(),
            row.heartbeat(),
            row.processed(),
            row.events(),
        ]
    }));
    let mut widths = [0usize; 9];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut shown: Vec<usize> = (0..HEADERS.len()).collect();
    if let Some(limit) = width {
        fit(&mut shown, &mut widths, limit);
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, &column) in shown.iter().enumerate() {
            let width = widths[column];
            let cell = shorten(&line[column], width);
            if i + 1 == shown.len() {
                text.push_str(&cell);
            } else {
                let _ = write!(text, "{cell:<width$}{:GAP$}", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Leaves out columns in [`DROP_ORDER`], then narrows the widest columns (never COMPONENT),
/// until the table is at most `limit` characters wide or nothing more can go.
fn fit(shown: &mut Vec<usize>, widths: &mut [usize; 9], limit: usize) {
    let total = |shown: &[usize], widths: &[usize; 9]| -> usize {
        shown.iter().map(|&c| widths[c]).sum::<usize>() + GAP * shown.len().saturating_sub(1)
    };
    for column in DROP_ORDER {
        if total(shown, widths) <= limit {
            return;
        }
        shown.retain(|&c| c != column);
    }
    while total(shown, widths) > limit {
        let widest = shown
            .iter()
            .copied()
            .filter(|&c| c != 0 && widths[c] > MIN_CELL)
            .max_by_key(|&c| widths[c]);
        let Some(column) = widest else {
            return;
        };
        let excess = total(shown, widths) - limit;
        widths[column] = widths[column].saturating_sub(excess).max(MIN_CELL);
    }
}

/// The width tables printed on `fd` should fit: the terminal's columns, or `None` (full width)
/// when `fd` is not a terminal or `wide` asks for every column.
pub fn table_width(wide: bool, fd: i32) -> Option<usize> {
    if wide {
        return None;
    }
    #[repr(C)]
    struct WinSize {
        rows: u16,
        columns: u16,
        x_pixels: u16,
        y_pixels: u16,
    }
    extern "C" {
        fn ioctl(fd: i32, request: u64, ...) -> i32;
    }
    /// Linux's request for a terminal's size.
    const TIOCGWINSZ: u64 = 0x5413;
    let mut size = WinSize {
        rows: 0,
        columns: 0,
        x_pixels: 0,
        y_pixels: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` (four u16, the layout above) and nothing
    // else; on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { ioctl(fd, TIOCGWINSZ, &mut size as *mut WinSize) } == 0;
    (ok && size.columns > 0).then_some(usize::from(size.columns))
}

/// Adds rows for services that registered but belong to no row (a container of another
/// pipeline, a component matched to nothing), so nothing registered is hidden.
pub fn add_unlisted_services(rows: &mut Vec<StatusRow>, services: Vec<ServiceSnapshot>) {
    for service in services {
        let listed = rows.iter().any(|row| {
            row.service
                .as_ref()
                .is_some_and(|s| s.service_id == service.service_id)
        });
        if !listed {
            rows.push(StatusRow {
                component: service
                    .component
                    .clone()
                    .unwrap_or_else(|| format!("({})", service.service_id)),
                container: "-".to_string(),
                image: "-".to_string(),
                ports: Vec::new(),
                state: "-".to_string(),
                expects_registration: false,
                service: Some(service),
            });
        }
    }
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let text = text.lines().next().unwrap_or("");
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints the status table through `console` (on stderr), one line each, fitted to `width`.
pub fn print_table(console: Console, rows: &[StatusRow], width: Option<usize>) {
    // The console prefixes each line with `flowctl   `.
    let width = width.map(|w| w.saturating_sub("flowctl   ".len()));
    for line in render(rows, width).lines() {
        console.info(format!("  {line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::MatchedBy;
    use flowctl_proto::flowctl::ServiceType;

    fn snapshot(id: &str, component: &str, metrics: &[(&str, f64)]) -> ServiceSnapshot {
        ServiceSnapshot {
            service_id: id.to_string(),
            component: Some(component.to_string()),
            matched_by: MatchedBy::ComponentId,
            service_type: ServiceType::Processor,
            healthy: true,
            last_heartbeat_age: Some(Duration::from_secs(3)),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            endpoint: None,
        }
    }

    fn row(component: &str, service: Option<ServiceSnapshot>) -> StatusRow {
        StatusRow {
            component: component.to_string(),
            container: component.to_string(),
            image: format!("flowctl/{component}:dev"),
            ports: vec!["127.0.0.1:49153->50051".into()],
            state: "healthy".to_string(),
            expects_registration: true,
            service,
        }
    }

    #[test]
    fn table_shows_metrics_registration_and_health() {
        let mut silent = snapshot("sink-3", "consumer-app", &[("total_events_received", 9.0)]);
        silent.healthy = false;
        silent.last_heartbeat_age = Some(Duration::from_secs(95));
        let rows = vec![
            row(
                "ttp-processor",
                Some(snapshot(
                    "ttp-processor-2",
                    "ttp-processor",
                    &[
                        ("total_processed", 12.0),
                        ("last_processed_ledger", 1011.0),
                        ("total_events_emitted", 340.0),
                    ],
                )),
            ),
            row("consumer-app", Some(silent)),
            row("waiting", None),
            StatusRow {
                expects_registration: false,
                ports: vec![],
                state: "running".into(),
                ..row("third-party", None)
            },
        ];
        let table = render(&rows, None);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("COMPONENT"), "{table}");
        // Columns line up: every row's CONTAINER starts where the header's does.
        let column = lines[0].find("CONTAINER").unwrap();
        for line in &lines[1..] {
            assert_eq!(&line[column - 2..column], "  ", "{table}");
        }
        assert!(lines[1].contains("yes (ttp-processor-2)"), "{table}");
        assert!(lines[1].contains("3s ago"), "{table}");
        assert!(lines[1].contains("12 (ledger 1011)"), "{table}");
        assert!(lines[1].contains("340 out"), "{table}");
        assert!(lines[2].contains("unhealthy (silent 1m35s)"), "{table}");
        assert!(lines[2].contains("9 in"), "{table}");
        assert!(lines[3].contains(" no "), "{table}");
        assert!(lines[4].contains("running"), "{table}");
    }

    #[test]
    fn services_without_a_row_are_added() {
        let mut rows = vec![row(
            "ttp-processor",
            Some(snapshot("p-1", "ttp-processor", &[])),
        )];
        let mut stray = snapshot("service-4", "x", &[]);
        stray.component = None;
        add_unlisted_services(
            &mut rows,
            vec![snapshot("p-1", "ttp-processor", &[]), stray],
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].component, "(service-4)");
        assert_eq!(rows[1].container, "-");
    }

    #[test]
    fn a_narrow_terminal_drops_the_least_useful_columns_then_shortens() {
        let mut rows = vec![row(
            "stellar-live-source-datalake",
            Some(snapshot(
                "stellar-live-source-datalake-1",
                "stellar-live-source-datalake",
                &[("total_processed", 12.0), ("last_processed_ledger", 1011.0)],
            )),
        )];
        rows[0].ports = vec![
            "127.0.0.1:49153->50052".into(),
            "127.0.0.1:49154->8088".into(),
        ];
        let full = render(&rows, None);
        let full_width = full.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(
            full.contains("IMAGE") && full.contains("CONTAINER"),
            "{full}"
        );
        assert!(full_width > 150, "{full}");

        for limit in [200, 120, 100, 80] {
            let table = render(&rows, Some(limit));
            for line in table.lines() {
                assert!(line.chars().count() <= limit, "{limit}:\n{table}");
            }
            assert!(
                table.contains("COMPONENT") && table.contains("HEALTH"),
                "{table}"
            );
            assert!(table.contains("stellar-live-source-datalake "), "{table}");
        }
        let narrow = render(&rows, Some(100));
        assert!(!narrow.contains("IMAGE"), "{narrow}");
        assert!(narrow.contains("12 (ledger 1011)"), "{narrow}");
        // Far too narrow: still every row, COMPONENT whole, other cells cut with an ellipsis.
        let tiny = render(&rows, Some(40));
        assert_eq!(tiny.lines().count(), 2, "{tiny}");
        assert!(tiny.contains("stellar-live-source-datalake"), "{tiny}");
        // Not a terminal (a bad descriptor here), or --wide: full width.
        assert_eq!(table_width(false, -1), None);
        assert_eq!(table_width(true, 2), None);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age_text(Duration::from_millis(2500)), "2s");
        assert_eq!(age_text(Duration::from_secs(61)), "1m01s");
        assert_eq!(age_text(Duration::from_secs(3720)), "1h02m");
    }
}
