//! Where a component's field is written in the file, for problems found after parsing (the
//! plan's checks), which serde cannot place: a line scan, good for block and flow style alike
//! because it only looks for the component's `id` and then the field's key.

/// The 1-based line of `field` (its first key, e.g. `resources` of
/// `resources.requests.memory`) of the component with `id`, else of the component itself.
pub fn component_field_line(text: &str, id: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let declares_id = |line: &str| {
        let code = line.split(" #").next().unwrap_or(line);
        // `- id: a-b` and `- {id: a-b, ...}`: the list dash goes, the id keeps its own.
        code.split(['{', ','])
            .map(|part| part.trim().trim_start_matches('-').trim_start())
            .filter_map(|part| part.strip_prefix("id:"))
            .any(|value| value.trim().trim_matches(['"', '\'', '}']).trim() == id)
    };
    let start = lines.iter().position(|line| declares_id(line))?;
    let key = field
        .split(['.', '['])
        .next()
        .filter(|key| !key.is_empty())?;
    let within: Vec<(usize, &str)> = lines[start..]
        .iter()
        .enumerate()
        // The next component (`- id:` or `- {`) ends the search.
        .take_while(|(i, line)| {
            *i == 0
                || !line.trim_start().starts_with("- id:") && !line.trim_start().starts_with("- {")
        })
        .map(|(i, line)| (start + i + 1, line.split(" #").next().unwrap_or(line)))
        .collect();
    let key_at = within
        .iter()
        .position(|(_, code)| code.contains(&format!("{key}:")));
    // `env.NAME`: the variable's own line, when it has one.
    let sub = field.strip_prefix("env.").filter(|sub| !sub.is_empty());
    let found = key_at.map(|at| {
        sub.and_then(|sub| {
            within[at..]
                .iter()
                .find(|(_, code)| code.contains(&format!("{sub}:")))
                .map(|(line, _)| *line)
        })
        .unwrap_or(within[at].0)
    });
    Some(found.unwrap_or(start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_of_the_component() {
        let text = "spec:\n  sources:\n    - id: a\n      resources: {}\n    - id: b\n      image: x\n      resources:\n        limits: {}\n  sinks:\n    - {id: c, image: y, secrets: []}\n";
        assert_eq!(component_field_line(text, "a", "resources.limits"), Some(4));
        assert_eq!(
            component_field_line(text, "b", "resources.limits.cpu"),
            Some(7)
        );
        assert_eq!(component_field_line(text, "b", "secrets[0]"), Some(5));
        assert_eq!(component_field_line(text, "c", "secrets[0].mode"), Some(10));
        assert_eq!(component_field_line(text, "d", "image"), None);
        let dashed = "spec:\n  sources:\n    - id: raw-ledger-source\n      command: [x]\n  sinks:\n    - {id: my-sink, command: [y]}\n";
        assert_eq!(
            component_field_line(dashed, "raw-ledger-source", "command"),
            Some(4)
        );
        assert_eq!(component_field_line(dashed, "my-sink", "command"), Some(6));
        assert_eq!(component_field_line(dashed, "raw", "command"), None);
        let env =
            "spec:\n  sources:\n    - id: a\n      env:\n        PORT: x\n        GRPC_PORT: y\n";
        assert_eq!(component_field_line(env, "a", "env.GRPC_PORT"), Some(6));
        assert_eq!(component_field_line(env, "a", "env.OTHER"), Some(4));
    }
}
