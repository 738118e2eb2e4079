//! Go's `strconv` number syntax and `encoding/json` number output, as go-yaml and Flux use them.

use serde_json::Number;

/// `strconv.ParseUint(s, base, 64)`: base 0 reads Go's prefixes (`0x`, `0o`, `0b`, any case, and
/// a bare leading `0` for octal), otherwise `base` is 2..=36. go-yaml removes `_` before it calls
/// this, so an underscore is a syntax error here.
pub(super) fn parse_uint(s: &str, base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, base) = match base {
        0 => base_prefix(s),
        base => (s, base),
    };
    let mut n: u64 = 0;
    for byte in digits.bytes() {
        // Go maps letters of either case to 10..=35 and refuses a digit at or above the base.
        let digit = char::from(byte).to_digit(36).filter(|d| *d < base)?;
        n = n
            .checked_mul(u64::from(base))?
            .checked_add(u64::from(digit))?;
    }
    Some(n)
}

/// `strconv.ParseInt(s, base, 64)`: one optional sign, then `parse_uint`'s syntax.
pub(super) fn parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, magnitude) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let n = parse_uint(magnitude, base)?;
    match negative {
        // -2^63 is the one magnitude that fits only with its sign.
        true => 0i64.checked_sub_unsigned(n),
        false => i64::try_from(n).ok(),
    }
}

/// The digits and base Go's base-0 parsing finds: a prefix needs at least one character after
/// it (`0x` alone is octal `x`, a syntax error).
fn base_prefix(s: &str) -> (&str, u32) {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'0') {
        return (s, 10);
    }
    if bytes.len() >= 3 {
        match bytes[1].to_ascii_lowercase() {
            b'b' => return (&s[2..], 2),
            b'o' => return (&s[2..], 8),
            b'x' => return (&s[2..], 16),
            _ => {}
        }
    }
    (&s[1..], 8)
}

/// `strconv.ParseFloat(s, 64)` for decimal text (go-yaml never hands it hexadecimal or `inf`):
/// Go's float syntax with `_` between digits, and no result on overflow (Go returns ±Inf with
/// a range error, which go-yaml treats as "not a float").
pub(super) fn parse_float(s: &str) -> Option<f64> {
    if !is_go_decimal(s) {
        return None;
    }
    let f: f64 = match s.contains('_') {
        true => s.replace('_', "").parse().ok()?,
        false => s.parse().ok()?,
    };
    f.is_finite().then_some(f)
}

/// Go's `readFloat` for base 10, with `underscoreOK` when there are underscores: the whole text
/// must be one decimal literal.
fn is_go_decimal(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let (mut digits, mut dot) = (false, false);
    while let Some(&c) = bytes.get(i) {
        match c {
            b'_' => {}
            b'.' if !dot => dot = true,
            b'0'..=b'9' => digits = true,
            _ => break,
        }
        i += 1;
    }
    if !digits {
        return false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        // The exponent starts with a digit; underscores may follow.
        if !bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while bytes
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'_')
        {
            i += 1;
        }
    }
    i == bytes.len() && (!s.contains('_') || underscore_ok(s))
}

/// Go's `underscoreOK`: an underscore only between digits (a base prefix counts as a digit).
fn underscore_ok(s: &str) -> bool {
    let mut bytes = s.as_bytes();
    if let Some((b'+' | b'-', rest)) = bytes.split_first() {
        bytes = rest;
    }
    #[derive(PartialEq)]
    enum Saw {
        Start,
        Digit,
        Underscore,
        Other,
    }
    let mut saw = Saw::Start;
    let mut hex = false;
    if bytes.len() >= 2
        && bytes[0] == b'0'
        && matches!(bytes[1].to_ascii_lowercase(), b'b' | b'o' | b'x')
    {
        hex = bytes[1].eq_ignore_ascii_case(&b'x');
        saw = Saw::Digit;
        bytes = &bytes[2..];
    }
    for &c in bytes {
        if c.is_ascii_digit() || (hex && matches!(c.to_ascii_lowercase(), b'a'..=b'f')) {
            saw = Saw::Digit;
        } else if c == b'_' {
            if saw != Saw::Digit {
                return false;
            }
            saw = Saw::Underscore;
        } else {
            if saw == Saw::Underscore {
                return false;
            }
            saw = Saw::Other;
        }
    }
    saw != Saw::Underscore
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
pub(super) fn is_yaml_style_float(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}

/// What a float64 becomes once Go's `encoding/json` has written it and the next reader (go-yaml
/// in `JSONToYAML`, the API server) has typed it again: an integral value below 1e21 is
/// written without fraction or exponent, so it comes back as an int64 (or uint64 when it is
/// larger); anything else stays a float. `None` for ±Inf and NaN, which Go refuses to write.
pub(super) fn json_number(f: f64) -> Option<Number> {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        // Rust prints the shortest round-trip digits padded with zeros, as Go's 'f' format
        // does: 2^63 is "9223372036854775808" in neither, but "9223372036854776000" in both.
        let digits = format!("{f}");
        if let Ok(i) = digits.parse::<i64>() {
            return Some(i.into());
        }
        if let Ok(u) = digits.parse::<u64>() {
            return Some(u.into());
        }
    }
    Number::from_f64(f)
}

