//! Differential framing tests (issue 19, part 4): byte strings a client sends on one connection
//! to the proxy listener, routed to a strict recording target (`strict_target`: hyper's HTTP/1.1
//! server behind mTLS) that logs every request it parsed and every byte it received.
//!
//! Every case gets a target port of its own, and so a mapping (`https://localhost:PORT/*`, the
//! same certificate for all) and an upstream pool key of its own: a connection one case poisons
//! cannot hide in the pool until a later case. Per case:
//! 1. the case's bytes are sent on a fresh connection (in parts with a pause, for the split
//!    cases) and the gateway's answers are read until it closes the connection, until they are
//!    complete (plus a short grace), or a 2 s deadline;
//! 2. a second client on a new connection sends one clean `GET {P}/second` with the same
//!    identity (it would get a pooled, possibly poisoned upstream connection) and must get the
//!    answer to its own request (`seen:<n>:GET {P}/second`);
//! 3. what the target parsed on the case's port (less the second client's request) must be
//!    exactly the requests of one of the case's allowed outcomes (method, path, whole body,
//!    decoded for chunked cases), each answered to the client in order, then, for a refusal,
//!    one answer of the gateway's own with an allowed status (not the target's `body-failed`
//!    400 relayed) and, for framing errors, the connection closed. The one thing tolerated in a
//!    refusal: the target may have parsed the refused request's head if the gateway forwarded
//!    it before it found the error in the body and then cut the upstream connection (its body
//!    never completed, so it is not a request the target parsed whole);
//! 4. every request the target parsed carries the mapping's certificate, and every byte each
//!    target connection received is canonical framing as a re-framing gateway writes it
//!    (`strict_target::canonical`: CRLF only, no `Content-Length` with `Transfer-Encoding`, one
//!    plain `Content-Length`, chunk-size lines of hex digits alone without extensions or
//!    leading zeros, plain trailer fields): the client's chunk framing never passes through.
//!
//! A case has one outcome when RFC 9112/9110 (and the rules in
//! `shared/reference/http-framing.md`) leave no choice; where they let a recipient either accept
//! or refuse (trailing whitespace in a field value, `Content-Length: 5, 5`, bare LF as a line
//! end, obs-fold replaced by SP, ...) it lists both, and only the accepted variant's requests
//! may reach the target.
//!
//! Cases run four at a time (each on its own port, so they cannot disturb one another); all run,
//! failures are collected and reported by name (`family/case`, with the case's path prefix) at
//! the end. `FRAMING_VERBOSE=1` prints what happened in every case, passed or not.
//!
//! A second test sends requests to a raw target that answers with ambiguous framing (CL+TE,
//! two `Content-Length`s, bad chunks, ...): such an answer must not be forwarded, and the
//! connection it came on must not carry the next request.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::strict_target::{Record, StrictTarget};

/// How long the first client waits for the gateway's answers (from its last write).
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// After the answers an outcome needs have arrived: how long to wait for anything extra.
const GRACE: Duration = Duration::from_millis(150);
/// The second client's deadline.
const SECOND_DEADLINE: Duration = Duration::from_secs(3);
const WORKERS: usize = 4;

// ---------------------------------------------------------------------------------------------
// Cases

/// What a case's bytes are built from: the target's authority (`localhost:PORT`) and the
/// case's path prefix (`/c017`).
struct Cx {
    h: String,
    p: String,
}

impl Cx {
    /// A distinctive request that must never be parsed by the target unless the case sends it
    /// as a properly framed request of its own.
    fn smug(&self) -> String {
        format!(
            "GET {}/smuggled HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.p, self.h
        )
    }

    /// A clean pipelined request.
    fn next(&self) -> String {
        format!("GET {}/next HTTP/1.1\r\nHost: {}\r\n\r\n", self.p, self.h)
    }

    /// `s` with `{SMUG}`, `{NEXT}`, `{H}` and `{P}` filled in.
    fn t(&self, s: &str) -> Vec<u8> {
        s.replace("{SMUG}", &self.smug())
            .replace("{NEXT}", &self.next())
            .replace("{H}", &self.h)
            .replace("{P}", &self.p)
            .into_bytes()
    }

    fn path(&self, s: &str) -> String {
        format!("{}{s}", self.p)
    }

    fn exp(&self, method: &str, path: &str, body: &[u8]) -> Exp {
        Exp {
            method: method.into(),
            path: self.path(path),
            body: body.to_vec(),
            host: None,
        }
    }

    fn get(&self, path: &str) -> Exp {
        self.exp("GET", path, b"")
    }

    fn post(&self, path: &str, body: &[u8]) -> Exp {
        self.exp("POST", path, body)
    }

    fn next_exp(&self) -> Exp {
        self.get("/next")
    }

