//! Go durations (`1m30s`, `500ms`, `1.5h`), as istiod reads the duration fields of its objects
//! (`time.ParseDuration`) and as the Istio CRDs' CEL rules (`duration(self)`) check them.
//!
//! `humantime` is not Go: it accepts `1min`, `2 days` and `1h 30m`, and refuses `1.5s` and `.5s`,
//! all of which Go decides the other way. So this is Go's algorithm, step for step, including its
//! overflow checks and its float rounding of fractions.

use std::fmt;

/// A Go `time.Duration`: nanoseconds, possibly negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub i64);

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    #[error("must not be empty")]
    Empty,
    /// Each part is a number and a unit; this one has no number (`s`, `1h.`).
    #[error("{part:?} has no number")]
    MissingNumber { part: String },
    /// Only a lone `0` may go without a unit.
    #[error("{number:?} has no unit (ns, us, ms, s, m or h)")]
    MissingUnit { number: String },
    #[error("unknown unit {unit:?} (ns, us, ms, s, m or h)")]
    UnknownUnit { unit: String },
    #[error("is out of range (about ±292 years)")]
    Overflow,
}

/// What every duration message says after the specific problem.
pub const EXPECTED: &str = "a Go duration such as \"1m30s\", \"500ms\" or \"1.5s\"";

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000;
const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const LIMIT: u64 = 1 << 63;

fn unit(name: &str) -> Option<u64> {
    Some(match name {
        "ns" => NANOSECOND,
        // Go accepts the micro sign (U+00B5) and the Greek mu (U+03BC) too.
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Go's `leadingInt`: the digits at the start of `s`, `None` past 2^63.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    for digit in s[..end].bytes() {
        if x > LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(digit - b'0');
        if x > LIMIT {
            return None;
        }
    }
    Some((x, &s[end..]))
}

/// Go's `leadingFraction`: the digits after a `.`, with the power of ten they are scaled by; digits
/// past what fits are dropped, not an error.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    for digit in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(digit - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

impl GoDuration {
    /// `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a lone `0`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let mut s = text;
        let negative = s.starts_with('-');
        if let Some(rest) = s.strip_prefix(['-', '+']) {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            let part_start = s;
            if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
                return Err(DurationError::MissingNumber {
                    part: part_start.to_owned(),
                });
            }
            let before = s.len();
            let (mut value, rest) = leading_int(s).ok_or(DurationError::Overflow)?;
            s = rest;
            let has_int = s.len() != before;
            let (mut fraction, mut scale, mut has_fraction) = (0, 1.0, false);
            if let Some(rest) = s.strip_prefix('.') {
                let before = rest.len();
                (fraction, scale, s) = leading_fraction(rest);
                has_fraction = s.len() != before;
            }
            if !has_int && !has_fraction {
                return Err(DurationError::MissingNumber {
                    part: part_start.to_owned(),
                });
            }
            let unit_len = s
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(s.len());
            if unit_len == 0 {
                let number = &part_start[..part_start.len() - s.len()];
                return Err(DurationError::MissingUnit {
                    number: number.to_owned(),
                });
            }
            let name = &s[..unit_len];
            s = &s[unit_len..];
            let unit = unit(name).ok_or_else(|| DurationError::UnknownUnit {
                unit: name.to_owned(),
            })?;
            if value > LIMIT / unit {
                return Err(DurationError::Overflow);
            }
            value *= unit;
            if fraction > 0 {
                // As Go does: float64 arithmetic, truncated.
                value += (fraction as f64 * (unit as f64 / scale)) as u64;
                if value > LIMIT {
                    return Err(DurationError::Overflow);
                }
            }
            total += value;
            if total > LIMIT {
                return Err(DurationError::Overflow);
            }
        }
        if negative {
            // `total` is at most 2^63, so its negation fits an i64.
            return Ok(GoDuration(0i64.wrapping_sub_unsigned(total)));
        }
        i64::try_from(total)
            .map(GoDuration)
            .map_err(|_| DurationError::Overflow)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self × n`, saturating: only compared, never used as a duration.
    pub fn times(self, n: i64) -> i128 {
        i128::from(self.0) * i128::from(n)
    }
}

impl fmt::Display for GoDuration {
    /// As Go's `Duration.String` prints it: `1m30s`, `500ms`, `1.5s`, `1h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.unsigned_abs();
        if self.0 < 0 {
            f.write_str("-")?;
        }
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < SECOND {
            let (per_unit, unit) = if nanos < MICROSECOND {
                (NANOSECOND, "ns")
            } else if nanos < MILLISECOND {
                (MICROSECOND, "\u{b5}s")
            } else {
                (MILLISECOND, "ms")
            };
            return write!(f, "{}{unit}", decimal(nanos, per_unit));
        }
        let (hours, rest) = (nanos / HOUR, nanos % HOUR);
        let (minutes, rest) = (rest / MINUTE, rest % MINUTE);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", decimal(rest, SECOND))
    }
}

