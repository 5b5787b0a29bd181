//! HTTP/1.1 framing, strictly (RFC 9112): what a request head says about its body, the chunked
//! decoder, and the gateway's own chunked encoder.
//!
//! Strict in: a head or a chunked body that does not match the grammar is refused (400 and the
//! connection closed), never "recovered", because a target that recovers differently would read
//! a second request where the gateway saw one body. Canonical out: a chunked body is decoded
//! here and sent on in chunks the gateway writes itself ([`encode_chunk`], [`LAST_CHUNK`]);
//! trailers are checked and dropped, chunk extensions are checked and dropped.
//!
//! The rules and their sources are listed in `../shared/reference/http-framing.md`; nginx 1.21.1+
//! is the reference behaviour (400 for `Content-Length` with `Transfer-Encoding`, for
//! `Transfer-Encoding` in HTTP/1.0, for two `Host` headers; 501 for a coding it does not know).

use std::fmt;

/// Longest chunk-size line accepted (size, extensions and CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted (all lines).
const MAX_TRAILERS: usize = 16 * 1024;
/// Largest chunk accepted (a size above it is an overflow attack, not a body).
const MAX_CHUNK: u64 = 1 << 48;
/// Most hex digits in a chunk size (leading zeros included).
const MAX_SIZE_DIGITS: u32 = 16;

/// A request the gateway refuses before routing: the status and what was wrong, for the JSON
/// answer (`error`, `message`). The connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Bad {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Bad {
        Bad {
            status,
            code,
            message: message.into(),
        }
    }

    fn request(message: impl Into<String>) -> Bad {
        Bad::new(400, "bad_request", message)
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// A request's body framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

/// What a request head says about its framing and its connection, once it passed the checks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestFraming {
    /// `None`: no body.
    pub body: Option<BodyFraming>,
    /// `Expect: 100-continue` (HTTP/1.1 only; ignored in HTTP/1.0 as RFC 9110 10.1.1 says).
    pub expect_continue: bool,
    /// The client's connection closes after this exchange.
    pub close: bool,
    /// Header names the client's `Connection` header nominated (hop-by-hop for this request,
    /// not sent on), lower case.
    pub nominated: Vec<String>,
}

/// Whether `b` may appear in a token (RFC 9110 5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// The elements of a comma-separated list value, trimmed (empty elements dropped).
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Header names a client may not nominate in `Connection` (they decide framing or routing).
const PROTECTED: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "te",
    "authorization",
    "proxy-authorization",
];