    fn smug_exp(&self) -> Exp {
        self.get("/smuggled")
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A chunked body of these chunks (lower-case hex sizes), then the last chunk and an empty
/// trailer section.
fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A request the target must have parsed.
#[derive(Clone, Debug)]
struct Exp {
    method: String,
    path: String,
    body: Vec<u8>,
    /// The `Host` the target must have received, when the case is about it.
    host: Option<String>,
}

/// How the client's connection ends after the served requests.
#[derive(Clone, Debug)]
enum End {
    /// No more answers (the connection may stay open or close).
    Open,
    /// No more answers, and the gateway closed the connection.
    Closed,
    /// One more answer with one of these statuses (the gateway's refusal); `close`: then the
    /// connection is closed.
    Refused {
        statuses: &'static [u16],
        close: bool,
    },
}

/// One acceptable result of a case: the requests served (in order, each answered), how the
/// connection ends, and for a refusal that leaves the connection open, the requests served after
/// it.
#[derive(Clone, Debug)]
struct Outcome {
    served: Vec<Exp>,
    end: End,
    after: Vec<Exp>,
}

fn served(v: Vec<Exp>) -> Outcome {
    Outcome {
        served: v,
        end: End::Open,
        after: vec![],
    }
}

fn served_then_closed(v: Vec<Exp>) -> Outcome {
    Outcome {
        served: v,
        end: End::Closed,
        after: vec![],
    }
}

/// Refused with one of `statuses`, nothing reaches the target, the connection is closed.
fn refused(statuses: &'static [u16]) -> Outcome {
    served_then_refused(vec![], statuses)
}

fn served_then_refused(v: Vec<Exp>, statuses: &'static [u16]) -> Outcome {
    Outcome {
        served: v,
        end: End::Refused {
            statuses,
            close: true,
        },
        after: vec![],
    }
}

/// A refusal after which the connection may stay open (routing refusals, not framing errors).
fn refused_open(statuses: &'static [u16]) -> Outcome {
    refused_then(statuses, vec![])
}

/// A refusal after which the connection stays open and the (properly framed) requests sent
/// after the refused one are served.
fn refused_then(statuses: &'static [u16], after: Vec<Exp>) -> Outcome {
    Outcome {
        served: vec![],
        end: End::Refused {
            statuses,
            close: false,
        },
        after,
    }
}

const BAD: &[u16] = &[400];
const BAD_OR_501: &[u16] = &[400, 501];
const BAD_OR_505: &[u16] = &[400, 505];
const TOO_LARGE: &[u16] = &[400, 413, 414, 431];
/// A body length beyond what a gateway could take (or overflowing u64).
const TOO_BIG_BODY: &[u16] = &[400, 413];

/// A case's bytes and what may come of them.
struct Built {
    /// Written in order; `pause` between two parts.
    parts: Vec<Vec<u8>>,
    pause: Duration,
    outcomes: Vec<Outcome>,
}

impl Built {
    fn one(bytes: Vec<u8>, outcomes: Vec<Outcome>) -> Built {
        Built {
            parts: vec![bytes],
            pause: Duration::ZERO,
            outcomes,
        }
    }
}

type Build = Box<dyn Fn(&Cx) -> Built + Send + Sync>;

struct Case {
    family: &'static str,
    name: String,
    build: Build,
}

struct Cases(Vec<Case>);

impl Cases {
    fn add(
        &mut self,
        family: &'static str,
        name: &str,
        build: impl Fn(&Cx) -> Built + Send + Sync + 'static,
    ) {
        let name = format!("{family}/{name}");
        assert!(
            !self.0.iter().any(|c| c.name == name),
            "duplicate case name {name}"
        );
        self.0.push(Case {
            family,
            name,
            build: Box::new(build),
        });
    }

    /// A case of one write.
    fn one(
        &mut self,
        family: &'static str,
        name: &str,
        build: impl Fn(&Cx) -> (Vec<u8>, Vec<Outcome>) + Send + Sync + 'static,
    ) {
        self.add(family, name, move |cx| {
            let (bytes, outcomes) = build(cx);
            Built::one(bytes, outcomes)
        });
    }
}

/// How a `Transfer-Encoding` header line (or lines) is to be read.
#[derive(Clone, Copy, PartialEq)]
enum Te {
    /// A valid `chunked` (coding names are case-insensitive; OWS around the value).
    Valid,
    /// Valid to a lenient reading, refusable to a strict one (trailing whitespace, an empty
    /// list element, obs-fold replaced by SP, a coding before `chunked`).
    Lenient,
    /// Not a `Transfer-Encoding` header at all to a recipient that accepts it (a different
    /// field name, or a line folded into the previous field); or refused.
    Other,
    /// Must be refused.
    Invalid,
}

const TE_LINES: &[(&str, &str, Te)] = &[
    ("plain", "Transfer-Encoding: chunked", Te::Valid),
    ("upper_value", "Transfer-Encoding: CHUNKED", Te::Valid),
    (
        "lower_name_mixed_value",
        "transfer-encoding: Chunked",
        Te::Valid,
    ),
    ("no_space", "Transfer-Encoding:chunked", Te::Valid),
    ("tab_before_value", "Transfer-Encoding:\tchunked", Te::Valid),
    ("trailing_space", "Transfer-Encoding: chunked ", Te::Lenient),
    ("trailing_tab", "Transfer-Encoding: chunked\t", Te::Lenient),
    (
        "empty_list_element",
        "Transfer-Encoding: , chunked",
        Te::Lenient,
    ),
    (
        "gzip_chunked",
        "Transfer-Encoding: gzip, chunked",
        Te::Lenient,
    ),
    (
        "obs_fold_value",
        "Transfer-Encoding:\r\n chunked",
        Te::Lenient,
    ),
    ("xchunked", "Transfer-Encoding: xchunked", Te::Invalid),
    ("chunkedx", "Transfer-Encoding: chunkedx", Te::Invalid),
    (
        "chunked_identity",
        "Transfer-Encoding: chunked, identity",
        Te::Invalid,
    ),
    (
        "identity_chunked",
        "Transfer-Encoding: identity, chunked",
        Te::Invalid,
    ),
    ("identity", "Transfer-Encoding: identity", Te::Invalid),
    ("quoted", "Transfer-Encoding: \"chunked\"", Te::Invalid),
    (
        "duplicated",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        Te::Invalid,
    ),
    (
        "dup_then_identity",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        Te::Invalid,
    ),
    (
        "identity_then_dup",
        "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
        Te::Invalid,
    ),
    (
        "chunked_twice",
        "Transfer-Encoding: chunked, chunked",
        Te::Invalid,
    ),
    (
        "space_before_colon",
        "Transfer-Encoding : chunked",
        Te::Invalid,
    ),
    (
        "tab_before_colon",
        "Transfer-Encoding\t: chunked",
        Te::Invalid,
    ),
    ("vertical_tab", "Transfer-Encoding:\x0bchunked", Te::Invalid),
    (
        "nul_after_value",
        "Transfer-Encoding: chunked\0",
        Te::Invalid,
    ),
    (
        "kelvin_sign",
        "Transfer-Encoding: chun\u{212a}ed",
        Te::Invalid,
    ),
    ("empty_value", "Transfer-Encoding: ", Te::Invalid),
    (
        "chunked_param",
        "Transfer-Encoding: chunked;q=1",
        Te::Invalid,
    ),
    ("underscore_name", "Transfer_Encoding: chunked", Te::Other),
    (
        "folded_into_previous",
        "X-Pad: 1\r\n Transfer-Encoding: chunked",
        Te::Other,
    ),
];

/// CL.TE, TE.CL and TE-only with every `Transfer-Encoding` line above.
fn te_families(c: &mut Cases) {
    for &(name, line, kind) in TE_LINES {
        // CL.TE: Content-Length covers a last chunk and a smuggled request.
        c.one("cl_te", name, move |cx| {
            let body = cx.t("0\r\n\r\n{SMUG}");
            let bytes = cat(&[
                &cx.t(&format!(
                    "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\n{line}\r\n\r\n",
                    body.len()
                )),
                &body,
            ]);
            let mut o = vec![refused(BAD_OR_501)];
            if kind == Te::Other {
                o.push(served(vec![cx.post("/a", &body)]));
            }
            (bytes, o)
        });
        // TE.CL: Content-Length covers the chunk-size line only; the chunk is a request.
        c.one("te_cl", name, move |cx| {
            let smug = cx.smug();
            let size = format!("{:x}\r\n", smug.len());
            let bytes = cat(&[
                &cx.t(&format!(
                    "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\n{line}\r\nContent-Length: {}\r\n\r\n",
                    size.len()
                )),
                size.as_bytes(),
                smug.as_bytes(),
                b"\r\n0\r\n\r\n",
            ]);
            let mut o = vec![refused(BAD_OR_501)];
            if kind == Te::Other {
                // Framed by Content-Length alone, the chunk is a request of its own, and what
                // follows it ("\r\n0\r\n\r\n") is not.
                o.push(served_then_refused(
                    vec![cx.post("/a", size.as_bytes()), cx.smug_exp()],
                    BAD,
                ));
            }
            (bytes, o)
        });
        // TE only: one chunk whose data is a request, then a clean pipelined request.
        c.one("te_only", name, move |cx| {
            let smug = cx.smug();
            let body = chunked(&[smug.as_bytes()]);
            let bytes = cat(&[
                &cx.t(&format!(
                    "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\n{line}\r\n\r\n"
                )),
                &body,
                cx.next().as_bytes(),
            ]);
            let valid = served(vec![cx.post("/a", smug.as_bytes()), cx.next_exp()]);
            let o = match kind {
                Te::Valid => vec![valid],
                Te::Lenient => vec![valid, refused(BAD_OR_501)],
                Te::Invalid => vec![refused(BAD_OR_501)],
                // No body: the chunk-size line is then read as a request line.
                Te::Other => vec![
                    refused(BAD_OR_501),
                    served_then_refused(vec![cx.post("/a", b"")], BAD),
                ],
            };
            (bytes, o)
        });
    }
}

/// Content-Length values (no Transfer-Encoding): the body is `hello`, then a clean pipelined
/// request.
fn cl_family(c: &mut Cases) {
    // (name, header lines, valid to a strict reading, valid to a lenient one)
    const CL: &[(&str, &str, bool, bool)] = &[
        ("plain", "Content-Length: 5", true, true),
        ("plus", "Content-Length: +5", false, false),
        ("list_same", "Content-Length: 5,5", false, true),
        ("list_same_space", "Content-Length: 5, 5", false, true),
        ("list_trailing_comma", "Content-Length: 5,", false, true),
        ("list_diff", "Content-Length: 5, 6", false, false),
        ("list_diff_rev", "Content-Length: 6, 5", false, false),
        (
            "two_headers_same",
            "Content-Length: 5\r\nContent-Length: 5",
            false,
            true,
        ),
        (
            "two_headers_diff",
            "Content-Length: 5\r\nContent-Length: 6",
            false,
            false,
        ),
        (
            "two_headers_diff_rev",
            "Content-Length: 6\r\nContent-Length: 5",
            false,
            false,
        ),
        (
            "two_headers_zero_first",
            "Content-Length: 0\r\nContent-Length: 5",
            false,
            false,
        ),
        ("negative", "Content-Length: -5", false, false),
        (
            "huge",
            "Content-Length: 99999999999999999999999",
            false,
            false,
        ),
        // 2^64 + 5: wraps to 5 in unchecked u64 arithmetic.
        (
            "u64_wrap",
            "Content-Length: 18446744073709551621",
            false,
            false,
        ),
        ("hex", "Content-Length: 0x5", false, false),
        ("leading_zeros", "Content-Length: 005", false, true),
        ("trailing_space", "Content-Length: 5 ", false, true),
        ("leading_tab", "Content-Length:\t5", true, true),
        ("inner_space", "Content-Length: 5 5", false, false),
        ("empty", "Content-Length: ", false, false),
        ("alpha_suffix", "Content-Length: 5a", false, false),
        ("decimal", "Content-Length: 5.0", false, false),
        ("exponent", "Content-Length: 5e0", false, false),
        ("fullwidth_digit", "Content-Length: \u{ff15}", false, false),
        ("comma_only", "Content-Length: ,", false, false),
        ("space_before_colon", "Content-Length : 5", false, false),
        ("obs_fold", "Content-Length:\r\n 5", false, true),
        ("obs_text", "Content-Length: 5\u{e9}", false, false),
        ("underscore_name", "Content_Length: 5", false, false),
    ];
    for &(name, line, strict, lenient) in CL {
        c.one("content_length", name, move |cx| {
            let bytes = cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\n{line}\r\n\r\nhello{{NEXT}}"
            ));
            let valid = served(vec![cx.post("/a", b"hello"), cx.next_exp()]);
            let mut o = match (strict, lenient) {
                (true, _) => vec![valid],
                (false, true) => vec![valid, refused(BAD)],
                (false, false) => vec![refused(if name == "huge" || name == "u64_wrap" {
                    TOO_BIG_BODY
                } else {
                    BAD
                })],
            };
            if name == "underscore_name" {
                // Not a Content-Length: no body, then "hello" + the next request line.
                o.push(served_then_refused(vec![cx.post("/a", b"")], BAD_OR_501));
                // ... unless it is: "helloGET" is a token, so a method.
                o.push(served(vec![
                    cx.post("/a", b""),
                    cx.exp("helloGET", "/next", b""),
                ]));
            }
            (bytes, o)
        });
    }
    c.one("content_length", "get_with_body", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello{NEXT}");
        (
            bytes,
            vec![served(vec![cx.exp("GET", "/a", b"hello"), cx.next_exp()])],
        )
    });
    c.one("content_length", "body_is_a_request", |cx| {
        let smug = cx.smug();
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\n\r\n",
                smug.len()
            )),
            smug.as_bytes(),
        ]);
        (bytes, vec![served(vec![cx.post("/a", smug.as_bytes())])])
    });
}

