//! A consumer's writes after its answer. Upstream's SDK consumer answers `ConsumeResponse` as
//! soon as the stream ends, while the writes of its last events may still run (each event is
//! handled on a goroutine of its own): its count means "received", not "written". Its
//! `HealthCheck` metrics `events_consumed` and `events_failed` count the finished writes. So
//! before the run may stop such a sink, the relay waits, at most [`SETTLE_PATIENCE`], until they
//! account for every event it answered for, and says what it found. A consumer without those
//! metrics (ours write before they answer) is not waited for.

use std::time::{Duration, Instant};

use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::HealthCheckRequest;
use tonic::transport::Channel;

/// How long a sink's writes may take after its answer.
pub const SETTLE_PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A consumer's finished writes, once they were all done or the patience ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub written: i64,
    pub failed: i64,
    /// Every answered event's write had finished.
    pub complete: bool,
}

/// `(events_consumed, events_failed)` of a `HealthCheck` answer, when it has the first.
fn finished(metrics: &std::collections::HashMap<String, String>) -> Option<(i64, i64)> {
    let number = |key: &str| {
        metrics
            .get(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as i64)
    };
    Some((
        number("events_consumed")?,
        number("events_failed").unwrap_or(0),
    ))
}

/// Waits until the consumer on `channel` reports `answered` finished writes; `None` when it
/// reports no such counts (or has no `HealthCheck`).
pub async fn settle(channel: Channel, answered: i64) -> Option<Settled> {
    let mut client = ConsumerServiceClient::new(channel);
    let deadline = Instant::now() + SETTLE_PATIENCE;
    loop {
        let request = HealthCheckRequest {
            include_details: false,
        };
        let metrics = client
            .health_check(request)
            .await
            .ok()?
            .into_inner()
            .metrics;
        let (written, failed) = finished(&metrics)?;
        let complete = written + failed >= answered;
        if complete || Instant::now() >= deadline {
            return Some(Settled {
                written,
                failed,
                complete,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_writes_are_read_from_the_sdk_metrics_only() {
        let metrics = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            finished(&metrics(&[
                ("events_consumed", "7"),
                ("events_failed", "2")
            ])),
            Some((7, 2))
        );
        assert_eq!(
            finished(&metrics(&[("events_consumed", "3.0")])),
            Some((3, 0))
        );
        assert_eq!(finished(&metrics(&[("success_count", "3")])), None);
    }
}
