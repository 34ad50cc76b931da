//! A scripted HTTP/1.1 server on loopback for tests: every request is
//! recorded, and the script answers it, or resets or holds the connection.
//! Enough of HTTP for reqwest's blocking client (keep-alive, Content-Length
//! and chunked bodies); nothing more.
//!
//! The one fake HTTP server of the project: the unit tests use it as
//! `crate::test_http`, and the integration tests' fake registry
//! (tests/support/fake_registry.rs) includes this file as its wire layer,
//! since integration tests cannot see the library's `#[cfg(test)]` items.
//! Each side uses part of it, so the unused rest must not warn.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `METHOD path`, for asserting the order of requests.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ending: Ending,
}

/// What the server does instead of (or after) reading the script's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Send the reply and keep the connection for the next request.
    Answer,
    /// Send nothing and reset the connection.
    Reset,
    /// Send nothing and hold the connection open: a server that hangs.
    Hang,
    /// Send the reply's head and body (chunked), then `filler` without end
    /// until the client goes away: 64 KiB at a time, or one byte per `pause`
    /// when it is not zero (a trickle).
    Endless { filler: u8, pause: Duration },
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            ending: Ending::Answer,
        }
    }

    /// No answer: the connection is reset.
    pub fn reset() -> Self {
        Reply {
            ending: Ending::Reset,
            ..Reply::status(0)
        }
    }

    /// No answer, ever: the connection stays open.
    pub fn hang() -> Self {
        Reply {
            ending: Ending::Hang,
            ..Reply::status(0)
        }
    }

    /// `status` with `start` as the body's first bytes, and then `filler`
    /// without end: a server that never stops sending.
    pub fn endless(status: u16, start: impl Into<Vec<u8>>, filler: u8) -> Self {
        Reply {
            ending: Ending::Endless {
                filler,
                pause: Duration::ZERO,
            },
            ..Reply::status(status).body(start)
        }
    }

    /// The same, one byte of `filler` per `pause`.
    pub fn trickle(status: u16, start: impl Into<Vec<u8>>, filler: u8, pause: Duration) -> Self {
        Reply {
            ending: Ending::Endless { filler, pause },
            ..Reply::status(status).body(start)
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;
/// Sees a request's head before its body is read; `Some(n)` reads `n` bytes
/// of the body and then resets the connection (a transfer cut off midway).
type Peek = dyn Fn(&Request) -> Option<usize> + Send + Sync;

pub struct Server {
    /// `IP:PORT`
    pub addr: String,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_on("127.0.0.1", |_| None, script)
    }

    /// On another loopback address (e.g. `127.0.0.2`, to play a second host),
    /// with `peek` deciding before a body is read whether to cut it off.
    pub fn start_on(
        ip: &str,
        peek: impl Fn(&Request) -> Option<usize> + Send + Sync + 'static,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        assert!(ip.starts_with("127."), "fakes listen on loopback only");
        let peek: Arc<Peek> = Arc::new(peek);
        Server::listen(ip, script, move |tcp| Some((tcp, peek.clone())))
    }

    /// The same over TLS, presenting `cert_pem` (the server's certificate,
    /// then its chain) with the key `key_pem`.
    pub fn start_tls(
        cert_pem: &str,
        key_pem: &str,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("a PEM key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a certificate and its key"),
        );
        let no_peek: Arc<Peek> = Arc::new(|_| None);
        Server::listen("127.0.0.1", script, move |tcp| {
            let tls = rustls::ServerConnection::new(config.clone()).ok()?;
            Some((rustls::StreamOwned::new(tls, tcp), no_peek.clone()))
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("IP:PORT")
    }

    /// Serves each connection `wrap` makes of an accepted one on its own thread.
    fn listen<S: Read + Write + Send + 'static>(
        ip: &str,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
        wrap: impl Fn(TcpStream) -> Option<(S, Arc<Peek>)> + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind((ip, 0)).expect("a loopback port");
        let addr = listener.local_addr().expect("bound").to_string();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (log2, script2, stop2) = (log.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let (log, script) = (log2.clone(), script2.clone());
                let Ok(raw) = tcp.try_clone() else { continue };
                if let Some((stream, peek)) = wrap(tcp) {
                    std::thread::spawn(move || {
                        let wire = Wire {
                            raw,
                            script: &*script,
                            peek: &*peek,
                            log: &log,
                        };
                        wire.serve(stream)
                    });
                }
            }
        });
        Server { addr, log, stop }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// `METHOD path` of every request so far, without the `/v2/` pings.
    pub fn lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(Request::line)
            .filter(|l| l != "GET /v2/")
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// The process's peak resident memory so far (VmHWM), in bytes: the tests of
/// endless replies check that it did not grow with what the server sent.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("a VmHWM line");
    kib << 10
}