/// Chunk-size lines (Transfer-Encoding: chunked alone): the chunk's data is a request.
fn chunk_size_family(c: &mut Cases) {
    // (name, size line from the data length, valid to a strict reading, to a lenient one)
    type SizeFn = fn(usize) -> String;
    const SIZES: &[(&str, SizeFn, bool, bool)] = &[
        ("lower_hex", |n| format!("{n:x}"), true, true),
        (
            "leading_zeros",
            |n| format!("000000000000000000000{n:x}"),
            false,
            true,
        ),
        ("hex_prefix", |n| format!("0x{n:x}"), false, false),
        ("plus", |n| format!("+{n:x}"), false, false),
        ("minus", |n| format!("-{n:x}"), false, false),
        ("minus_one", |_| "-1".into(), false, false),
        ("space_semicolon", |n| format!("{n:x} ;"), false, false),
        ("trailing_space", |n| format!("{n:x} "), false, false),
        ("trailing_tab", |n| format!("{n:x}\t"), false, false),
        ("leading_space", |n| format!(" {n:x}"), false, false),
        ("leading_tab", |n| format!("\t{n:x}"), false, false),
        // 2^64 + n: wraps to n in unchecked arithmetic.
        ("overflow_wraps", |n| format!("1{n:016x}"), false, false),
        ("u64_max", |_| "ffffffffffffffff".into(), false, false),
        ("overflow_32_digits", |_| "f".repeat(32), false, false),
        (
            "underscore",
            |n| {
                let s = format!("{n:x}");
                format!("{}_{}", &s[..1], &s[1..])
            },
            false,
            false,
        ),
        ("empty", |_| String::new(), false, false),
        ("inner_space", |n| format!("{n:x} {n:x}"), false, false),
        ("non_hex", |n| format!("{n:x}g"), false, false),
        ("cr_inside", |n| format!("{n:x}\r{n:x}"), false, false),
        ("comma", |n| format!("{n:x},{n:x}"), false, false),
        (
            "smaller_than_data",
            |n| format!("{:x}", n - 8),
            false,
            false,
        ),
        ("fullwidth_digit", |_| "\u{ff11}".into(), false, false),
    ];
    for &(name, size, strict, lenient) in SIZES {
        c.one("chunk_size", name, move |cx| {
            let smug = cx.smug();
            let bytes = cat(&[
                &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
                size(smug.len()).as_bytes(),
                b"\r\n",
                smug.as_bytes(),
                b"\r\n0\r\n\r\n",
                cx.next().as_bytes(),
            ]);
            let valid = served(vec![cx.post("/a", smug.as_bytes()), cx.next_exp()]);
            let o = match (strict, lenient) {
                (true, _) => vec![valid],
                (false, true) => vec![valid, refused(BAD)],
                (false, false) => {
                    vec![refused(if name.contains("overflow") || name == "u64_max" {
                        TOO_BIG_BODY
                    } else {
                        BAD
                    })]
                }
            };
            (bytes, o)
        });
    }
    // Hex letters in either case (RFC 5234: HEXDIG is case-insensitive).
    for (name, size) in [("hex_letters_upper", "1A"), ("hex_letters_lower", "1a")] {
        c.one("chunk_size", name, move |cx| {
            let bytes = cat(&[
                &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
                size.as_bytes(),
                b"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
                cx.next().as_bytes(),
            ]);
            (
                bytes,
                vec![served(vec![
                    cx.post("/a", b"abcdefghijklmnopqrstuvwxyz"),
                    cx.next_exp(),
                ])],
            )
        });
    }
    // Last-chunk forms.
    for (name, last, ok) in [
        ("last_chunk_00", "00", true),
        ("last_chunk_000", "000", true),
        ("last_chunk_space", "0 ", false),
        ("last_chunk_0x0", "0x0", false),
        ("last_chunk_plus", "+0", false),
    ] {
        c.one("chunk_size", name, move |cx| {
            let bytes = cat(&[
                &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
                last.as_bytes(),
                b"\r\n\r\n",
                cx.next().as_bytes(),
            ]);
            let o = if ok {
                vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])]
            } else {
                vec![refused(BAD)]
            };
            (bytes, o)
        });
    }
}

/// Chunk extensions: `5{ext}\r\nhello\r\n0\r\n\r\n`, then a clean pipelined request.
fn chunk_ext_family(c: &mut Cases) {
    const EXT: &[(&str, &[u8], bool, bool)] = &[
        ("name_value", b";a=b", true, true),
        ("name_only", b";a", true, true),
        ("two_extensions", b";a=b;c=d", true, true),
        ("quoted_value", b";a=\"b;c\"", true, true),
        ("quoted_escape", b";a=\"b\\\"c\"", false, true),
        ("bws_around", b" ; a = b", false, true),
        ("empty", b";", false, false),
        ("semicolon_bare_lf", b";\n", false, false),
        ("value_bare_lf", b";a=b\n", false, false),
        ("value_bare_cr", b";a=b\rx", false, false),
        ("junk_after_size", b" junk", false, false),
        ("junk_no_space", b"junk", false, false),
        ("value_with_space", b";a=b c", false, false),
        ("empty_name", b";=b", false, false),
        ("empty_value", b";a=", false, false),
        ("unterminated_quote", b";a=\"b", false, false),
        ("non_ascii_value", b";a=\xff", false, false),
        ("ctl_in_value", b";a=\x01", false, false),
        ("nul_in_name", b";a\0=b", false, false),
    ];
    for &(name, ext, strict, lenient) in EXT {
        c.one("chunk_ext", name, move |cx| {
            let bytes = cat(&[
                &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5"),
                ext,
                b"\r\nhello\r\n0\r\n\r\n",
                cx.next().as_bytes(),
            ]);
            let valid = served(vec![cx.post("/a", b"hello"), cx.next_exp()]);
            let o = match (strict, lenient) {
                (true, _) => vec![valid],
                (false, true) => vec![valid, refused(BAD)],
                (false, false) => vec![refused(BAD)],
            };
            (bytes, o)
        });
    }
    c.one("chunk_ext", "last_chunk_extension", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;a=b\r\n\r\n{NEXT}");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        )
    });
    c.one("chunk_ext", "huge_extension_20k", |cx| {
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;a="),
            "b".repeat(20_000).as_bytes(),
            b"\r\nhello\r\n0\r\n\r\n",
            cx.next().as_bytes(),
        ]);
        (
            bytes,
            vec![
                served(vec![cx.post("/a", b"hello"), cx.next_exp()]),
                refused(TOO_LARGE),
            ],
        )
    });
    c.one("chunk_ext", "quoted_crlf_then_request", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\r\n{SMUG}\"\r\nhello\r\n0\r\n\r\n");
        (bytes, vec![refused(BAD)])
    });
}