/// `value / per_unit` in decimal, with the fraction's trailing zeros (and a lone `.`) dropped.
fn decimal(value: u64, per_unit: u64) -> String {
    let (whole, fraction) = (value / per_unit, value % per_unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per_unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own `parseDurationTests` (src/time/time_test.go), the cases that hold on 64 bits.
    #[test]
    fn parses_what_go_parses_to_the_nanosecond() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * SECOND as i64),
            ("30s", 30 * SECOND as i64),
            ("1478s", 1478 * SECOND as i64),
            ("-5s", -5 * SECOND as i64),
            ("+5s", 5 * SECOND as i64),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SECOND as i64),
            ("5.6s", 5 * SECOND as i64 + 600 * MILLISECOND as i64),
            ("5.s", 5 * SECOND as i64),
            (".5s", 500 * MILLISECOND as i64),
            ("1.0s", SECOND as i64),
            ("1.00s", SECOND as i64),
            ("1.004s", SECOND as i64 + 4 * MILLISECOND as i64),
            ("1.0040s", SECOND as i64 + 4 * MILLISECOND as i64),
            ("100.00100s", 100 * SECOND as i64 + MILLISECOND as i64),
            ("10ns", 10),
            ("11us", 11 * MICROSECOND as i64),
            ("12µs", 12 * MICROSECOND as i64),
            ("12μs", 12 * MICROSECOND as i64),
            ("13ms", 13 * MILLISECOND as i64),
            ("14s", 14 * SECOND as i64),
            ("15m", 15 * MINUTE as i64),
            ("16h", 16 * HOUR as i64),
            ("3h30m", 3 * HOUR as i64 + 30 * MINUTE as i64),
            (
                "10.5s4m",
                4 * MINUTE as i64 + 10 * SECOND as i64 + 500 * MILLISECOND as i64,
            ),
            (
                "-2m3.4s",
                -(2 * MINUTE as i64 + 3 * SECOND as i64 + 400 * MILLISECOND as i64),
            ),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425 * MILLISECOND as i64),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MINUTE as i64),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * MINUTE as i64),
            (
                "0.830103483285477580700h",
                49 * MINUTE as i64 + 48 * SECOND as i64 + 372_539_827,
            ),
            ("1m30s", 90 * SECOND as i64),
            ("1.5h", 90 * MINUTE as i64),
        ];
        for (text, nanos) in cases {
            assert_eq!(GoDuration::parse(text), Ok(GoDuration(*nanos)), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1min",
            "1 s",
            " 1s",
            "1s ",
            "1h 30m",
            "\u{ffff}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854775.808us",
            "3000000h",
            "9223372036854775808ns",
            "9223372036s854ms775us808ns",
            "-9223372036854775809ns",
            "1.5",
            "P1D",
        ] {
            assert!(GoDuration::parse(text).is_err(), "{text:?} parsed");
        }
        assert_eq!(GoDuration::parse(""), Err(DurationError::Empty));
        assert_eq!(
            GoDuration::parse("3"),
            Err(DurationError::MissingUnit { number: "3".into() })
        );
        assert_eq!(
            GoDuration::parse("1min"),
            Err(DurationError::UnknownUnit { unit: "min".into() })
        );
        assert_eq!(GoDuration::parse("3000000h"), Err(DurationError::Overflow));
    }

    #[test]
    fn prints_like_go() {
        for (text, shown) in [
            ("90s", "1m30s"),
            ("500ms", "500ms"),
            ("1.5s", "1.5s"),
            ("1h", "1h0m0s"),
            ("0s", "0s"),
            ("-2s", "-2s"),
            ("1500us", "1.5ms"),
            ("1500ns", "1.5\u{b5}s"),
            ("7ns", "7ns"),
            ("26h0m0.001s", "26h0m0.001s"),
        ] {
            let parsed = GoDuration::parse(text).unwrap();
            assert_eq!(parsed.to_string(), shown, "{text}");
        }
    }
}
