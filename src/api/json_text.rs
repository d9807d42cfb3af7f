//! JSON written by hand for the few fixed-shape answers of session validation
//! (Commvault `GET Session`, vSphere `get` in its three forms, native
//! `GET /v1/session`): every managed request of a client makes one.
//!
//! Why not serde: serde_json escapes every key and value byte by byte, and that
//! was the largest single cost of these answers in the profile (bench/PROFILE.md).
//! Here keys and punctuation are copied as one literal, and a value is copied at
//! once unless it holds a character JSON must escape.
//!
//! The serde types stay the definition of each answer (and its OpenAPI schema):
//! every writer is tested to give byte for byte what serde_json gives for them.

use super::{Guid, WireTime};
use axum::response::Response;
use serde::Serialize;

/// Enough for a session with its user; larger answers grow as usual.
const CAPACITY: usize = 1024;

/// A JSON text being written. The caller writes well-formed JSON: `raw` text is
/// keys and punctuation, values go through the typed methods.
pub struct JsonText(Vec<u8>);

impl Default for JsonText {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonText {
    pub fn new() -> Self {
        JsonText(Vec::with_capacity(CAPACITY))
    }

    /// JSON syntax written as it is (keys, braces, commas): a literal of the caller.
    pub fn raw(&mut self, json: &str) -> &mut Self {
        self.0.extend_from_slice(json.as_bytes());
        self
    }

    /// A string value, escaped exactly as serde_json escapes it.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.str_of(&[s])
    }

    /// One string value made of `parts` (e.g. `name@domain`), with no copy joined first.
    pub fn str_of(&mut self, parts: &[&str]) -> &mut Self {
        self.0.push(b'"');
        for part in parts {
            escape_into(&mut self.0, part);
        }
        self.0.push(b'"');
        self
    }

    pub fn int(&mut self, n: impl itoa::Integer) -> &mut Self {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.raw(if b { "true" } else { "false" })
    }

    /// An instant as [`WireTime`] writes it.
    pub fn time(&mut self, t: WireTime) -> &mut Self {
        match t.0.rfc3339() {
            Some(text) => self.plain(text.as_bytes()),
            None => self.str(&t.0.to_string()),
        }
    }

    /// A session id as [`Guid`] writes it.
    pub fn guid(&mut self, id: Guid) -> &mut Self {
        self.plain(&super::hyphenated(&id.0.0, super::Case::Upper))
    }

    /// A string the program holds as a constant (an enum's wire name, a permission
    /// key, a console's description), which never needs escaping: quoted without
    /// looking (checked in debug builds, and each writer's test compares its output
    /// with serde_json's).
    pub fn known(&mut self, s: &'static str) -> &mut Self {
        self.plain(s.as_bytes())
    }

    /// A list of [`known`](Self::known) strings.
    pub fn known_strs(&mut self, items: impl IntoIterator<Item = &'static str>) -> &mut Self {
        self.list(items, Self::known)
    }

    /// A list of `items`, each written by `each`.
    fn list<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T) -> &mut Self,
    ) -> &mut Self {
        self.0.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            each(self, item);
        }
        self.0.push(b']');
        self
    }

    /// A string of digits, letters and punctuation this module made itself, which
    /// JSON never escapes: quoted without looking.
    fn plain(&mut self, s: &[u8]) -> &mut Self {
        debug_assert!(!needs_escape(s) && std::str::from_utf8(s).is_ok());
        self.0.push(b'"');
        self.0.extend_from_slice(s);
        self.0.push(b'"');
        self
    }

    /// A list of strings.
    pub fn strs<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.list(items, Self::str)
    }

    /// Any other value, through serde_json (for the small, rare parts: enum names,
    /// a JSON-RPC request id). Writing into memory cannot fail for these types;
    /// should one fail, it is written as `null` and logged.
    pub fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> &mut Self {
        let mark = self.0.len();
        if let Err(e) = serde_json::to_writer(&mut self.0, v) {
            tracing::error!(error = %e, "could not render a JSON value");
            self.0.truncate(mark);
            self.0.extend_from_slice(b"null");
        }
        self
    }

    pub fn as_str(&self) -> &str {
        // Only `&str` input and ASCII were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as a 200 answer with the given `Content-Type` (usually
    /// [`APPLICATION_JSON`](super::APPLICATION_JSON)).
    pub fn answer(self, content_type: axum::http::HeaderValue) -> Response {
        super::typed_answer(self.0, content_type)
    }
}

/// Appends `s` escaped for a JSON string (without quotes): `"` and `\` and the
/// control characters, the short forms where JSON has them, else `\u00XX`, as
/// serde_json does; everything else as it is.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any byte must be escaped in a JSON string: `"`, `\` or a control
/// character. Eight bytes at a time (SWAR, as `find_quote` of the JSON-RPC
/// reader): a byte below 0x20 borrows in `word - 0x20…` where its own high bit
/// was clear, and `"` or `\` XORed with itself is a zero byte, found the same way.
/// Each test is exact for the word as a whole. The strings of a session answer
/// are short, so the last bytes are checked one by one.
fn needs_escape(bytes: &[u8]) -> bool {
    const fn each(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    let below = |w: u64, n: u8| w.wrapping_sub(each(n)) & !w & each(0x80);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        if below(w, 0x20) | below(w ^ each(b'"'), 1) | below(w ^ each(b'\\'), 1) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{2028}");
        for s in [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\there\nnew\r",
            "\u{7f}\u{1f}\u{0}",
            all.as_str(),
        ] {
            let mut t = JsonText::new();
            t.str(s);
            assert_eq!(t.as_str(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        let mut t = JsonText::new();
        t.str_of(&["a\"n", "@", "d\\m"]);
        assert_eq!(t.as_str(), serde_json::to_string("a\"n@d\\m").unwrap());
    }

    /// The word-at-a-time check agrees with a byte-by-byte one for every length,
    /// position and byte next to the ones that must be escaped.
    #[test]
    fn escapes_are_found_at_every_position() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        let bytes: Vec<u8> = (0..=255).collect();
        for len in 0..24 {
            for at in 0..len {
                for &b in &bytes {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    // Neighbours that borrow or carry in the arithmetic.
                    if at + 1 < len {
                        s[at + 1] = 0x21;
                    }
                    if at > 0 {
                        s[at - 1] = 0xff;
                    }
                    assert_eq!(needs_escape(&s), naive(&s), "{len} {at} {b:#x}");
                }
            }
        }
    }

    #[test]
    fn values_write_as_their_serde_form() {
        let times = [
            Timestamp::from_unix_millis(0),
            Timestamp::from_unix_millis(1_764_000_000_123),
            Timestamp::from_unix_millis(i64::MAX),
            Timestamp::from_unix_millis(-1),
        ];
        for t in times {
            let mut w = JsonText::new();
            w.time(WireTime(t));
            assert_eq!(w.as_str(), serde_json::to_string(&WireTime(t)).unwrap());
        }
        let id = crate::domain::SessionId(uuid::Uuid::from_u128(0xabcdef0123456789));
        let mut w = JsonText::new();
        w.guid(Guid(id))
            .raw(",")
            .int(-12i64)
            .raw(",")
            .bool(true)
            .raw(",")
            .raw("null")
            .raw(",")
            .strs(["x", "y\"z"])
            .raw(",")
            .value(&serde_json::json!({"k": [1, "v"]}));
        assert_eq!(
            w.as_str(),
            format!(
                "{},-12,true,null,[\"x\",\"y\\\"z\"],{{\"k\":[1,\"v\"]}}",
                serde_json::to_string(&Guid(id)).unwrap()
            )
        );
    }
}