/// Bare LF and bare CR as line ends: in chunked framing, trailers and the head.
fn bare_line_end_family(c: &mut Cases) {
    // Chunked bodies after `Transfer-Encoding: chunked`, then a clean pipelined request.
    const BODIES: &[(&str, &[u8], bool)] = &[
        ("size_bare_lf", b"5\nhello\r\n0\r\n\r\n", false),
        ("size_bare_cr", b"5\rhello\r\n0\r\n\r\n", false),
        ("size_lf_cr", b"5\n\rhello\r\n0\r\n\r\n", false),
        ("data_end_bare_lf", b"5\r\nhello\n0\r\n\r\n", false),
        ("data_end_bare_cr", b"5\r\nhello\r0\r\n\r\n", false),
        ("data_end_missing", b"5\r\nhello0\r\n\r\n", false),
        ("data_end_junk", b"5\r\nhelloXX\r\n0\r\n\r\n", false),
        ("last_chunk_bare_lf", b"5\r\nhello\r\n0\n\r\n", false),
        ("final_line_bare_lf", b"5\r\nhello\r\n0\r\n\n", false),
        ("final_line_bare_cr", b"5\r\nhello\r\n0\r\n\r", false),
        ("trailer_ok", b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", true),
        ("trailer_bare_lf", b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n", false),
        ("trailer_bare_cr", b"5\r\nhello\r\n0\r\nX-T: 1\r\r\n", false),
        (
            "trailer_space_before_colon",
            b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
            false,
        ),
        (
            "trailer_obs_fold",
            b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n",
            false,
        ),
        ("trailer_no_colon", b"5\r\nhello\r\n0\r\nXT\r\n\r\n", false),
        (
            "trailer_nul",
            b"5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n",
            false,
        ),
        (
            "trailer_content_length",
            b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n",
            true,
        ),
    ];
    for &(name, body, ok) in BODIES {
        c.one("bare_line_end", name, move |cx| {
            let bytes = cat(&[
                &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
                body,
                cx.next().as_bytes(),
            ]);
            let o = if ok {
                vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])]
            } else {
                vec![refused(BAD)]
            };
            (bytes, o)
        });
    }
    c.one("bare_line_end", "trailer_is_a_request", |cx| {
        let bytes = cx.t(
            "POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{SMUG}",
        );
        (bytes, vec![refused(BAD)])
    });
    // In the head. RFC 9112 2.2: a recipient MAY take a bare LF as a line end; a bare CR is
    // invalid or replaced by SP.
    c.one("bare_line_end", "head_bare_lf_everywhere", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\nHost: {H}\n\n");
        (bytes, vec![served(vec![cx.get("/a")]), refused(BAD)])
    });
    c.one("bare_line_end", "head_bare_lf_request_line", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\nHost: {H}\r\n\r\n");
        (bytes, vec![served(vec![cx.get("/a")]), refused(BAD)])
    });
    c.one("bare_line_end", "head_bare_lf_before_body", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\nhello");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello")]), refused(BAD)],
        )
    });
    c.one("bare_line_end", "head_bare_lf_hides_te", |cx| {
        let body = cx.t("0\r\n\r\n{SMUG}");
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\nX-A: a\nTransfer-Encoding: chunked\r\n\r\n",
                body.len()
            )),
            &body,
        ]);
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("bare_line_end", "head_bare_cr_hides_te", |cx| {
        let body = cx.t("0\r\n\r\n{SMUG}");
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n",
                body.len()
            )),
            &body,
        ]);
        // A bare CR in a head is refused (the reference's rule; RFC 9112 2.2 would also let it
        // be replaced by SP).
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("bare_line_end", "head_bare_cr_in_value", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\nX-A: a\rb\r\n\r\n");
        (bytes, vec![refused(BAD)])
    });
    c.one("bare_line_end", "head_bare_cr_request_line", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\rHost: {H}\r\n\r\n");
        (bytes, vec![refused(BAD_OR_505)])
    });
    c.one("bare_line_end", "head_bare_cr_after_host", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\r\n\r\n");
        (bytes, vec![refused(BAD)])
    });
}

/// Pipelined requests after bodies of each framing, whole and split across writes.
fn pipeline_family(c: &mut Cases) {
    c.one("pipeline", "cl_then_get", |cx| {
        let bytes =
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello{NEXT}");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        )
    });
    c.one("pipeline", "chunked_then_get", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{NEXT}");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        )
    });
    c.one("pipeline", "chunked_three_chunks_then_two_gets", |cx| {
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&[b"hel", b"lo ", b"world"]),
            cx.next().as_bytes(),
            &cx.t("GET {P}/next2 HTTP/1.1\r\nHost: {H}\r\n\r\n"),
        ]);
        (
            bytes,
            vec![served(vec![
                cx.post("/a", b"hello world"),
                cx.next_exp(),
                cx.get("/next2"),
            ])],
        )
    });
    c.one("pipeline", "cl_zero_then_get", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\n\r\n{NEXT}");
        (bytes, vec![served(vec![cx.post("/a", b""), cx.next_exp()])])
    });
    c.one("pipeline", "three_gets", |cx| {
        let bytes = cx.t(
            "GET {P}/a HTTP/1.1\r\nHost: {H}\r\n\r\nGET {P}/b HTTP/1.1\r\nHost: {H}\r\n\r\n{NEXT}",
        );
        (
            bytes,
            vec![served(vec![cx.get("/a"), cx.get("/b"), cx.next_exp()])],
        )
    });
    c.one("pipeline", "head_then_get", |cx| {
        let bytes = cx.t("HEAD {P}/a HTTP/1.1\r\nHost: {H}\r\n\r\n{NEXT}");
        (
            bytes,
            vec![served(vec![cx.exp("HEAD", "/a", b""), cx.next_exp()])],
        )
    });
    c.one("pipeline", "connection_close_then_get", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n{NEXT}");
        (bytes, vec![served_then_closed(vec![cx.get("/a")])])
    });
    c.one("pipeline", "http10_then_get", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.0\r\nHost: {H}\r\n\r\n{NEXT}");
        (bytes, vec![served_then_closed(vec![cx.get("/a")])])
    });
    c.one("pipeline", "chunk_data_is_a_request", |cx| {
        let smug = cx.smug();
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&[smug.as_bytes()]),
        ]);
        (bytes, vec![served(vec![cx.post("/a", smug.as_bytes())])])
    });
    c.one("pipeline", "two_chunked_posts", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nPOST {P}/b HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbye\r\n0\r\n\r\n");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello"), cx.post("/b", b"bye")])],
        )
    });
    c.one("pipeline", "chunked_200k_then_get", |cx| {
        let data: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let pieces: Vec<&[u8]> = data.chunks(30_000).collect();
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&pieces),
            cx.next().as_bytes(),
        ]);
        (
            bytes,
            vec![served(vec![cx.post("/a", &data), cx.next_exp()])],
        )
    });
    c.one("pipeline", "cl_100k_then_get", |cx| {
        let data: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nContent-Length: {}\r\n\r\n",
                data.len()
            )),
            &data,
            cx.next().as_bytes(),
        ]);
        (
            bytes,
            vec![served(vec![cx.post("/a", &data), cx.next_exp()])],
        )
    });
    c.one("pipeline", "hundred_one_byte_chunks", |cx| {
        let data: Vec<u8> = (0..100).map(|i| b'a' + (i % 26) as u8).collect();
        let pieces: Vec<&[u8]> = data.chunks(1).collect();
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&pieces),
            cx.next().as_bytes(),
        ]);
        (
            bytes,
            vec![served(vec![cx.post("/a", &data), cx.next_exp()])],
        )
    });
    // Split across writes: every byte of a chunked body on its own, and at awkward points.
    c.add("pipeline", "chunked_split_every_byte", |cx| {
        let head = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n");
        let body = cat(&[
            b"3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: 1\r\n\r\n",
            cx.next().as_bytes(),
        ]);
        let mut parts = vec![head];
        parts.extend(body.iter().map(|b| vec![*b]));
        Built {
            parts,
            pause: Duration::from_millis(1),
            outcomes: vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        }
    });
    c.add("pipeline", "chunked_split_inside_crlf", |cx| {
        let parts = vec![
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r"),
            b"\n5\r".to_vec(),
            b"\nhel".to_vec(),
            b"lo\r".to_vec(),
            b"\n0\r".to_vec(),
            b"\n\r".to_vec(),
            cat(&[b"\n", cx.next().as_bytes()]),
        ];
        Built {
            parts,
            pause: Duration::from_millis(20),
            outcomes: vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        }
    });
    c.add("pipeline", "cl_split_mid_next_request", |cx| {
        let parts = vec![
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhel"),
            cx.t("loGET {P}/ne"),
            cx.t("xt HTTP/1.1\r\nHost: {H}\r\n\r\n"),
        ];
        Built {
            parts,
            pause: Duration::from_millis(30),
            outcomes: vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        }
    });
    c.add("pipeline", "bad_chunk_after_a_pause", |cx| {
        let parts = vec![
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
            cx.t("0x2e\r\n{SMUG}\r\n0\r\n\r\n"),
        ];
        Built {
            parts,
            pause: Duration::from_millis(100),
            outcomes: vec![refused(BAD)],
        }
    });
}

