//! The exchange with the target, for the connection loop (`super`): send the upstream request
//! (a buffered body with it, or a streamed one while the answer is relayed), read the answer's
//! head (interim 1xx passed on), check its framing and relay its body to the client in the
//! gateway's own framing. When a request may be sent again is decided here (`exchange`).

use super::*;

/// Send a streamed request body to the target as it arrives: the bytes already in `buf`
/// first, then what the client sends, up to the end of the body by its framing (bytes after
/// it, a pipelined request, stay in `buf`). `Fail::Down`: the client stopped sending or took
/// longer than `io` for a part; `Fail::BadChunked`: a malformed chunked body.
pub(super) async fn pump_body<R, W>(
    dr: &mut R,
    buf: &mut BytesMut,
    io: Duration,
    uw: &mut W,
    mut body: BodyEnd,
    prefix: Vec<u8>,
    wt: Duration,
) -> Result<(), Fail>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut end = body.empty();
    if !prefix.is_empty() {
        match timed(wt, uw.write_all(&prefix)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(up_err(WriteError, e.to_string())),
            Err(()) => return Err(up_err(WriteTimedout, "request body".into())),
        }
    }
    let mut out = Vec::new();
    while !end {
        if !buf.is_empty() {
            let take;
            out.clear();
            (take, end) = body
                .take(buf, &mut out, true)
                .map_err(|_| Fail::BadChunked)?;
            match timed(wt, uw.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(up_err(WriteError, e.to_string())),
                Err(()) => return Err(up_err(WriteTimedout, "request body".into())),
            }
            buf.advance(take);
            if end {
                break;
            }
        }
        buf.reserve(IO_CHUNK);
        match fast_timeout(io, dr.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Fail::Down),
        }
    }
    match timed(wt, uw.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(up_err(WriteError, e.to_string())),
        Err(()) => Err(up_err(WriteTimedout, "request body".into())),
    }
}

pub(super) use crate::http1::codec::Framing;

/// Where a body ends, found from the bytes as they come, by its framing, and what of them is
/// sent on.
pub(super) struct BodyEnd {
    framing: Framing,
    /// `Length`: bytes still to come.
    left: u64,
    pub(super) chunked: ChunkedDecoder,
    /// Decoded chunk data, before it is framed again.
    scratch: Vec<u8>,
}

impl BodyEnd {
    pub(super) fn new(framing: Framing) -> BodyEnd {
        BodyEnd {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedDecoder::new(),
            scratch: Vec::new(),
        }
    }

    /// No body at all.
    pub(super) fn empty(&self) -> bool {
        matches!(self.framing, Framing::None | Framing::Length(0))
    }

    /// How many bytes at the start of `buf` are body, and whether the body ends with them; what
    /// goes on is appended to `out`. A `Length` or until-close body is data as it is; a chunked
    /// body is decoded and its data framed again by the gateway (`rechunk`: in its own chunks,
    /// ending with the last chunk; otherwise bare, for an HTTP/1.0 client): the sender's chunk
    /// sizes, extensions and trailers never go on.
    fn take(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        rechunk: bool,
    ) -> Result<(usize, bool), ChunkError> {
        Ok(match self.framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let t = (buf.len() as u64).min(self.left) as usize;
                self.left -= t as u64;
                out.extend_from_slice(&buf[..t]);
                (t, self.left == 0)
            }
            Framing::Chunked if rechunk => {
                self.scratch.clear();
                let end = self.chunked.feed(buf, &mut self.scratch)?;
                codec::encode_chunk(&self.scratch, out);
                match end {
                    Some(n) => {
                        out.extend_from_slice(codec::LAST_CHUNK);
                        (n, true)
                    }
                    None => (buf.len(), false),
                }
            }
            Framing::Chunked => match self.chunked.feed(buf, out)? {
                Some(n) => (n, true),
                None => (buf.len(), false),
            },
            Framing::UntilClose => {
                out.extend_from_slice(buf);
                (buf.len(), false)
            }
        })
    }
}

