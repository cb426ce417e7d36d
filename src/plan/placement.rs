//! `placement:` of a component: where a Swarm may run its tasks. Constraints are Swarm's
//! `ATTRIBUTE == VALUE` / `ATTRIBUTE != VALUE` over the node attributes Swarm knows; spread
//! preferences name a node label. Checked here so a typo fails before anything starts,
//! instead of leaving a task pending forever on a cluster where no node matches.

use crate::spec::PlacementSpec;

/// The node attributes a constraint may test (besides `node.labels.*` and `engine.labels.*`).
const ATTRIBUTES: &[&str] = &[
    "node.id",
    "node.hostname",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
];

/// What Swarm is asked for, as the CLI and stack files write it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementPlan {
    /// `node.labels.zone==east` (spaces around the operator removed).
    pub constraints: Vec<String>,
    /// The node attribute of each `spread` preference (`node.labels.zone`).
    pub spread: Vec<String>,
}

impl PlacementPlan {
    /// Whether anything is asked for.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.spread.is_empty()
    }
}

pub(super) fn placement(spec: Option<&PlacementSpec>, problems: &mut Vec<String>) -> PlacementPlan {
    let Some(spec) = spec else {
        return PlacementPlan::default();
    };
    let mut plan = PlacementPlan::default();
    for (i, constraint) in spec.constraints.iter().enumerate() {
        match constraint_of(constraint) {
            Ok(normal) => plan.constraints.push(normal),
            Err(why) => problems.push(format!("placement.constraints[{i}]: `{constraint}`: {why}")),
        }
    }
    for (i, preference) in spec.preferences.iter().enumerate() {
        let attribute = preference.spread.trim();
        if label_name(attribute, "node.labels.").is_some() {
            plan.spread.push(attribute.to_string());
        } else {
            problems.push(format!(
                "placement.preferences[{i}].spread: `{}` must be a node label, e.g. \
                 `node.labels.zone`",
                preference.spread
            ));
        }
    }
    plan
}

/// `node.labels.zone == east` -> `node.labels.zone==east`, or why it is not a constraint.
fn constraint_of(text: &str) -> Result<String, String> {
    let (attribute, operator, value) = if let Some((a, v)) = text.split_once("!=") {
        (a, "!=", v)
    } else if let Some((a, v)) = text.split_once("==") {
        (a, "==", v)
    } else {
        return Err("expected `ATTRIBUTE == VALUE` or `ATTRIBUTE != VALUE`".into());
    };
    let (attribute, value) = (attribute.trim(), value.trim());
    let known = ATTRIBUTES.contains(&attribute)
        || label_name(attribute, "node.labels.").is_some()
        || label_name(attribute, "engine.labels.").is_some();
    if !known {
        return Err(format!(
            "unknown attribute `{attribute}` (one of {}, node.labels.NAME, engine.labels.NAME)",
            ATTRIBUTES.join(", ")
        ));
    }
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err("the value must be one word".into());
    }
    Ok(format!("{attribute}{operator}{value}"))
}

/// `NAME` of `PREFIX NAME`, when it is a plausible label name.
fn label_name<'a>(attribute: &'a str, prefix: &str) -> Option<&'a str> {
    attribute
        .strip_prefix(prefix)
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PreferenceSpec;

    fn check(constraints: &[&str], spread: &[&str]) -> (PlacementPlan, Vec<String>) {
        let spec = PlacementSpec {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            preferences: spread
                .iter()
                .map(|s| PreferenceSpec {
                    spread: s.to_string(),
                })
                .collect(),
        };
        let mut problems = Vec::new();
        let plan = placement(Some(&spec), &mut problems);
        (plan, problems)
    }

    #[test]
    fn constraints_are_normalised_and_spread_kept() {
        let (plan, problems) = check(
            &[
                "node.labels.lab == n2",
                "node.role!=manager",
                "engine.labels.x==y",
            ],
            &["node.labels.zone"],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            plan.constraints,
            [
                "node.labels.lab==n2",
                "node.role!=manager",
                "engine.labels.x==y"
            ]
        );
        assert_eq!(plan.spread, ["node.labels.zone"]);
    }

    #[test]
    fn typos_are_refused_naming_the_entry() {
        let (_, problems) = check(
            &[
                "node.label.lab == n2",
                "node.role = manager",
                "node.hostname == ",
            ],
            &["zone"],
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0]
            .starts_with("placement.constraints[0]: `node.label.lab == n2`: unknown attribute"));
        assert!(problems[1].contains("expected `ATTRIBUTE == VALUE`"));
        assert!(problems[2].contains("one word"));
        assert!(problems[3].starts_with("placement.preferences[0].spread: `zone`"));
    }
}