/// Protocol versions and request-line shapes.
fn version_family(c: &mut Cases) {
    c.one("version", "http10_te", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("version", "http10_te_smuggle", |cx| {
        let smug = cx.smug();
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&[smug.as_bytes()]),
        ]);
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("version", "http10_te_cl", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("version", "http10_te_identity", |cx| {
        let bytes =
            cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: identity\r\n\r\nhello");
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("version", "http10_cl", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello");
        (bytes, vec![served(vec![cx.post("/a", b"hello")])])
    });
    c.one("version", "http10_keep_alive_then_get", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\n\r\n{NEXT}");
        (bytes, vec![served(vec![cx.get("/a"), cx.next_exp()])])
    });
    c.one("version", "http10_expect_is_ignored", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.0\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
        (bytes, vec![served(vec![cx.post("/a", b"hello")])])
    });
    for (name, line, lenient) in [
        ("http12", "GET {P}/a HTTP/1.2", true),
        ("http09_no_version", "GET {P}/a", false),
        ("http20", "GET {P}/a HTTP/2.0", false),
        ("http30", "GET {P}/a HTTP/3.0", false),
        ("lowercase_http", "GET {P}/a http/1.1", false),
        ("trailing_space", "GET {P}/a HTTP/1.1 ", false),
        ("http_1_10", "GET {P}/a HTTP/1.10", false),
        ("http_01_1", "GET {P}/a HTTP/01.1", false),
        ("http_1", "GET {P}/a HTTP/1", false),
        ("double_space", "GET  {P}/a HTTP/1.1", true),
        ("tab_separator", "GET\t{P}/a HTTP/1.1", true),
        ("leading_space", " GET {P}/a HTTP/1.1", false),
        ("non_token_method", "G(T {P}/a HTTP/1.1", false),
        ("empty_method", " {P}/a HTTP/1.1", false),
    ] {
        c.one("version", name, move |cx| {
            let bytes = cx.t(&format!("{line}\r\nHost: {{H}}\r\n\r\n{{SMUG}}"));
            let mut o = vec![refused(&[400, 501, 505])];
            if lenient {
                o.push(served(vec![cx.get("/a"), cx.smug_exp()]));
            }
            (bytes, o)
        });
    }
    c.one("version", "lowercase_method", |cx| {
        let bytes = cx.t("get {P}/a HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (
            bytes,
            vec![
                served(vec![cx.exp("get", "/a", b"")]),
                refused_open(&[400, 405, 501]),
                refused(&[400, 405, 501]),
            ],
        )
    });
    c.one("version", "leading_empty_line", |cx| {
        // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line.
        let bytes = cx.t("\r\nGET {P}/a HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (bytes, vec![served(vec![cx.get("/a")]), refused(BAD)])
    });
}

/// Field names and values.
fn header_family(c: &mut Cases) {
    // (name, a header line sent after Host, outcome: 0 refuse, 1 serve, 2 either)
    const LINES: &[(&str, &[u8], u8)] = &[
        ("space_before_colon", b"X-A : 1", 0),
        ("tab_before_colon", b"X-A\t: 1", 0),
        ("paren_in_name", b"X(A): 1", 0),
        ("space_in_name", b"X A: 1", 0),
        ("quote_in_name", b"X\"A: 1", 0),
        ("at_in_name", b"X@A: 1", 0),
        ("slash_in_name", b"X/A: 1", 0),
        ("brace_in_name", b"X{A}: 1", 0),
        ("non_ascii_name", b"X\xc3\xa9: 1", 0),
        ("del_in_name", b"X\x7fA: 1", 0),
        ("empty_name", b": 1", 0),
        ("nul_in_name", b"X\0A: 1", 0),
        ("no_colon", b"XA", 0),
        ("nul_in_value", b"X-A: a\0b", 0),
        ("ctl_in_value", b"X-A: a\x01b", 0),
        ("del_in_value", b"X-A: a\x7fb", 0),
        ("escape_in_value", b"X-A: a\x1bb", 0),
        ("obs_text_value", b"X-A: caf\xe9", 2),
        ("obs_fold_value", b"X-A: 1\r\n 2", 2),
        ("obs_fold_tab", b"X-A: 1\r\n\t2", 2),
        ("colon_in_value", b"X-A: b: c", 1),
        ("empty_value", b"X-A:", 1),
    ];
    for &(name, line, verdict) in LINES {
        c.one("header", name, move |cx| {
            let bytes = cat(&[
                &cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\n"),
                line,
                b"\r\n\r\n",
                cx.smug().as_bytes(),
            ]);
            let valid = served(vec![cx.get("/a"), cx.smug_exp()]);
            let o = match verdict {
                0 => vec![refused(BAD)],
                1 => vec![valid],
                _ => vec![valid, refused(BAD)],
            };
            (bytes, o)
        });
    }
    c.one("header", "whitespace_line_after_request_line", |cx| {
        // RFC 9112 2.2: reject, or ignore each whitespace-preceded line.
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\n X-A: 1\r\nHost: {H}\r\n\r\n");
        (bytes, vec![served(vec![cx.get("/a")]), refused(BAD)])
    });
    c.one("header", "whitespace_host_after_request_line", |cx| {
        // Ignored, that line leaves no Host: refused either way.
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\n Host: {H}\r\n\r\n");
        (bytes, vec![refused(BAD)])
    });
    c.one("header", "fifty_headers", |cx| {
        let mut s = String::from("GET {P}/a HTTP/1.1\r\nHost: {H}\r\n");
        for i in 0..50 {
            s.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        s.push_str("\r\n");
        (cx.t(&s), vec![served(vec![cx.get("/a")])])
    });
    c.one("header", "value_4k", |cx| {
        let s = format!(
            "GET {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nX-Big: {}\r\n\r\n",
            "v".repeat(4 * 1024)
        );
        (cx.t(&s), vec![served(vec![cx.get("/a")])])
    });
}

/// Oversize heads (the gateway's head limit is 64 KiB).
fn oversize_family(c: &mut Cases) {
    c.one("oversize", "value_70k", |cx| {
        let s = format!(
            "GET {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nX-Big: {}\r\n\r\n{{SMUG}}",
            "v".repeat(70 * 1024)
        );
        (cx.t(&s), vec![refused(TOO_LARGE)])
    });
    c.one("oversize", "head_70k_in_100_headers", |cx| {
        let mut s = String::from("GET {P}/a HTTP/1.1\r\nHost: {H}\r\n");
        for i in 0..100 {
            s.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(700)));
        }
        s.push_str("\r\n{SMUG}");
        (cx.t(&s), vec![refused(TOO_LARGE)])
    });
    c.one("oversize", "three_thousand_headers", |cx| {
        let mut s = String::from("GET {P}/a HTTP/1.1\r\nHost: {H}\r\n");
        for i in 0..3000 {
            s.push_str(&format!("X-{i}: 1\r\n"));
        }
        s.push_str("\r\n{SMUG}");
        (cx.t(&s), vec![refused(TOO_LARGE)])
    });
    c.one("oversize", "target_70k", |cx| {
        let s = format!(
            "GET {{P}}/{} HTTP/1.1\r\nHost: {{H}}\r\n\r\n{{SMUG}}",
            "a".repeat(70 * 1024)
        );
        (cx.t(&s), vec![refused(TOO_LARGE)])
    });
    c.one("oversize", "value_70k_with_cl_te", |cx| {
        let body = cx.t("0\r\n\r\n{SMUG}");
        let s = format!(
            "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nX-Big: {}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            "v".repeat(70 * 1024),
            body.len()
        );
        (cat(&[&cx.t(&s), &body]), vec![refused(TOO_LARGE)])
    });
    c.one("oversize", "value_60k", |cx| {
        let s = format!(
            "GET {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nX-Big: {}\r\n\r\n",
            "v".repeat(60 * 1024)
        );
        (
            cx.t(&s),
            vec![served(vec![cx.get("/a")]), refused(TOO_LARGE)],
        )
    });
}

/// `Host` and the authority of absolute-form.
fn host_family(c: &mut Cases) {
    for (name, lines) in [
        ("two_hosts_same", "Host: {H}\r\nHost: {H}"),
        ("two_hosts_other_second", "Host: {H}\r\nHost: evil.example"),
        ("two_hosts_other_first", "Host: evil.example\r\nHost: {H}"),
        ("host_list", "Host: {H}, evil.example"),
        ("missing_host", "X-A: 1"),
        ("host_userinfo", "Host: user@{H}"),
        ("host_with_path", "Host: {H}/x"),
        ("host_with_space", "Host: local host"),
    ] {
        c.one("host", name, move |cx| {
            let bytes = cx.t(&format!("GET {{P}}/a HTTP/1.1\r\n{lines}\r\n\r\n{{SMUG}}"));
            // Two Host fields or none: 400 and close (RFC 9112 3.2). An invalid value: 400,
            // after which the next (properly framed) request may be served.
            let mut o = vec![refused(BAD)];
            if !name.starts_with("two_hosts") && name != "missing_host" {
                o.push(refused_then(BAD, vec![cx.smug_exp()]));
            }
            (bytes, o)
        });
    }
    c.one("host", "empty_host", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost:\r\n\r\n{SMUG}");
        (
            bytes,
            vec![
                refused(BAD),
                refused_then(&[400, 403, 404, 421], vec![cx.smug_exp()]),
            ],
        )
    });
    c.one("host", "absolute_form", |cx| {
        let bytes = cx.t("GET http://{H}{P}/a HTTP/1.1\r\nHost: {H}\r\n\r\n{NEXT}");
        (bytes, vec![served(vec![cx.get("/a"), cx.next_exp()])])
    });
    c.one("host", "absolute_form_other_host", |cx| {
        let bytes = cx.t("GET http://{H}{P}/a HTTP/1.1\r\nHost: evil.example\r\n\r\n");
        let mut e = cx.get("/a");
        e.host = Some(cx.h.clone());
        (
            bytes,
            vec![served(vec![e]), refused(BAD), refused_open(BAD)],
        )
    });
    c.one("host", "absolute_form_no_host", |cx| {
        let bytes = cx.t("GET http://{H}{P}/a HTTP/1.1\r\n\r\n");
        (
            bytes,
            // RFC 9112 3.2: a 1.1 request without Host is refused, whatever its target.
            vec![refused(BAD)],
        )
    });
    c.one("host", "absolute_form_unmapped_host_mapped_header", |cx| {
        // Routed by the request-target: port 9 has no mapping, so nothing reaches this
        // case's target whatever the Host header says.
        let bytes = cx.t("GET http://localhost:9{P}/a HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (
            bytes,
            vec![
                refused(&[400, 403, 404, 421, 502, 503, 504]),
                refused_open(&[400, 403, 404, 421, 502, 503, 504]),
            ],
        )
    });
}

