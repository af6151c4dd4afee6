//! Turning a tar entry name into a path relative to the root, and recognising whiteouts.
//!
//! Names are cleaned lexically as if rooted at `/` (the containerd/umoci rule): empty and `.`
//! components vanish, `..` removes the previous component and stops at the root. So
//! `../etc/x`, `/../etc/x` and `a/../../etc/x` all name `etc/x`, and `dne/../.wh.etc` is a
//! whiteout of `etc`. Containment does not depend on this cleaning: every operation is resolved
//! by the kernel inside the root anyway; cleaning only decides *which* path inside is meant.

use super::error::EntryError;

/// Longest cleaned path accepted (Linux `PATH_MAX`).
pub(crate) const MAX_PATH: usize = 4096;
/// Longest single component (Linux `NAME_MAX`).
pub(crate) const MAX_COMPONENT: usize = 255;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Cleans `raw`; `Ok(None)` means the name denotes the root itself (`""`, `.`, `..`, `/`, ...).
pub(crate) fn clean(raw: &[u8]) -> Result<Option<Vec<u8>>, EntryError> {
    if raw.contains(&0) {
        return Err(EntryError::Invalid("name contains a NUL byte".into()));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            other => {
                if other.len() > MAX_COMPONENT {
                    return Err(EntryError::Invalid(format!(
                        "a path component is longer than {MAX_COMPONENT} bytes"
                    )));
                }
                parts.push(other);
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let joined = parts.join(&b'/');
    if joined.len() > MAX_PATH {
        return Err(EntryError::Invalid(format!(
            "the path is longer than {MAX_PATH} bytes"
        )));
    }
    Ok(Some(joined))
}

/// Splits a cleaned path into (parent, final component); the parent is empty for top-level names.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// What a cleaned entry path means with respect to whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// An ordinary entry.
    None,
    /// `<dir>/.wh..wh..opq`: hide every lower child of `<dir>` (the path of `<dir>`; empty = root).
    Opaque(Vec<u8>),
    /// `<dir>/.wh.<name>`: delete `<dir>/<name>` from lower layers (the path of the victim).
    Whiteout(Vec<u8>),
}

/// Recognises whiteout names; only the final component counts (`.wh.etc/x` is an ordinary file).
pub(crate) fn classify(path: &[u8]) -> Result<Special, EntryError> {
    let (parent, name) = split(path);
    if name == OPAQUE_MARKER {
        return Ok(Special::Opaque(parent.to_vec()));
    }
    let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Special::None);
    };
    if victim.is_empty() || victim == b"." || victim == b".." {
        return Err(EntryError::Invalid(
            "invalid whiteout entry (names no file)".into(),
        ));
    }
    let mut full = parent.to_vec();
    if !full.is_empty() {
        full.push(b'/');
    }
    full.extend_from_slice(victim);
    Ok(Special::Whiteout(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(raw: &str) -> Option<String> {
        clean(raw.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn dot_dot_is_clamped_at_the_root() {
        // A1, A2, A4, A5
        assert_eq!(c("../victim/dotdot").as_deref(), Some("victim/dotdot"));
        assert_eq!(
            c("/../victim/slash-dotdot").as_deref(),
            Some("victim/slash-dotdot")
        );
        assert_eq!(
            c("some/../../rel_evil4.txt").as_deref(),
            Some("rel_evil4.txt")
        );
        assert_eq!(c("./../rel_evil3.txt").as_deref(), Some("rel_evil3.txt"));
        assert_eq!(
            c("//./tmp/abs_evil5.txt").as_deref(),
            Some("tmp/abs_evil5.txt")
        );
        // B9
        assert_eq!(c("localetc/sub/..").as_deref(), Some("localetc"));
    }

    #[test]
    fn degenerate_names_denote_the_root() {
        // A3, A5, B8, H15
        for raw in [
            "",
            ".",
            "..",
            "../..",
            "/////////..",
            "/////////",
            "././//./..",
            "./",
        ] {
            assert_eq!(c(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn names_that_only_look_special_are_kept() {
        // A7, H14, A6 (backslashes are ordinary on Linux)
        assert_eq!(c("..gitme").as_deref(), Some("..gitme"));
        assert_eq!(c("foo\\bar").as_deref(), Some("foo\\bar"));
        assert_eq!(c("C:..\\evil").as_deref(), Some("C:..\\evil"));
    }

    #[test]
    fn nul_and_overlong_names_are_refused() {
        assert!(clean(b"a\0b").is_err());
        assert!(clean("x".repeat(256).as_bytes()).is_err());
        assert!(clean(format!("{}/", "d/".repeat(2100)).as_bytes()).is_err());
    }

    #[test]
    fn whiteouts_are_recognised_on_the_final_component_only() {
        assert_eq!(
            classify(b"a/.wh.b").unwrap(),
            Special::Whiteout(b"a/b".to_vec())
        );
        assert_eq!(
            classify(b".wh..baz").unwrap(),
            Special::Whiteout(b".baz".to_vec())
        );
        assert_eq!(
            classify(b"a/.wh..wh..opq").unwrap(),
            Special::Opaque(b"a".to_vec())
        );
        assert_eq!(
            classify(b".wh..wh..opq").unwrap(),
            Special::Opaque(Vec::new())
        );
        assert_eq!(classify(b".wh.etc/somefile").unwrap(), Special::None); // E8
        for bad in [
            &b".wh."[..],
            b".wh..",
            b".wh...",
            b"etc/.wh..",
            b"etc/.wh...",
        ] {
            assert!(classify(bad).is_err(), "{:?}", String::from_utf8_lossy(bad)); // E2-E4
        }
    }
}
