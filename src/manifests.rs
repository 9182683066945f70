//! Reading manifests: a YAML or JSON stream, one document at a time, `List` items flattened.
//!
//! Documents are cut at their `---` and `...` markers before YAML parsing, so that a 50 MB
//! `kustomize build` output is held one document at a time. This is exact, not a heuristic: YAML
//! forbids a line starting with `---` or `...` (followed by a space or the line's end) inside any
//! content, block scalars and quoted strings included (`c-forbidden` in YAML 1.2), and JSON has no
//! such lines.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;

/// Input that cannot be read: exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The bytes could not be read, or are not UTF-8.
    #[error("cannot read the input")]
    Read(#[source] std::io::Error),
    /// Not YAML (or JSON), with the position in the whole input.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A document that is not a Kubernetes object.
    #[error("document {document}: {message}")]
    NotAnObject { document: usize, message: String },
}

/// The objects of a YAML or JSON stream, in order.
pub struct Manifests<R> {
    reader: R,
    /// Lines read so far.
    line: usize,
    /// YAML documents parsed so far, empty ones included (for messages).
    documents: usize,
    /// A `---` line read past the end of the previous document, and its line number.
    carry: Option<(String, usize)>,
    /// Objects of the current document not handed out yet.
    pending: std::vec::IntoIter<Value>,
    failed: bool,
}

impl<R: BufRead> Manifests<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            documents: 0,
            carry: None,
            pending: Vec::new().into_iter(),
            failed: false,
        }
    }

    /// The next document's text and the line number of its first line; `None` at the end.
    fn next_document(&mut self) -> Result<Option<(String, usize)>, InputError> {
        let (mut text, mut first_line) = self.carry.take().unwrap_or((String::new(), 0));
        let mut has_content = !text.is_empty();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).map_err(InputError::Read)? == 0 {
                return Ok(has_content.then_some((text, first_line)));
            }
            self.line += 1;
            if first_line == 0 {
                first_line = self.line;
            }
            if is_marker(&line, "---") {
                if has_content {
                    self.carry = Some((line, self.line));
                    return Ok(Some((text, first_line)));
                }
                has_content = true;
            } else if is_marker(&line, "...") {
                text.push_str(&line);
                if has_content {
                    return Ok(Some((text, first_line)));
                }
                continue;
            } else if !is_blank_comment_or_directive(&line) {
                has_content = true;
            }
            text.push_str(&line);
        }
    }

    fn parse(&mut self, text: &str, first_line: usize) -> Result<Vec<Value>, InputError> {
        let mut objects = Vec::new();
        for document in yaml_serde::Deserializer::from_str(text) {
            self.documents += 1;
            let value = Value::deserialize(document).map_err(|e| syntax(&e, text, first_line))?;
            flatten(value, self.documents, &mut objects)?;
        }
        Ok(objects)
    }
}

impl<R: BufRead> Iterator for Manifests<R> {
    type Item = Result<Value, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(object) = self.pending.next() {
                return Some(Ok(object));
            }
            if self.failed {
                return None;
            }
            let parsed = match self.next_document() {
                Ok(None) => return None,
                Ok(Some((text, first_line))) => self.parse(&text, first_line),
                Err(error) => Err(error),
            };
            match parsed {
                Ok(objects) => self.pending = objects.into_iter(),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

/// Every object of `text`, or the first reason it cannot be read.
pub fn parse_objects(text: &str) -> Result<Vec<Value>, InputError> {
    Manifests::new(text.as_bytes()).collect()
}

/// `---` or `...` at the start of a line, alone or followed by a space.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn is_blank_comment_or_directive(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%')
}

/// yaml_serde's message without the position it appends, which is given separately, relative to
/// the whole input. The parser reports input that ends in the middle of a value (a truncated JSON
/// line) on the line after the last one, where there is nothing to see; such an error is placed
/// right after the document's last character instead, and says that the input ended there.
fn syntax(error: &yaml_serde::Error, text: &str, first_line: usize) -> InputError {
    let Some(location) = error.location() else {
        return InputError::Syntax {
            line: first_line,
            column: 0,
            message: error.to_string(),
        };
    };
    let own = format!(" at line {} column {}", location.line(), location.column());
    let message = rebase_positions(&error.to_string().replacen(&own, "", 1), first_line);
    // The last line with content: not blank, not only a comment.
    let last = text.lines().enumerate().fold(None, |last, (index, l)| {
        let trimmed = l.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            last
        } else {
            Some((index, l))
        }
    });
    let (line, column, message) =
        if let Some((index, last_line)) = last.filter(|(index, _)| location.line() > index + 1) {
            let column = last_line.trim_end().chars().count() + 1;
            let message = format!("unexpected end of input: {message}");
            (index + 1, column, message)
        } else {
            (location.line(), location.column(), message)
        };
    InputError::Syntax {
        line: first_line + line - 1,
        column,
        message,
    }
}

