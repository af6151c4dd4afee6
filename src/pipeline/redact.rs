//! Secrets out of everything a job shows: every value under a `#` key of the configuration,
//! the image parameters and the state is replaced by `[hidden]`, as are its base64 and
//! JSON-escaped forms (Keboola's output filter registers the same three forms).
//!
//! Container output arrives in chunks that may cut a secret in two, so [`StreamRedactor`]
//! holds back the shortest tail that could still grow into a secret and releases it with the
//! next chunk (or at the end).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use serde_json::Value;

/// What a secret is replaced with.
pub const HIDDEN: &str = "[hidden]";

/// Total bytes of secret forms (raw, JSON-escaped and base64 of every `#` value) a job may
/// have: far beyond any real configuration (Keboola keeps a configuration under a few MB), and
/// it keeps the matcher's memory bounded whatever a configuration holds.
pub const MAX_SECRET_BYTES: usize = 64 << 20;

/// The job's secrets cannot be redacted, so it must not run.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The matcher over the secrets could not be built.
    #[error("cannot build the matcher over the job's {forms} secret forms")]
    Matcher {
        /// How many byte strings it was given.
        forms: usize,
        /// The matcher's reason.
        #[source]
        source: aho_corasick::BuildError,
    },
    /// More secret bytes than [`MAX_SECRET_BYTES`].
    #[error(
        "the values under `#` keys take {bytes} bytes in their raw, JSON-escaped and base64 \
         forms, more than the {limit} bytes dockless redacts"
    )]
    TooLarge {
        /// Bytes of all forms.
        bytes: usize,
        /// [`MAX_SECRET_BYTES`].
        limit: usize,
    },
}

impl SecretsError {
    /// Keboola's class: secrets beyond the bound are the configuration's doing (a user
    /// error); a matcher that cannot be built is ours.
    pub fn class(&self) -> super::classify::Class {
        match self {
            SecretsError::TooLarge { .. } => super::classify::Class::User,
            SecretsError::Matcher { .. } => super::classify::Class::Application,
        }
    }
}

/// The set of byte strings to hide, with a matcher built once.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Sorted and distinct: [`Secrets::undecided_from`] binary-searches them.
    needles: Vec<Vec<u8>>,
    /// The longest needle's length.
    longest: usize,
    matcher: Option<AhoCorasick>,
}

impl Secrets {
    /// Every scalar under a `#` key anywhere in `docs`, in its raw, base64 and JSON-escaped
    /// forms; empty values are not secrets (they would match everywhere). Fails when the
    /// matcher cannot be built or the forms exceed [`MAX_SECRET_BYTES`]: then nothing the job
    /// shows could be redacted, so it must not run. Linear in the secrets' size (plus a sort).
    pub fn collect<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Result<Secrets, SecretsError> {
        let mut values = Vec::new();
        for doc in docs {
            walk(doc, false, &mut values);
        }
        let mut needles: Vec<Vec<u8>> = Vec::with_capacity(values.len() * 3);
        let mut bytes = 0usize;
        for value in values {
            if value.is_empty() {
                continue;
            }
            let json = serde_json::to_string(&value).unwrap_or_default();
            let escaped = json
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(&json)
                .to_string();
            let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
            for form in [value, escaped, b64] {
                bytes += form.len();
                if bytes > MAX_SECRET_BYTES {
                    return Err(SecretsError::TooLarge {
                        bytes,
                        limit: MAX_SECRET_BYTES,
                    });
                }
                needles.push(form.into_bytes());
            }
        }
        needles.sort_unstable();
        needles.dedup();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = if needles.is_empty() {
            None
        } else {
            let built = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .map_err(|source| SecretsError::Matcher {
                    forms: needles.len(),
                    source,
                })?;
            Some(built)
        };
        Ok(Secrets {
            needles,
            longest,
            matcher,
        })
    }

    /// `text` with every secret hidden.
    pub fn redact(&self, text: &str) -> String {
        if self.matcher.is_none() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.hide_all(text.as_bytes())).into_owned()
    }

    fn hide_all(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.matcher {
            None => bytes.to_vec(),
            Some(m) => {
                let mut out = Vec::with_capacity(bytes.len());
                m.replace_all_with_bytes(bytes, &mut out, |_, _, out| {
                    out.extend_from_slice(HIDDEN.as_bytes());
                    true
                });
                out
            }
        }
    }

    /// Where the longest tail of `buf` that is a proper prefix of some secret begins (the
    /// bytes from there on may still become a secret); `buf.len()` when there is none. The
    /// needles are sorted, so the needles a tail is a proper prefix of come right after the
    /// tail itself: one binary search per tail length, whatever the number of secrets.
    fn undecided_from(&self, buf: &[u8]) -> usize {
        let longest = self.longest.saturating_sub(1).min(buf.len());
        for k in (1..=longest).rev() {
            let tail = &buf[buf.len() - k..];
            let mut i = self.needles.partition_point(|n| n.as_slice() < tail);
            if self.needles.get(i).is_some_and(|n| n.as_slice() == tail) {
                i += 1;
            }
            if self.needles.get(i).is_some_and(|n| n.starts_with(tail)) {
                return buf.len() - k;
            }
        }
        buf.len()
    }
}

/// The values under `#` keys of `doc` (what Keboola encrypts), in document order.
pub fn secret_values(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(doc, false, &mut out);
    out
}

