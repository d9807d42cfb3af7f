//! The reader of a well-formed vAPI `invoke` request: the JSON-RPC hot path.
//!
//! Why not serde_json here: read into typed structs that borrow from the body, a
//! session `get` (about 330 bytes) cost serde_json about 6,700 instructions
//! (callgrind), a fifth of the whole request, most of it the per-string and
//! per-field machinery of a general deserializer. This reader knows the one shape
//! `invoke` has, finds the end of a string eight bytes at a time (`find_quote`) and checks the
//! body for escapes and control characters once rather than string by string: about
//! 4,000 instructions with the UTF-8 check, and the whole request 2,600 fewer
//! (see `bench/PROFILE.md`).
//!
//! It is not a general JSON parser and never has the last word. It reads a strict
//! subset: strings without escapes or control characters, integer ids, each member
//! that matters at most once, other members only if they are strings, integers,
//! `true`/`false`/`null` or (nested, up to [`MAX_DEPTH`]) objects and arrays of
//! them. For anything else it answers `None`, and the general path
//! (`serde_json::Value`) reads the request and accepts it the same way or names
//! what is wrong; the tests hold both to the same answers.

use super::{Call, SESSION_ID_SCHEME, Security, USER_PASS_SCHEME};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The position of the first `"` in `bytes`, eight bytes at a time (SWAR: a byte of
/// the word XOR `"""…` is zero where a quote is; the lowest such byte is found
/// exactly). Every string of a request is looked for this way, most of them
/// under 24 bytes: memchr's SIMD set-up cost more than the scan itself on those
/// (~120 instructions a string; this, ~40 for a key, ~90 for a 64-digit id).
fn find_quote(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().ok()?) ^ QUOTES;
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(at + zero.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == b'"').map(|i| at + i)
}

/// How deeply members this reader does not use may nest before it gives up.
const MAX_DEPTH: u8 = 16;

/// Reads a well-formed `invoke` request; `None` for anything else (see the module).
pub(super) fn read_invoke(text: &str) -> Option<(Value, Call<'_>)> {
    let bytes = text.as_bytes();
    // Checked once for the whole body, not string by string (SIMD, both): escapes
    // are left to the general path; control characters are whitespace between
    // tokens or invalid in a string, which then `string` checks.
    if memchr::memchr(b'\\', bytes).is_some() {
        return None;
    }
    let plain = bytes.iter().copied().min().is_none_or(|b| b >= 0x20);
    let mut r = Reader { text, at: 0, plain };
    let (mut jsonrpc, mut method, mut id, mut params) = (None, None, None, None);
    r.object(|r, key| match key {
        "jsonrpc" => once(&mut jsonrpc, r.string()?),
        "method" => once(&mut method, r.string()?),
        "id" => once(&mut id, r.id()?),
        "params" => once(&mut params, read_params(r)?),
        _ => r.skip_value(MAX_DEPTH),
    })?;
    r.end()?;
    if jsonrpc? != "2.0" || method? != "invoke" {
        return None;
    }
    Some((id?, params?))
}

/// `params`: `serviceId`, `operationId`, `input` and, optionally, `ctx`.
fn read_params<'a>(r: &mut Reader<'a>) -> Option<Call<'a>> {
    let (mut service, mut operation, mut input, mut ctx) = (None, None, None, None);
    r.object(|r, key| match key {
        "serviceId" => once(&mut service, r.string()?),
        "operationId" => once(&mut operation, r.string()?),
        "input" => once(&mut input, read_input(r)?),
        "ctx" => once(&mut ctx, read_ctx(r)?),
        _ => r.skip_value(MAX_DEPTH),
    })?;
    input?;
    Some(Call {
        service: Cow::Borrowed(service?),
        operation: Cow::Borrowed(operation?),
        input: Map::new(),
        security: ctx.unwrap_or(Security::None),
    })
}

/// `{"STRUCTURE":{"operation-input":{}}}` exactly (no operation takes input: one
/// that comes with some is the general path's to refuse).
fn read_input(r: &mut Reader<'_>) -> Option<()> {
    r.only_member("STRUCTURE", |r| {
        r.only_member("operation-input", |r| {
            r.eat(b'{')?;
            r.eat(b'}')
        })
    })
}

/// `ctx`: `null`, or an object whose `securityCtx` (if any, and not `null`) says
/// who calls.
fn read_ctx<'a>(r: &mut Reader<'a>) -> Option<Security<'a>> {
    if r.null() {
        return Some(Security::None);
    }
    let mut security = None;
    r.object(|r, key| match key {
        "securityCtx" if r.null() => once(&mut security, Security::None),
        "securityCtx" => once(&mut security, read_security(r)?),
        _ => r.skip_value(MAX_DEPTH),
    })?;
    Some(security.unwrap_or(Security::None))
}