/// Waits "forever" (the test process ends first), holding the connection open.
fn hang() {
    std::thread::sleep(Duration::from_secs(3600));
}

/// One connection: the script, the peek, the log, and the socket under any
/// TLS (to reset it).
struct Wire<'a> {
    raw: TcpStream,
    script: &'a Script,
    peek: &'a Peek,
    log: &'a Mutex<Vec<Request>>,
}

impl Wire<'_> {
    fn serve(&self, stream: impl Read + Write) {
        let mut r = BufReader::new(stream);
        // A TLS ClientHello (record type 0x16) on a plain server: like many
        // plain servers, wait for a request line that never comes (a client
        // must not rely on a quick "no").
        if r.fill_buf().is_ok_and(|b| b.first() == Some(&0x16)) {
            return hang();
        }
        while let Some(mut req) = read_head(&mut r) {
            if let Some(n) = (self.peek)(&req) {
                let len = req.header("content-length").and_then(|v| v.parse().ok());
                let mut part = vec![0; n.min(len.unwrap_or(0))];
                let _ = r.read_exact(&mut part);
                return self.reset();
            }
            if read_body(&mut r, &mut req).is_none() {
                return;
            }
            self.log.lock().unwrap().push(req.clone());
            let reply = (self.script)(&req);
            match reply.ending {
                Ending::Answer => {}
                Ending::Reset => return self.reset(),
                Ending::Hang => return hang(),
                Ending::Endless { filler, pause } => {
                    let _ = send_endless(r.get_mut(), reply, filler, pause);
                    return;
                }
            }
            let out = r.get_mut();
            if out
                .write_all(&reply_bytes(&req, reply))
                .and_then(|()| out.flush())
                .is_err()
            {
                return;
            }
        }
    }

    fn reset(&self) {
        let _ = self.raw.shutdown(Shutdown::Both);
    }
}

/// The reply on the wire; a Content-Length the script gave is kept (a HEAD
/// answer names the size of what a GET would send).
fn reply_bytes(req: &Request, reply: Reply) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    let mut has_len = false;
    for (k, v) in &reply.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if req.method != "HEAD" {
        bytes.extend_from_slice(&reply.body);
    }
    bytes
}

/// `reply`'s head and body as chunks, then chunks of `filler` until a write
/// fails (the client went away).
fn send_endless(
    out: &mut impl Write,
    reply: Reply,
    filler: u8,
    pause: Duration,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    out.write_all(head.as_bytes())?;
    let chunk = |out: &mut dyn Write, data: &[u8]| -> std::io::Result<()> {
        write!(out, "{:x}\r\n", data.len())?;
        out.write_all(data)?;
        out.write_all(b"\r\n")?;
        out.flush()
    };
    if !reply.body.is_empty() {
        chunk(out, &reply.body)?;
    }
    let fill = vec![filler; if pause.is_zero() { 64 << 10 } else { 1 }];
    loop {
        chunk(out, &fill)?;
        std::thread::sleep(pause);
    }
}

/// The request line and headers; `None` at the end of the connection or
/// when it is not HTTP/1.
fn read_head(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    if !parts.next()?.starts_with("HTTP/1") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Request {
        method,
        target,
        headers,
        body: Vec::new(),
    })
}

/// The body, by Content-Length or chunked; `None` when it broke off.
fn read_body(r: &mut impl BufRead, req: &mut Request) -> Option<()> {
    if let Some(n) = req.header("content-length") {
        let mut body = vec![0; n.parse().ok()?];
        r.read_exact(&mut body).ok()?;
        req.body = body;
    } else if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(())
}
