//! apimachinery's JSON forms of its protobuf helper messages: times and durations.

use chrono::{DateTime, SecondsFormat, Utc};

/// `time.Time{}.Unix()`: Go's zero time, which a non-pointer Time field carries when unset.
const GO_ZERO_UNIX: i64 = -62_135_596_800;

/// A meta/v1 Time or MicroTime from its seconds and nanoseconds; `None` for the zero time
/// (JSON `null`, omitted).
pub fn time_to_json(seconds: i64, nanos: i32, micro: bool) -> Option<String> {
    if seconds == GO_ZERO_UNIX && nanos == 0 {
        return None;
    }
    let t = DateTime::<Utc>::from_timestamp(seconds, nanos.clamp(0, 999_999_999) as u32)?;
    Some(if micro {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    })
}

/// Seconds and nanoseconds of an RFC 3339 time.
pub fn time_from_json(text: &str) -> Option<(i64, i32)> {
    let t = DateTime::parse_from_rfc3339(text).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}

/// Go's `time.Duration.String()`.
pub fn duration_to_json(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let fraction = |whole: u64, rest: u64, digits: usize| -> String {
        if rest == 0 {
            whole.to_string()
        } else {
            let frac = format!("{rest:0digits$}");
            format!("{whole}.{}", frac.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", fraction(u / 1_000, u % 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(u / 1_000_000, u % 1_000_000, 6));
    }
    let secs = u / 1_000_000_000;
    let s = fraction(secs % 60, u % 1_000_000_000, 9);
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// Go's `time.ParseDuration`, to nanoseconds.
pub fn duration_from_json(text: &str) -> Option<i64> {
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500, "1.5µs"),
            (2_000_000, "2ms"),
            (90_000_000_000, "1m30s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-5_000_000_000, "-5s"),
        ] {
            assert_eq!(duration_to_json(nanos), text);
            assert_eq!(duration_from_json(text), Some(nanos), "{text}");
        }
        assert_eq!(duration_from_json("5x"), None);
        assert_eq!(duration_from_json(""), None);
    }

    #[test]
    fn the_go_zero_time_is_no_time() {
        assert_eq!(time_to_json(GO_ZERO_UNIX, 0, false), None);
        assert_eq!(
            time_to_json(1_700_000_000, 123_456_789, false).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            time_to_json(1_700_000_000, 123_456_789, true).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(
            time_from_json("2023-11-14T22:13:20Z"),
            Some((1_700_000_000, 0))
        );
    }
}