/// The framing of a parsed request head, under RFC 9112's rules; `Err` is the refusal.
///
/// Refused with 400: `Content-Length` with `Transfer-Encoding`; a `Content-Length` that is not
/// `1*DIGIT`, a list, or differs between two fields; `Transfer-Encoding` in HTTP/1.0, or whose
/// last coding is not `chunked`, or `chunked` twice; no `Host` in HTTP/1.1, or two; a
/// `Connection` token that is no token or nominates a framing or routing field. Refused with
/// 501: a coding before `chunked` (the gateway decodes none). Refused with 417: an `Expect`
/// other than `100-continue`.
pub fn request_framing(
    headers: &[httparse::Header<'_>],
    http10: bool,
) -> Result<RequestFraming, Bad> {
    let mut f = RequestFraming::default();
    let mut length: Option<u64> = None;
    let mut codings: Vec<Vec<u8>> = Vec::new();
    let mut te_seen = false;
    let mut hosts = 0;
    let mut keep_alive = false;
    for h in headers {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let v = trim_ows(h.value);
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Bad::request(
                    "Content-Length must be one decimal number (RFC 9112 6.2); a list, a sign or other characters are refused",
                ));
            }
            let n: u64 = v.iter().fold(0, |a, d| a * 10 + u64::from(d - b'0'));
            match length {
                Some(p) if p != n => {
                    return Err(Bad::request(
                        "two Content-Length fields with different values",
                    ))
                }
                _ => length = Some(n),
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for t in list(h.value) {
                codings.push(t.to_ascii_lowercase());
            }
        } else if n.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if n.eq_ignore_ascii_case("expect") {
            if http10 {
                continue;
            }
            let v = trim_ows(h.value);
            if v.eq_ignore_ascii_case(b"100-continue") && !f.expect_continue {
                f.expect_continue = true;
            } else {
                return Err(Bad::new(
                    417,
                    "expectation_failed",
                    "only Expect: 100-continue is supported",
                ));
            }
        } else if n.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|b| *b == b',').map(trim_ows) {
                if t.is_empty() {
                    continue;
                }
                if !t.iter().all(|b| is_tchar(*b)) {
                    return Err(Bad::request(
                        "a Connection option is not a token (RFC 9110 7.6.1)",
                    ));
                }
                let t = String::from_utf8_lossy(t).to_ascii_lowercase();
                match t.as_str() {
                    "close" => f.close = true,
                    "keep-alive" => keep_alive = true,
                    t if PROTECTED.contains(&t) => {
                        return Err(Bad::request(format!(
                            "Connection may not nominate {t}: it decides the request's framing or routing"
                        )))
                    }
                    _ => {
                        if !f.nominated.contains(&t) {
                            f.nominated.push(t);
                        }
                    }
                }
            }
        }
    }
    if hosts > 1 {
        return Err(Bad::request("more than one Host header (RFC 9112 3.2)"));
    }
    if hosts == 0 && !http10 {
        return Err(Bad::request(
            "an HTTP/1.1 request needs a Host header (RFC 9112 3.2)",
        ));
    }
    if te_seen {
        if http10 {
            return Err(Bad::request(
                "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)",
            ));
        }
        if length.is_some() {
            return Err(Bad::request(
                "Content-Length and Transfer-Encoding together (RFC 9112 6.1): send one of them",
            ));
        }
        match codings.last().map(Vec::as_slice) {
            Some(b"chunked") => {}
            _ => {
                return Err(Bad::request(
                    "Transfer-Encoding must end with chunked in a request (RFC 9112 6.3)",
                ))
            }
        }
        if codings.len() > 1 {
            if codings[..codings.len() - 1]
                .iter()
                .any(|c| c.as_slice() == b"chunked")
            {
                return Err(Bad::request("chunked applied more than once"));
            }
            return Err(Bad::new(
                501,
                "not_implemented",
                "only Transfer-Encoding: chunked is supported; other codings are not decoded",
            ));
        }
        f.body = Some(BodyFraming::Chunked);
    } else if let Some(n) = length {
        if n > 0 {
            f.body = Some(BodyFraming::Length(n));
        }
    }
    if http10 && !keep_alive {
        f.close = true;
    }
    Ok(f)
}

/// Framing of a message body (RFC 9112 6.3 for responses; a streamed request body is `Length`
/// or `Chunked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The body framing of a final response head (RFC 9112 6.3), the one rule for every reader of
/// a target's answer (the lean loop's relay, the admin's calls): no body after HEAD, 1xx/101,
/// 204 and 304; the last transfer coding decides (`chunked`, else read to the close); a single
/// decimal `Content-Length` (repeats must agree). Refused: a `Content-Length` that is not one
/// number or differs between fields, and an answer framed both ways (which one the target meant
/// is a guess, and a wrong guess desynchronises the connection; nginx refuses it too).
pub fn response_framing(
    status: u16,
    headers: &[httparse::Header<'_>],
    no_body: bool,
) -> Result<Framing, &'static str> {
    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(the last coding is chunked)
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = trim_ows(h.value);
            let n = (!v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit))
                .then(|| v.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')));
            match (n, length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(p)) if v == p => {}
                _ => return Err("invalid Content-Length in the response"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The codings of every field, in order: the last one decides.
            match list(h.value).last() {
                Some(last) => te = Some(last.eq_ignore_ascii_case(b"chunked")),
                None if te.is_none() => te = Some(false),
                None => {}
            }
        }
    }
    if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    Ok(match (te, length) {
        (Some(_), Some(_)) => {
            return Err("the response has both Content-Length and Transfer-Encoding")
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) | (None, None) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
    })
}