/// What the response head said, and the head to send downstream.
pub(super) struct RespHead {
    status: u16,
    framing: Framing,
    keepalive: bool,
    head_len: usize,
    /// The client's connection closes after this response.
    down_close: bool,
    /// The client spoke HTTP/1.0.
    http10: bool,
    /// A chunked body decoded for an HTTP/1.0 client (which then reads it to the close).
    dechunk: bool,
    /// The head for the client: the target's, with hop-by-hop headers replaced.
    out: Vec<u8>,
}

impl Lean {
    /// Send the request and relay the answer. `Ok((status, downstream may stay open))`;
    /// `Err((why, whether the response head was already sent))`.
    ///
    /// Sent again, on a new connection, only when that cannot deliver it twice (RFC 9110
    /// 9.2.2, nginx's `proxy_next_upstream` without `non_idempotent`): an idempotent request
    /// whose pooled connection failed before any byte of the answer. A pooled connection is
    /// first checked for a close the target already sent (a non-idempotent request never goes
    /// on one); once a non-idempotent request was written, a failure is the client's 424,
    /// never a second send.
    pub(super) async fn exchange(
        &self,
        down: &mut Down,
        ctx: &mut Ctx,
        up_req: &[u8],
        want: HeadWant<'_>,
        idempotent: bool,
    ) -> Result<(u16, bool), (Fail, bool)> {
        let (key, sni) = self.upstream_of(ctx).await?;
        let addr = key.addr;
        let mut ubuf = BytesMut::with_capacity(16 * 1024);
        let mut retried = false;
        let (mut up, mut resp) = loop {
            let pooled = if idempotent && !retried {
                self.pool.take(&key, sni)
            } else {
                self.take_open(&key, sni)
            };
            let (mut up, reused) = self.checkout(pooled, addr, sni, ctx).await?;
            ubuf.clear();
            let got = match self.send(&mut up, up_req).await {
                Ok(()) => {
                    self.read_head(&mut down.stream, down.io, &mut up, &mut ubuf, want)
                        .await
                }
                Err(Fail::Up(e)) if reused && e.etype() == &WriteError => Err(Fail::Stale),
                Err(f) => Err(f),
            };
            match got {
                Ok(h) => break (up, h),
                Err(Fail::Stale) if reused && idempotent && !retried => {
                    retried = true;
                    metrics::UPSTREAM_RETRIES.inc();
                    continue;
                }
                Err(Fail::Stale) => {
                    let why = if idempotent {
                        "the target closed the connection before answering".to_string()
                    } else {
                        "the target closed the connection after the request was sent, before answering; a non-idempotent request is not sent twice".to_string()
                    };
                    return Err((up_err(ConnectionClosed, why), false));
                }
                Err(f) => return Err((f, false)),
            }
        };

        let down_close = resp.down_close;
        let clean = self
            .relay_body(&mut down.stream, down.io, &mut up, &mut ubuf, &mut resp)
            .await?;
        if resp.keepalive && clean {
            self.pool.put(key, sni, up);
        }
        Ok((resp.status, !down_close))
    }

    /// The pooled connection if there is one, else a new one (with the mapping's certificate);
    /// counted as reused or new. `(connection, reused)`.
    async fn checkout(
        &self,
        pooled: Option<UpConn>,
        addr: std::net::SocketAddr,
        sni: &str,
        ctx: &Ctx,
    ) -> Result<(UpConn, bool), (Fail, bool)> {
        let got = match pooled {
            Some(s) => (s, true),
            None => match self
                .tls
                .connect(addr, sni, ctx.cert.as_deref().map(|c| &*c.cert_key))
                .await
            {
                Ok(s) => (s, false),
                Err(e) => {
                    count_connect_failure(&e);
                    return Err((Fail::Up(e), false));
                }
            },
        };
        metrics::upstream_connection(got.1);
        Ok(got)
    }

