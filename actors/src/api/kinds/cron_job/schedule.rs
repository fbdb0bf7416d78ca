//! Cron schedules as Kubernetes reads them (`cron.ParseStandard` of robfig/cron v3):
//! five fields (minute, hour, day of month, month, day of week) with `*`, `?`, lists,
//! ranges, steps and month/day names, the descriptors `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` and `@every <duration>`, and
//! robfig's wording for what it refuses (the API returns it in the 422).
//!
//! Written here rather than taken from a cron crate because the accepted grammar and the
//! error messages must be Kubernetes' own: the crates accept seconds fields, `L`, `W` and
//! `#`, which Kubernetes refuses, and word their errors differently.
//!
//! Times are found in the schedule's zone: a wall-clock time skipped by a DST jump does not
//! fire that day; one that occurs twice (the hour repeated in autumn) fires at both
//! instants, as robfig's schedule does.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every <duration>`: a constant delay (whole seconds, at least one).
    Every(Duration),
}

/// The five fields as bit sets, with robfig's "star" marks for the day fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// Parse `spec` as `cron.ParseStandard` does; the error is robfig's message.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec.to_string();
    // A leading TZ= / CRON_TZ= names a zone; the parse accepts it (the API then refuses
    // it in favour of `timeZone`, as Kubernetes does).
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let (zone, rest) = match spec.split_once(' ') {
            Some((z, r)) => (z.to_string(), r.trim().to_string()),
            None => (spec.clone(), String::new()),
        };
        let name = zone.split_once('=').map(|(_, n)| n).unwrap_or_default();
        if name.parse::<Tz>().is_err() {
            return Err(format!(
                "provided bad location {name}: unknown time zone {name}"
            ));
        }
        spec = rest;
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return parse_descriptor(descriptor, &spec);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let (minute, _) = field(fields[0], &MINUTE)?;
    let (hour, _) = field(fields[1], &HOUR)?;
    let (dom, dom_star) = field(fields[2], &DOM)?;
    let (month, _) = field(fields[3], &MONTH)?;
    let (dow, dow_star) = field(fields[4], &DOW)?;
    Ok(Schedule::Fields(Fields {
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
    }))
}

fn parse_descriptor(descriptor: &str, spec: &str) -> Result<Schedule, String> {
    let fixed = match descriptor {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => {
            if let Some(d) = descriptor.strip_prefix("every ") {
                let delay =
                    go_duration(d).map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                // robfig rounds down to whole seconds, with one second the least.
                let secs = delay.as_secs().max(1);
                return Ok(Schedule::Every(Duration::from_secs(secs)));
            }
            return Err(format!("unrecognized descriptor: {spec}"));
        }
    };
    parse(fixed)
}

/// One field: comma-separated ranges ORed together; whether it was a star.
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (r, s) = range(part, b)?;
        bits |= r;
        star |= s;
    }
    Ok((bits, star))
}

/// `getRange`: `*`/`?`, `n`, `n-m`, each with an optional `/step`.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let mut star = false;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        star = true;
        (b.min, b.max)
    } else {
        let start = int_or_name(low_and_high[0], b.names)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b.names)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = number(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single && !star {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i += step;
    }
    Ok((bits, star))
}

fn int_or_name(s: &str, names: &[&str]) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Months count from 1, days of the week from 0.
        let base = if names.len() == 12 { 1 } else { 0 };
        return Ok(i as u32 + base);
    }
    number(s)
}

fn number(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {s}")),
        Ok(n) => Ok(n.min(u32::MAX as i64) as u32),
        Err(_) => Err(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax"
        )),
    }
}

/// Go's `time.ParseDuration` (`1h30m`, `90s`, `1.5h`, ...), for `@every`.
fn go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let mut rest = s;
    let negative = rest.starts_with('-');
    rest = rest.trim_start_matches(['-', '+']);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if negative {
        // A negative delay never comes round; robfig keeps the one-second floor.
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_secs_f64(total))
}

