//! JSON as Keboola's PHP runner writes it: `json_encode($data, JSON_PRETTY_PRINT)`.
//!
//! Components read `config.json`, `in/state.json` and the input manifests with whatever JSON
//! parser they have; to hand them the same bytes as Keboola, this writer reproduces PHP's
//! default flags: 4-space indentation, `"key": value`, `/` escaped as `\/`, every non-ASCII
//! character escaped as `\uXXXX` (UTF-16, surrogate pairs above U+FFFF), floats with a zero
//! fraction written without it (`10.0` -> `10`), no final newline. PHP also decodes `{}` into
//! an empty array, so an empty object below the root comes out as `[]`
//! ([`empty_objects_as_arrays`]).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CharEscape, Formatter, PrettyFormatter};

/// Renders `value` as PHP's `json_encode($value, JSON_PRETTY_PRINT)` does.
pub fn render(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PhpFormatter::default());
    // Writing a Value into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    out
}

/// Replaces every empty object below the root by an empty array, as a PHP round trip
/// (`json_decode($json, true)` then `json_encode`) does.
pub fn empty_objects_as_arrays(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                if v.as_object().is_some_and(|m| m.is_empty()) {
                    *v = Value::Array(Vec::new());
                } else {
                    empty_objects_as_arrays(v);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                if v.as_object().is_some_and(|m| m.is_empty()) {
                    *v = Value::Array(Vec::new());
                } else {
                    empty_objects_as_arrays(v);
                }
            }
        }
        _ => {}
    }
}

struct PhpFormatter {
    pretty: PrettyFormatter<'static>,
}

impl Default for PhpFormatter {
    fn default() -> Self {
        PhpFormatter {
            pretty: PrettyFormatter::with_indent(b"    "),
        }
    }
}

impl Formatter for PhpFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
            write!(writer, "{}", value as i64)
        } else {
            self.pretty.write_f64(writer, value)
        }
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch == '/' || !ch.is_ascii() {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                if ch == '/' {
                    writer.write_all(b"\\/")?;
                } else {
                    let mut units = [0u16; 2];
                    for unit in ch.encode_utf16(&mut units) {
                        write!(writer, "\\u{unit:04x}")?;
                    }
                }
                start = i + ch.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        self.pretty.write_char_escape(writer, escape)
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_array(writer)
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object(writer)
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_like_php_json_pretty_print() {
        let v = json!({"uri": "https://x/y", "name": "dlažba 日本 😀", "n": 10.0, "f": 0.5, "e": [], "o": {}, "q": "a\"b\n"});
        let text = String::from_utf8(render(&v)).unwrap();
        assert_eq!(
            text,
            "{\n    \"uri\": \"https:\\/\\/x\\/y\",\n    \"name\": \"dla\\u017eba \\u65e5\\u672c \\ud83d\\ude00\",\n    \"n\": 10,\n    \"f\": 0.5,\n    \"e\": [],\n    \"o\": {},\n    \"q\": \"a\\\"b\\n\"\n}"
        );
    }

    #[test]
    fn nested_empty_objects_become_arrays() {
        let mut v = json!({"a": {}, "b": {"c": {}, "d": [{}]}});
        empty_objects_as_arrays(&mut v);
        assert_eq!(v, json!({"a": [], "b": {"c": [], "d": [[]]}}));
    }
}
