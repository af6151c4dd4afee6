//! Time stamps and Keboola's time expressions (`changed_since`, `days`, `delete_where`).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::error::{Error, Result};

/// Now, in unix microseconds (the unit of every stored time).
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Formats unix microseconds the way Keboola's manifests do: `2015-01-25T01:35:14+0000`.
pub fn format_iso(micros: i64) -> String {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string()
}

/// Formats unix microseconds as RFC 3339 with microseconds, for values read back by dockless
/// itself (the adaptive-input state), where a second's precision would re-read rows.
pub fn format_precise(micros: i64) -> String {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// Formats unix microseconds as RFC 3339 in UTC with milliseconds
/// (`2026-12-07T04:35:00.123Z`), as `dockless jobs --json` and `dockless ps` print times.
pub fn format_rfc3339(micros: i64) -> String {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a time expression relative to `now` (unix microseconds): a relative offset
/// (`-2 days`, `-1 hour`, `3 weeks ago`), a unix timestamp in seconds, or an ISO 8601 date or
/// date-time (UTC when no offset is given). Mirrors the subset of PHP `strtotime` that
/// Keboola configurations use.
pub fn parse_time_expr(expr: &str, now: i64) -> Result<i64> {
    let bad = || Error::TimeExpr {
        expr: expr.to_string(),
    };
    let text = expr.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = text.parse().map_err(|_| bad())?;
        return secs.checked_mul(1_000_000).ok_or_else(bad);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Ok(t.timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .ok_or_else(bad)?
            .and_utc()
            .timestamp_micros());
    }
    relative(text, now).ok_or_else(bad)
}

/// `[+-]N unit[s] [ago]`, possibly several terms (`-1 day -2 hours`).
fn relative(text: &str, now: i64) -> Option<i64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (words, ago) = match words.split_last() {
        Some((last, rest)) if last.eq_ignore_ascii_case("ago") => (rest.to_vec(), true),
        _ => (words, false),
    };
    if words.is_empty() || words.len() % 2 != 0 {
        return None;
    }
    let mut offset = Duration::zero();
    for pair in words.chunks(2) {
        let n: i64 = pair[0].strip_prefix('+').unwrap_or(pair[0]).parse().ok()?;
        let unit = pair[1].to_ascii_lowercase();
        let unit = unit.strip_suffix('s').unwrap_or(&unit);
        let step = match unit {
            "sec" | "second" => Duration::seconds(1),
            "min" | "minute" => Duration::minutes(1),
            "hour" => Duration::hours(1),
            "day" => Duration::days(1),
            "week" => Duration::weeks(1),
            "month" => Duration::days(30),
            "year" => Duration::days(365),
            _ => return None,
        };
        offset = offset.checked_add(&step.checked_mul(n as i32)?)?;
    }
    if ago {
        offset = -offset;
    }
    now.checked_add(offset.num_microseconds()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    #[test]
    fn parses_relative_absolute_and_unix_forms() {
        assert_eq!(
            parse_time_expr("-2 days", NOW).unwrap(),
            NOW - 2 * 86_400_000_000
        );
        assert_eq!(
            parse_time_expr("3 hours ago", NOW).unwrap(),
            NOW - 3 * 3_600_000_000
        );
        assert_eq!(
            parse_time_expr("-1 day -1 hour", NOW).unwrap(),
            NOW - 90_000_000_000
        );
        assert_eq!(
            parse_time_expr("1700000000", NOW).unwrap(),
            1_700_000_000_000_000
        );
        assert_eq!(
            parse_time_expr("2023-11-14", NOW).unwrap(),
            1_699_920_000_000_000
        );
        assert_eq!(
            parse_time_expr("2015-01-25T01:35:14+0100", NOW).unwrap(),
            1_422_146_114_000_000
        );
        assert_eq!(
            parse_time_expr("2015-01-25T00:35:14Z", NOW).unwrap(),
            1_422_146_114_000_000
        );
        for bad in ["", "yesterday-ish", "-2 fortnights", "2015-13-45"] {
            assert!(parse_time_expr(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_keboola_manifests() {
        assert_eq!(
            format_iso(1_422_146_114_000_000),
            "2015-01-25T00:35:14+0000"
        );
    }
}
