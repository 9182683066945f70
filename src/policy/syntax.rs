//! The small lexical rules several validation tables share: port numbers, DNS labels and names, and the
//! "did you mean" suggestion for mistyped keys.
//!
//! Every check takes the value exactly as written: nothing is trimmed here, so `" 80"` is not a port.

use std::fmt;

/// Why a string is not a port number 1-65535.
///
/// Leading zeros (`080`) are refused everywhere: nobody needs them, and YAML 1.1 tooling (and some
/// templating on the way to Istio) reads `0100` as octal, so the port that ends up configured would not be
/// the one the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    Empty,
    Spaces,
    Sign,
    LeadingZero,
    NotDecimal,
    OutOfRange,
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortError::Empty => "must not be empty",
            PortError::Spaces => "must be a port number 1-65535 without spaces",
            PortError::Sign => "must be a port number 1-65535 without a sign",
            PortError::LeadingZero => "must be a port number 1-65535 without leading zeros",
            PortError::NotDecimal | PortError::OutOfRange => "must be a port number 1-65535",
        })
    }
}

/// Reads a decimal port 1-65535: ASCII digits only, no sign, no spaces, no leading zero.
pub fn parse_port(text: &str) -> Result<u16, PortError> {
    if text.is_empty() {
        return Err(PortError::Empty);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(PortError::Spaces);
    }
    if text.starts_with(['+', '-']) {
        return Err(PortError::Sign);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::NotDecimal);
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(PortError::LeadingZero);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(PortError::OutOfRange),
        Ok(port) => Ok(port),
    }
}

/// The most characters a DNS label may have.
pub const MAX_LABEL_CHARS: usize = 63;
/// The most characters a DNS name (labels and dots) may have.
pub const MAX_NAME_CHARS: usize = 253;

/// Which label grammar applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// RFC 1035, as Kubernetes names Services: must start with a letter.
    Rfc1035,
    /// RFC 1123, as DNS host names: may start with a digit.
    Rfc1123,
}

/// Why a string is not a DNS label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelError {
    Empty,
    TooLong { chars: usize },
    UpperCase,
    BadChar(char),
    MustStartWithLetter,
    MustStartAlphanumeric,
    MustEndAlphanumeric,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelError::Empty => f.write_str("must not be empty"),
            LabelError::TooLong { chars } => write!(
                f,
                "is {chars} characters long, at most {MAX_LABEL_CHARS} are allowed"
            ),
            LabelError::UpperCase => f.write_str("must be lower-case"),
            LabelError::BadChar(c) => {
                write!(f, "must contain only a-z, 0-9 and '-', not {c:?}")
            }
            LabelError::MustStartWithLetter => f.write_str("must start with a letter"),
            LabelError::MustStartAlphanumeric => f.write_str("must start with a letter or digit"),
            LabelError::MustEndAlphanumeric => f.write_str("must end with a letter or digit"),
        }
    }
}

/// Checks one lower-case DNS label of the given grammar, reporting the first problem.
pub fn check_label(label: &str, kind: LabelKind) -> Result<(), LabelError> {
    let chars = label.chars().count();
    if chars == 0 {
        return Err(LabelError::Empty);
    }
    if chars > MAX_LABEL_CHARS {
        return Err(LabelError::TooLong { chars });
    }
    if label.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(LabelError::UpperCase);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(LabelError::BadChar(c));
    }
    // Only ASCII remains, so byte positions are character positions.
    let first = label.as_bytes().first().copied().unwrap_or(b'-');
    let last = label.as_bytes().last().copied().unwrap_or(b'-');
    match kind {
        LabelKind::Rfc1035 if !first.is_ascii_lowercase() => Err(LabelError::MustStartWithLetter),
        LabelKind::Rfc1123 if first == b'-' => Err(LabelError::MustStartAlphanumeric),
        _ if last == b'-' => Err(LabelError::MustEndAlphanumeric),
        _ => Ok(()),
    }
}

