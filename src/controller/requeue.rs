//! When to come back: the interval with jitter after success, exponential backoff after errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// `interval × [1-p, 1+p]`, uniformly, so that objects created together spread out.
pub fn jittered(interval: Duration, percentage: u8) -> Duration {
    let p = f64::from(percentage.min(99)) / 100.0;
    if p == 0.0 {
        return interval;
    }
    let factor = rand::rng().random_range((1.0 - p)..=(1.0 + p));
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
}

/// The longest duration Go's `time.Duration` holds (an int64 of nanoseconds, ~292 years):
/// anything a Flux user can write in a duration field parses into it, or is refused.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Parse Go duration strings as the CRDs' patterns admit them (`1h30m`, `1.5s`, `500ms`), with
/// Go's range: exact integer arithmetic, and an error (never a panic) past `MAX_DURATION`. The
/// input comes from tenants' specs, so every step is checked.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let out_of_range = || {
        format!(
            "duration '{}' is out of range",
            crate::util::truncate(s, 64)
        )
    };
    let invalid = || format!("invalid duration '{}'", crate::util::truncate(s, 64));
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (whole, fraction, after) = split_number(rest).ok_or_else(invalid)?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = unit_nanos(&after[..unit_end]).ok_or_else(|| {
            format!(
                "unknown unit '{}' in duration '{}'",
                crate::util::truncate(&after[..unit_end], 16),
                crate::util::truncate(s, 64)
            )
        })?;
        total = total
            .checked_add(component_nanos(whole, fraction, unit).ok_or_else(out_of_range)?)
            .filter(|t| *t <= MAX_DURATION.as_nanos())
            .ok_or_else(out_of_range)?;
        rest = &after[unit_end..];
    }
    let nanos = u64::try_from(total).map_err(|_| out_of_range())?;
    Ok(Duration::from_nanos(nanos))
}

/// `123.45rest` → (`123`, `45`, `rest`); at least one digit on either side of the dot.
fn split_number(text: &str) -> Option<(&str, &str, &str)> {
    let digits = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let whole_end = digits(text);
    let (whole, after) = text.split_at(whole_end);
    let (fraction, after) = match after.strip_prefix('.') {
        Some(f) => f.split_at(digits(f)),
        None => ("", after),
    };
    (!(whole.is_empty() && fraction.is_empty())).then_some((whole, fraction, after))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `whole.fraction × unit` in nanoseconds; `None` past `MAX_DURATION`. Fraction digits beyond
/// what a nanosecond resolves are dropped, as Go drops them.
fn component_nanos(whole: &str, fraction: &str, unit: u128) -> Option<u128> {
    let limit = MAX_DURATION.as_nanos();
    let mut value: u128 = 0;
    for d in whole.bytes() {
        value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
        if value > limit {
            return None;
        }
    }
    let mut nanos = value.checked_mul(unit)?;
    let mut scale = unit;
    for d in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(d - b'0') * scale)?;
    }
    (nanos <= limit).then_some(nanos)
}

/// A spec's duration field that cannot be used: the field's path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDuration {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The first of a spec's duration fields (`(path, value)`) that does not parse.
pub fn check_durations<'a>(
    fields: impl IntoIterator<Item = (&'static str, &'a str)>,
) -> Result<(), InvalidDuration> {
    for (field, value) in fields {
        parse_duration(value).map_err(|message| InvalidDuration { field, message })?;
    }
    Ok(())
}

/// Per-object failure counts for exponential backoff between `min` and `max`
/// (Flux: `--min-retry-delay` 750ms, `--max-retry-delay` 15m).
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Record a failure and return how long to wait before the next attempt.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = self
            .min
            .saturating_mul(2u32.saturating_pow(*n))
            .min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

/// Go's `time.Duration.String()`: `30s`, `1m0s`, `1h0m0s`, `1.5s`, `500ms` — Flux writes
/// durations this way in its messages.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (divisor, unit) = match nanos {
            0..1_000 => (1, "ns"),
            1_000..1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", decimal(nanos, divisor));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, seconds % 3600 / 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&decimal(nanos % 60_000_000_000, 1_000_000_000));
    out.push('s');
    out
}

/// `value / divisor` in decimal, without trailing zeros (`divisor` a power of ten).
fn decimal(value: u128, divisor: u128) -> String {
    let (whole, rest) = (value / divisor, value % divisor);
    if rest == 0 {
        return whole.to_string();
    }
    let width = divisor.ilog10() as usize;
    let fraction = format!("{rest:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(750), "750ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3_723), "1h2m3s"),
            (Duration::from_nanos(61_000_000_001), "1m1.000000001s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
            // What Go prints, Go (and driftless) reads back.
            assert_eq!(parse_duration(want), Ok(d), "{want}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.000000001s").unwrap(), Duration::new(1, 1));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2µs").unwrap(), Duration::from_micros(2));
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("1..5s").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn durations_beyond_gos_range_are_refused_not_panics() {
        // Go's largest duration: 2562047h47m16.854775807s.
        assert_eq!(
            parse_duration("2562047h47m16.854775807s").unwrap(),
            MAX_DURATION
        );
        for huge in [
            "2562047h47m16.854775808s",
            "2562048h",
            "99999999999999999999h",
            "99999999999999999999999999999999999999999999999999ns",
            "9223372036854775807ns1ns",
            "1e9h",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(
                err.contains("out of range") || err.contains("unknown unit"),
                "{huge}: {err}"
            );
        }
        let err = check_durations([
            ("spec.interval", "5m"),
            ("spec.timeout", "99999999999999999999h"),
        ])
        .unwrap_err();
        assert_eq!(err.field, "spec.timeout");
        assert!(
            err.to_string()
                .starts_with("spec.timeout: duration '99999999999999999999h' is out of range")
        );
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let base = Duration::from_secs(100);
        for _ in 0..200 {
            let d = jittered(base, 5);
            assert!(
                d >= Duration::from_secs(95) && d <= Duration::from_secs(105),
                "{d:?}"
            );
        }
        assert_eq!(jittered(base, 0), base);
    }

    #[test]
    fn backoff_doubles_until_the_cap_and_resets() {
        let b = Backoff::new(Duration::from_millis(750), Duration::from_secs(5));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay("ns/a")).collect();
        assert_eq!(delays[0], Duration::from_millis(750));
        assert_eq!(delays[1], Duration::from_millis(1500));
        assert_eq!(delays[3], Duration::from_secs(5));
        assert_eq!(
            b.next_delay("ns/b"),
            Duration::from_millis(750),
            "per object"
        );
        b.reset("ns/a");
        assert_eq!(b.next_delay("ns/a"), Duration::from_millis(750));
    }
}
