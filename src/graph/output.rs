//! The graph as text: the table (allowed and partial connections, then the denied ones grouped by
//! layer), `--explain`'s layer-by-layer account, and `--diff`'s changed connections.

use std::fmt::Write as _;
use std::io::Write;

use super::verdict::{Layer, Outcome, Verdict};
use super::{Changes, Connection, Decision, Graph};

/// Writes rows of cells, each column padded to its widest cell. `rows` is asked twice (widths,
/// then lines), so that no table is ever held whole: a large mesh has hundreds of thousands of rows.
fn columns<R, F>(out: &mut dyn Write, rows: F) -> std::io::Result<()>
where
    F: Fn() -> R,
    R: Iterator<Item = Vec<String>>,
{
    let mut widths: Vec<usize> = Vec::new();
    for row in rows() {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut line = String::new();
    for row in rows() {
        line.clear();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn by(connection: &Connection) -> String {
    if connection.by.is_empty() {
        "-".to_owned()
    } else {
        connection.by.join(", ")
    }
}

/// The table: one line per allowed or partial connection, then the denied ones by layer.
pub fn table(graph: &Graph, out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "FROM",
        "TO",
        "PORT",
        "VERDICT",
        "SECURITY",
        "BY / CONDITIONS",
    ]
    .map(String::from);
    let open = || {
        std::iter::once(header.to_vec()).chain(
            graph
                .connections
                .iter()
                .filter(|c| c.verdict != Verdict::Denied)
                .map(|c| {
                    let mut last = by(c);
                    if !c.conditions.is_empty() {
                        last = format!("{last}; when: {}", c.conditions.join("; "));
                    }
                    vec![
                        c.from.to_string(),
                        c.to.to_string(),
                        c.port.to_string(),
                        c.verdict.as_str().to_owned(),
                        c.security.as_str().to_owned(),
                        last,
                    ]
                }),
        )
    };
    columns(out, open)?;
    for layer in [Layer::Networkpolicy, Layer::Mtls, Layer::Authorization] {
        let denied = || {
            graph
                .connections
                .iter()
                .filter(move |c| c.layer == Some(layer))
        };
        let count = denied().count();
        if count == 0 {
            continue;
        }
        writeln!(out, "\ndenied by {} ({count}):", layer.as_str())?;
        columns(out, || {
            denied().map(|c| vec![format!("  {} -> {}:{}", c.from, c.to, c.port), by(c)])
        })?;
    }
    for skipped in &graph.not_evaluated {
        writeln!(
            out,
            "\nnot evaluated: {}: {}",
            skipped.object, skipped.reason
        )?;
    }
    Ok(())
}

fn outcome(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Partial => "partial",
        Outcome::Denied => "denied",
        Outcome::Skipped => "-",
    }
}

/// `--explain`: the verdict, then every layer's decision with its objects and reasons.
pub fn explain(decisions: &[Decision], not_evaluated: &[super::NotEvaluated]) -> String {
    let mut text = String::new();
    for decision in decisions {
        let c = &decision.connection;
        let _ = write!(
            text,
            "{} -> {}:{}: {} ({})",
            c.from,
            c.to,
            c.port,
            c.verdict.as_str(),
            c.security.as_str()
        );
        if let Some(layer) = c.layer {
            let _ = write!(text, ", refused by the {} layer", layer.as_str());
        }
        text.push('\n');
        for layer in &decision.layers {
            let objects = if layer.by.is_empty() {
                "-".to_owned()
            } else {
                layer.by.join(", ")
            };
            let _ = writeln!(
                text,
                "  {:<13}  {:<7}  {}",
                layer.layer.as_str(),
                outcome(layer.outcome),
                layer.why
            );
            let _ = writeln!(text, "  {:<13}  {:<7}  by: {objects}", "", "");
            for condition in &layer.conditions {
                let _ = writeln!(text, "  {:<13}  {:<7}  when: {condition}", "", "");
            }
        }
    }
    for skipped in not_evaluated {
        let _ = writeln!(
            text,
            "not evaluated: {}: {}",
            skipped.object, skipped.reason
        );
    }
    text
}

/// `--diff`: the connections whose verdict changed, those only the head has and those only the
/// base had.
pub fn changes(changes: &Changes) -> String {
    let mut text = String::new();
    let line = |c: &Connection| format!("{} -> {}:{}", c.from, c.to, c.port);
    for (base, head) in &changes.changed {
        let direction = if head.verdict > base.verdict {
            "more open"
        } else {
            "more closed"
        };
        let _ = writeln!(
            text,
            "changed  {}  {} -> {} ({direction}; by {})",
            line(head),
            base.verdict.as_str(),
            head.verdict.as_str(),
            by(head)
        );
    }
    for c in &changes.added {
        let _ = writeln!(text, "added    {}  {}", line(c), c.verdict.as_str());
    }
    for c in &changes.removed {
        let _ = writeln!(text, "removed  {}  {}", line(c), c.verdict.as_str());
    }
    if text.is_empty() {
        text.push_str("no connection changed\n");
    }
    text
}
