//! Durations against Go's own rules: a reference reading of Go's `time.ParseDuration`, written
//! here apart from the crate's and checked against the cases of Go's `time` package tests
//! (`parseDurationTests`, `parseDurationErrorTests` in `src/time/time_test.go`); then every
//! value the typed constructors accept must render to text that reference reads back to the
//! same value, and both parsers must agree on any text.

#![allow(clippy::unwrap_used)]

use ksd_shared::traefik::{GoDuration, ProbeDuration};
use proptest::prelude::*;

const NS: i64 = 1;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;

/// Go's `time.ParseDuration`, transcribed from its specification and source: an optional sign,
/// then one or more `<decimal><unit>` components, `0` alone, at most 2^63 ns in magnitude;
/// fractions are added as `uint64(float64(f) * (float64(unit) / scale))`.
fn go_parse_duration(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let (negative, mut i) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    if &text[i..] == "0" {
        return Some(0);
    }
    if i == bytes.len() {
        return None;
    }
    let limit: u128 = 1 << 63;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let start = i;
        let mut whole: u128 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            whole = whole * 10 + u128::from(bytes[i] - b'0');
            if whole > limit {
                return None;
            }
            i += 1;
        }
        let had_whole = i > start;
        let (mut fraction, mut scale, mut had_fraction) = (0u64, 1f64, false);
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let mut overflowed = false;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                had_fraction = true;
                let next = u128::from(fraction) * 10 + u128::from(bytes[i] - b'0');
                if !overflowed && u128::from(fraction) <= (limit - 1) / 10 && next <= limit {
                    fraction = next as u64;
                    scale *= 10.0;
                } else {
                    overflowed = true;
                }
                i += 1;
            }
        }
        if !had_whole && !had_fraction {
            return None;
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i] != b'.' && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        let unit: i64 = match &text[unit_start..i] {
            "ns" => NS,
            "us" | "\u{b5}s" | "\u{3bc}s" => US,
            "ms" => MS,
            "s" => S,
            "m" => M,
            "h" => H,
            _ => return None,
        };
        let mut value = whole.checked_mul(unit as u128)?;
        if value > limit {
            return None;
        }
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64 as u128;
            if value > limit {
                return None;
            }
        }
        total += value;
        if total > limit {
            return None;
        }
    }
    if negative {
        Some((-(total as i128)) as i64)
    } else {
        i64::try_from(total).ok()
    }
}

/// Go's `parseDurationTests`.
fn go_valid_cases() -> Vec<(&'static str, i64)> {
    vec![
        ("0", 0),
        ("5s", 5 * S),
        ("30s", 30 * S),
        ("1478s", 1478 * S),
        ("-5s", -5 * S),
        ("+5s", 5 * S),
        ("-0", 0),
        ("+0", 0),
        ("5.0s", 5 * S),
        ("5.6s", 5 * S + 600 * MS),
        ("5.s", 5 * S),
        (".5s", 500 * MS),
        ("1.0s", S),
        ("1.00s", S),
        ("1.004s", S + 4 * MS),
        ("1.0040s", S + 4 * MS),
        ("100.00100s", 100 * S + MS),
        ("10ns", 10 * NS),
        ("11us", 11 * US),
        ("12\u{b5}s", 12 * US),
        ("12\u{3bc}s", 12 * US),
        ("13ms", 13 * MS),
        ("14s", 14 * S),
        ("15m", 15 * M),
        ("16h", 16 * H),
        ("3h30m", 3 * H + 30 * M),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS),
        ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
        (
            "1h2m3s4ms5us6ns",
            H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
        ),
        ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
        ("52763797000ns", 52_763_797_000),
        ("0.3333333333333333333h", 20 * M),
        ("9007199254740993ns", (1 << 53) + 1),
        ("9223372036854775807ns", i64::MAX),
        ("9223372036854775.807us", i64::MAX),
        ("9223372036s854ms775us807ns", i64::MAX),
        ("-9223372036854775808ns", i64::MIN),
        ("-9223372036854775.808us", i64::MIN),
        ("-9223372036s854ms775us808ns", i64::MIN),
        ("-2562047h47m16.854775808s", i64::MIN),
        ("0.100000000000000000000h", 6 * M),
        ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
    ]
}

/// Go's `parseDurationErrorTests`.
const GO_INVALID_CASES: [&str; 19] = [
    "",
    "3",
    "-",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "1d",
    "\u{fffd}",
    "\u{fffd} hello \u{fffd} world",
    "9223372036854775810ns",
    "9223372036854775808ns",
    "-9223372036854775809ns",
    "9223372036854776us",
    "3000000h",
    "9223372036854775.808us",
    "9223372036854ms775us808ns",
    "hello world",
];

#[test]
fn the_reference_agrees_with_gos_own_table() {
    for (text, nanos) in go_valid_cases() {
        assert_eq!(go_parse_duration(text), Some(nanos), "{text:?}");
    }
    for text in GO_INVALID_CASES {
        assert_eq!(go_parse_duration(text), None, "{text:?}");
    }
}

#[test]
fn the_crate_agrees_with_gos_own_table() {
    for (text, nanos) in go_valid_cases() {
        let parsed = GoDuration::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(parsed.as_nanos(), nanos, "{text:?}");
    }
    for text in GO_INVALID_CASES {
        assert!(GoDuration::parse(text).is_err(), "{text:?}");
    }
}

/// Text in Go's duration alphabet, so that most cases are near misses rather than noise.
fn duration_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[0-9]{1,20}",
            2 => Just(".".to_owned()),
            3 => prop_oneof![
                Just("ns"), Just("us"), Just("\u{b5}s"), Just("\u{3bc}s"), Just("ms"),
                Just("s"), Just("m"), Just("h"), Just("d"), Just("")
            ]
            .prop_map(str::to_owned),
            1 => prop_oneof![Just("-"), Just("+"), Just(" ")].prop_map(str::to_owned),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_go_duration_renders_to_text_go_reads_back(nanos in any::<i64>()) {
        let duration = GoDuration::from_nanos(nanos);
        let text = duration.to_string();
        prop_assert_eq!(go_parse_duration(&text), Some(nanos), "{}", text);
        // Always with a unit: Traefik v3 reads a bare number as seconds, v2 as nanoseconds.
        prop_assert!(text.ends_with(|c: char| c.is_ascii_alphabetic()), "{}", text);
    }

    #[test]
    fn every_probe_duration_renders_to_text_go_reads_back(
        nanos in ProbeDuration::MIN.get().as_nanos()..=ProbeDuration::MAX.get().as_nanos(),
        unit in prop_oneof![Just(1i64), Just(US), Just(MS), Just(S), Just(M), Just(H)],
    ) {
        let nanos = (nanos / unit).max(1) * unit;
        let Ok(duration) = ProbeDuration::new(GoDuration::from_nanos(nanos)) else {
            return Err(TestCaseError::reject("rounded below the bounds"));
        };
        let text = duration.to_string();
        prop_assert_eq!(go_parse_duration(&text), Some(nanos), "{}", text);
        prop_assert_eq!(ProbeDuration::parse(&text).unwrap(), duration);
    }

    #[test]
    fn the_crate_and_the_reference_agree_on_any_text(text in duration_like()) {
        let ours = GoDuration::parse(&text).ok().map(GoDuration::as_nanos);
        prop_assert_eq!(ours, go_parse_duration(&text), "{:?}", text);
    }
}
