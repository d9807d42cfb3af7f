//! Commvault wire formats: content negotiation, request bodies (JSON or XML) and
//! response documents.

use super::error::CvError;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use serde::Serialize;
use serde_json::{Map, Value};

/// The response format a client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// From `Accept`: JSON when it names JSON before (or without) XML; XML otherwise,
    /// including when `Accept` is absent or `*/*` (Commvault's own default).
    pub fn from_headers(headers: &HeaderMap) -> Format {
        let Some(accept) = crate::api::header(headers, &header::ACCEPT) else {
            return Format::Xml;
        };
        // What cvpysdk and most clients send, decided without a search (or the
        // header's text check).
        if accept.as_bytes().eq_ignore_ascii_case(b"application/json") {
            return Format::Json;
        }
        let Ok(accept) = accept.to_str() else {
            return Format::Xml;
        };
        match (
            find_ignore_case(accept, "json"),
            find_ignore_case(accept, "xml"),
        ) {
            (Some(j), Some(x)) if j < x => Format::Json,
            (Some(_), None) => Format::Json,
            _ => Format::Xml,
        }
    }
}

/// The format of a request body: from `Content-Type`, else from its first byte.
pub fn body_format(headers: &HeaderMap, body: &[u8]) -> Format {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if find_ignore_case(ct, "json").is_some() {
        Format::Json
    } else if find_ignore_case(ct, "xml").is_some() {
        Format::Xml
    } else {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Format::Xml,
            _ => Format::Json,
        }
    }
}

/// Where `needle` (lower-case ASCII) first occurs in `text`, ignoring ASCII case,
/// without lower-casing a copy (this runs on every request).
fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    text.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The `Content-Type` of an XML answer.
pub const XML_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/xml;charset=utf-8");

/// The `Content-Type` of a JSON answer.
pub const JSON_CONTENT_TYPE: HeaderValue =
    HeaderValue::from_static("application/json;charset=utf-8");

pub fn json_response<T: Serialize + ?Sized>(value: &T) -> Response {
    crate::api::json_answer(value, JSON_CONTENT_TYPE)
}

/// A small XML document writer. Attribute values are escaped.
pub struct XmlDoc {
    w: Writer<Vec<u8>>,
}

impl Default for XmlDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlDoc {
    pub fn new() -> Self {
        let mut w = Writer::new(Vec::with_capacity(512));
        // Writing into a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new(
            "1.0",
            Some("UTF-8"),
            Some("no"),
        )));
        XmlDoc { w }
    }

    fn element<'a>(name: &'a str, attrs: &[(&str, &str)]) -> BytesStart<'a> {
        let mut e = BytesStart::new(name);
        for a in attrs {
            e.push_attribute(*a);
        }
        e
    }

    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let _ = self.w.write_event(Event::Empty(Self::element(name, attrs)));
    }

    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let _ = self.w.write_event(Event::Start(Self::element(name, attrs)));
    }

    pub fn end(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_inner()
    }
}

impl IntoResponse for XmlDoc {
    fn into_response(self) -> Response {
        crate::api::typed_answer(self.into_bytes(), XML_CONTENT_TYPE)
    }
}

/// An XML element with its attributes and child elements (text is ignored).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct XmlElement {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlElement>,
}

const MAX_XML_DEPTH: usize = 8;

/// Parses a request document. DTDs are refused outright.
pub fn parse_xml(body: &str) -> Result<XmlElement, String> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err("malformed XML: content after the root element".into());
            }
            Event::Start(e) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err("XML nested too deeply".into());
                }
                stack.push(element_of(&e)?);
            }
            Event::Empty(e) => {
                let el = element_of(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("malformed XML: unexpected end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::DocType(_) => return Err("XML document types are not accepted".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("malformed XML: unclosed element".into());
    }
    root.ok_or_else(|| "empty XML document".into())
}

fn element_of(e: &BytesStart<'_>) -> Result<XmlElement, String> {
    let name = AsRef::<str>::as_ref(&e.name()).to_string();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("malformed XML attribute: {e}"))?;
        let key = AsRef::<str>::as_ref(&a.key).to_string();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("malformed XML attribute {key}: {e}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(XmlElement {
        name,
        attrs,
        children: Vec::new(),
    })
}

/// A JSON object from the body, or a description of what is wrong.
pub fn parse_json_object(body: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(format!("malformed JSON: {e}")),
    }
}

/// The fields of a request, from a JSON object or the root element's attributes,
/// with unknown names refused.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, Value)>);

