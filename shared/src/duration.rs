//! Durations as Traefik reads them: Go's `time.ParseDuration` grammar and range.
//!
//! Traefik decodes every duration of its dynamic configuration with Go's `time.ParseDuration`
//! (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, units `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`, a bare
//! `0`), into an `int64` of nanoseconds: about ±2,562,047 h. A [`GoDuration`] holds exactly the
//! values Go can represent, [`GoDuration::parse`] accepts exactly the text Go accepts (with the
//! same result, fractions included), and its [`fmt::Display`] writes text Go parses back to the
//! same value, always with a unit (Traefik v3 reads a bare integer as seconds, v2 as
//! nanoseconds).
//!
//! [`ProbeDuration`] narrows that range to what the project accepts for health-check
//! `interval` and `timeout`: [`ProbeDuration::MIN`] (1 ms) to [`ProbeDuration::MAX`] (24 h).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::traefik::FromStrVisitor;

const NANOS_PER_UNIT: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// 2^63: one more than the largest positive `int64`, the magnitude of the smallest.
const TWO_63: u64 = 1 << 63;

/// A span Go's `time.Duration` can hold: nanoseconds in an `i64`, negative values included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(i64);

/// Why a duration text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {text:?}: {reason}")]
    Invalid { text: String, reason: &'static str },
    #[error(
        "invalid duration {text:?}: out of range (Go durations reach about 2562047h, \
         292 years)"
    )]
    Overflow { text: String },
    #[error("invalid duration {text:?}: {reason}")]
    OutOfBounds { text: String, reason: String },
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub const fn from_nanos(nanos: i64) -> GoDuration {
        GoDuration(nanos)
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The span as a [`Duration`], `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// A non-negative [`Duration`] Go can hold (at most `i64::MAX` nanoseconds).
    pub fn from_std(duration: Duration) -> Option<GoDuration> {
        i64::try_from(duration.as_nanos()).ok().map(GoDuration)
    }

    /// Reads `text` exactly as Go's `time.ParseDuration` does.
    pub fn parse(text: &str) -> Result<GoDuration, DurationError> {
        let invalid = |reason| DurationError::Invalid {
            text: crate::names::shorten(text),
            reason,
        };
        let overflow = || DurationError::Overflow {
            text: crate::names::shorten(text),
        };
        let (negative, mut rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(invalid("expected a number and a unit, e.g. \"5s\""));
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let (value, after) = read_component(rest).map_err(|error| match error {
                ComponentError::Invalid(reason) => invalid(reason),
                ComponentError::Overflow => overflow(),
            })?;
            rest = after;
            total = total.checked_add(value).ok_or_else(overflow)?;
            if total > TWO_63 {
                return Err(overflow());
            }
        }
        if negative {
            // `total` is at most 2^63: its negation always fits.
            Ok(GoDuration(0i64.wrapping_sub_unsigned(total)))
        } else {
            i64::try_from(total).map(GoDuration).map_err(|_| overflow())
        }
    }
}

enum ComponentError {
    Invalid(&'static str),
    Overflow,
}

/// One `<digits>[.<digits>]<unit>` component: its nanoseconds and the text after it.
fn read_component(text: &str) -> Result<(u64, &str), ComponentError> {
    use ComponentError::{Invalid, Overflow};
    if !text.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
        return Err(Invalid("expected a number"));
    }
    let int_len = text.bytes().take_while(u8::is_ascii_digit).count();
    let mut whole: u64 = 0;
    for digit in text.bytes().take(int_len) {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u64::from(digit - b'0')))
            .filter(|&w| w <= TWO_63)
            .ok_or(Overflow)?;
    }
    let mut rest = &text[int_len..];
    let (mut fraction, mut scale, mut has_fraction) = (0u64, 1f64, false);
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        has_fraction = frac_len > 0;
        // Go keeps the digits that fit and ignores the rest.
        let mut overflowed = false;
        for digit in after_dot.bytes().take(frac_len) {
            if overflowed || fraction > (TWO_63 - 1) / 10 {
                overflowed = true;
                continue;
            }
            let next = fraction * 10 + u64::from(digit - b'0');
            if next > TWO_63 {
                overflowed = true;
                continue;
            }
            fraction = next;
            scale *= 10.0;
        }
        rest = &after_dot[frac_len..];
    }
    if int_len == 0 && !has_fraction {
        return Err(Invalid("expected digits around the '.'"));
    }
    let unit_len = rest
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    if unit_len == 0 {
        return Err(Invalid(
            "a unit is required (ns, us, ms, s, m, h), e.g. \"5s\"",
        ));
    }
    let unit = &rest[..unit_len];
    let Some(&(_, per_unit)) = NANOS_PER_UNIT.iter().find(|(name, _)| *name == unit) else {
        return Err(Invalid("unknown unit (ns, us, µs, ms, s, m, h)"));
    };
    if whole > TWO_63 / per_unit {
        return Err(Overflow);
    }
    let mut value = whole * per_unit;
    if fraction > 0 {
        // Go's own arithmetic: float64, truncated.
        let extra = (fraction as f64 * (per_unit as f64 / scale)) as u64;
        value = value.checked_add(extra).ok_or(Overflow)?;
        if value > TWO_63 {
            return Err(Overflow);
        }
    }
    Ok((value, &rest[unit_len..]))
}

impl fmt::Display for GoDuration {
    /// The count of the largest unit (`h`, `m`, `s`, `ms`, `us`, `ns`) that holds the value
    /// exactly: `10s`, `2500ms`, `90m`, `0s`. Go reads every such text back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.unsigned_abs();
        if self.0 < 0 {
            f.write_str("-")?;
        }
        if magnitude == 0 {
            return f.write_str("0s");
        }
        for (unit, per_unit) in [
            ("h", 3_600_000_000_000u64),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if magnitude.is_multiple_of(per_unit) {
                return write!(f, "{}{unit}", magnitude / per_unit);
            }
        }
        write!(f, "{magnitude}ns")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        GoDuration::parse(text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<GoDuration>::new())
    }
}

/// The start of the message for a duration outside [`ProbeDuration`]'s bounds.
pub(crate) const PROBE_BOUNDS: &str = "a health-check duration is from";

/// A health-check `interval` or `timeout`: a [`GoDuration`] from [`ProbeDuration::MIN`] to
/// [`ProbeDuration::MAX`]. Below 1 ms a probe is a load test of the backend; above a day it
/// is not a health check any more, and an out-of-range value from one cluster must never reach
/// Traefik's file (Go refuses past about 2,562,047 h, which freezes the whole directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeDuration(GoDuration);

impl ProbeDuration {
    pub const MIN: ProbeDuration = ProbeDuration(GoDuration(1_000_000));
    pub const MAX: ProbeDuration = ProbeDuration(GoDuration(24 * 3_600_000_000_000));

    /// A [`GoDuration`] within the bounds.
    pub fn new(duration: GoDuration) -> Result<ProbeDuration, DurationError> {
        if duration < Self::MIN.0 || duration > Self::MAX.0 {
            return Err(DurationError::OutOfBounds {
                text: duration.to_string(),
                reason: format!("{PROBE_BOUNDS} {} to {}", Self::MIN.0, Self::MAX.0),
            });
        }
        Ok(ProbeDuration(duration))
    }

    /// Go's grammar, then the bounds.
    pub fn parse(text: &str) -> Result<ProbeDuration, DurationError> {
        let duration = GoDuration::parse(text)?;
        ProbeDuration::new(duration).map_err(|error| match error {
            DurationError::OutOfBounds { reason, .. } => DurationError::OutOfBounds {
                text: crate::names::shorten(text),
                reason,
            },
            other => other,
        })
    }

    /// A [`Duration`] within the bounds.
    pub fn from_std(duration: Duration) -> Result<ProbeDuration, DurationError> {
        let go = GoDuration::from_std(duration).ok_or_else(|| DurationError::Overflow {
            text: format!("{}ns", duration.as_nanos()),
        })?;
        ProbeDuration::new(go)
    }

    pub fn get(self) -> GoDuration {
        self.0
    }

    pub fn as_std(self) -> Duration {
        // Positive by construction.
        Duration::from_nanos(self.0.0.unsigned_abs())
    }
}

impl fmt::Display for ProbeDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ProbeDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for ProbeDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        ProbeDuration::parse(text)
    }
}

impl<'de> Deserialize<'de> for ProbeDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<ProbeDuration>::new())
    }
}

/// A setting's duration (`DEBOUNCE=500ms`, `--max-delay 1m30s`): Go's grammar through
/// [`GoDuration::parse`], but never negative and always with a unit (a bare `0` is refused:
/// the unit is never guessed). Surrounding spaces are ignored.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.trim_start_matches(['+', '-']) == "0" {
        return Err(format!(
            "invalid duration {text:?}: a unit is required (ms, s, m, h), e.g. \"5s\""
        ));
    }
    let duration = GoDuration::parse(trimmed).map_err(|e| e.to_string())?;
    duration
        .to_std()
        .ok_or_else(|| format!("invalid duration {text:?}: must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_grammar_and_range() {
        assert_eq!(GoDuration::parse("1.5s").unwrap().as_nanos(), 1_500_000_000);
        assert_eq!(
            GoDuration::parse("1h30m").unwrap().as_nanos(),
            5_400_000_000_000
        );
        assert_eq!(GoDuration::parse("-0").unwrap(), GoDuration::ZERO);
        assert_eq!(
            GoDuration::parse("-9223372036854775808ns")
                .unwrap()
                .as_nanos(),
            i64::MIN
        );
        let err = GoDuration::parse("3000000h").unwrap_err();
        assert!(matches!(err, DurationError::Overflow { .. }), "{err}");
        for bad in ["", "3", "-", ".", ".s", "1d", "5 s", "1e3s", " 5s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_keeps_units_and_value() {
        for (nanos, text) in [
            (0, "0s"),
            (10_000_000_000, "10s"),
            (2_500_000_000, "2500ms"),
            (5_400_000_000_000, "90m"),
            (7_200_000_000_000, "2h"),
            (1_500, "1500ns"),
            (3_000, "3us"),
            (-1_000_000_000, "-1s"),
            (i64::MIN, "-9223372036854775808ns"),
        ] {
            let d = GoDuration::from_nanos(nanos);
            assert_eq!(d.to_string(), text);
            assert_eq!(GoDuration::parse(text).unwrap(), d);
        }
    }

    #[test]
    fn probe_bounds() {
        assert_eq!(ProbeDuration::parse("1ms").unwrap(), ProbeDuration::MIN);
        assert_eq!(ProbeDuration::parse("24h").unwrap(), ProbeDuration::MAX);
        for bad in ["0s", "999us", "-5s", "24h1ns", "3000000h"] {
            let err = ProbeDuration::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn settings_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration(" 1m30s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["0", "5", "", "-1s", "5 s", "1d", "3000000h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_duration("5")
                .unwrap_err()
                .contains("unit is required")
        );
    }
}