impl Fields {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
        // robfig: a star in either day field means both must match (the star matches
        // every day); otherwise either may.
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` in zone `tz`; `None` if there is none within
    /// five years (a schedule such as `0 0 30 2 *`).
    fn next(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        let mut day = local.date_naive();
        let limit = day.checked_add_days(Days::new(366 * 5 + 2))?;
        while day <= limit {
            if self.month & (1 << day.month()) != 0 && self.day_matches(day) {
                if let Some(t) = self.first_in_day(day, after, tz) {
                    return Some(t);
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    fn first_in_day(&self, day: NaiveDate, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut best: Option<DateTime<Utc>> = None;
        for h in (0..24).filter(|h| self.hour & (1 << h) != 0) {
            for m in (0..60).filter(|m| self.minute & (1 << m) != 0) {
                let naive = day.and_hms_opt(h, m, 0)?;
                let candidates: Vec<DateTime<Utc>> = match tz.from_local_datetime(&naive) {
                    LocalResult::None => Vec::new(),
                    LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
                    LocalResult::Ambiguous(a, b) => {
                        vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
                    }
                };
                for c in candidates.into_iter().filter(|c| *c > after) {
                    if best.is_none_or(|b| c < b) {
                        best = Some(c);
                    }
                }
            }
        }
        best
    }
}

impl Schedule {
    /// The first activation strictly after `after`, in zone `tz` (the zone matters for
    /// field schedules only).
    pub fn next(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Fields(f) => f.next(after, tz),
            Schedule::Every(d) => {
                // robfig: the delay after `after`, rounded down to whole seconds.
                let base = after.with_nanosecond(0)?;
                let step = chrono::Duration::from_std(*d).ok()?;
                Some(base + step)
            }
        }
    }
}

/// The most recent activation in `(earliest, now]` and how many there were (capped: past
/// `cap` the count stops and only the latest is looked for), as Kubernetes'
/// `mostRecentScheduleTime` answers it.
pub fn most_recent(
    schedule: &Schedule,
    tz: Tz,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
    cap: u32,
) -> (Option<DateTime<Utc>>, u32) {
    let Some(t1) = schedule.next(earliest, tz) else {
        return (None, 0);
    };
    if t1 > now {
        return (None, 0);
    }
    let mut latest = t1;
    let mut missed = 1u32;
    // Walk forward; with a long gap, jump close to `now` using the schedule's interval
    // so that years of missed minutes are not walked one by one.
    while let Some(next) = schedule.next(latest, tz) {
        if next > now {
            break;
        }
        missed = missed.saturating_add(1);
        if missed > cap {
            // Counting stops here; find the latest activation by probing back from `now`
            // in doubling steps, then walking forward the few activations left.
            return (Some(latest_before(schedule, tz, next, now)), missed);
        }
        latest = next;
    }
    (Some(latest), missed)
}

/// The last activation in `[known, now]`, `known` being one.
fn latest_before(
    schedule: &Schedule,
    tz: Tz,
    known: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut back = chrono::Duration::minutes(1);
    let mut from = known;
    loop {
        let probe = now - back;
        if probe <= known {
            break;
        }
        if let Some(n) = schedule.next(probe, tz).filter(|n| *n <= now) {
            from = n;
            break;
        }
        back = back * 2;
    }
    while let Some(n) = schedule.next(from, tz).filter(|n| *n <= now) {
        from = n;
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn next(spec: &str, after: &str, tz: &str) -> String {
        let s = parse(spec).expect("parse");
        s.next(utc(after), tz.parse().expect("tz"))
            .expect("next")
            .to_rfc3339()
    }

    #[test]
    fn errors_are_worded_as_kubernetes_words_them() {
        assert_eq!(
            parse("bad").unwrap_err(),
            "expected exactly 5 fields, found 1: [bad]"
        );
        assert_eq!(
            parse("* * * * * *").unwrap_err(),
            "expected exactly 5 fields, found 6: [* * * * * *]"
        );
        assert_eq!(
            parse("60 * * * *").unwrap_err(),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            parse("* * 0 * *").unwrap_err(),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            parse("x * * * *").unwrap_err(),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            parse("5-2 * * * *").unwrap_err(),
            "beginning of range (5) beyond end of range (2): 5-2"
        );
        assert_eq!(
            parse("@often").unwrap_err(),
            "unrecognized descriptor: @often"
        );
        assert_eq!(
            parse("@every xyz").unwrap_err(),
            "failed to parse duration @every xyz: time: invalid duration \"xyz\""
        );
        assert_eq!(
            parse("* * * * 7").unwrap_err(),
            "end of range (7) above maximum (6): 7"
        );
        assert!(parse("*/0 * * * *").is_err());
    }

    #[test]
    fn descriptors_names_lists_ranges_and_steps_parse() {
        for ok in [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@every 1h30m",
            "*/15 0-6,22 ? JAN-mar mon-FRI",
            "5/10 * * * *",
            "0 0 1,15 * *",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse("@every 1h30m"),
            Ok(Schedule::Every(Duration::from_secs(5400)))
        );
        assert_eq!(parse("@daily"), parse("0 0 * * *"));
    }

    #[test]
    fn next_times_follow_the_fields() {
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T00:07:00Z", "UTC"),
            "2026-01-01T00:15:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-01-01T00:30:00Z", "UTC"),
            "2026-01-01T00:45:00+00:00"
        );
        assert_eq!(
            next("@hourly", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-01T01:00:00+00:00"
        );
        // 2026-01-01 is a Thursday: the next Monday is the 5th.
        assert_eq!(
            next("0 9 * * mon", "2026-01-01T10:00:00Z", "UTC"),
            "2026-01-05T09:00:00+00:00"
        );
        // Both day fields restricted: either matches (the 10th, or a Monday).
        assert_eq!(
            next("0 0 10 * 1", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-05T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "2026-06-01T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@every 90s", "2026-01-01T00:00:10.5Z", "UTC"),
            "2026-01-01T00:01:40+00:00"
        );
        assert!(parse("0 0 30 2 *")
            .expect("parse")
            .next(utc("2026-01-01T00:00:00Z"), Tz::UTC)
            .is_none());
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        // 09:00 in Tokyo is 00:00 UTC; in New York (EST) 14:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2026-01-01T01:00:00Z", "Asia/Tokyo"),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * *", "2026-01-01T01:00:00Z", "America/New_York"),
            "2026-01-01T14:00:00+00:00"
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_does_not_fire_that_day() {
        // New York jumps from 02:00 to 03:00 on 2026-03-08.
        assert_eq!(
            next("30 2 * * *", "2026-03-07T08:00:00Z", "America/New_York"),
            "2026-03-09T06:30:00+00:00"
        );
        // 03:30 exists and is EDT (UTC-4).
        assert_eq!(
            next("30 3 * * *", "2026-03-08T05:00:00Z", "America/New_York"),
            "2026-03-08T07:30:00+00:00"
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_at_both_instants() {
        // New York repeats 01:00-02:00 on 2026-11-01: 01:30 EDT (05:30Z), 01:30 EST (06:30Z).
        assert_eq!(
            next("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York"),
            "2026-11-01T05:30:00+00:00"
        );
        assert_eq!(
            next("30 1 * * *", "2026-11-01T05:30:00Z", "America/New_York"),
            "2026-11-01T06:30:00+00:00"
        );
        assert_eq!(
            next("30 1 * * *", "2026-11-01T06:30:00Z", "America/New_York"),
            "2026-11-02T06:30:00+00:00"
        );
    }

    #[test]
    fn missed_start_times_are_counted_up_to_the_cap_and_the_latest_found() {
        let s = parse("* * * * *").expect("parse");
        let t0 = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            most_recent(&s, Tz::UTC, t0, utc("2026-01-01T00:00:30Z"), 100),
            (None, 0)
        );
        assert_eq!(
            most_recent(&s, Tz::UTC, t0, utc("2026-01-01T00:03:30Z"), 100),
            (Some(utc("2026-01-01T00:03:00Z")), 3)
        );
        let (latest, missed) = most_recent(&s, Tz::UTC, t0, utc("2026-01-03T05:07:30Z"), 100);
        assert_eq!(latest, Some(utc("2026-01-03T05:07:00Z")));
        assert!(missed > 100);
        let hourly = parse("0 * * * *").expect("parse");
        let (latest, missed) = most_recent(&hourly, Tz::UTC, t0, utc("2026-02-01T10:30:00Z"), 100);
        assert_eq!(latest, Some(utc("2026-02-01T10:00:00Z")));
        assert_eq!(missed, 101);
    }
}