/// `securityCtx`: `schemeId` and that scheme's fields.
fn read_security<'a>(r: &mut Reader<'a>) -> Option<Security<'a>> {
    let (mut scheme, mut session, mut user, mut password) = (None, None, None, None);
    r.object(|r, key| match key {
        "schemeId" => once(&mut scheme, r.string()?),
        "sessionId" => once(&mut session, r.string()?),
        "userName" => once(&mut user, r.string()?),
        "password" => once(&mut password, r.string()?),
        _ => r.skip_value(MAX_DEPTH),
    })?;
    Some(match scheme? {
        USER_PASS_SCHEME => Security::UserPass {
            user: Cow::Borrowed(user?),
            password: Cow::Borrowed(password?),
        },
        SESSION_ID_SCHEME => Security::SessionId(Cow::Borrowed(session?)),
        _ => Security::Other,
    })
}

/// Fills `slot` with the first value of a member; `None` if the member repeats
/// (the general path then decides which one counts).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    /// The text has no control characters (no byte below 0x20) at all.
    plain: bool,
}

impl<'a> Reader<'a> {
    /// The next byte after any whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        // Every token starts with a byte above the space: one comparison when no
        // whitespace comes first (the usual compact body).
        if let Some(&b) = bytes.get(self.at)
            && b > b' '
        {
            return Some(b);
        }
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// A string without control characters, without its quotes (the text has no
    /// escapes: see [`read_invoke`]).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        let len = find_quote(rest)?;
        if !self.plain && rest[..len].iter().any(|&b| b < 0x20) {
            return None;
        }
        // The quotes are ASCII, so both ends are character boundaries.
        let s = self.text.get(self.at..self.at + len)?;
        self.at += len + 1;
        Some(s)
    }

    /// An integer that fits an `i64` whatever its digits (at most 18), not `-0`.
    fn integer(&mut self) -> Option<i64> {
        self.peek()?;
        let bytes = &self.text.as_bytes()[self.at..];
        let sign = usize::from(bytes.first() == Some(&b'-'));
        let digits = bytes[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = &bytes[..sign + digits];
        let leading_zero = digits > 1 && bytes[sign] == b'0';
        if digits == 0 || digits > 18 || leading_zero || number == b"-0" {
            return None;
        }
        // What follows must end the number (a fraction or exponent is not read here).
        if matches!(bytes.get(number.len()), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += number.len();
        std::str::from_utf8(number).ok()?.parse().ok()
    }

    /// A JSON-RPC id: a string or an integer.
    fn id(&mut self) -> Option<Value> {
        if self.peek()? == b'"' {
            Some(Value::String(self.string()?.to_owned()))
        } else {
            self.integer().map(Value::from)
        }
    }

    /// Consumes `null` if that is what comes next.
    fn null(&mut self) -> bool {
        self.literal("null").is_some()
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.peek()?;
        self.text.as_bytes()[self.at..]
            .starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// An object, each member's key handed to `member`, which reads the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.items(b'}', |r| {
            let key = r.string()?;
            r.eat(b':')?;
            member(r, key)
        })
    }

    /// The items of an object or array after its opening bracket, up to and with
    /// `close`: none, or `item`s separated by commas.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object with exactly one member, `key`, whose value `value` reads.
    fn only_member(
        &mut self,
        key: &str,
        value: impl FnOnce(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.string()? != key {
            return None;
        }
        self.eat(b':')?;
        value(self)?;
        self.eat(b'}')
    }

    /// A value this reader does not use (see the module for which it can skip).
    fn skip_value(&mut self, depth: u8) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                let inner = depth.checked_sub(1)?;
                self.object(|r, _| r.skip_value(inner))
            }
            b'[' => {
                let inner = depth.checked_sub(1)?;
                self.at += 1;
                self.items(b']', |r| r.skip_value(inner))
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.integer().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::find_quote;

    #[test]
    fn quotes_are_found_at_every_position_and_length() {
        for len in 0..40 {
            let plain = vec![b'a'; len];
            assert_eq!(find_quote(&plain), None, "{len}");
            for at in 0..len {
                let mut bytes = plain.clone();
                bytes[at] = b'"';
                // A later quote, and bytes next to `"` in value (`!`, `#`), change nothing.
                if at + 1 < len {
                    bytes[at + 1] = b'!';
                }
                if at > 0 {
                    bytes[at - 1] = b'#';
                }
                bytes.push(b'"');
                assert_eq!(find_quote(&bytes), Some(at), "{len} {at}");
            }
        }
        // Bytes whose XOR with `"` borrows in the subtraction (0x23 after 0x22, 0xa2).
        assert_eq!(find_quote(b"\xa2\xa2#\"#\""), Some(3));
        assert_eq!(
            find_quote(&[0xa2, 0x23, 0x22, 0x22, 0, 0, 0, 0, 0x22]),
            Some(2)
        );
    }
}