    /// A pooled connection that shows no sign of a close by the target (no end of stream, reset
    /// or stray byte waiting to be read), for a request that must not be sent twice; those that
    /// do are dropped.
    pub(super) fn take_open(&self, key: &PoolKey, sni: &str) -> Option<UpConn> {
        while let Some(mut s) = self.pool.take(key, sni) {
            let mut probe = [0u8; 1];
            if s.read(&mut probe).now_or_never().is_none() {
                return Some(s);
            }
        }
        None
    }

    /// The target's pool key (resolved address, client identity) and TLS server name.
    pub(super) async fn upstream_of<'c>(
        &self,
        ctx: &'c Ctx,
    ) -> Result<(PoolKey, &'c str), (Fail, bool)> {
        let target = ctx
            .target
            .as_ref()
            .ok_or((up_err(InternalError, "no target".into()), false))?;
        let addr = self
            .gw
            .resolve(target)
            .await
            .map_err(|e| (Fail::Up(e), false))?;
        let key = PoolKey {
            addr,
            identity: ctx.cert.as_ref().map(|c| c.leaf_sha256).unwrap_or([0; 32]),
        };
        Ok((key, Gateway::sni(target)))
    }

    /// The exchange for a streamed request body (over `REPLAY_BODY`, chunked, or after
    /// `Expect: 100-continue`), on a pooled connection that is still open or a new one; it is not
    /// sent twice (as nginx does not for a non-idempotent request). After the head, the body is sent on as it arrives *while* the answer is
    /// relayed, in one task: a target may answer, or echo, before it has read the whole body,
    /// and a proxy that only reads once it has written everything stalls such an exchange as
    /// soon as the socket buffers on both sides are full.
    pub(super) async fn exchange_streamed(
        &self,
        down: &mut Down,
        ctx: &mut Ctx,
        up_head: &[u8],
        how: Streamed,
    ) -> Result<(u16, bool), (Fail, bool)> {
        let Streamed {
            body,
            prefix,
            expect,
            want,
        } = how;
        let (key, sni) = self.upstream_of(ctx).await?;
        // The body cannot be sent twice, so a pooled connection the target has already closed
        // is dropped before it is used rather than found out after the body went.
        let pooled = self.take_open(&key, sni);
        let (mut up, _) = self.checkout(pooled, key.addr, sni, ctx).await?;
        self.send(&mut up, up_head).await.map_err(|f| (f, false))?;
        let wt = self.gw.cfg.upstream.write_timeout;
        let io = down.io;
        // While the body is still being sent, a target that has not answered yet is not late
        // (most answer only after the whole body): the head's read timeout counts from then.
        let sending = AtomicBool::new(true);
        // Set once the target's final answer starts (after it, the client cannot get a 400).
        let answered = AtomicBool::new(false);
        let (resp, clean, body_sent) = {
            let (mut ur, mut uw) = tokio::io::split(&mut up);
            let (mut dr, mut dw) = tokio::io::split(&mut down.stream);
            let mut pump = std::pin::pin!(async {
                let r = pump_body(&mut dr, &mut down.buf, io, &mut uw, body, prefix, wt).await;
                sending.store(false, Ordering::Relaxed);
                r
            });
            let mut relay = std::pin::pin!(async {
                let mut ubuf = BytesMut::with_capacity(16 * 1024);
                let want = HeadWant {
                    sending: Some(&sending),
                    ..want
                };
                let mut resp = self
                    .read_head(&mut dw, io, &mut ur, &mut ubuf, want)
                    .await
                    .map_err(|f| match f {
                        // Nothing to send again with: the client gets the 424.
                        Fail::Stale => (
                            up_err(
                                ConnectionClosed,
                                "the target closed the connection before answering".into(),
                            ),
                            false,
                        ),
                        f => (f, false),
                    })?;
                answered.store(true, Ordering::Relaxed);
                let clean = self
                    .relay_body(&mut dw, io, &mut ur, &mut ubuf, &mut resp)
                    .await?;
                Ok::<_, (Fail, bool)>((resp, clean))
            });
            let mut pumped: Option<Result<(), Fail>> = None;
            let (resp, clean) = loop {
                tokio::select! {
                    r = &mut pump, if pumped.is_none() => {
                        match r {
                            // The client stopped sending: nothing can be completed.
                            Err(Fail::Down) => return Err((Fail::Down, true)),
                            Err(Fail::BadChunked) => {
                                return Err((Fail::BadChunked, answered.load(Ordering::Relaxed)))
                            }
                            _ => {}
                        }
                        // A write to the target failed: it may still answer (say, a 413 and
                        // close), so the relay goes on.
                        pumped = Some(r);
                    }
                    r = &mut relay => break r?,
                }
            };
            // The answer is complete; the rest of the body (a target may answer before it has
            // read it all) is still sent, within the client and upstream timeouts.
            let body_sent = match pumped {
                Some(r) => r.is_ok(),
                // After a final answer to `Expect: 100-continue` the client may never send the
                // body (RFC 9110 10.1.1): the connection closes instead of waiting for it.
                None if expect => false,
                None => pump.await.is_ok(),
            };
            (resp, clean, body_sent)
        };
        if resp.keepalive && clean && body_sent {
            self.pool.put(key, sni, up);
        }
        Ok((resp.status, body_sent && !resp.down_close))
    }

    /// Relay the response body after `resp` (its head, already parsed, goes first) from the
    /// target to the client as it arrives, framing checked, bytes unchanged. `Ok(clean)`: the
    /// target sent nothing after the end of the body; `Err((why, whether the head was sent))`.
    pub(super) async fn relay_body<R, W>(
        &self,
        dw: &mut W,
        io: Duration,
        up: &mut R,
        ubuf: &mut BytesMut,
        resp: &mut RespHead,
    ) -> Result<bool, (Fail, bool)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let up_cfg = &self.gw.cfg.upstream;
        let mut out = std::mem::take(&mut resp.out);
        ubuf.advance(resp.head_len);

        // The body: relayed as it arrives, framing checked, bytes unchanged (a chunked body for
        // an HTTP/1.0 client: its data only).
        let mut body = BodyEnd::new(resp.framing);
        let mut done = body.empty();
        let mut clean = true; // nothing after the end of the body
        let mut head_sent = false;
        loop {
            if !done {
                let take;
                (take, done) = body.take(ubuf, &mut out, !resp.dechunk).map_err(|e| {
                    (
                        up_err(InvalidHTTPHeader, format!("response body: {e}")),
                        head_sent,
                    )
                })?;
                ubuf.advance(take);
            }
            if done && !ubuf.is_empty() {
                clean = false;
            }
            if done {
                if !out.is_empty() && !write_down(dw, io, &out).await {
                    return Err((Fail::Down, true));
                }
                break;
            }
            // Not done: hand what we have to the client *while* reading the next part from the
            // target (two buffers), so a large response costs max(write, read) per round, not
            // their sum.
            ubuf.clear();
            ubuf.reserve(IO_CHUNK);
            let read = fast_timeout(up_cfg.read_timeout, up.read_buf(ubuf));
            let r = if out.is_empty() {
                read.await
            } else {
                let (written, r) = tokio::join!(write_down(dw, io, &out), read);
                if !written {
                    return Err((Fail::Down, true));
                }
                head_sent = true;
                out.clear();
                r
            };
            match r {
                Ok(Ok(0)) if resp.framing == Framing::UntilClose => {
                    done = true;
                    clean = false;
                }
                Ok(Ok(0)) => {
                    return Err((
                        up_err(ConnectionClosed, "the target closed during the body".into()),
                        true,
                    ))
                }
                Ok(Ok(_)) => {
                    // Take what has already arrived too (no waiting): fewer, larger writes to
                    // the client.
                    while ubuf.len() < 2 * IO_CHUNK
                        && !matches!(resp.framing, Framing::Length(_) if ubuf.len() as u64 >= body.left)
                    {
                        match up.read_buf(ubuf).now_or_never() {
                            Some(Ok(n)) if n > 0 => {}
                            _ => break,
                        }
                    }
                }
                Ok(Err(e)) => return Err((up_err(ReadError, e.to_string()), true)),
                Err(_) => return Err((up_err(ReadTimedout, "response body".into()), true)),
            }
        }
        Ok(clean)
    }

    /// Write the whole request (head and buffered body).
    pub(super) async fn send(&self, up: &mut UpConn, up_req: &[u8]) -> Result<(), Fail> {
        let w = timed(self.gw.cfg.upstream.write_timeout, async {
            up.write_all(up_req).await?;
            up.flush().await
        })
        .await;
        match w {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(up_err(WriteError, e.to_string())),
            Err(_) => Err(up_err(WriteTimedout, "request".into())),
        }
    }

    /// Read up to the end of the final response head; 1xx interim heads go to the client as
    /// they come. `ubuf` keeps the head (and any body bytes after it).
    pub(super) async fn read_head<R, W>(
        &self,
        dw: &mut W,
        io: Duration,
        up: &mut R,
        ubuf: &mut BytesMut,
        want: HeadWant<'_>,
    ) -> Result<RespHead, Fail>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let timeout = self.gw.cfg.upstream.read_timeout;
        let mut got_any = false;
        loop {
            if !ubuf.is_empty() {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Response::new(&mut hdrs);
                match r.parse(ubuf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = r.code.unwrap_or(0);
                        if (100..200).contains(&status) {
                            if status == 101 {
                                return Err(up_err(
                                    InvalidHTTPHeader,
                                    "101 Switching Protocols without an upgrade request".into(),
                                ));
                            }
                            // RFC 9110 15.2: no 1xx to an HTTP/1.0 client. Written again by
                            // the gateway (status line and the target's fields), not copied.
                            if !want.http10 {
                                let mut interim = Vec::with_capacity(n + 16);
                                let _ = write!(
                                    interim,
                                    "HTTP/1.1 {status} {}\r\n",
                                    r.reason.unwrap_or("")
                                );
                                for hd in r.headers.iter() {
                                    interim.extend_from_slice(hd.name.as_bytes());
                                    interim.extend_from_slice(b": ");
                                    interim.extend_from_slice(hd.value);
                                    interim.extend_from_slice(b"\r\n");
                                }
                                interim.extend_from_slice(b"\r\n");
                                if !write_down(dw, io, &interim).await {
                                    return Err(Fail::Down);
                                }
                            }
                            ubuf.advance(n);
                            continue;
                        }
                        let mut h = response_framing(&r, n, want.is_head)?;
                        h.dechunk = want.http10 && h.framing == Framing::Chunked;
                        h.down_close = want.close || h.framing == Framing::UntilClose || h.dechunk;
                        h.http10 = want.http10;
                        client_head(&r, &mut h);
                        return Ok(h);
                    }
                    Ok(httparse::Status::Partial) if ubuf.len() <= MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(up_err(InvalidHTTPHeader, "response head too large".into()))
                    }
                    Err(e) => return Err(up_err(InvalidHTTPHeader, format!("response head: {e}"))),
                }
            }
            // While a streamed body is still being sent the target is not late; the timeout
            // counts from the end of the body: a wait that began while sending gets one more.
            let was_sending = want.sending.is_some_and(|s| s.load(Ordering::Relaxed));
            match fast_timeout(timeout, up.read_buf(ubuf)).await {
                Ok(Ok(0)) if !got_any => return Err(Fail::Stale),
                Ok(Ok(0)) => {
                    return Err(up_err(
                        ConnectionClosed,
                        "the target closed during the response head".into(),
                    ))
                }
                Ok(Ok(_)) => got_any = true,
                Ok(Err(e)) if !got_any => {
                    // A reset on a pooled connection is the same case as a close.
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) {
                        return Err(Fail::Stale);
                    }
                    return Err(up_err(ReadError, e.to_string()));
                }
                Ok(Err(e)) => return Err(up_err(ReadError, e.to_string())),
                Err(_) if was_sending => {}
                Err(_) => return Err(up_err(ReadTimedout, "response head".into())),
            }
        }
    }
}

