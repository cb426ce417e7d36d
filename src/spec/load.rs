//! Reading a pipeline file: the size bound, UTF-8, the `kind: Pipeline` check, `${VAR}`
//! substitution, the nesting bound, then serde; and the errors of each step explained with the
//! file, line, component and the nearest valid key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::{interpolate, PipelineFile, MAX_FILE_BYTES};

/// The pipeline file could not be read or parsed.
#[derive(Debug)]
pub struct SpecError {
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<PipelineFile, SpecError> {
    let origin = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| SpecError {
        message: format!("{origin}: cannot read the pipeline file: {e}"),
    })?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(SpecError {
            message: format!(
                "{origin}: the pipeline file is {} bytes; more than the {MAX_FILE_BYTES} bytes \
                 flowctl accepts",
                metadata.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        message: format!("{origin}: cannot read the pipeline file: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| SpecError {
        message: format!(
            "{origin}: the pipeline file is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    parse(&text, &origin.to_string())
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: serde_yaml
/// refuses more than 128 levels anyway, but only after its scanner has spent time quadratic in
/// the depth (seconds for 40 KB of `[`, hours for 1 MiB).
pub const MAX_FLOW_DEPTH: usize = 128;

/// Parses pipeline text; `origin` names it in errors; `${VAR}` reads the process environment.
pub fn parse(text: &str, origin: &str) -> Result<PipelineFile, SpecError> {
    parse_with(text, origin, &|name| std::env::var(name).ok())
}

/// [`parse`] with the variables `${VAR}` reads given by `lookup`.
pub fn parse_with(
    text: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineFile, SpecError> {
    let fail = |message: String| SpecError {
        message: format!("{origin}: {message}"),
    };
    if let Some(line) = flow_too_deep(text) {
        return Err(fail(format!(
            "line {line}: `[` or `{{` nested more than {MAX_FLOW_DEPTH} levels deep"
        )));
    }
    let typed_from_text = || serde_yaml::from_str(text).map_err(|e| fail(explain(&e, text)));
    // The YAML structure first: it says whether this is a pipeline file at all, and carries
    // the values `${VAR}` substitution works on. Syntax errors are the typed parser's to word.
    let Ok(mut document) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return typed_from_text();
    };
    if let Some(problem) = not_a_pipeline(&document) {
        return Err(fail(problem));
    }
    let (changed, unresolved) = interpolate::interpolate(&mut document, lookup);
    if !unresolved.is_empty() {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let lines: Vec<String> = unresolved
            .iter()
            .map(|u| {
                let occurrence = seen.entry(u.written.as_str()).or_default();
                let line = interpolate::line_of(text, &u.written, *occurrence)
                    .map(|line| format!("line {line}: "))
                    .unwrap_or_default();
                *occurrence += 1;
                format!("{line}{}: {}", u.field, u.problem)
            })
            .collect();
        return Err(fail(lines.join(&format!("\n{origin}: "))));
    }
    if !changed {
        // Parsed from the text, serde's errors carry line and column.
        return typed_from_text();
    }
    // Substituted in the text when that gives the same document, so errors keep their lines;
    // else (a value that would change the YAML's structure) from the walked document.
    let substituted = interpolate::substitute_text(text, lookup).filter(|substituted| {
        serde_yaml::from_str::<serde_yaml::Value>(substituted)
            .is_ok_and(|parsed| interpolate::same_document(&parsed, &document))
    });
    match substituted {
        Some(substituted) => {
            serde_yaml::from_str(&substituted).map_err(|e| fail(explain(&e, &substituted)))
        }
        None => serde_yaml::from_value(document).map_err(|e| fail(explain(&e, text))),
    }
}

/// Why a parsed document is not a `kind: Pipeline` file, if it is not: said once, before any
/// field error. Documents that are not mappings are left to the typed parser's message.
fn not_a_pipeline(document: &serde_yaml::Value) -> Option<String> {
    let map = document.as_mapping()?;
    let kind = map.get("kind");
    if map.get("apiVersion").is_none() && kind.is_none() {
        return Some(
            "not a pipeline file: it has no `apiVersion` and `kind` (a pipeline file starts with \
             `apiVersion: flowctl/v1` and `kind: Pipeline`; a component's own config file is \
             given to the component instead, e.g. through `config:` or a volume)"
                .into(),
        );
    }
    match kind?.as_str() {
        Some("Pipeline") => None,
        Some(other) => Some(format!(
            "not a pipeline file: `kind: {other}` is not `kind: Pipeline`{}",
            if other == "SandboxServices" {
                " (upstream's `flowctl sandbox` services file; run its services with docker \
                 compose, and the pipeline with `flowctl run`)"
            } else {
                ""
            }
        )),
        None => Some("kind: must be the text `Pipeline`".into()),
    }
}

/// The line where flow collections first nest deeper than [`MAX_FLOW_DEPTH`], skipping quoted
/// text and comments (a rough scan: it only has to be cheap and never count too many).
pub(super) fn flow_too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut previous = '\n';
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match (quote, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => {
                if chars.by_ref().any(|n| n == '\n') {
                    line += 1;
                }
                previous = '\n';
                continue;
            }
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
        previous = c;
    }
    None
}

/// serde_yaml's message, plus the component id for a `spec.sinks[2]` path and the nearest
/// valid key for an unknown one.
fn explain(error: &serde_yaml::Error, text: &str) -> String {
    let mut message = error.to_string();
    if let Some(with_id) = name_component(&message, text) {
        message = with_id;
    }
    if let Some(hint) = suggest_key(&message) {
        message.push_str(&hint);
    }
    message
}

/// `spec.sinks[2].ports[0]: ...` → `spec.sinks[2].ports[0] (component `sink`): ...`.
fn name_component(message: &str, text: &str) -> Option<String> {
    let (path, _) = message.split_once(": ")?;
    let rest = path.strip_prefix("spec.")?;
    let (list, after) = rest.split_once('[')?;
    let (index, _) = after.split_once(']')?;
    let index: usize = index.parse().ok()?;
    // Only the YAML structure is needed here, so a file that failed typed parsing still reads.
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let id = value
        .get("spec")?
        .get(list)?
        .get(index)?
        .get("id")?
        .as_str()?;
    Some(message.replacen(
        &format!("{path}: "),
        &format!("{path} (component `{id}`): "),
        1,
    ))
}

/// For "unknown field `x`, expected one of `a`, `b`": " (did you mean `a`?)".
fn suggest_key(message: &str) -> Option<String> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let unknown = &message[start..start + message[start..].find('`')?];
    if unknown == "<<" {
        return Some(" (YAML merge keys are not supported: write the fields out)".into());
    }
    let expected = &message[message.find("expected")?..];
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(unknown, &candidates).map(|best| format!(" (did you mean `{best}`?)"))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lower, &c.to_ascii_lowercase()), *c))
        .filter(|(distance, c)| *distance <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
