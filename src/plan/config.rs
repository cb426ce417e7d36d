//! `config:` (pipeline-wide `spec.config` under each component's own) as environment
//! variables, as upstream passes it: a key becomes the variable the component's metadata maps
//! it to, else the key in UPPER_SNAKE_CASE; scalars as text, lists and maps as JSON. Values are
//! secret like `env`: problems name keys only.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// The merged configuration of one component, values as the container sees them.
pub(super) fn merged(
    pipeline: &BTreeMap<String, Value>,
    component: &BTreeMap<String, Value>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    for (field, entries) in [("spec.config", pipeline), ("config", component)] {
        for (key, value) in entries {
            match as_text(value) {
                Some(text) if text.contains(['\n', '\r', '\0']) => problems.push(format!(
                    "{field}.{key}: the value contains a line break, which cannot be passed to \
                     a container as an environment variable"
                )),
                Some(text) => {
                    config.insert(key.clone(), text);
                }
                None => problems.push(format!(
                    "{field}.{key}: the value cannot be written as text or JSON"
                )),
            }
            if env_name(key).is_empty() {
                problems.push(format!(
                    "{field}: `{key}` has no letters or digits to name an environment variable"
                ));
            }
        }
    }
    config
}

/// `network_passphrase` → `NETWORK_PASSPHRASE`, `rpcEndpoint` → `RPC_ENDPOINT`,
/// `backend-type` → `BACKEND_TYPE`.
pub fn env_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 4);
    let mut previous: Option<char> = None;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() {
            let word_break = c.is_ascii_uppercase()
                && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            if word_break && !name.ends_with('_') {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        } else if !name.is_empty() && !name.ends_with('_') {
            name.push('_');
        }
        previous = Some(c);
    }
    name.trim_end_matches('_').to_string()
}

/// A value as an environment variable: scalars as text, lists and maps as JSON, null empty.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Sequence(_) | Value::Mapping(_) => serde_json::to_string(value).ok(),
        Value::Tagged(tagged) => as_text(&tagged.value),
    }
}

/// Adds the configuration to `env` under each key's variable (`mapping` first, then
/// UPPER_SNAKE_CASE); explicit `env` entries win. Returns the variables it added.
pub(super) fn apply(
    config: &BTreeMap<String, String>,
    mapping: &BTreeMap<String, String>,
    env: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let mut added = Vec::new();
    for (key, value) in config {
        let name = mapping.get(key).cloned().unwrap_or_else(|| env_name(key));
        if !env.contains_key(&name) {
            env.insert(name.clone(), value.clone());
            added.push(name);
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_name("network_passphrase"), "NETWORK_PASSPHRASE");
        assert_eq!(env_name("rpcEndpoint"), "RPC_ENDPOINT");
        assert_eq!(env_name("backend-type"), "BACKEND_TYPE");
        assert_eq!(env_name("start.ledger"), "START_LEDGER");
        assert_eq!(env_name("S3_BUCKET"), "S3_BUCKET");
        assert_eq!(env_name("v2Api"), "V2_API");
        assert_eq!(env_name("--"), "");
    }

    #[test]
    fn merged_config_becomes_env_and_env_wins() {
        let pipeline: BTreeMap<String, Value> =
            serde_yaml::from_str("network: testnet\nbatch: 10\n").unwrap();
        let component: BTreeMap<String, Value> = serde_yaml::from_str(
            "batch: 20\nassets: [USDC, XLM]\nlimits: {a: 1}\nenabled: true\nempty: null\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let config = merged(&pipeline, &component, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let mut env = BTreeMap::from([("NETWORK".to_string(), "mainnet".to_string())]);
        let mapping = BTreeMap::from([("batch".to_string(), "BATCH_SIZE".to_string())]);
        apply(&config, &mapping, &mut env);
        assert_eq!(env["NETWORK"], "mainnet");
        assert_eq!(env["BATCH_SIZE"], "20");
        assert_eq!(env["ASSETS"], r#"["USDC","XLM"]"#);
        assert_eq!(env["LIMITS"], r#"{"a":1}"#);
        assert_eq!(env["ENABLED"], "true");
        assert_eq!(env["EMPTY"], "");
    }

    #[test]
    fn problems_name_keys_never_values() {
        let component: BTreeMap<String, Value> =
            serde_yaml::from_str("token: \"secret-line1\\nsecret-line2\"\n").unwrap();
        let mut problems = Vec::new();
        merged(&BTreeMap::new(), &component, &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("config.token: "), "{problems:?}");
        assert!(!problems[0].contains("secret"), "{problems:?}");
    }
}
