//! Column-name sanitization ("webalize") applied to output column names before a load.

/// Keboola's column-name rule: transliterate to ASCII (dropping what has no transliteration),
/// turn each run of characters outside `[A-Za-z0-9_]` into one `_`, trim `_` at both ends.
/// `_timestamp` is kept as is so that it can be refused as a system column afterwards.
pub fn column_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("_timestamp") {
        return name.to_string();
    }
    let mut ascii = String::with_capacity(name.len());
    for ch in name.chars() {
        if ch.is_ascii() {
            ascii.push(ch);
        } else if let Some(t) = deunicode::deunicode_char(ch) {
            // Letters with a Latin reading (č -> c); whole-word readings of CJK are dropped,
            // as Keboola's iconv-based transliteration drops them.
            if t.len() <= 2 && t.chars().all(|c| c.is_ascii_alphabetic()) {
                ascii.push_str(t);
            } else if !t.chars().any(|c| c.is_ascii_alphanumeric()) {
                ascii.push(' ');
            }
        }
    }
    let mut out = String::with_capacity(ascii.len());
    let mut in_run = false;
    for ch in ascii.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            out.push(ch);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out.trim_matches('_').to_string()
}

/// A component id as Keboola puts it into generated names (default buckets, container names):
/// every character outside `[A-Za-z0-9-]` becomes `-` (`keboola.ex-db` -> `keboola-ex-db`).
pub fn component_id(component_id: &str) -> String {
    component_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::column_name;

    #[test]
    fn matches_keboola_examples() {
        assert_eq!(column_name("user-id#123"), "user_id_123");
        assert_eq!(column_name("__test__"), "test");
        assert_eq!(column_name("jp日本語"), "jp");
        assert_eq!(column_name("_~dlažební  %_kostky_~"), "dlazebni__kostky");
        assert_eq!(column_name("plain_name"), "plain_name");
        assert_eq!(column_name("_timestamp"), "_timestamp");
    }
}