/// The positions left in a parser message (where the construct it was parsing began) counted from the
/// start of the whole input, as the error's own position is, written as that one is written.
fn rebase_positions(message: &str, first_line: usize) -> String {
    const AT: &str = " at line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(AT) {
        let after = &rest[start + AT.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let column = after[digits..].strip_prefix(" column ");
        match (after[..digits].parse::<usize>(), column) {
            (Ok(line), Some(column)) => {
                out.push_str(&rest[..start]);
                out.push_str(&format!(" at line {}, column ", first_line + line - 1));
                rest = column;
            }
            _ => {
                out.push_str(&rest[..start + AT.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn flatten(value: Value, document: usize, out: &mut Vec<Value>) -> Result<(), InputError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(mut map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten(item, document, out)?;
                }
            }
            Ok(())
        }
        Value::Object(ref map)
            if map.get("kind").is_some_and(Value::is_string)
                && map.get("apiVersion").is_some_and(Value::is_string) =>
        {
            out.push(value);
            Ok(())
        }
        _ => Err(InputError::NotAnObject {
            document,
            message: "not a Kubernetes object (a mapping with apiVersion and kind)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        parse_objects(text)
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn documents_and_lists_are_flattened_in_order() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n";
        assert_eq!(names(text), ["a", "p", "b"]);
        let json = r#"{"apiVersion":"v1","kind":"PodList","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q"}}]}"#;
        assert_eq!(names(json), ["q"]);
    }

    #[test]
    fn markers_are_cut_where_yaml_says_and_nowhere_else() {
        let text = "# leading comment\n%YAML 1.2\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  script: |\n    echo ---\n    ---not a marker\n  other: \"--- quoted\"\n...\n--- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n---\r\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        assert_eq!(names(text), ["a", "b", "c"]);
        let first = &parse_objects(text).unwrap()[0];
        assert_eq!(first["data"]["script"], "echo ---\n---not a marker\n");
        assert_eq!(first["data"]["other"], "--- quoted");
        // JSON over several lines is one document.
        let json = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",\n  \"metadata\": {\"name\": \"j\"}\n}\n";
        assert_eq!(names(json), ["j"]);
    }

    #[test]
    fn nothing_but_comments_and_markers_is_no_objects() {
        for text in [
            "",
            "\n\n",
            "# only a comment\n",
            "---\n---\n",
            "--- \n# x\n...\n",
        ] {
            assert!(parse_objects(text).unwrap().is_empty(), "{text:?}");
        }
    }

    #[test]
    fn unreadable_input_names_line_and_column_once() {
        let err = parse_objects("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n").unwrap_err();
        let InputError::Syntax {
            line,
            column,
            message,
        } = &err
        else {
            panic!("{err}")
        };
        // The input ends inside the flow mapping: right after `[`, not on the empty line after it.
        assert_eq!((*line, *column), (3, 19), "{err}");
        assert!(message.starts_with("unexpected end of input"), "{message}");
        assert!(!message.contains(" column 19"), "{message}");
        // Lines count from the start of the input, not of the document.
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   bad: 1\n";
        let err = parse_objects(text).unwrap_err();
        assert!(matches!(err, InputError::Syntax { line: 9, .. }), "{err}");
        assert!(matches!(
            parse_objects("- just\n- a list\n"),
            Err(InputError::NotAnObject { document: 1, .. })
        ));
        assert!(matches!(
            parse_objects("apiVersion: v1\nkind: Namespace\n---\n- x\n"),
            Err(InputError::NotAnObject { document: 2, .. })
        ));
    }

    #[test]
    fn input_that_ends_inside_a_value_is_reported_where_it_ends() {
        let line = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}"#;
        for text in [
            format!("{line}\n"),
            line.to_owned(),
            format!("{line}  \n\n# a comment\n"),
        ] {
            let err = parse_objects(&text).unwrap_err();
            let InputError::Syntax {
                line: 1,
                column,
                message,
            } = &err
            else {
                panic!("{text:?}: {err}")
            };
            assert_eq!(*column, line.len() + 1, "{text:?}: {err}");
            assert!(message.starts_with("unexpected end of input"), "{err}");
        }
        // Where the unfinished construct began is counted from the start of the input too.
        let err = parse_objects("apiVersion: v1\nkind: Namespace\n---\na: [1, 2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4, column 9: unexpected end of input: did not find expected ',' or ']', \
             while parsing a flow sequence at line 4, column 4"
        );
        // In a later document, the line counts from the start of the input.
        let text =
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\n---\n{line}\n---\n");
        let err = parse_objects(&text).unwrap_err();
        assert!(
            matches!(err, InputError::Syntax { line: 5, column, .. } if column == line.len() + 1),
            "{err}"
        );
    }

    #[test]
    fn objects_before_an_unreadable_document_are_still_handed_out() {
        let mut objects =
            Manifests::new("apiVersion: v1\nkind: Namespace\n---\n: : :\n".as_bytes());
        assert!(objects.next().unwrap().is_ok());
        assert!(objects.next().unwrap().is_err());
        assert!(objects.next().is_none());
    }
}