/// `Expect: 100-continue`.
fn expect_family(c: &mut Cases) {
    c.one("expect", "cl_body_then_next", |cx| {
        let bytes = cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello{NEXT}");
        (
            bytes,
            vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
        )
    });
    c.one("expect", "body_is_a_request", |cx| {
        let smug = cx.smug();
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                smug.len()
            )),
            smug.as_bytes(),
        ]);
        (bytes, vec![served(vec![cx.post("/a", smug.as_bytes())])])
    });
    c.one("expect", "chunked_body_is_a_request", |cx| {
        let smug = cx.smug();
        let bytes = cat(&[
            &cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &chunked(&[smug.as_bytes()]),
        ]);
        (bytes, vec![served(vec![cx.post("/a", smug.as_bytes())])])
    });
    c.one("expect", "cl_te", |cx| {
        let body = cx.t("0\r\n\r\n{SMUG}");
        let bytes = cat(&[
            &cx.t(&format!(
                "POST {{P}}/a HTTP/1.1\r\nHost: {{H}}\r\nExpect: 100-continue\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                body.len()
            )),
            &body,
        ]);
        (bytes, vec![refused(BAD_OR_501)])
    });
    c.one("expect", "get_without_body_then_request", |cx| {
        let bytes = cx.t("GET {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\n\r\n{NEXT}");
        (bytes, vec![served(vec![cx.get("/a"), cx.next_exp()])])
    });
    c.one("expect", "unknown_expectation", |cx| {
        let bytes = cx.t(
            "POST {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello",
        );
        (
            bytes,
            vec![
                served(vec![cx.post("/a", b"hello")]),
                refused(&[400, 417]),
                refused_open(&[417]),
            ],
        )
    });
    c.add("expect", "body_after_a_pause", |cx| Built {
        parts: vec![
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
            cx.t("hello{NEXT}"),
        ],
        pause: Duration::from_millis(300),
        outcomes: vec![served(vec![cx.post("/a", b"hello"), cx.next_exp()])],
    });
    c.add("expect", "request_instead_of_chunked_body", |cx| Built {
        // The client never sends the body it announced and sends a request instead: as chunked
        // data it is malformed.
        parts: vec![
            cx.t("POST {P}/a HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"),
            cx.t("{SMUG}"),
        ],
        pause: Duration::from_millis(300),
        outcomes: vec![refused(BAD)],
    });
}

/// Request-targets: characters RFC 3986 does not allow, encoded separators and dot-segments.
fn target_family(c: &mut Cases) {
    const BAD_TARGETS: &[(&str, &[u8])] = &[
        ("space", b"/a b"),
        ("tab", b"/a\tb"),
        ("open_brace", b"/a{b"),
        ("braces", b"/a{b}"),
        ("double_quote", b"/a\"b"),
        ("angle_brackets", b"/<a>"),
        ("backslash", b"/a\\b"),
        ("caret", b"/a^b"),
        ("backtick", b"/a`b"),
        ("pipe", b"/a|b"),
        ("non_ascii_utf8", b"/caf\xc3\xa9"),
        ("non_ascii_latin1", b"/caf\xe9"),
        ("ctl", b"/a\x01b"),
        ("del", b"/a\x7fb"),
        ("nul", b"/a\0b"),
        ("bad_percent", b"/a%zz"),
        ("truncated_percent", b"/a%2"),
        ("encoded_slash", b"/a%2Fb"),
        ("encoded_slash_lower", b"/a%2fb"),
        ("encoded_backslash", b"/a%5Cb"),
        ("encoded_dotdot", b"/a/%2e%2e/b"),
        ("encoded_dot_dot_mixed", b"/a/.%2E/b"),
        ("encoded_dot", b"/a/%2e/b"),
        ("query_space", b"/a?q=a b"),
        ("query_brace", b"/a?q={x}"),
        ("query_quote", b"/a?q=\"x\""),
    ];
    for &(name, tail) in BAD_TARGETS {
        c.one("target", name, move |cx| {
            let bytes = cat(&[
                b"GET ",
                cx.p.as_bytes(),
                tail,
                &cx.t(" HTTP/1.1\r\nHost: {H}\r\n\r\n{SMUG}"),
            ]);
            (
                bytes,
                vec![refused(BAD), refused_then(BAD, vec![cx.smug_exp()])],
            )
        });
    }
    for (name, tail, resolved) in [
        ("dotdot_resolved", "/a/../b", "/b"),
        ("dot_resolved", "/a/./b", "/a/b"),
        ("trailing_dotdot", "/a/b/..", "/a/"),
        ("double_dotdot", "/a/b/../../c", "/c"),
    ] {
        c.one("target", name, move |cx| {
            let bytes = cx.t(&format!("GET {{P}}{tail} HTTP/1.1\r\nHost: {{H}}\r\n\r\n"));
            (bytes, vec![served(vec![cx.get(resolved)])])
        });
    }
    c.one("target", "dotdot_above_root", |cx| {
        let bytes = cx.t("GET {P}/../../x HTTP/1.1\r\nHost: {H}\r\n\r\n");
        let e = Exp {
            path: "/x".into(),
            ..cx.get("")
        };
        (
            bytes,
            vec![served(vec![e]), refused(BAD), refused_open(BAD)],
        )
    });
    c.one("target", "query_kept_verbatim", |cx| {
        let bytes = cx.t("GET {P}/a?q=1&r=%20&s=/../b HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (bytes, vec![served(vec![cx.get("/a?q=1&r=%20&s=/../b")])])
    });
    c.one("target", "fragment", |cx| {
        let bytes = cx.t("GET {P}/a#frag HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (
            bytes,
            vec![served(vec![cx.get("/a")]), refused(BAD), refused_open(BAD)],
        )
    });
    c.one("target", "encoded_nul", |cx| {
        let bytes = cx.t("GET {P}/a%00b HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (
            bytes,
            vec![
                served(vec![cx.get("/a%00b")]),
                refused(BAD),
                refused_open(BAD),
            ],
        )
    });
    c.one("target", "encoded_unreserved", |cx| {
        let bytes = cx.t("GET {P}/%61 HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (
            bytes,
            vec![served(vec![cx.get("/%61")]), served(vec![cx.get("/a")])],
        )
    });
    c.one("target", "absolute_form_with_space", |cx| {
        let bytes = cx.t("GET http://{H}{P}/a b HTTP/1.1\r\nHost: {H}\r\n\r\n{SMUG}");
        (
            bytes,
            vec![refused(BAD), refused_then(BAD, vec![cx.smug_exp()])],
        )
    });
    c.one("target", "absolute_form_dotdot", |cx| {
        let bytes = cx.t("GET http://{H}{P}/a/../b HTTP/1.1\r\nHost: {H}\r\n\r\n");
        (bytes, vec![served(vec![cx.get("/b")])])
    });
}

fn all_cases() -> Vec<Case> {
    let mut c = Cases(Vec::new());
    te_families(&mut c);
    cl_family(&mut c);
    chunk_size_family(&mut c);
    chunk_ext_family(&mut c);
    bare_line_end_family(&mut c);
    pipeline_family(&mut c);
    version_family(&mut c);
    header_family(&mut c);
    oversize_family(&mut c);
    host_family(&mut c);
    expect_family(&mut c);
    target_family(&mut c);
    c.0
}

// ---------------------------------------------------------------------------------------------
// The client side

/// A final (non-1xx) response.
#[derive(Debug)]
struct Resp {
    status: u16,
    body: Vec<u8>,
}

/// Parse the responses in `buf`. `heads[i]`: the i-th final response answers a HEAD.
/// Returns the complete ones and an error text if the bytes after them cannot be a response.
fn parse_responses(buf: &[u8], heads: &[bool], eof: bool) -> (Vec<Resp>, Option<String>) {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let head_len = match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return (
                    out,
                    eof.then(|| format!("closed inside a response head: {}", show(rest, 120))),
                );
            }
            Err(e) => return (out, Some(format!("{e}: {}", show(rest, 120)))),
        };
        let status = r.code.unwrap_or(0);
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let body_start = &rest[head_len..];
        if (100..200).contains(&status) {
            rest = body_start;
            continue;
        }
        let no_body =
            heads.get(out.len()).copied().unwrap_or(false) || status == 204 || status == 304;
        let (body, used) = if no_body {
            (Vec::new(), 0)
        } else if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
            match dechunk(body_start) {
                Some(x) => x,
                None if eof => {
                    return (out, Some("closed inside a chunked response body".into()));
                }
                None => return (out, None),
            }
        } else if let Some(len) = header("content-length") {
            let Ok(len) = len.parse::<usize>() else {
                return (out, Some(format!("response content-length {len:?}")));
            };
            if body_start.len() < len {
                return (
                    out,
                    eof.then(|| "closed inside a response body".to_string()),
                );
            }
            (body_start[..len].to_vec(), len)
        } else if eof {
            (body_start.to_vec(), body_start.len())
        } else {
            return (out, None);
        };
        out.push(Resp { status, body });
        rest = &body_start[used..];
    }
    (out, None)
}

