//! Each image's `/metadata.json` (`metadata/<binary>.json`, copied by scripts/build-images.sh)
//! says what the component really is: name, version, role, event types, and an `env_mapping`
//! that agrees with its `config_schema`.

use std::path::PathBuf;

use flowctl_proto::flowctl::v1::ComponentType;
use stellar_v1_components::component::V1Identity;
use stellar_v1_components::{
    consumer, jsonl_sink, ledger_processor, postgres_sink, processor, source,
};

fn metadata(identity: &V1Identity) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("metadata")
        .join(format!("{}.json", identity.name));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect()
}

#[test]
fn metadata_matches_each_component() {
    for identity in [&source::IDENTITY, &processor::IDENTITY, &consumer::IDENTITY] {
        let name = identity.name;
        let metadata = metadata(identity);
        assert_eq!(metadata["name"], name);
        assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"), "{name}");
        // Upstream's metadata names a consumer's role "sink".
        let role = match identity.component_type {
            ComponentType::Source => "source",
            ComponentType::Processor => "processor",
            ComponentType::Consumer => "sink",
            ComponentType::Unspecified => unreachable!(),
        };
        assert_eq!(metadata["type"], role, "{name}");
        assert_eq!(
            strings(&metadata["produces"]),
            identity.output_event_types,
            "{name}"
        );
        assert_eq!(
            strings(&metadata["consumes"]),
            identity.input_event_types,
            "{name}"
        );

        let mapping = metadata["env_mapping"].as_object().unwrap();
        let schema = metadata["config_schema"].as_object().unwrap();
        assert_eq!(
            mapping.keys().collect::<Vec<_>>(),
            schema.keys().collect::<Vec<_>>(),
            "{name}: env_mapping and config_schema list the same keys"
        );
        for (key, variable) in mapping {
            assert_eq!(&schema[key]["env"], variable, "{name}: {key}");
        }
        assert_eq!(schema["port"]["default"], identity.default_port, "{name}");
        assert_eq!(schema["component_id"]["default"], name, "{name}");
    }
}

/// `raw-ledger-source`'s file is written as upstream's images write theirs: `input_types` and
/// `output_types`, and the variables under upstream's names.
#[test]
fn raw_ledger_source_metadata_uses_upstreams_names() {
    let identity = &source::UPSTREAM_IDENTITY;
    let metadata = metadata(identity);
    assert_eq!(metadata["name"], identity.name);
    assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata["type"], "source");
    assert_eq!(
        strings(&metadata["output_types"]),
        identity.output_event_types
    );
    assert_eq!(
        strings(&metadata["input_types"]),
        identity.input_event_types
    );
    assert!(metadata.get("produces").is_none());
    let schema = metadata["config_schema"].as_object().unwrap();
    assert_eq!(schema["grpc_port"]["env"], identity.port_variables[0]);
    assert_eq!(schema["grpc_port"]["default"], identity.default_port);
    assert_eq!(schema["component_id"]["default"], identity.name);
    for variable in [
        "BACKEND_TYPE",
        "ARCHIVE_STORAGE_TYPE",
        "ARCHIVE_BUCKET_NAME",
        "ARCHIVE_PATH",
        "AWS_REGION",
        "LEDGERS_PER_FILE",
        "FILES_PER_PARTITION",
        "NETWORK_PASSPHRASE",
        "START_LEDGER",
        "END_LEDGER",
        "HEALTH_PORT",
    ] {
        assert!(
            schema.values().any(|field| field["env"] == variable),
            "{variable} is not in the schema"
        );
    }
}

/// The ledger batch components' files are written as upstream's images write theirs.
#[test]
fn ledger_batch_components_metadata_uses_upstreams_names() {
    for identity in [
        &ledger_processor::IDENTITY,
        &jsonl_sink::IDENTITY,
        &postgres_sink::IDENTITY,
    ] {
        let name = identity.name;
        let metadata = metadata(identity);
        assert_eq!(metadata["name"], name);
        assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"), "{name}");
        let role = match identity.component_type {
            ComponentType::Processor => "processor",
            ComponentType::Consumer => "sink",
            _ => unreachable!(),
        };
        assert_eq!(metadata["type"], role, "{name}");
        assert_eq!(
            strings(&metadata["output_types"]),
            identity.output_event_types,
            "{name}"
        );
        assert_eq!(
            strings(&metadata["input_types"]),
            identity.input_event_types,
            "{name}"
        );
        let schema = metadata["config_schema"].as_object().unwrap();
        assert_eq!(schema["port"]["env"], identity.port_variables[0], "{name}");
        assert_eq!(schema["port"]["default"], identity.default_port, "{name}");
        assert_eq!(schema["component_id"]["default"], name, "{name}");
    }
    let schema = metadata(&postgres_sink::IDENTITY)["config_schema"].clone();
    assert_eq!(
        schema["postgres_dsn"]["default"],
        postgres_sink::DEFAULT_DSN
    );
    let schema = metadata(&jsonl_sink::IDENTITY)["config_schema"].clone();
    assert_eq!(schema["jsonl_path"]["default"], jsonl_sink::DEFAULT_PATH);
}
