//! go-yaml v3's plain-scalar timestamps: Go's `time.Parse` with the four layouts of resolve.go,
//! and the RFC 3339 text `encoding/json` writes for the `time.Time`.

/// A parsed timestamp: the fields as written and the zone offset in seconds (0 for `Z` and for
/// the layout without a zone, which Go reads as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset: i32,
}

/// The separator between date and time in go-yaml's layouts, in the order it tries them:
/// `2006-1-2T15:4:5.999999999Z07:00`, the same with `t`, `2006-1-2 15:4:5.999999999` (no zone)
/// and `2006-1-2`.
#[derive(Clone, Copy)]
enum Layout {
    Zoned(u8),
    Spaced,
    Date,
}

/// go-yaml's `parseTimestamp`.
pub(super) fn parse(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    // Its quick check: exactly four digits, then '-'.
    let year_digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if year_digits != 4 || bytes.get(4) != Some(&b'-') {
        return None;
    }
    [
        Layout::Zoned(b'T'),
        Layout::Zoned(b't'),
        Layout::Spaced,
        Layout::Date,
    ]
    .into_iter()
    .find_map(|layout| parse_layout(bytes, layout))
}

fn parse_layout(bytes: &[u8], layout: Layout) -> Option<Timestamp> {
    let mut c = Cursor(bytes);
    let year = c.fixed_digits(4)?;
    c.literal(b'-')?;
    let month = c.number().filter(|m| (1..=12).contains(m))?;
    c.literal(b'-')?;
    let day = c.number()?;
    let mut t = Timestamp {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: 0,
    };
    match layout {
        Layout::Date => {}
        Layout::Zoned(separator) => {
            c.literal(separator)?;
            c.clock(&mut t)?;
            t.offset = c.zone()?;
        }
        Layout::Spaced => {
            // A space in a Go layout matches one or more spaces.
            if c.0.first() != Some(&b' ') {
                return None;
            }
            while c.0.first() == Some(&b' ') {
                c.advance(1);
            }
            c.clock(&mut t)?;
        }
    }
    // Go validates the day of the month last, leap years included.
    (c.0.is_empty() && (1..=days_in(month, year)).contains(&day)).then_some(t)
}

/// The unread rest of the text.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn advance(&mut self, n: usize) {
        self.0 = self.0.get(n..).unwrap_or_default();
    }

    fn literal(&mut self, expected: u8) -> Option<()> {
        (self.0.first() == Some(&expected)).then(|| self.advance(1))
    }

    fn digit(&self, at: usize) -> Option<u32> {
        self.0
            .get(at)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    }

    /// Exactly `n` digits.
    fn fixed_digits(&mut self, n: usize) -> Option<u32> {
        let mut value = 0;
        for at in 0..n {
            value = value * 10 + self.digit(at)?;
        }
        self.advance(n);
        Some(value)
    }

    /// Go's `getnum` for the unpadded layout elements: one digit, or two when there are two.
    fn number(&mut self) -> Option<u32> {
        let first = self.digit(0)?;
        match self.digit(1) {
            Some(second) => {
                self.advance(2);
                Some(first * 10 + second)
            }
            None => {
                self.advance(1);
                Some(first)
            }
        }
    }

    /// `15:4:5.999999999`: hour, minute, second, and any number of fractional digits after a
    /// `.` or `,` (nanoseconds from the first nine, the rest cut).
    fn clock(&mut self, t: &mut Timestamp) -> Option<()> {
        t.hour = self.number().filter(|h| *h < 24)?;
        self.literal(b':')?;
        t.minute = self.number().filter(|m| *m < 60)?;
        self.literal(b':')?;
        t.second = self.number().filter(|s| *s < 60)?;
        if matches!(self.0.first(), Some(b'.' | b',')) && self.digit(1).is_some() {
            self.advance(1);
            let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut nanos = 0;
            for at in 0..9 {
                nanos = nanos * 10 + self.digit(at).filter(|_| at < digits).unwrap_or(0);
            }
            t.nanos = nanos;
            self.advance(digits);
        }
        Some(())
    }

    /// `Z07:00`: `Z`, or a sign and exactly `hh:mm` (Go accepts up to 24 hours and 60 minutes).
    fn zone(&mut self) -> Option<i32> {
        if self.literal(b'Z').is_some() {
            return Some(0);
        }
        let &[sign, h1, h2, b':', m1, m2, ..] = self.0 else {
            return None;
        };
        let (hours, minutes) = (two_digits(h1, h2)?, two_digits(m1, m2)?);
        if hours > 24 || minutes > 60 {
            return None;
        }
        let seconds = (hours * 60 + minutes) * 60;
        self.advance(6);
        match sign {
            b'+' => Some(seconds),
            b'-' => Some(-seconds),
            _ => None,
        }
    }
}