impl Fields {
    pub fn from_json(map: Map<String, Value>, known: &[&str]) -> Result<Fields, String> {
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            // The older wrapped form writes attributes as "@name".
            let key = k.strip_prefix('@').unwrap_or(&k).to_string();
            if !known.contains(&key.as_str()) {
                return Err(format!("unknown field {key:?}"));
            }
            out.push((key, v));
        }
        Ok(Fields(out))
    }

    pub fn from_xml(el: XmlElement, known: &[&str]) -> Result<Fields, String> {
        let mut out = Vec::with_capacity(el.attrs.len());
        for (k, v) in el.attrs {
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown attribute {k:?}"));
            }
            out.push((k, Value::String(v)));
        }
        Ok(Fields(out))
    }

    /// The raw value of a field (`null` counts as absent).
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("{key} must be a string")),
        }
    }

    /// An integer given as a number or as a numeric string.
    pub fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{key} must be a whole number")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{key} must be a whole number")),
            Some(_) => Err(format!("{key} must be a whole number")),
        }
    }
}

/// Decodes a Base64 (standard alphabet, padding optional) UTF-8 password.
pub fn decode_password(b64: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim()))
        .map_err(|_| "password must be Base64-encoded".to_string())?;
    String::from_utf8(bytes).map_err(|_| "password must be Base64 of UTF-8 text".to_string())
}

/// Reads a request body as UTF-8, in the format its headers or first byte say.
pub enum Body {
    Json(Map<String, Value>),
    Xml(XmlElement),
}

pub fn parse_body(fmt: Format, headers: &HeaderMap, bytes: &[u8]) -> Result<Body, CvError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CvError::bad_request(fmt, "the body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(CvError::bad_request(fmt, "a request body is required"));
    }
    match body_format(headers, bytes) {
        Format::Json => parse_json_object(text)
            .map(Body::Json)
            .map_err(|m| CvError::bad_request(fmt, m)),
        Format::Xml => parse_xml(text)
            .map(Body::Xml)
            .map_err(|m| CvError::bad_request(fmt, m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiates_like_commvault() {
        assert_eq!(Format::from_headers(&HeaderMap::new()), Format::Xml);
        assert_eq!(Format::from_headers(&accept("*/*")), Format::Xml);
        assert_eq!(
            Format::from_headers(&accept("application/json")),
            Format::Json
        );
        assert_eq!(
            Format::from_headers(&accept("application/xml")),
            Format::Xml
        );
        assert_eq!(
            Format::from_headers(&accept("application/json, application/xml;q=0.5")),
            Format::Json
        );
        assert_eq!(
            Format::from_headers(&accept("text/xml, application/json")),
            Format::Xml
        );
    }

    #[test]
    fn parses_xml_with_children_and_escapes() {
        let el = parse_xml(
            r#"<?xml version="1.0"?><Api_LogoffUsersRequest><sessions val="A&amp;B"/><sessions val="C"></sessions></Api_LogoffUsersRequest>"#,
        )
        .unwrap();
        assert_eq!(el.name, "Api_LogoffUsersRequest");
        assert_eq!(el.children.len(), 2);
        assert_eq!(el.children[0].attrs, vec![("val".into(), "A&B".into())]);
    }

    #[test]
    fn refuses_bad_xml() {
        for bad in [
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            r#"<!DOCTYPE x [<!ENTITY e "boom">]><a v="&e;"/>"#,
            "<a v=\"&nope;\"/>",
            "",
        ] {
            assert!(parse_xml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_escaped_xml() {
        let mut d = XmlDoc::new();
        d.empty("x", &[("a", "<\"&'>")]);
        let s = String::from_utf8(d.into_bytes()).unwrap();
        assert!(s.starts_with(r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>"#));
        assert!(s.contains(r#"<x a="&lt;&quot;&amp;&apos;&gt;"/>"#), "{s}");
    }

    #[test]
    fn decodes_base64_passwords() {
        assert_eq!(decode_password("cGFzc3dvcmQ=").unwrap(), "password");
        assert_eq!(decode_password("cGFzc3dvcmQ").unwrap(), "password");
        assert!(decode_password("not base64!").is_err());
        assert!(decode_password("/w==").is_err()); // 0xFF is not UTF-8
    }

    #[test]
    fn fields_refuse_unknown_names_and_read_lenient_ints() {
        let m = parse_json_object(r#"{"a":"x","n":"30","m":5}"#).unwrap();
        let f = Fields::from_json(m, &["a", "n", "m"]).unwrap();
        assert_eq!(f.int("n").unwrap(), Some(30));
        assert_eq!(f.int("m").unwrap(), Some(5));
        assert!(f.int("a").is_err());
        let m = parse_json_object(r#"{"zzz":1}"#).unwrap();
        assert!(Fields::from_json(m, &["a"]).is_err());
    }
}
