//! Hand-written JSON output for the hot path: events and commands are small,
//! fixed shapes, so writing them directly into a reused `String` avoids building
//! a `serde_json::Value` (and its allocations) for every 20 ms media frame.

use std::fmt::Write as _;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` to `out` as a quoted JSON string.
///
/// Escapes `"`, `\` and every control character below U+0020, which is all RFC 8259
/// requires; other characters, including non-ASCII, are written as UTF-8.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut clean_from = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[clean_from..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push_str(short);
        }
        clean_from = i + 1;
    }
    out.push_str(&s[clean_from..]);
    out.push('"');
}

/// Appends `"key":` to `out`. Keys are our own ASCII identifiers, never escaped.
pub(crate) fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Appends an unsigned integer without allocating.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    // Writing to a `String` cannot fail.
    let _ = write!(out, "{n}");
}

/// Appends an unsigned integer as a quoted JSON string (`"120"`).
pub(crate) fn push_u64_string(out: &mut String, n: u64) {
    out.push('"');
    push_u64(out, n);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        out
    }

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(quoted("plain"), r#""plain""#);
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(quoted("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(quoted("ünï/😀"), "\"ünï/😀\"");
        assert_eq!(quoted(""), r#""""#);
    }

    #[test]
    fn escaped_strings_read_back_unchanged() {
        let all_ascii: String = (0u8..128).map(char::from).collect();
        for s in [all_ascii.as_str(), "x\"\\\u{0}é\u{2028}", "\\\\\"\""] {
            let back: String = serde_json::from_str(&quoted(s)).expect("valid JSON string");
            assert_eq!(back, s);
        }
    }
}
