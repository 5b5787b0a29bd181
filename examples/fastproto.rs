//! Throwaway prototype: how fast can a lean HTTP/1 -> mTLS proxy be on this box?
use boring::ssl::{SslConnector, SslFiletype, SslMethod};
use bytes::BytesMut;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_boring::SslStream;

type Up = SslStream<TcpStream>;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args[1].clone();
    let upstream = args[2].clone();
    let pki = args[3].clone();
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async move {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_ca_file(format!("{pki}/ca.pem")).unwrap();
        b.set_certificate_chain_file(format!("{pki}/client.pem")).unwrap();
        b.set_private_key_file(format!("{pki}/client.key"), SslFiletype::PEM).unwrap();
        let conn = Arc::new(b.build());
        let pool: Arc<Mutex<Vec<Up>>> = Arc::new(Mutex::new(Vec::new()));
        let l = TcpListener::bind(&listen).await.unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let conn = conn.clone();
            let pool = pool.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = serve(s, conn, pool, upstream).await;
            });
        }
    });
}

async fn get_up(conn: &SslConnector, pool: &Mutex<Vec<Up>>, upstream: &str) -> std::io::Result<Up> {
    if let Some(u) = pool.lock().pop() {
        return Ok(u);
    }
    let t = TcpStream::connect(upstream).await?;
    t.set_nodelay(true)?;
    let cfg = conn.configure().unwrap();
    tokio_boring::connect(cfg, "localhost", t).await.map_err(|e| std::io::Error::other(format!("{e:?}")))
}

async fn serve(mut s: TcpStream, conn: Arc<SslConnector>, pool: Arc<Mutex<Vec<Up>>>, upstream: String) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut ubuf = BytesMut::with_capacity(16384);
    let mut out = Vec::with_capacity(1024);
    loop {
        // read request head
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(req.method.unwrap().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap().as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("connection") { continue; }
                        out.extend_from_slice(h.name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(h.value);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    break n;
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(()),
            }
            if s.read_buf(&mut buf).await? == 0 { return Ok(()); }
        };
        let _ = buf.split_to(head_len);
        let mut up = get_up(&conn, &pool, &upstream).await?;
        up.write_all(&out).await?;
        // read response head
        ubuf.clear();
        let (hl, clen) = loop {
            if up.read_buf(&mut ubuf).await? == 0 { return Ok(()); }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&ubuf).map_err(std::io::Error::other)? {
                let mut cl = 0usize;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        cl = std::str::from_utf8(h.value).unwrap().trim().parse().unwrap();
                    }
                }
                break (n, cl);
            }
        };
        let total = hl + clen;
        while ubuf.len() < total {
            if up.read_buf(&mut ubuf).await? == 0 { return Ok(()); }
        }
        s.write_all(&ubuf[..total]).await?;
        pool.lock().push(up);
    }
}
