//! Sizes and durations as people write and read them. Shared by the CLI's value parsers, job
//! files (which take the same texts as the flags) and the messages that quote a limit, so it
//! sits below every layer.

use std::time::Duration;

/// `256m`, `1g`, `512k`, `1024` (bytes); an optional trailing `b` as docker allows.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a number with k, m or g (e.g. 256m)"
            ));
        }
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with k, m or g (e.g. 256m)"))?;
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{text:?}: out of range"))
}

/// A positive, finite number of CPUs.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a positive number of CPUs (e.g. 1.5)"
        )),
    }
}

/// `30` (seconds), `30s`, `5m`, `1h`; at most a year (a deadline must stay computable).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected seconds or a number with s, m or h"))?;
    const YEAR: u64 = 365 * 24 * 3600;
    match n.checked_mul(mult) {
        Some(secs) if secs <= YEAR => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{text:?}: longer than a year")),
    }
}

/// A size in bytes as text, in one of two styles: a limit as it is written (Keboola's and
/// docker's format, the inverse of [`parse_size`]: messages quote the limit as the user gave
/// it) or a stored size for a table (decimal units, as `docker images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeStyle {
    /// `256m` for 256 MiB, `1g` for 1 GiB, else `N bytes`.
    Limit,
    /// `512 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
    Table,
}

/// `bytes` in the given style.
pub fn size_text(bytes: u64, style: SizeStyle) -> String {
    match style {
        SizeStyle::Limit => {
            if bytes.is_multiple_of(1 << 30) {
                format!("{}g", bytes >> 30)
            } else if bytes.is_multiple_of(1 << 20) {
                format!("{}m", bytes >> 20)
            } else {
                format!("{bytes} bytes")
            }
        }
        SizeStyle::Table => {
            const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
            let mut value = bytes as f64;
            let mut unit = 0;
            while value >= 1000.0 && unit + 1 < UNITS.len() {
                value /= 1000.0;
                unit += 1;
            }
            if unit == 0 {
                format!("{bytes} B")
            } else {
                format!("{value:.1} {}", UNITS[unit])
            }
        }
    }
}

/// A memory limit (always positive: [`parse_size`] refuses anything else) as it is written.
pub fn limit_text(bytes: i64) -> String {
    size_text(bytes.unsigned_abs(), SizeStyle::Limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn size_texts() {
        assert_eq!(limit_text(256 << 20), "256m");
        assert_eq!(limit_text(2 << 30), "2g");
        assert_eq!(limit_text(1000), "1000 bytes");
        assert_eq!(size_text(999, SizeStyle::Table), "999 B");
        assert_eq!(size_text(4_500_000, SizeStyle::Table), "4.5 MB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