/// Whether `b` may stand in a request-target as it is (RFC 3986: unreserved, sub-delims, `:`,
/// `@`, `/`, `?`, and `%` which must start a `%XX` escape).
fn uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// Checks a request-target, or a URL sent in a header, against RFC 3986's characters: every
/// `%` starts a two-digit escape, and nothing else (space, tab, quotes, braces, backslash,
/// control or non-ASCII bytes) stands as it is. `what` names the field in the refusal.
pub fn check_uri_chars(s: &str, what: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(format!(
                    "{what}: '%' at byte {i} does not start a %XX escape; encode '%' as %25"
                ));
            }
            i += 3;
            continue;
        }
        if !uri_char(c) {
            let shown = match c {
                b' ' => "a space".to_string(),
                b'\t' => "a tab".to_string(),
                0x21..=0x7e => format!("'{}'", c as char),
                _ => format!("byte 0x{c:02x}"),
            };
            return Err(format!(
                "{what}: {shown} at byte {i} is not allowed in a URL (RFC 3986); percent-encode it"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// Resolves a path (with its query) for matching and sending: refuses `%2F`, `%5C` and encoded
/// dot-segments (an origin that decodes them would reach what the gateway never matched), and
/// removes dot-segments (RFC 3986 5.2.4), so `/api/../admin` becomes `/admin` before it is
/// compared with an allowlist, and that is what the target receives. The query is kept as it is.
pub fn resolve_path(path_query: &str) -> Result<String, String> {
    let (path, query) = match path_query.find('?') {
        Some(q) => path_query.split_at(q),
        None => (path_query, ""),
    };
    // The common case, on every request: no escape, no backslash and no segment starting with
    // a dot, so nothing to refuse or resolve.
    if path.starts_with('/') && !path.contains(['%', '\\']) && !path.contains("/.") {
        return Ok(path_query.to_string());
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%00") {
        return Err("the path contains an encoded NUL (%00): refused".into());
    }
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(
            "the path contains an encoded '/' (%2F) or a backslash (%5C, \\): refused, since the target could decode it into a path the gateway never matched".into(),
        );
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate() {
        if i == 0 {
            continue; // before the leading '/'
        }
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        // `..;x` is `..` to servers that strip path parameters (Tomcat, Jetty): a dot-segment
        // the gateway would not resolve, so it is refused.
        let bare = decoded.split(';').next().unwrap_or("");
        if bare != decoded && (bare == "." || bare == "..") {
            return Err(format!(
                "the path has a dot-segment with parameters ({seg:?}): refused, since a target that strips ';' parameters would resolve it"
            ));
        }
        let dot = decoded == "." || decoded == "..";
        if dot && decoded.len() != seg.len() {
            return Err(format!(
                "the path has an encoded dot-segment ({seg:?}): refused; send '.' and '..' unencoded, or resolve them"
            ));
        }
        match decoded.as_str() {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            _ => out.push(seg),
        }
    }
    let mut p = String::with_capacity(path_query.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() {
        p.push('/');
    }
    p.push_str(query);
    Ok(p)
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line, extension, data end or trailer line off the grammar.
    Syntax,
    /// A chunk size over the bound, or too many digits.
    TooLarge,
    /// A size line or the trailers over their bounds.
    LineTooLong,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::Syntax => "malformed chunked framing (RFC 9112 7.1)",
            ChunkError::TooLarge => "chunk size too large",
            ChunkError::LineTooLong => "chunk-size line or trailers too long",
        })
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum St {
    #[default]
    Size,
    /// Whitespace after the size: only `;` may follow.
    SizeWs,
    /// Before an extension name (after `;` and optional whitespace).
    ExtName0,
    ExtName,
    /// After a name: whitespace, `=`, `;` or CR.
    ExtAfterName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtVal0,
    ExtValTok,
    ExtValQuoted,
    ExtValQuotedEsc,
    /// After a value: whitespace, `;` or CR.
    ExtAfterVal,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// A strict, incremental decoder of a chunked body (RFC 9112 7.1): sizes, extensions (checked,
/// dropped), data, the last chunk and the trailer section (checked, dropped). Bare LF or bare CR
/// as a line end, junk after a size, an overflowing size, data not followed by CRLF: errors.
#[derive(Debug, Default, Clone)]
pub struct ChunkedDecoder {
    st: St,
    size: u64,
    digits: u32,
    line: usize,
    trailers: usize,
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// The whole body was read.
    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Feed the next bytes; the chunks' data is appended to `out`. `Ok(Some(n))`: the body ended
    /// after `n` bytes of `buf` (the rest belongs to what follows); `Ok(None)`: all of `buf` was
    /// taken and the body goes on.
    pub fn feed(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            if self.st == St::Data {
                let n = ((buf.len() - i) as u64).min(self.size) as usize;
                out.extend_from_slice(&buf[i..i + n]);
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.st = St::DataCr;
                }
                continue;
            }
            if self.st == St::Done {
                return Ok(Some(i));
            }
            let b = buf[i];
            i += 1;
            self.step(b)?;
            if self.st == St::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use St::*;
        let in_size_line = matches!(
            self.st,
            Size | SizeWs
                | ExtName0
                | ExtName
                | ExtAfterName
                | ExtVal0
                | ExtValTok
                | ExtValQuoted
                | ExtValQuotedEsc
                | ExtAfterVal
                | SizeLf
        );
        if in_size_line {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(ChunkError::LineTooLong);
            }
        }
        let ws = b == b' ' || b == b'\t';
        self.st = match (self.st, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > MAX_SIZE_DIGITS {
                    return Err(ChunkError::TooLarge);
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                self.size = self.size.checked_mul(16).ok_or(ChunkError::TooLarge)? + d;
                if self.size > MAX_CHUNK {
                    return Err(ChunkError::TooLarge);
                }
                Size
            }
            (Size, b'\r') if self.digits > 0 => SizeLf,
            (Size, b';') if self.digits > 0 => ExtName0,
            (Size, _) if ws && self.digits > 0 => SizeWs,
            (SizeWs, _) if ws => SizeWs,
            (SizeWs, b';') => ExtName0,
            (ExtName0, _) if ws => ExtName0,
            (ExtName0, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName | ExtAfterName, _) if ws => ExtAfterName,
            (ExtName | ExtAfterName, b'=') => ExtVal0,
            (ExtName | ExtAfterName | ExtValTok | ExtAfterVal, b';') => ExtName0,
            (ExtName | ExtAfterName | ExtValTok | ExtAfterVal, b'\r') => SizeLf,
            (ExtVal0, _) if ws => ExtVal0,
            (ExtVal0, b'"') => ExtValQuoted,
            (ExtVal0 | ExtValTok, _) if is_tchar(b) => ExtValTok,
            (ExtValTok | ExtAfterVal, _) if ws => ExtAfterVal,
            (ExtValQuoted, b'"') => ExtAfterVal,
            (ExtValQuoted, b'\\') => ExtValQuotedEsc,
            (ExtValQuoted, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                ExtValQuoted
            }
            (ExtValQuotedEsc, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                ExtValQuoted
            }
            (SizeLf, b'\n') => {
                self.line = 0;
                self.digits = 0;
                if self.size == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_tchar(b) => {
                self.trailer_byte()?;
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => {
                self.trailer_byte()?;
                TrailerName
            }
            (TrailerName, b':') => {
                self.trailer_byte()?;
                TrailerValue
            }
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                self.trailer_byte()?;
                TrailerValue
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkError::Syntax),
        };
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }
}

/// Append `data` as one chunk of the gateway's own framing (nothing for empty data: an empty
/// chunk would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body the gateway writes: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut end = None;
        let mut seen = 0;
        for p in parts {
            if let Some(n) = d.feed(p, &mut out)? {
                end = Some(seen + n);
                break;
            }
            seen += p.len();
        }
        Ok((out, end))
    }

    #[test]
    fn chunked_bodies_decode_across_every_split() {
        let body = b"5;a=b;c=\"x;y\"\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            let (data, end) = decode_all(&[a, b]).expect("valid");
            assert_eq!(data, b"hello world", "cut at {cut}");
            assert_eq!(end, Some(body.len() - 4), "cut at {cut}");
        }
    }

    #[test]
    fn chunked_framing_off_the_grammar_is_refused() {
        let bad: &[&[u8]] = &[
            b"5\nhello\r\n0\r\n\r\n",         // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",         // bare LF after the data
            b"5\rhello\r\n0\r\n\r\n",         // bare CR
            b"5\r\nhelloXX0\r\n\r\n",         // data longer than the size
            b"0x5\r\nhello\r\n0\r\n\r\n",     // 0x prefix
            b"+5\r\nhello\r\n0\r\n\r\n",      // sign
            b"-1\r\n",                        // negative
            b" 5\r\nhello\r\n0\r\n\r\n",      // leading space
            b"5 \r\nhello\r\n0\r\n\r\n",      // whitespace without an extension
            b"5 x\r\nhello\r\n0\r\n\r\n",     // junk after the size
            b"5;\r\nhello\r\n0\r\n\r\n",      // empty extension name
            b"5;a=\r\nhello\r\n0\r\n\r\n",    // empty extension value
            b"5;a=\"b\r\nhello\r\n0\r\n\r\n", // unterminated quoted value
            b"5_0\r\n",                       // underscore
            b"fffffffffffffffff\r\n",         // overflow
            b"\r\n",                          // no size
            b"0\r\n\n",                       // bare LF at the end
            b"0\r\nx: 1\n\r\n",               // bare LF after a trailer
            b"0\r\n x: 1\r\n\r\n",            // obs-fold trailer
            b"0\r\nx : 1\r\n\r\n",            // space before the colon
            b"0\r\nx\r\n\r\n",                // trailer without a colon
        ];
        for b in bad {
            assert!(
                decode_all(&[b]).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn extensions_and_whitespace_before_semicolons_follow_the_grammar() {
        let ok: &[&[u8]] = &[
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5\t; a = b ; c=\"d\\\"e\"\r\nhello\r\n0\r\n\r\n",
            b"005\r\nhello\r\n000\r\n\r\n",
            b"5\r\nhello\r\n0;last\r\nT: v\r\nU:\r\n\r\n",
        ];
        for b in ok {
            let (data, end) = decode_all(&[b]).expect("valid");
            assert_eq!(data, b"hello");
            assert_eq!(end, Some(b.len()));
        }
    }

    #[test]
    fn encoded_chunks_decode_to_the_data() {
        let mut out = Vec::new();
        encode_chunk(b"abc", &mut out);
        encode_chunk(b"", &mut out);
        encode_chunk(&[7u8; 300], &mut out);
        out.extend_from_slice(LAST_CHUNK);
        let (data, end) = decode_all(&[&out]).expect("valid");
        assert_eq!(data.len(), 303);
        assert_eq!(end, Some(out.len()));
    }

    fn framing(head: &[u8]) -> Result<RequestFraming, Bad> {
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut hdrs);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            other => panic!("{other:?}"),
        }
        let http10 = req.version == Some(0);
        request_framing(req.headers, http10)
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let ok = |h: &str| framing(h.as_bytes()).expect(h);
        let bad = |h: &str| framing(h.as_bytes()).expect_err(h).status;
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").body,
            Some(BodyFraming::Length(5))
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").body,
            Some(BodyFraming::Length(5))
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            Some(BodyFraming::Chunked)
        );
        assert_eq!(ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n").body, None);
        assert!(ok("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo, close\r\n\r\n").nominated,
            vec!["x-foo".to_string()]
        );
        for h in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: \"x\"\r\n\r\n",
        ] {
            assert_eq!(bad(h), 400, "{h}");
        }
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"),
            417
        );
    }

    #[test]
    fn paths_are_resolved_and_encoded_separators_refused() {
        let r = |p: &str| resolve_path(p);
        assert_eq!(r("/api/../other").as_deref(), Ok("/other"));
        assert_eq!(r("/api/./x/../y?q=/../z").as_deref(), Ok("/api/y?q=/../z"));
        assert_eq!(r("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(r("/../../etc").as_deref(), Ok("/etc"));
        assert_eq!(r("/").as_deref(), Ok("/"));
        assert_eq!(r("/a//b").as_deref(), Ok("/a//b"));
        for p in [
            "/api/%2e%2e/other",
            "/api/.%2E/other",
            "/api/%2e/x",
            "/api%2fother",
            "/api/%5c..",
            "/api\\..\\x",
            "/api/..;/other",
            "/api/.;x/y",
            "/api/%2e%2e;a/b",
            "/api/x%00.json",
        ] {
            assert!(r(p).is_err(), "{p}");
        }
        assert!(check_uri_chars("/a/b?c=d&e=%20", "t").is_ok());
        for p in ["/a b", "/a\tb", "/a\"b", "/{x}", "/a%2", "/a%zz", "/é"] {
            assert!(check_uri_chars(p, "t").is_err(), "{p}");
        }
    }
}

/// Property tests of the codec: split and mutated inputs (proptest).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Decode `input` fed in the pieces `cuts` makes; `Ok((data, end))`.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in points.into_iter().chain(std::iter::once(input.len())) {
            if to < from {
                continue;
            }
            if let Some(n) = d.feed(&input[from..to], &mut out)? {
                return Ok((out, Some(from + n)));
            }
            from = to;
        }
        Ok((out, None))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// decode(encode(x)) = x, however the encoded bytes are split, and the end is found
        /// exactly where the gateway's framing ends (bytes after it are the next message's).
        #[test]
        fn chunks_the_gateway_writes_decode_to_their_data_across_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                encode_chunk(c, &mut wire);
            }
            wire.extend_from_slice(LAST_CHUNK);
            let end = wire.len();
            wire.extend_from_slice(&tail);
            let (data, got_end) = decode_split(&wire, &cuts).expect("the gateway's own framing decodes");
            prop_assert_eq!(data, chunks.concat());
            prop_assert_eq!(got_end, Some(end));
        }

        /// Any change of one byte of a valid body, or arbitrary bytes, never panics, and a body
        /// that still decodes never yields more data than its bytes (no overflow, no runaway).
        #[test]
        fn mutated_and_random_input_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
            at in any::<usize>(),
            byte in any::<u8>(),
            random in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                encode_chunk(c, &mut wire);
            }
            wire.extend_from_slice(LAST_CHUNK);
            let i = at % wire.len();
            wire[i] = byte;
            for input in [&wire, &random] {
                if let Ok((data, end)) = decode_split(input, &cuts) {
                    prop_assert!(data.len() <= input.len());
                    if let Some(e) = end {
                        prop_assert!(e <= input.len());
                    }
                }
            }
        }

        /// Resolving a path is idempotent and leaves no dot-segment behind.
        #[test]
        fn resolved_paths_have_no_dot_segments_and_resolve_to_themselves(
            segs in proptest::collection::vec(prop_oneof![
                Just(".".to_string()), Just("..".to_string()), Just(String::new()),
                "[a-z0-9]{1,4}", "%2[eE]", "\\.[a-z]"
            ], 0..8),
            query in proptest::option::of("[a-z=&/.]{0,8}"),
        ) {
            let mut p = String::new();
            for s in &segs {
                p.push('/');
                p.push_str(s);
            }
            if p.is_empty() {
                p.push('/');
            }
            if let Some(q) = &query {
                p.push('?');
                p.push_str(q);
            }
            if let Ok(r) = resolve_path(&p) {
                let path = r.split('?').next().unwrap_or("");
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.split('/').any(|s| s == "." || s == ".."), "{} -> {}", p, r);
                let again = resolve_path(&r);
                prop_assert_eq!(again.as_deref(), Ok(r.as_str()));
            }
        }

        /// The head checks never panic, whatever the fields.
        #[test]
        fn request_framing_never_panics(
            fields in proptest::collection::vec(
                (prop_oneof![Just("content-length"), Just("transfer-encoding"), Just("host"),
                    Just("connection"), Just("expect"), Just("x-other")],
                 proptest::collection::vec(any::<u8>(), 0..24)),
                0..6),
            http10 in any::<bool>(),
        ) {
            let hs: Vec<httparse::Header<'_>> = fields
                .iter()
                .map(|(n, v)| httparse::Header { name: n, value: v })
                .collect();
            let _ = request_framing(&hs, http10);
        }
    }
}