/// `strconv.FormatFloat(f, 'g', -1, 32)`: sigs.k8s.io/yaml's text for a float under a string
/// field or as a map key (shortest digits of the float32, `%e` from exponent -5 and from 6 on).
pub(super) fn format_float_g32(f: f64) -> String {
    // Go converts to float32 first; out of its range that is ±Inf.
    let f = f as f32;
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Rust's `{:e}` gives the shortest digits of the float32: "-1.2345e-7".
    let scientific = format!("{f:e}");
    let (sign, unsigned) = match scientific.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", scientific.as_str()),
    };
    let (mantissa, exponent) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.bytes().all(|d| d == b'0') {
        return format!("{sign}0");
    }
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = match rest.is_empty() {
            true => String::new(),
            false => format!(".{rest}"),
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        );
    }
    format!("{sign}{}", fixed(&digits, exponent + 1))
}

/// Go's `fmtF` for shortest digits with the decimal point after `point` of them.
fn fixed(digits: &str, point: i32) -> String {
    let Ok(point) = usize::try_from(point) else {
        // The point is before the digits: "0." and zeros first.
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        return format!("0.{zeros}{digits}");
    };
    match point {
        0 => format!("0.{digits}"),
        p if p < digits.len() => format!("{}.{}", &digits[..p], &digits[p..]),
        p => format!("{digits}{}", "0".repeat(p - digits.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_go_parses_them() {
        for (text, base, want) in [
            ("0755", 0, Some(493)),
            ("0o755", 0, Some(493)),
            ("0O755", 0, Some(493)),
            ("-0x1F", 0, Some(-31)),
            ("+0X1f", 0, Some(31)),
            ("0B101", 0, Some(5)),
            ("0", 0, Some(0)),
            ("-0", 0, Some(0)),
            ("08", 0, None),
            ("0x", 0, None),
            ("0b", 0, None),
            ("", 0, None),
            ("-", 0, None),
            ("+-1", 0, None),
            ("9223372036854775807", 0, Some(i64::MAX)),
            ("-9223372036854775808", 0, Some(i64::MIN)),
            ("9223372036854775808", 0, None),
            ("+1", 2, Some(1)),
            ("1_0", 0, None),
            ("1é", 0, None),
        ] {
            assert_eq!(parse_int(text, base), want, "{text:?} base {base}");
        }
        assert_eq!(
            parse_uint("18446744073709551615", 0),
            Some(u64::MAX),
            "uint64 max"
        );
        assert_eq!(parse_uint("18446744073709551616", 0), None);
        assert_eq!(parse_uint("-1", 0), None);
    }

    #[test]
    fn floats_parse_as_go_parses_them() {
        for (text, want) in [
            (".5", Some(0.5)),
            (".5_0", Some(0.5)),
            (".1_2", Some(0.12)),
            ("._1", None),
            (".5e1_0", Some(0.5e10)),
            (".5e_1", None),
            ("1_0.5", Some(10.5)),
            ("1.", Some(1.0)),
            ("-.5e1", Some(-5.0)),
            (".5e400", None),
            ("1e-400", Some(0.0)),
            (".", None),
            ("1..2", None),
            ("12e", None),
            ("inf", None),
            ("0x1p-2", None),
        ] {
            assert_eq!(parse_float(text), want, "{text:?}");
        }
    }

    #[test]
    fn yaml_style_floats_match_go_yamls_pattern() {
        for text in ["1", "-1.", "+.5", "1.5e3", "1E-3", "00.1"] {
            assert!(is_yaml_style_float(text), "{text:?}");
        }
        for text in ["", ".", "1e", "e3", "1.5.2", "0x1", "1_0", ".e1"] {
            assert!(!is_yaml_style_float(text), "{text:?}");
        }
    }

    #[test]
    fn json_numbers_are_what_go_writes_and_reads_back() {
        let n = |f: f64| json_number(f).map(|n| n.to_string());
        assert_eq!(n(1000.0).as_deref(), Some("1000"));
        assert_eq!(n(-0.0).as_deref(), Some("0"));
        assert_eq!(n(1.5).as_deref(), Some("1.5"));
        assert_eq!(n(2f64.powi(63)).as_deref(), Some("9223372036854776000"));
        assert!(json_number(-(2f64.powi(63))).is_some_and(|n| n.is_f64()));
        assert!(json_number(1e20).is_some_and(|n| n.is_f64()));
        assert!(json_number(1e21).is_some_and(|n| n.is_f64()));
        assert_eq!(json_number(f64::INFINITY), None);
        assert_eq!(json_number(f64::NAN), None);
    }

    #[test]
    fn float32_text_is_gos_g_format() {
        for (f, want) in [
            (1.2, "1.2"),
            (1e6, "1e+06"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (123456789.0, "1.2345679e+08"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (std::f64::consts::PI, "3.1415927"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1000.0, "1000"),
            (-2.5, "-2.5"),
            (1e39, "+Inf"),
            (-1e39, "-Inf"),
            (1e38, "1e+38"),
        ] {
            assert_eq!(format_float_g32(f), want, "{f}");
        }
    }
}