/// Decode a chunked body at the start of `b`: (data, bytes used), or None if incomplete.
fn dechunk(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let line_end = b[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let line = String::from_utf8_lossy(&b[pos..line_end]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let e = b[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
                let empty = e == pos;
                pos = e + 2;
                if empty {
                    return Some((data, pos));
                }
            }
        }
        if b.len() < pos + size + 2 {
            return None;
        }
        data.extend_from_slice(&b[pos..pos + size]);
        pos += size + 2;
    }
}

/// At most `max` bytes, escaped.
fn show(b: &[u8], max: usize) -> String {
    let s: String = b
        .iter()
        .take(max)
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > max {
        format!("{s}...({} bytes)", b.len())
    } else {
        s
    }
}

/// What the first client saw.
#[derive(Debug)]
struct Seen {
    resps: Vec<Resp>,
    eof: bool,
    error: Option<String>,
}

impl Outcome {
    /// Whether the answers an outcome needs have all arrived (then only a grace period).
    fn complete(&self, resps: &[Resp], eof: bool) -> bool {
        let n = self.served.len();
        let served_ok = resps.len() >= n && resps[..n].iter().all(|r| r.status == 200);
        match self.end {
            End::Open => served_ok,
            End::Closed => eof,
            End::Refused { close: true, .. } => eof,
            End::Refused { close: false, .. } => served_ok && resps.len() > n + self.after.len(),
        }
    }

    /// Why this outcome does not describe what happened (empty: it does).
    ///
    /// In a refusal, the target may have parsed the head of the refused request if the gateway
    /// forwarded it before it found the error in the body and then cut the upstream connection:
    /// such a request never reached the target whole (its body failed), so it is not counted,
    /// unless it is the smuggled request. (Its bytes are still checked to be canonical.)
    fn mismatch(&self, seen: &Seen, records: &[&Record]) -> Vec<String> {
        let mut why = Vec::new();
        let refusal = matches!(self.end, End::Refused { .. });
        let records: Vec<&Record> = records
            .iter()
            .copied()
            .filter(|r| !refusal || matches!(r.body, Some(Ok(_))) || r.path.ends_with("/smuggled"))
            .collect();
        let expected: Vec<&Exp> = self.served.iter().chain(&self.after).collect();
        if records.len() != expected.len() {
            why.push(format!(
                "target parsed {} request(s), expected {}",
                records.len(),
                expected.len()
            ));
        }
        for (i, (r, e)) in records.iter().zip(&expected).enumerate() {
            if r.method != e.method || r.path != e.path {
                why.push(format!(
                    "request {i}: target parsed {} {}, expected {} {}",
                    r.method, r.path, e.method, e.path
                ));
                continue;
            }
            match &r.body {
                Some(Ok(b)) if *b == e.body => {}
                Some(Ok(b)) => why.push(format!(
                    "request {i}: body {} expected {}",
                    show(b, 60),
                    show(&e.body, 60)
                )),
                Some(Err(err)) => why.push(format!("request {i}: target failed the body: {err}")),
                None => why.push(format!("request {i}: body never complete")),
            }
            if let Some(h) = &e.host {
                let got: Vec<String> = r
                    .header("host")
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                if got != [h.clone()] {
                    why.push(format!("request {i}: Host {got:?}, expected {h}"));
                }
            }
        }
        // The answers: one per served request, the refusal, one per request after it.
        let n = self.served.len();
        let answered = |i: usize, e: &Exp, why: &mut Vec<String>| match seen.resps.get(i) {
            None => why.push(format!("no answer to {} {}", e.method, e.path)),
            Some(r) => {
                let want = format!(":{} {}", e.method, e.path);
                let body = String::from_utf8_lossy(&r.body);
                let head_ok = e.method == "HEAD" && r.body.is_empty();
                if r.status != 200
                    || !(head_ok || body.starts_with("seen:") && body.ends_with(&want))
                {
                    why.push(format!(
                        "answer {i} to {} {}: {} {}",
                        e.method,
                        e.path,
                        r.status,
                        show(&r.body, 80)
                    ));
                }
            }
        };
        for (i, e) in self.served.iter().enumerate() {
            answered(i, e, &mut why);
        }
        let total = match &self.end {
            End::Open | End::Closed => {
                if matches!(self.end, End::Closed) && !seen.eof {
                    why.push("connection not closed".into());
                }
                n
            }
            End::Refused { statuses, close } => {
                match seen.resps.get(n) {
                    // The target's own 400 for a body it could not read, relayed: the gateway
                    // did not refuse, it forwarded what the target could not parse.
                    Some(r) if r.body.starts_with(b"body-failed:") => why.push(format!(
                        "the target's refusal relayed: {}",
                        show(&r.body, 60)
                    )),
                    Some(r) if statuses.contains(&r.status) => {}
                    Some(r) => why.push(format!(
                        "answered {} {}, expected one of {statuses:?}",
                        r.status,
                        show(&r.body, 60)
                    )),
                    None => why.push(format!("no refusal (expected one of {statuses:?})")),
                }
                for (i, e) in self.after.iter().enumerate() {
                    answered(n + 1 + i, e, &mut why);
                }
                if *close && !seen.eof {
                    why.push("connection not closed after the refusal".into());
                }
                n + 1 + self.after.len()
            }
        };
        if seen.resps.len() > total {
            let extra: Vec<String> = seen.resps[total..]
                .iter()
                .map(|r| format!("{} {}", r.status, show(&r.body, 60)))
                .collect();
            why.push(format!("unexpected answers {extra:?}"));
        }
        why
    }
}

/// Send the case's parts, then read answers until an outcome is complete (plus `GRACE`), the
/// gateway closes, or `READ_DEADLINE`.
fn first_client(gw: SocketAddr, built: &Built) -> Seen {
    let mut s = match TcpStream::connect(gw) {
        Ok(s) => s,
        Err(e) => {
            return Seen {
                resps: vec![],
                eof: false,
                error: Some(format!("connect: {e}")),
            }
        }
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    for (i, part) in built.parts.iter().enumerate() {
        if i > 0 && !built.pause.is_zero() {
            std::thread::sleep(built.pause);
        }
        // The gateway may close early (a refusal before the whole case is sent).
        if s.write_all(part).is_err() {
            break;
        }
    }
    let heads: Vec<bool> = built.outcomes[0]
        .served
        .iter()
        .map(|e| e.method == "HEAD")
        .collect();
    let deadline = Instant::now() + READ_DEADLINE;
    let mut grace_until: Option<Instant> = None;
    let mut buf = Vec::new();
    let mut eof = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (resps, _) = parse_responses(&buf, &heads, eof);
        if eof {
            break;
        }
        if grace_until.is_none() && built.outcomes.iter().any(|o| o.complete(&resps, eof)) {
            grace_until = Some(Instant::now() + GRACE);
        }
        let until = grace_until.map_or(deadline, |g| g.min(deadline));
        let now = Instant::now();
        if now >= until {
            break;
        }
        let _ = s.set_read_timeout(Some(until - now));
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset closes the connection as well (what was read before it stays).
            Err(_) => eof = true,
        }
    }
    let (resps, error) = parse_responses(&buf, &heads, eof);
    Seen { resps, eof, error }
}