/// Body framing and reuse from a final response head.
fn response_framing(
    r: &httparse::Response<'_, '_>,
    head_len: usize,
    is_head: bool,
) -> Result<RespHead, Fail> {
    let status = r.code.unwrap_or(0);
    let framing = codec::response_framing(status, r.headers, is_head)
        .map_err(|why| up_err(InvalidHTTPHeader, why.into()))?;
    let keepalive = r.version == Some(1)
        && framing != Framing::UntilClose
        && !r
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && has_token(h.value, "close"));
    Ok(RespHead {
        status,
        framing,
        keepalive,
        head_len,
        down_close: false,
        http10: false,
        dechunk: false,
        out: Vec::new(),
    })
}

/// The response head for the client (into `h.out`): the target's status and headers, without
/// its hop-by-hop ones, plus `Connection: close` when the client's connection ends.
///
/// The framing fields are the gateway's own: a `Length` body gets one `Content-Length`, a
/// chunked body `Transfer-Encoding: chunked` (re-chunked by the gateway; none for an HTTP/1.0
/// client, which reads to the close); a body without framing (HEAD, 204, 304) keeps the
/// target's `Content-Length`, which describes the resource.
fn client_head(r: &httparse::Response<'_, '_>, h: &mut RespHead) {
    let out = &mut h.out;
    out.reserve(h.head_len + 64);
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", h.status, r.reason.unwrap_or(""));
    let ours = matches!(h.framing, Framing::Length(_) | Framing::Chunked);
    // Fields the target's `Connection` nominated are hop-by-hop too (RFC 9110 7.6.1).
    let nominated: Vec<&str> = r
        .headers
        .iter()
        .filter(|hd| hd.name.eq_ignore_ascii_case("connection"))
        .filter_map(|hd| text(hd.value))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    for hd in r.headers.iter() {
        let n = hd.name;
        if nominated.iter().any(|t| n.eq_ignore_ascii_case(t))
            || n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("keep-alive")
            || n.eq_ignore_ascii_case("proxy-connection")
            || n.eq_ignore_ascii_case("trailer")
            || ours
                && (n.eq_ignore_ascii_case("transfer-encoding")
                    || n.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(hd.value);
        out.extend_from_slice(b"\r\n");
    }
    match h.framing {
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked if !h.dechunk => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(connection_header(h.down_close, h.http10));
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` header of an answer to the client: `close` when its connection ends after
/// it, `keep-alive` when it stays open for an HTTP/1.0 client (which would otherwise assume the
/// close), none for HTTP/1.1 (persistent by default).
pub(super) fn connection_header(close: bool, http10: bool) -> &'static [u8] {
    if close {
        b"Connection: close\r\n"
    } else if http10 {
        b"Connection: keep-alive\r\n"
    } else {
        b""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing_follows_rfc_9112() {
        let frame = |raw: &[u8], head: bool| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut h);
            let n = match r.parse(raw) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}"),
            };
            match response_framing(&r, n, head) {
                Ok(h) => (h.framing, h.keepalive),
                Err(_) => panic!("framing error"),
            }
        };
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            (Framing::Length(5), true)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            (Framing::None, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                false
            ),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            frame(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            frame(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::None, true)
        );
        assert_eq!(
            frame(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            (Framing::Length(0), false)
        );
        assert_eq!(
            frame(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (Framing::Length(0), false)
        );
    }
}
