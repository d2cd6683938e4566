//! NUL in view text. PostgreSQL's `text` cannot hold U+0000: a bound parameter holding
//! one is refused ("invalid byte sequence"), and so is a `\u0000` escape turned into
//! text by `json_populate_recordset` ("unsupported Unicode escape sequence") or a NUL
//! in COPY's CSV. The API refuses NUL in every text a client sends, but a view is
//! written from the log, and the log may hold one (written before that rule, or by
//! another writer): one event would stop its projection for good.
//!
//! So every text this module writes or binds has each NUL replaced by U+FFFD, the
//! replacement character, meant for a character that cannot be represented. It is done
//! on both backends (SQLite could hold the NUL), so that a view reads the same on
//! either, live or rebuilt, and a row written with U+FFFD is found again by the same
//! text. Views are derived: the log keeps the event as recorded. Readers of the log
//! already hold U+FFFD for a NUL in an event's values (`domain::values::reading_stored`);
//! this is the last guard, for any text on its way into a view table.

use std::borrow::Cow;

/// The replacement, as text and as a JSON escape.
const REPLACEMENT: &str = "\u{fffd}";
const ESCAPED_NUL: &str = "\\u0000";
const ESCAPED_REPLACEMENT: &str = "\\ufffd";

/// `text` with U+FFFD in place of each NUL.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', REPLACEMENT))
    } else {
        Cow::Borrowed(text)
    }
}

/// JSON text (as serde_json writes it) with each `\u0000` escape written as `\ufffd`,
/// and a raw NUL (which JSON text never holds) replaced too. Escapes are followed one by
/// one, so `\\u0000` (a backslash, then the text `u0000`) is left as it is.
pub fn json(json: String) -> String {
    if !json.contains(ESCAPED_NUL) && !json.contains('\0') {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json.as_str();
    while let Some(at) = rest.find(['\\', '\0']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('\0') {
            out.push_str(REPLACEMENT);
            rest = &rest[1..];
        } else if rest.starts_with(ESCAPED_NUL) {
            out.push_str(ESCAPED_REPLACEMENT);
            rest = &rest[ESCAPED_NUL.len()..];
        } else {
            // Any other escape: the backslash and the character it escapes.
            let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + escaped]);
            rest = &rest[1 + escaped..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn text_replaces_each_nul_and_borrows_the_rest() {
        assert_eq!(super::text("a\0b\0"), "a\u{fffd}b\u{fffd}");
        assert!(matches!(
            super::text("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn json_replaces_escaped_nuls_and_nothing_else() {
        let value = json!({
            "nul": "a\u{0}b",
            "text_that_reads_like_an_escape": "\\u0000",
            "backslash_then_nul": "\\\u{0}",
            "others": "\t\n\"\u{1}\u{1b}é\u{fffd}",
        });
        let written = super::json(serde_json::to_string(&value).unwrap());
        let read: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(read["nul"], "a\u{fffd}b");
        assert_eq!(read["text_that_reads_like_an_escape"], "\\u0000");
        assert_eq!(read["backslash_then_nul"], "\\\u{fffd}");
        assert_eq!(read["others"], value["others"]);
        let plain = serde_json::to_string(&json!({"a": "b\\n"})).unwrap();
        assert_eq!(super::json(plain.clone()), plain);
        assert_eq!(super::json("\"a\0\"".to_owned()), "\"a\u{fffd}\"");
    }
}
