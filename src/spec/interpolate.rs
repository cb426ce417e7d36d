//! `${VAR}` substitution in a pipeline file's string values, with Docker Compose's rules:
//! `${VAR}` and `$VAR` (unset is an error), `${VAR:-default}` (unset or empty → default),
//! `${VAR-default}` (unset → default), `${VAR:?message}` / `${VAR?message}` (required) and
//! `$$` for a literal `$`. Only values are substituted, never keys, so the file's shape cannot
//! change. Values of variables are never part of an error: errors name the variable, the field
//! and the line.

use serde_yaml::Value;

/// One variable that could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The field, as serde names it (`spec.sources[0].env.URL`), plus the component id.
    pub field: String,
    /// The reference as written (`${URL}`), to find its line.
    pub written: String,
    /// What is wrong, naming the variable.
    pub problem: String,
}

/// Substitutes every string value of `document` in place; returns whether anything changed
/// and every reference that could not be substituted.
pub fn interpolate(
    document: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (bool, Vec<Unresolved>) {
    let mut walk = Walk {
        lookup,
        changed: false,
        unresolved: Vec::new(),
    };
    walk.value(document, String::new(), None);
    (walk.changed, walk.unresolved)
}

struct Walk<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    changed: bool,
    unresolved: Vec<Unresolved>,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut Value, path: String, component: Option<&str>) {
        match value {
            Value::String(text) if text.contains('$') => match substitute(text, self.lookup) {
                Ok(result) => {
                    self.changed |= result != *text;
                    *text = result;
                }
                Err((written, problem)) => {
                    let field = match component {
                        Some(id) => format!("{path} (component `{id}`)"),
                        None => path,
                    };
                    self.unresolved.push(Unresolved {
                        field,
                        written,
                        problem,
                    });
                }
            },
            Value::Sequence(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    // A component list entry: name the component in errors below it.
                    let id = item
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .filter(|_| is_component_list(&path));
                    let component = id.as_deref().or(component);
                    self.value(item, format!("{path}[{index}]"), component);
                }
            }
            Value::Mapping(map) => {
                for (key, item) in map.iter_mut() {
                    let key = match key {
                        Value::String(key) => key.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    let path = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.value(item, path, component);
                }
            }
            Value::Tagged(tagged) => self.value(&mut tagged.value, path, component),
            _ => {}
        }
    }
}

fn is_component_list(path: &str) -> bool {
    ["sources", "processors", "sinks", "pipelines"]
        .iter()
        .any(|list| path == format!("spec.{list}"))
}