/// Go's `getnum(s, true)` on two bytes.
fn two_digits(tens: u8, units: u8) -> Option<i32> {
    (tens.is_ascii_digit() && units.is_ascii_digit())
        .then(|| i32::from(tens - b'0') * 10 + i32::from(units - b'0'))
}

fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Timestamp {
    /// `time.Time.MarshalJSON`: RFC 3339 with nanoseconds (trailing zeros cut), `Z` for a zero
    /// offset; Go refuses an offset of 24 hours or more.
    pub(super) fn to_json(self) -> Result<String, String> {
        let zone_minutes = self.offset / 60;
        let (hours, minutes) = (zone_minutes.abs() / 60, zone_minutes.abs() % 60);
        if hours >= 24 {
            return Err("Time.MarshalJSON: timezone hour outside of range [0,23]".to_string());
        }
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.nanos != 0 {
            let fraction = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        match zone_minutes {
            0 => out.push('Z'),
            z => out.push_str(&format!(
                "{}{hours:02}:{minutes:02}",
                if z < 0 { '-' } else { '+' }
            )),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each timestamp go-yaml v3 reads, as kustomize hands it on (checked with
    /// hack/yaml-oracle `d1`), and text it leaves a string.
    #[test]
    fn timestamps_are_gos() {
        for (text, want) in [
            ("2001-12-14", Some("2001-12-14T00:00:00Z")),
            ("2001-1-2", Some("2001-01-02T00:00:00Z")),
            (
                "2001-12-14t21:59:43.10-05:00",
                Some("2001-12-14T21:59:43.1-05:00"),
            ),
            ("2001-12-14 21:59:43.10", Some("2001-12-14T21:59:43.1Z")),
            ("2001-12-14   21:59:43.10", Some("2001-12-14T21:59:43.1Z")),
            ("2001-12-14 21:59:43", Some("2001-12-14T21:59:43Z")),
            ("2001-12-14T21:59:43,5Z", Some("2001-12-14T21:59:43.5Z")),
            (
                "2001-12-14T21:59:43.1234567891Z",
                Some("2001-12-14T21:59:43.123456789Z"),
            ),
            (
                "2001-12-14T21:59:43+05:60",
                Some("2001-12-14T21:59:43+06:00"),
            ),
            ("2001-12-14T21:59:43+00:00", Some("2001-12-14T21:59:43Z")),
            ("2001-12-14T21:59:43-00:00", Some("2001-12-14T21:59:43Z")),
            ("2001-12-14T1:2:3Z", Some("2001-12-14T01:02:03Z")),
            ("2000-02-29", Some("2000-02-29T00:00:00Z")),
            ("0000-01-01", Some("0000-01-01T00:00:00Z")),
            ("2001-02-29", None),
            ("2001-13-01", None),
            ("2001-12-14T24:00:00Z", None),
            ("2001-12-14T21:59:43", None),
            ("2001-12-14 21:59:43Z", None),
            ("2001-12-14T21:59:43z", None),
            ("2001-12-14T21:59:43+5:00", None),
            ("20011-12-14", None),
            ("2001-012-14", None),
            ("2001-12-14x", None),
            ("2001-12-14T21:59:43.Z", None),
        ] {
            let got = parse(text).map(|t| t.to_json());
            assert_eq!(got, want.map(|w| Ok(w.to_string())), "{text:?}");
        }
    }

    #[test]
    fn offsets_of_a_day_are_refused_when_written() {
        for text in ["2001-12-14T21:59:43+24:00", "2001-12-14T21:59:43-23:60"] {
            let t = parse(text).unwrap_or_else(|| panic!("{text} parses"));
            assert!(t.to_json().is_err(), "{text}");
        }
    }
}