/// One clean request with the case's identity on a new connection: it must get its own answer.
fn second_client(gw: SocketAddr, cx: &Cx) -> Result<(), String> {
    let mut s = TcpStream::connect(gw).map_err(|e| format!("second client: connect: {e}"))?;
    s.set_read_timeout(Some(SECOND_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.write_all(&cx.t("GET {P}/second HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"))
        .map_err(|e| format!("second client: write: {e}"))?;
    let mut buf = Vec::new();
    let deadline = Instant::now() + SECOND_DEADLINE;
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if !parse_responses(&buf, &[], false).0.is_empty() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let (resps, err) = parse_responses(&buf, &[], eof);
    let want = format!(":GET {}/second", cx.p);
    match resps.first() {
        Some(r)
            if r.status == 200
                && String::from_utf8_lossy(&r.body).starts_with("seen:")
                && String::from_utf8_lossy(&r.body).ends_with(&want) =>
        {
            Ok(())
        }
        Some(r) => Err(format!(
            "second client got {} {} instead of its own answer",
            r.status,
            show(&r.body, 80)
        )),
        None => Err(format!(
            "second client got no answer ({})",
            err.unwrap_or_else(|| format!("read {}", show(&buf, 80)))
        )),
    }
}

/// Run one case; `Err` holds every reason it failed.
fn run_case(
    gw: SocketAddr,
    target: &StrictTarget,
    cx: &Cx,
    port: u16,
    built: &Built,
    sha: &str,
) -> Result<(), String> {
    let seen = first_client(gw, built);
    let second = second_client(gw, cx);
    let all = target.records_on(port);
    let second_path = cx.path("/second");
    let records: Vec<&Record> = all.iter().filter(|r| r.path != second_path).collect();

    let mut why = Vec::new();
    if let Err(e) = second {
        why.push(e);
    }
    if all.iter().filter(|r| r.path == second_path).count() != 1 {
        why.push("the target did not parse the second client's request exactly once".into());
    }
    for r in &all {
        if r.cert_sha256 != sha {
            why.push(format!(
                "{} {} came with client certificate {}",
                r.method, r.path, r.cert_sha256
            ));
        }
        let te = r.header("transfer-encoding");
        let cl = r.header("content-length");
        if !te.is_empty() && !cl.is_empty() {
            why.push(format!(
                "{} {} reached the target with Content-Length and Transfer-Encoding",
                r.method, r.path
            ));
        }
        if te.len() > 1
            || te.first().is_some_and(|v| {
                !String::from_utf8_lossy(v)
                    .to_ascii_lowercase()
                    .trim_end()
                    .ends_with("chunked")
            })
        {
            why.push(format!(
                "{} {} reached the target with Transfer-Encoding {:?}",
                r.method,
                r.path,
                te.iter()
                    .map(|v| String::from_utf8_lossy(v))
                    .collect::<Vec<_>>()
            ));
        }
    }
    // Canonical framing out: whatever the client sent, every connection to the target carries
    // requests framed the way the gateway writes them (so never the client's chunk framing).
    for (conn, raw) in target.raw_on(port) {
        if let Err(e) = crate::strict_target::canonical(&raw) {
            why.push(format!(
                "target connection {conn} received non-canonical bytes: {e}"
            ));
        }
    }
    if let Some(e) = &seen.error {
        why.push(format!("client: unparseable answer: {e}"));
    }
    let mismatches: Vec<Vec<String>> = built
        .outcomes
        .iter()
        .map(|o| o.mismatch(&seen, &records))
        .collect();
    let matched = mismatches.iter().any(|m| m.is_empty());
    let verbose = std::env::var_os("FRAMING_VERBOSE").is_some();
    if !matched || verbose {
        let parsed: Vec<String> = records
            .iter()
            .map(|r| {
                let body = match &r.body {
                    Some(Ok(b)) => format!("{} B", b.len()),
                    Some(Err(e)) => format!("body failed: {e}"),
                    None => "body incomplete".into(),
                };
                format!("{} {} [{body}]", r.method, r.path)
            })
            .collect();
        let answers: Vec<String> = seen
            .resps
            .iter()
            .map(|r| format!("{} {}", r.status, show(&r.body, 48)))
            .collect();
        let summary = format!(
            "target parsed {parsed:?}; client got {answers:?}{}",
            if seen.eof {
                ", then close"
            } else {
                ", connection open"
            }
        );
        if verbose {
            eprintln!(
                "{} {}: {summary}",
                cx.p,
                if matched { "ok" } else { "FAIL" }
            );
        }
        if !matched {
            why.push(summary);
            for (i, m) in mismatches.iter().enumerate() {
                why.push(format!("outcome {}: {}", i + 1, m.join("; ")));
            }
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n    "))
    }
}

#[test]
fn framing_cases_reach_the_strict_target_whole_or_not_at_all() {
    let cases = all_cases();
    let pki = Pki::new();
    let target = StrictTarget::start(cases.len(), &pki.server.cert, &pki.server.key, &pki.ca.cert);
    let cert = pki.client("framing");
    let sha = sha256_hex(&cert.cert);
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &cert);
    let urls: Vec<String> = target
        .ports
        .iter()
        .map(|p| format!("https://localhost:{p}/*"))
        .collect();
    let maps: Vec<(u64, &str, &str, u64)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (i as u64 + 10, "TEST_SERVICE", u.as_str(), 1))
        .collect();
    seed.mappings("acc", &maps);
    let gw = Gw::start(dir.path(), &pki.ca_path, "rate_limit:\n  enabled: false\n");

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<(usize, String)>::new());
    let ran = AtomicUsize::new(0);
    let target = Arc::new(target);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let port = target.ports[i];
                let cx = Cx {
                    h: format!("localhost:{port}"),
                    p: format!("/c{i:03}"),
                };
                let built = (case.build)(&cx);
                let r = run_case(gw.proxy, &target, &cx, port, &built, &sha);
                ran.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, format!("{} ({}): {e}", case.name, cx.p)));
                }
            });
        }
    });
    let mut families: Vec<(&str, usize)> = Vec::new();
    for c in &cases {
        match families.iter_mut().find(|(f, _)| *f == c.family) {
            Some((_, n)) => *n += 1,
            None => families.push((c.family, 1)),
        }
    }
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    eprintln!(
        "{} framing cases in {:.1} s; per family: {families:?}; {} failed",
        ran.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        ran.load(Ordering::Relaxed) >= 200,
        "only {} cases ran",
        ran.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "{} of {} framing cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .map(|(_, f)| format!("  {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Paths of [`crate::strict_target::ambiguous_response`] whose answers are framed ambiguously
/// or wrongly, each followed by bytes that read as a second answer (`smuggled`).
const AMBIGUOUS: &[&str] = &[
    "/cl-te",
    "/te-cl",
    "/two-cl",
    "/cl-list",
    "/cl-plus",
    "/cl-hex",
    "/chunk-bare-lf",
    "/chunk-junk",
    "/chunk-overflow",
    "/chunk-no-crlf",
];

/// One `GET` with `Connection: close` on a new connection: (status, body), or why none came.
fn ask_once(gw: SocketAddr, host: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(gw).map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    let (resps, err) = parse_responses(&buf, &[], eof);
    match resps.into_iter().next() {
        Some(r) => Ok((r.status, r.body)),
        None => Err(format!(
            "no complete answer within 3 s ({})",
            err.unwrap_or_else(|| show(&buf, 80))
        )),
    }
}

#[test]
fn an_ambiguous_answer_is_not_forwarded_and_its_connection_is_not_reused() {
    use crate::strict_target::RawTarget;
    let pki = Pki::new();
    let target = RawTarget::start(&pki.server.cert, &pki.server.key, &pki.ca.cert);
    let cert = pki.client("ambiguous");
    let dir = tempfile::tempdir().expect("tmp");
    let seed = Seed::new(dir.path());
    seed.cert("acc", 1, &cert);
    let url = format!("https://localhost:{}/*", target.port);
    seed.mappings("acc", &[(10, "TEST_SERVICE", &url, 1)]);
    let gw = Gw::start(dir.path(), &pki.ca_path, "rate_limit:\n  enabled: false\n");
    let host = format!("localhost:{}", target.port);

    // The set-up works: a well-framed answer is forwarded.
    assert_eq!(
        ask_once(gw.proxy, &host, "/ok"),
        Ok((200, b"ok".to_vec())),
        "a clean answer"
    );
    let mut failures = Vec::new();
    for path in AMBIGUOUS {
        let before = target.seen().len();
        let mut why = Vec::new();
        match ask_once(gw.proxy, &host, path) {
            Ok((status, body)) => {
                if status == 200 || (200..300).contains(&status) {
                    why.push(format!("forwarded: {status} {}", show(&body, 60)));
                }
                if body.windows(8).any(|w| w == b"smuggled") {
                    why.push(format!(
                        "the smuggled answer reached the client: {}",
                        show(&body, 80)
                    ));
                }
            }
            Err(e) => why.push(format!("client: {e}")),
        }
        // The next caller of the same identity gets its own answer, on another connection.
        match ask_once(gw.proxy, &host, "/ok") {
            Ok((200, body)) if body == b"ok" => {}
            Ok((status, body)) => why.push(format!(
                "the next request got {status} {} instead of its own answer",
                show(&body, 60)
            )),
            Err(e) => why.push(format!("the next request: {e}")),
        }
        let seen = target.seen();
        let seen = &seen[before.min(seen.len())..];
        match seen.iter().position(|(_, p)| p == path) {
            None => why.push("the target never got the request".into()),
            Some(i) => {
                let conn = seen[i].0;
                let reused: Vec<&String> = seen[i + 1..]
                    .iter()
                    .filter(|(c, _)| *c == conn)
                    .map(|(_, p)| p)
                    .collect();
                if !reused.is_empty() {
                    why.push(format!(
                        "connection {conn} was used again after the ambiguous answer, for {reused:?}"
                    ));
                }
            }
        }
        if !seen.iter().any(|(_, p)| p == "/ok") {
            why.push("the next request never reached the target".into());
        }
        if !why.is_empty() {
            failures.push(format!("{path}: {}", why.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} ambiguous answers mishandled:\n  {}",
        failures.len(),
        AMBIGUOUS.len(),
        failures.join("\n  ")
    );
}
