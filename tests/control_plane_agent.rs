//! The component agent of `flowctl_proto::component` against flowctl's real control plane, over
//! loopback: it registers under its `FLOWCTL_COMPONENT_ID`, its heartbeats carry the metrics,
//! a restarted control plane makes it register again (NOT_FOUND), and silence is reported.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flowctl::control_plane::{
    ControlPlane, ControlPlaneConfig, ControlPlaneEvent, ExpectedComponent,
};
use flowctl::plan::Role;
use flowctl_proto::component::{spawn_agent, AgentConfig, ComponentEnv, Metrics};
use flowctl_proto::flowctl::ServiceType;

const WAIT: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_millis(100);

fn start(bind: SocketAddr) -> ControlPlane {
    let config = ControlPlaneConfig::new(
        INTERVAL,
        vec![ExpectedComponent {
            id: "ttp-processor".into(),
            role: Role::Processor,
        }],
    );
    ControlPlane::start(bind, config).unwrap()
}

/// Waits for the first event `want` accepts, skipping others.
fn wait_for(plane: &ControlPlane, what: &str, want: impl Fn(&ControlPlaneEvent) -> bool) {
    let deadline = Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match plane.next_event(left) {
            Some(event) if want(&event) => return,
            Some(_) => continue,
            None => break,
        }
    }
    panic!("no {what} event within {WAIT:?}");
}

fn poll_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[test]
fn agent_registers_heartbeats_reregisters_and_goes_silent() {
    let plane = start(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = plane.local_addr();
    let env = ComponentEnv::from_lookup(8088, |key| match key {
        "ENABLE_FLOWCTL" => Some("true".into()),
        "FLOWCTL_ENDPOINT" => Some(address.to_string()),
        "FLOWCTL_HEARTBEAT_INTERVAL" => Some("100ms".into()),
        "FLOWCTL_COMPONENT_ID" => Some("ttp-processor".into()),
        _ => None,
    })
    .unwrap();
    let metrics = Metrics::with_keys(&["total_events_emitted"]);
    metrics.set("total_events_emitted", 17.0);
    let config = AgentConfig {
        service_type: ServiceType::Processor,
        input_event_types: vec!["raw_ledger_service.RawLedgerChunk".into()],
        output_event_types: vec!["event_service.TokenTransferEvent".into()],
        health_endpoint: "http://ttp-processor:8088/health".into(),
        max_inflight: 100,
        metadata: Default::default(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent = {
        let _guard = runtime.enter();
        spawn_agent(&env, config, metrics.clone()).expect("ENABLE_FLOWCTL=true starts the agent")
    };

    wait_for(
        &plane,
        "registration",
        |event| matches!(event, ControlPlaneEvent::Registered { component: Some(c), declared: true, .. } if c == "ttp-processor"),
    );
    poll_until("heartbeat metrics", || {
        plane
            .service_of("ttp-processor")
            .is_some_and(|s| s.metrics.get("total_events_emitted") == Some(&17.0))
    });

    // A new control plane on the same address does not know the agent's service id: the
    // agent's next heartbeat gets NOT_FOUND and it registers again.
    plane.shutdown();
    let plane = start(address);
    wait_for(
        &plane,
        "re-registration",
        |event| matches!(event, ControlPlaneEvent::Registered { component: Some(c), .. } if c == "ttp-processor"),
    );
    metrics.set("total_events_emitted", 18.0);
    poll_until("heartbeats to the new control plane", || {
        plane
            .service_of("ttp-processor")
            .is_some_and(|s| s.metrics.get("total_events_emitted") == Some(&18.0))
    });

    // The component stops heartbeating: reported unhealthy after the TTL.
    agent.abort();
    wait_for(
        &plane,
        "unhealthy",
        |event| matches!(event, ControlPlaneEvent::Unhealthy { component: Some(c), .. } if c == "ttp-processor"),
    );
    assert!(!plane.service_of("ttp-processor").unwrap().healthy);
}

/// The flowctl.v1 agent our v1 components run (upstream's SDK behaves alike, but exits when
/// registration fails) registers with flowctl's `flowctl.v1.ControlPlaneService` at the first
/// answer, under its `COMPONENT_ID`, with its listen address mapped to its network address, and
/// its heartbeats' text metrics reach the same registry the legacy service uses.
#[test]
fn the_v1_agent_registers_and_heartbeats_through_flowctl_v1() {
    use flowctl_proto::component::spawn_v1_agent;
    use flowctl_proto::flowctl::v1::{ComponentInfo, ComponentType};

    let plane = start(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = plane.local_addr();
    let env = ComponentEnv::from_lookup(8088, |key| match key {
        "ENABLE_FLOWCTL" => Some("true".into()),
        "FLOWCTL_ENDPOINT" => Some(address.to_string()),
        "FLOWCTL_HEARTBEAT_INTERVAL" => Some("100ms".into()),
        _ => None,
    })
    .unwrap();
    let metrics = Metrics::with_keys(&["total_events_emitted"]);
    metrics.set("total_events_emitted", 5.0);
    let info = ComponentInfo {
        id: "ttp-processor".into(),
        r#type: ComponentType::Processor as i32,
        endpoint: ":50051".into(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent = {
        let _guard = runtime.enter();
        spawn_v1_agent(&env, info, metrics.clone()).expect("ENABLE_FLOWCTL=true starts the agent")
    };
    wait_for(
        &plane,
        "v1 registration",
        |event| matches!(event, ControlPlaneEvent::Registered { component: Some(c), service_id, declared: true } if c == "ttp-processor" && service_id == "ttp-processor"),
    );
    poll_until("v1 heartbeat metrics", || {
        plane
            .service_of("ttp-processor")
            .is_some_and(|s| s.metrics.get("total_events_emitted") == Some(&5.0))
    });
    let service = plane.service_of("ttp-processor").unwrap();
    assert_eq!(service.endpoint.as_deref(), Some("ttp-processor:50051"));
    assert_eq!(service.service_type, ServiceType::Processor);
    assert!(service.healthy);
    agent.abort();
}
