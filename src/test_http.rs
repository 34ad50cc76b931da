//! A scripted HTTP/1.1 server on 127.0.0.1 for unit tests: every request is
//! recorded, and the script answers it. Enough of HTTP for reqwest's blocking
//! client (keep-alive, Content-Length and chunked bodies); nothing more.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

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
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
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

pub struct Server {
    /// `127.0.0.1:PORT`
    pub addr: String,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Server::listen(script, Some)
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
        Server::listen(script, move |tcp| {
            let tls = rustls::ServerConnection::new(config.clone()).ok()?;
            Some(rustls::StreamOwned::new(tls, tcp))
        })
    }

    /// Serves each connection `wrap` makes of an accepted one on its own thread.
    fn listen<S: Read + Write + Send + 'static>(
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
        wrap: impl Fn(TcpStream) -> Option<S> + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("bound").to_string();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let (log2, script2) = (log.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script) = (log2.clone(), script2.clone());
                if let Some(stream) = wrap(stream) {
                    std::thread::spawn(move || serve(stream, &*script, &log));
                }
            }
        });
        Server { addr, log }
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

fn serve(stream: impl Read + Write, script: &Script, log: &Mutex<Vec<Request>>) {
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        log.lock().unwrap().push(req.clone());
        let reply = script(&req);
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        let mut bytes = head.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(&reply.body);
        }
        let out = r.get_mut();
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
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
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
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
    Some(req)
}