/// One string with every reference substituted; the error is the first reference that could
/// not be (as written) and what is wrong with it.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner_and_tail) = after.strip_prefix('{') {
            let close = matching_brace(inner_and_tail).ok_or_else(|| {
                (
                    rest.to_string(),
                    "`${` without its closing `}` (write `$$` for a literal `$`)".to_string(),
                )
            })?;
            let inner = &inner_and_tail[..close];
            let written = format!("${{{inner}}}");
            out.push_str(&braced(inner, lookup).map_err(|problem| (written, problem))?);
            rest = &inner_and_tail[close + 1..];
        } else {
            let name_len = variable_name_len(after);
            if name_len == 0 {
                return Err((
                    format!(
                        "${}",
                        after.chars().next().map(String::from).unwrap_or_default()
                    ),
                    "`$` must start a variable (`$VAR`, `${VAR}`); write `$$` for a literal `$`"
                        .into(),
                ));
            }
            let name = &after[..name_len];
            out.push_str(&lookup(name).ok_or_else(|| (format!("${name}"), not_set(name)))?);
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `VAR`, `VAR:-default`, `VAR-default`, `VAR:?message`, `VAR?message`.
fn braced(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = variable_name_len(inner);
    let (name, operator) = inner.split_at(name_len);
    if name.is_empty() {
        return Err(format!(
            "`${{{inner}}}` does not start with a variable name (letters, digits, `_`)"
        ));
    }
    let value = lookup(name);
    // Two-character operators first, so `:-` is not read as `:` then `-`.
    let (op, argument) = [":-", ":?", "-", "?"]
        .into_iter()
        .find_map(|op| operator.strip_prefix(op).map(|arg| (op, arg)))
        .unwrap_or(("", operator));
    match op {
        "" if argument.is_empty() => value.ok_or_else(|| not_set(name)),
        "" => Err(format!(
            "`${{{inner}}}`: after the variable name comes `}}`, `:-`, `-`, `:?` or `?`"
        )),
        ":-" => match value.filter(|v| !v.is_empty()) {
            Some(value) => Ok(value),
            None => substitute(argument, lookup).map_err(|(_, problem)| problem),
        },
        "-" => match value {
            Some(value) => Ok(value),
            None => substitute(argument, lookup).map_err(|(_, problem)| problem),
        },
        ":?" | "?" => {
            let missing = match op {
                ":?" => value.as_deref().is_none_or(str::is_empty),
                _ => value.is_none(),
            };
            match value {
                Some(value) if !missing => Ok(value),
                _ => Err(format!(
                    "variable `{name}` is required: {}",
                    if argument.is_empty() {
                        "it is not set"
                    } else {
                        argument
                    }
                )),
            }
        }
        _ => unreachable!("only the operators listed above are matched"),
    }
}

fn not_set(name: &str) -> String {
    format!(
        "variable `{name}` is not set and has no default (set it, or write `${{{name}:-default}}`)"
    )
}

/// Length of the variable name at the start of `text`: `[A-Za-z_][A-Za-z0-9_]*`.
fn variable_name_len(text: &str) -> usize {
    let mut len = 0;
    for (i, c) in text.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Index of the `}` closing a `${` whose content starts `text` (defaults may nest `${...}`).
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The file's text with every reference substituted in place, line for line, so the typed
/// parser's errors keep their lines. Values are escaped for the quoted scalar they land in;
/// in plain scalars they are inserted as they are (as Compose does, `port: ${PORT}` becomes a
/// number). The caller checks the result parses to the same document as [`interpolate`]'s.
/// `None` when a reference cannot be substituted.
pub fn substitute_text(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        Plain,
        Single,
        Double,
    }
    let mut out = String::with_capacity(text.len());
    let mut quote = Quote::Plain;
    let mut previous = '\n';
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let starts_scalar = previous.is_whitespace() || ":-[{,".contains(previous);
        match (quote, c) {
            (Quote::Plain, '#') if previous.is_whitespace() => {
                let end = rest.find('\n').unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
                previous = '#';
                continue;
            }
            (Quote::Plain, '\'') if starts_scalar => quote = Quote::Single,
            (Quote::Plain, '"') if starts_scalar => quote = Quote::Double,
            (Quote::Single, '\'') if rest.starts_with("''") => {
                out.push_str("''");
                rest = &rest[2..];
                continue;
            }
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::Plain,
            (Quote::Double, '\\') => {
                let escaped: String = rest.chars().take(2).collect();
                out.push_str(&escaped);
                rest = &rest[escaped.len()..];
                previous = 'x';
                continue;
            }
            (_, '$') => {
                let len = reference_len(rest)?;
                let value = substitute(&rest[..len], lookup).ok()?;
                match quote {
                    Quote::Plain => out.push_str(&value),
                    Quote::Single => out.push_str(&value.replace('\'', "''")),
                    Quote::Double => {
                        out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                }
                rest = &rest[len..];
                previous = 'x';
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        previous = c;
    }
    Some(out)
}

/// Length of the reference at the start of `text` (which starts with `$`).
fn reference_len(text: &str) -> Option<usize> {
    let after = &text[1..];
    if after.starts_with('$') {
        Some(2)
    } else if let Some(inner) = after.strip_prefix('{') {
        Some(2 + matching_brace(inner)? + 1)
    } else {
        match variable_name_len(after) {
            0 => None,
            len => Some(1 + len),
        }
    }
}

/// Whether two documents are the same once scalars are compared as text (a substituted
/// `${PORT}` is a number in the text and a string in the walked document).
pub fn same_document(a: &Value, b: &Value) -> bool {
    fn scalar(value: &Value) -> Option<String> {
        match value {
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Sequence(x), Value::Sequence(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_document(x, y))
        }
        (Value::Mapping(x), Value::Mapping(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_document(vx, vy))
        }
        (Value::Tagged(x), Value::Tagged(y)) => x.tag == y.tag && same_document(&x.value, &y.value),
        (Value::Null, Value::Null) => true,
        _ => match (scalar(a), scalar(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// The 1-based line of the `occurrence`-th (0-based) appearance of `written` in `text`, outside
/// comments.
pub fn line_of(text: &str, written: &str, occurrence: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .flat_map(|(number, line)| {
            let code = match line.find(" #") {
                Some(comment) => &line[..comment],
                None if line.trim_start().starts_with('#') => "",
                None => line,
            };
            std::iter::repeat_n(number + 1, code.matches(written).count())
        })
        .nth(occurrence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("5432".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, (String, String)> {
        substitute(text, &env)
    }

    #[test]
    fn compose_rules() {
        assert_eq!(sub("${HOST}:$PORT").unwrap(), "db.local:5432");
        assert_eq!(sub("$$HOST costs $$5").unwrap(), "$HOST costs $5");
        assert_eq!(sub("${MISSING:-fallback}").unwrap(), "fallback");
        assert_eq!(sub("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(sub("${EMPTY-fallback}").unwrap(), "");
        assert_eq!(sub("${MISSING-x}").unwrap(), "x");
        assert_eq!(sub("${MISSING:-${HOST}}").unwrap(), "db.local");
        assert_eq!(sub("${MISSING:-}").unwrap(), "");
        assert_eq!(sub("$HOST_x").unwrap_err().0, "$HOST_x");
        assert_eq!(sub("no dollar").unwrap(), "no dollar");
    }

    #[test]
    fn errors_name_the_variable() {
        let (written, problem) = sub("x ${MISSING} y").unwrap_err();
        assert_eq!(written, "${MISSING}");
        assert!(
            problem.contains("variable `MISSING` is not set"),
            "{problem}"
        );
        let (_, problem) = sub("${EMPTY:?give a host}").unwrap_err();
        assert_eq!(problem, "variable `EMPTY` is required: give a host");
        assert!(sub("${EMPTY?}").is_ok());
        assert!(sub("${HOST").unwrap_err().1.contains("closing"));
        assert!(sub("cost $5").unwrap_err().1.contains("$$"));
        assert!(sub("${1X}").unwrap_err().1.contains("variable name"));
        assert!(sub("${HOST!}").unwrap_err().1.contains(":-"));
    }

    #[test]
    fn walks_values_not_keys_and_names_components() {
        let mut doc: Value = serde_yaml::from_str(
            "spec:\n  sources:\n    - id: src\n      env: {A: '${HOST}', $KEY: x, B: '${NOPE}'}\n",
        )
        .unwrap();
        let (changed, unresolved) = interpolate(&mut doc, &env);
        assert!(changed);
        assert_eq!(doc["spec"]["sources"][0]["env"]["A"], "db.local");
        assert_eq!(unresolved.len(), 1);
        assert_eq!(
            unresolved[0].field,
            "spec.sources[0].env.B (component `src`)"
        );
    }

    #[test]
    fn text_substitution_keeps_lines_and_escapes_for_quotes() {
        let text = "a: ${HOST} # ${NOPE}\nb: \"x${Q}\"\nc: '${S}'\nd: $$5\ne: ${PORT}\n";
        let lookup = |name: &str| match name {
            "Q" => Some("say \"hi\" \\o/".to_string()),
            "S" => Some("it's".to_string()),
            other => env(other),
        };
        let out = substitute_text(text, &lookup).unwrap();
        assert_eq!(out.lines().count(), 5);
        let parsed: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(parsed["a"], "db.local");
        assert_eq!(parsed["b"], "xsay \"hi\" \\o/");
        assert_eq!(parsed["c"], "it's");
        assert_eq!(parsed["d"], "$5");
        assert_eq!(parsed["e"], 5432);
        let mut walked: Value = serde_yaml::from_str(text).unwrap();
        interpolate(&mut walked, &lookup);
        assert!(same_document(&parsed, &walked));
        assert!(substitute_text("a: ${NOPE}", &env).is_none());
    }

    #[test]
    fn lines_skip_comments() {
        let text = "# uses ${A}\na: ${A}\nb: x # ${A}\nc: ${A}\n";
        assert_eq!(line_of(text, "${A}", 0), Some(2));
        assert_eq!(line_of(text, "${A}", 1), Some(4));
        assert_eq!(line_of(text, "${A}", 2), None);
    }
}