fn walk(value: &Value, secret: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                walk(v, key.starts_with('#'), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, secret, out)),
        Value::String(s) if secret => out.push(s.clone()),
        Value::Number(n) if secret => out.push(n.to_string()),
        _ => {}
    }
}

/// Redacts one output stream chunk by chunk, never letting a secret through even when the
/// container's writes cut it in two.
#[derive(Debug)]
pub struct StreamRedactor<'a> {
    secrets: &'a Secrets,
    pending: Vec<u8>,
}

impl<'a> StreamRedactor<'a> {
    /// A redactor for one stream.
    pub fn new(secrets: &'a Secrets) -> Self {
        StreamRedactor {
            secrets,
            pending: Vec::new(),
        }
    }

    /// Takes the next chunk; returns what can be shown now (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(matcher) = &self.secrets.matcher else {
            return chunk.to_vec();
        };
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.pending);
        let undecided = self.secrets.undecided_from(&buf);
        let mut out = Vec::with_capacity(buf.len());
        let mut done = 0;
        // A match starting before `undecided` is final: no longer secret can start there
        // and run past the end of the buffer (else `undecided` would be at or before it).
        for m in matcher.find_iter(&buf) {
            if m.start() >= undecided {
                break;
            }
            out.extend_from_slice(&buf[done..m.start()]);
            out.extend_from_slice(HIDDEN.as_bytes());
            done = m.end();
        }
        let keep_from = undecided.max(done);
        out.extend_from_slice(&buf[done..keep_from]);
        self.pending = buf[keep_from..].to_vec();
        out
    }

    /// The end of the stream: whatever was held back, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.secrets.hide_all(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets() -> Secrets {
        Secrets::collect([&json!({
            "parameters": {"#password": "s3cr\"et", "user": "bob", "nested": [{"#token": "tok-123"}]},
            "authorization": {"oauth_api": {"credentials": {"#data": "{\"k\":1}"}}},
            "#empty": ""
        })]).unwrap()
    }

    #[test]
    fn collects_hash_keys_in_three_forms() {
        let s = secrets();
        assert_eq!(s.redact("user bob"), "user bob");
        assert_eq!(s.redact("p=s3cr\"et!"), "p=[hidden]!");
        assert_eq!(s.redact("json \"s3cr\\\"et\""), "json \"[hidden]\"");
        let b64 = base64::engine::general_purpose::STANDARD.encode("tok-123");
        assert_eq!(s.redact(&format!("b64 {b64}")), "b64 [hidden]");
        assert_eq!(s.redact("x tok-123 y"), "x [hidden] y");
        assert_eq!(s.redact("{\"k\":1}"), "[hidden]");
    }

    #[test]
    fn secrets_split_across_chunks_never_leak() {
        let s = secrets();
        let text = b"start tok-123 middle s3cr\"et end tok-12";
        // Every way to cut the text in three.
        for a in 0..text.len() {
            for b in a..text.len() {
                let mut r = StreamRedactor::new(&s);
                let mut out = r.push(&text[..a]);
                assert!(!contains(&out, b"tok-123"));
                out.extend(r.push(&text[a..b]));
                out.extend(r.push(&text[b..]));
                out.extend(r.finish());
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    "start [hidden] middle [hidden] end tok-12",
                    "cut at {a} and {b}"
                );
            }
        }
    }

    #[test]
    fn nothing_is_held_back_without_a_possible_secret() {
        let s = secrets();
        let mut r = StreamRedactor::new(&s);
        assert_eq!(r.push(b"hello world\n"), b"hello world\n");
        assert_eq!(r.push(b"ends with to"), b"ends with ");
        assert_eq!(r.finish(), b"to");
    }

    #[test]
    fn secret_values_in_order() {
        let doc = json!({"a": {"#x": "1", "y": "2", "z": [{"#w": 3}]}});
        assert_eq!(secret_values(&doc), ["1", "3"]);
    }

    #[test]
    fn no_secrets_passes_through() {
        let s = Secrets::collect([&json!({"parameters": {"a": "b"}})]).unwrap();
        assert!(s.needles.is_empty());
        let mut r = StreamRedactor::new(&s);
        assert_eq!(r.push(b"a b"), b"a b");
    }

    /// Issue 18: 200,000 `#` keys took minutes (a quadratic dedup, a replacement list built
    /// per call, every needle scanned per chunk); each is now one sort and binary searches.
    #[test]
    fn many_keys_are_all_hidden_in_chunks() {
        let params: serde_json::Map<String, Value> = (0..50_000)
            .map(|i| {
                (
                    format!("#k{i}"),
                    json!(format!("value-{:06}-secret", i * 4)),
                )
            })
            .collect();
        let s = Secrets::collect([&json!({ "parameters": params })]).unwrap();
        let text = b"a value-123456-secret b value-000004-secr";
        let mut r = StreamRedactor::new(&s);
        let mut out = r.push(&text[..12]);
        out.extend(r.push(&text[12..]));
        assert_eq!(out, b"a [hidden] b ");
        assert_eq!(r.finish(), b"value-000004-secr");
    }

    #[test]
    fn secrets_beyond_the_bound_are_refused() {
        let big = "x".repeat(MAX_SECRET_BYTES / 2);
        let err = Secrets::collect([&json!({ "#a": big, "#b": format!("y{big}") })]).unwrap_err();
        assert!(matches!(err, SecretsError::TooLarge { .. }), "{err}");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
}