/// The furthest a mistyped key may be from a known one and still be suggested: catches one swapped pair
/// (`expsoe`) or two slips, without suggesting `host` for `foo`.
pub const MAX_SUGGESTION_DISTANCE: usize = 2;

/// The candidate `input` most likely meant: one equal ignoring case, else the nearest within
/// [`MAX_SUGGESTION_DISTANCE`] edits (case ignored). Ties go to the earlier candidate.
pub fn closest<'c>(input: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let input = input.to_ascii_lowercase();
    let input_chars = input.chars().count();
    candidates
        .iter()
        .filter(|c| c.chars().count().abs_diff(input_chars) <= MAX_SUGGESTION_DISTANCE)
        .map(|c| (strsim::levenshtein(&input, &c.to_ascii_lowercase()), *c))
        .filter(|(distance, _)| *distance <= MAX_SUGGESTION_DISTANCE)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Go's `strconv.ParseBool`, which Contrast uses: exactly these spellings, nothing else.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let cases: &[(&str, Result<u16, PortError>)] = &[
            ("1", Ok(1)),
            ("80", Ok(80)),
            ("65535", Ok(65535)),
            ("0", Err(PortError::OutOfRange)),
            ("65536", Err(PortError::OutOfRange)),
            ("99999999999999999999", Err(PortError::OutOfRange)),
            ("", Err(PortError::Empty)),
            (" 80", Err(PortError::Spaces)),
            ("80 ", Err(PortError::Spaces)),
            ("8 0", Err(PortError::Spaces)),
            ("+80", Err(PortError::Sign)),
            ("-1", Err(PortError::Sign)),
            ("80a", Err(PortError::NotDecimal)),
            ("0x50", Err(PortError::NotDecimal)),
            ("٨٠", Err(PortError::NotDecimal)),
            ("080", Err(PortError::LeadingZero)),
            ("00", Err(PortError::LeadingZero)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_port(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn labels() {
        use LabelKind::{Rfc1035, Rfc1123};
        let ok63 = format!("a{}", "b".repeat(62));
        let long64 = format!("a{}", "b".repeat(63));
        let cases: &[(&str, LabelKind, Result<(), LabelError>)] = &[
            ("web", Rfc1035, Ok(())),
            ("web-2", Rfc1035, Ok(())),
            ("a", Rfc1035, Ok(())),
            (&ok63, Rfc1035, Ok(())),
            (&long64, Rfc1035, Err(LabelError::TooLong { chars: 64 })),
            ("", Rfc1035, Err(LabelError::Empty)),
            ("2web", Rfc1035, Err(LabelError::MustStartWithLetter)),
            ("2web", Rfc1123, Ok(())),
            ("-web", Rfc1123, Err(LabelError::MustStartAlphanumeric)),
            ("web-", Rfc1035, Err(LabelError::MustEndAlphanumeric)),
            ("Web", Rfc1035, Err(LabelError::UpperCase)),
            ("web_1", Rfc1035, Err(LabelError::BadChar('_'))),
            ("wéb", Rfc1123, Err(LabelError::BadChar('é'))),
            ("web.x", Rfc1035, Err(LabelError::BadChar('.'))),
        ];
        for (label, kind, expected) in cases {
            assert_eq!(check_label(label, *kind), *expected, "{label:?} {kind:?}");
        }
    }

    #[test]
    fn suggestions() {
        let known = ["expose", "host", "port", "mtlsMode", "permissivePorts"];
        let cases = [
            ("mtlsmode", Some("mtlsMode")),
            ("MTLSMODE", Some("mtlsMode")),
            ("expsoe", Some("expose")),
            ("hots", Some("host")),
            ("permissivePort", Some("permissivePorts")),
            ("foo", None),
            ("virtualService", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(closest(input, &known), expected, "{input:?}");
        }
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "tRUE", "on", "", " true", "2"] {
            assert_eq!(parse_go_bool(bad), None, "{bad:?}");
        }
    }
}
