//! A scripted registry for fault tests: a small HTTP/1.1 server on 127.0.0.1
//! (std::net, one thread per connection) that implements enough of the
//! distribution API to push and pull, records every request, and can be told
//! to misbehave for the first N matching requests (status codes, Retry-After,
//! dropped connections mid-body, expired tokens, redirects, missing Location,
//! a blob deleted just before a request).
//!
//! `HttpServer` is also used by `registry.rs` for the token service. Its wire
//! layer is the crate's own scripted server (src/test_http.rs, included here
//! as `wire`), the one fake HTTP server of the project; this file adds the
//! registry on top.
//!
//! Also here: `SilentServer` (accepts connections, never answers), a fake
//! that requires Basic credentials (`start_with_basic`), and `TokenService`,
//! a separate token endpoint (own address or port) that records every
//! Authorization it is sent and counts its 401s; with it the fake plays the
//! Hub (registry and auth on different hosts), GHCR and ECR.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[path = "../../src/test_http.rs"]
mod wire;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The wire's request, with the query split off and header names lowercased.
    fn from_wire(r: &wire::Request) -> Request {
        Request {
            method: r.method.clone(),
            path: r.path().to_string(),
            query: r.query().to_string(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: r.body.clone(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reply, or a connection dropped after reading part of the request body.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read this many body bytes, then reset the connection without answering.
    DropAfter(usize),
    /// Read the request, then never answer (the connection stays open).
    Silent,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((k.to_string(), v.to_string()));
        }
        self
    }
    pub fn body(mut self, b: Vec<u8>) -> Reply {
        if let Reply::Full { body, .. } = &mut self {
            *body = b;
        }
        self
    }

    fn into_wire(self) -> wire::Reply {
        match self {
            Reply::Full {
                status,
                headers,
                body,
            } => wire::Reply {
                headers,
                body,
                ..wire::Reply::status(status)
            },
            // The body is read by now: the connection is reset at once.
            Reply::DropAfter(_) => wire::Reply::reset(),
            Reply::Silent => wire::Reply::hang(),
        }
    }
}

/// A minimal HTTP/1.1 server with keep-alive. The handler sees the request
/// headers and the body; `peek` sees the head first and may cut the body off.
pub struct HttpServer {
    pub port: u16,
    _server: wire::Server,
}

impl HttpServer {
    /// `peek` decides before the body is read whether to drop the connection.
    pub fn start(
        peek: impl Fn(&Request) -> Option<usize> + Send + Sync + 'static,
        handler: impl Fn(&Request, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        Self::start_on("127.0.0.1", peek, handler)
    }

    /// The same on another loopback address (e.g. `127.0.0.2`, to play a second host).
    pub fn start_on(
        ip: &str,
        peek: impl Fn(&Request) -> Option<usize> + Send + Sync + 'static,
        handler: impl Fn(&Request, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        let server = wire::Server::start_on(
            ip,
            move |r| peek(&Request::from_wire(r)),
            move |r| {
                let req = Request::from_wire(r);
                handler(&req, &req.body).into_wire()
            },
        );
        HttpServer {
            port: server.port(),
            _server: server,
        }
    }
}

/// Accepts connections and never answers nor closes them: a hung registry.
pub struct SilentServer {
    pub port: u16,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(conn);
            }
        });
        SilentServer { port, accepted }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What a rule does to the requests it matches.
#[derive(Clone)]
pub enum Fault {
    /// Answer with this status, headers and body instead.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Reset the connection after reading this many body bytes.
    DropMidBody(usize),
    /// Invalidate every issued token, then handle the request normally (so it gets a 401).
    ExpireTokens,
    /// Read the request and never answer.
    Silent,
    /// Delete the blob the request names from its repository, then handle the
    /// request normally (so a GET or HEAD gets 404): a blob garbage-collected
    /// just before this request, and gone for every later one.
    DeleteBlob,
}

impl Fault {
    /// A plain answer: this status and body, no extra headers.
    pub fn status(status: u16, body: &str) -> Fault {
        Fault::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    /// `status` with `Retry-After: seconds` and an empty body.
    pub fn retry_after(status: u16, seconds: u32) -> Fault {
        Fault::Respond {
            status,
            headers: vec![("Retry-After".into(), seconds.to_string())],
            body: String::new(),
        }
    }
}

struct Rule {
    method: String,
    path_contains: String,
    query_contains: String,
    left: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    log: Vec<Request>,
    rules: Vec<Rule>,
    /// repository → digest → bytes
    blobs: HashMap<String, HashMap<String, Vec<u8>>>,
    /// repository → reference (tag or digest) → (media type, bytes)
    manifests: HashMap<String, HashMap<String, (String, Vec<u8>)>>,
    uploads: HashMap<String, (String, Vec<u8>)>,
    tokens: Vec<String>,
    /// `expires_in` of issued tokens (300 when unset).
    token_lifetime: Option<u64>,
    /// Serve the OCI 1.1 referrers API (and answer pushes with `OCI-Subject`).
    referrers_api: bool,
    /// The Bearer challenge's realm and service, when a `TokenService` issues the tokens.
    realm: Option<(String, String)>,
    /// `user:password` that Basic auth requires (`start_with_basic`).
    basic: Option<String>,
    /// 401 answers to requests that carried Basic credentials.
    basic_refusals: usize,
    /// ECR's ways: no Location on PATCH or manifest PUT, cross-repository mounts refused.
    ecr: bool,
}

/// The scripted fake registry.
pub struct FakeRegistry {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _server: HttpServer,
}

pub fn sha256_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

impl FakeRegistry {
    /// A registry that needs no auth.
    pub fn start() -> FakeRegistry {
        Self::start_with(false)
    }

    /// A registry that answers 401 with a Bearer challenge whose realm is its
    /// own `/token` endpoint; tokens are opaque and valid until `ExpireTokens`.
    pub fn start_with_tokens() -> FakeRegistry {
        Self::start_with(true)
    }

    /// A registry that answers 401 with a Basic challenge unless sent `user:password`.
    pub fn start_with_basic(user: &str, password: &str) -> FakeRegistry {
        let fake = Self::start_with(false);
        fake.state.lock().unwrap().basic = Some(format!("{user}:{password}"));
        fake
    }

    /// Behave as ECR does: PATCH and manifest PUT answers carry no Location,
    /// and a cross-repository mount is refused (405 UNSUPPORTED).
    pub fn ecr_quirks(&self) {
        self.state.lock().unwrap().ecr = true;
    }

    /// 401 answers to requests that carried (wrong) Basic credentials.
    pub fn basic_refusals(&self) -> usize {
        self.state.lock().unwrap().basic_refusals
    }

    fn start_with(bearer: bool) -> FakeRegistry {
        let state: Arc<Mutex<State>> = Arc::default();
        let counter = Arc::new(AtomicU64::new(0));
        let (s1, s2) = (state.clone(), state.clone());
        let port_cell = Arc::new(Mutex::new(0u16));
        let port_for_handler = port_cell.clone();
        let server = HttpServer::start(
            move |req| {
                let mut st = s1.lock().unwrap();
                let rule = take_rule(&mut st, req)?;
                match rule {
                    Fault::DropMidBody(n) => {
                        st.log.push(req.clone());
                        Some(n)
                    }
                    other => {
                        // Put it back for the handler to apply.
                        st.rules.insert(
                            0,
                            Rule {
                                method: req.method.clone(),
                                path_contains: req.path.clone(),
                                query_contains: String::new(),
                                left: 1,
                                fault: other,
                            },
                        );
                        None
                    }
                }
            },
            move |req, body| {
                let port = *port_for_handler.lock().unwrap();
                let mut st = s2.lock().unwrap();
                st.log.push(req.clone());
                if let Some(fault) = take_rule(&mut st, req) {
                    match fault {
                        Fault::Respond {
                            status,
                            headers,
                            body,
                        } => {
                            let mut r = Reply::status(status).body(body.into_bytes());
                            for (k, v) in headers {
                                r = r.header(&k, &v.replace("{port}", &port.to_string()));
                            }
                            return r;
                        }
                        Fault::ExpireTokens => st.tokens.clear(),
                        Fault::Silent => return Reply::Silent,
                        Fault::DeleteBlob => {
                            let path = req.path.strip_prefix("/v2/").unwrap_or_default();
                            if let Some((repo, digest)) = path.rsplit_once("/blobs/") {
                                if let Some(blobs) = st.blobs.get_mut(repo) {
                                    blobs.remove(digest);
                                }
                            }
                        }
                        Fault::DropMidBody(_) => unreachable!("handled before the body"),
                    }
                }
                handle(&mut st, req, body, bearer, port, &counter)
            },
        );
        *port_cell.lock().unwrap() = server.port;
        FakeRegistry {
            port: server.port,
            state,
            _server: server,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to the first `times` requests with this method whose
    /// path contains `path_contains` (and query contains `query_contains`).
    pub fn fault(
        &self,
        method: &str,
        path_contains: &str,
        query_contains: &str,
        times: usize,
        fault: Fault,
    ) {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            query_contains: query_contains.to_string(),
            left: times,
            fault,
        });
    }

    /// Tokens issued from now on say they expire after `secs` (the fake itself never expires them).
    /// Serves `GET /v2/<name>/referrers/<digest>` and answers manifest pushes
    /// that have a `subject` with `OCI-Subject`, as OCI 1.1 registries do.
    pub fn enable_referrers_api(&self) {
        self.state.lock().unwrap().referrers_api = true;
    }

    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().token_lifetime = Some(secs);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .blobs
            .get(repo)
            .is_some_and(|m| m.contains_key(digest))
    }

    pub fn put_blob(&self, repo: &str, bytes: &[u8]) {
        let d = sha256_digest(bytes);
        self.state
            .lock()
            .unwrap()
            .blobs
            .entry(repo.to_string())
            .or_default()
            .insert(d, bytes.to_vec());
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        self.state
            .lock()
            .unwrap()
            .manifests
            .get(repo)
            .and_then(|m| m.get(reference))
            .cloned()
    }

    /// Every stored manifest's config and layers are blobs of its repository:
    /// no manifest was accepted before its blobs were confirmed.
    pub fn assert_manifests_complete(&self) {
        let st = self.state.lock().unwrap();
        for (repo, ms) in &st.manifests {
            for (reference, (_, bytes)) in ms {
                let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                let mut digests = vec![v["config"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()];
                for l in v["layers"].as_array().into_iter().flatten() {
                    digests.push(l["digest"].as_str().unwrap().to_string());
                }
                for d in digests.iter().filter(|d| !d.is_empty()) {
                    assert!(
                        st.blobs.get(repo).is_some_and(|b| b.contains_key(d)),
                        "manifest {repo}:{reference} names blob {d} that the registry does not hold"
                    );
                }
            }
        }
    }
}

fn take_rule(st: &mut State, req: &Request) -> Option<Fault> {
    let i = st.rules.iter().position(|r| {
        r.left > 0
            && r.method == req.method
            && req.path.contains(&r.path_contains)
            && req.query.contains(&r.query_contains)
    })?;
    st.rules[i].left -= 1;
    let fault = st.rules[i].fault.clone();
    if st.rules[i].left == 0 {
        st.rules.remove(i);
    }
    Some(fault)
}

fn error(status: u16, code: &str, msg: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({"errors":[{"code":code,"message":msg,"detail":null}]}),
    )
}

fn handle(
    st: &mut State,
    req: &Request,
    body: &[u8],
    bearer: bool,
    port: u16,
    counter: &AtomicU64,
) -> Reply {
    let challenge = match &st.realm {
        Some((realm, service)) => format!("Bearer realm=\"{realm}\",service=\"{service}\""),
        None => format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\""),
    };
    if let Some(want) = st.basic.clone() {
        if req.path.starts_with("/v2/") {
            let sent = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Basic "))
                .map(|b| {
                    use base64::Engine as _;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&raw).into_owned()
                });
            if sent.as_deref() != Some(want.as_str()) {
                if sent.is_some() {
                    st.basic_refusals += 1;
                }
                return error(401, "UNAUTHORIZED", "authentication required")
                    .header("WWW-Authenticate", "Basic realm=\"fake\"");
            }
        }
    }
    if req.path == "/token" && st.realm.is_none() {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let tok = format!("tok-{n}");
        st.tokens.push(tok.clone());
        let lifetime = st.token_lifetime.unwrap_or(300);
        return Reply::json(
            200,
            serde_json::json!({"token": tok, "expires_in": lifetime}),
        );
    }
    if let Some(digest) = req.path.strip_prefix("/redirected/") {
        for repo in st.blobs.values() {
            if let Some(b) = repo.get(digest) {
                return Reply::status(200).body(b.clone());
            }
        }
        return Reply::status(404);
    }
    if (bearer || st.realm.is_some()) && req.path.starts_with("/v2/") {
        let ok = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| st.tokens.iter().any(|x| x == t));
        if !ok {
            return error(401, "UNAUTHORIZED", "authentication required")
                .header("WWW-Authenticate", &challenge);
        }
    }
    if req.path == "/v2/" {
        return Reply::json(200, serde_json::json!({}));
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return Reply::status(404);
    };
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        let repo = &rest[..i];
        let id = &rest[i + "/blobs/uploads/".len()..];
        return upload(st, req, body, repo, id, counter);
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let repo = &rest[..i];
        let digest = &rest[i + "/blobs/".len()..];
        return match st.blobs.get(repo).and_then(|m| m.get(digest)) {
            Some(b) => Reply::status(200)
                .header("Docker-Content-Digest", digest)
                .header("Content-Length", &b.len().to_string())
                .body(if req.method == "HEAD" {
                    Vec::new()
                } else {
                    b.clone()
                }),
            None => error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        };
    }
    if let Some(i) = rest.rfind("/referrers/") {
        if !st.referrers_api {
            return Reply::status(404);
        }
        let repo = &rest[..i];
        let subject = &rest[i + "/referrers/".len()..];
        let mut manifests: Vec<serde_json::Value> = Vec::new();
        for (reference, (mt, b)) in st.manifests.get(repo).into_iter().flatten() {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) else {
                continue;
            };
            if reference.starts_with("sha256:") && v["subject"]["digest"] == subject {
                manifests.push(serde_json::json!({
                    "mediaType": mt, "digest": reference, "size": b.len(),
                    "artifactType": v["artifactType"], "annotations": v["annotations"],
                }));
            }
        }
        manifests.sort_by_key(|m| m["digest"].as_str().unwrap_or_default().to_string());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        return Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .body(index.to_string().into_bytes());
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let repo = rest[..i].to_string();
        let reference = rest[i + "/manifests/".len()..].to_string();
        if req.method == "PUT" {
            let d = sha256_digest(body);
            let mt = req.header("content-type").unwrap_or_default().to_string();
            let m = st.manifests.entry(repo.clone()).or_default();
            m.insert(reference.clone(), (mt.clone(), body.to_vec()));
            m.insert(d.clone(), (mt, body.to_vec()));
            let has_subject = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("subject").is_some());
            let mut reply = Reply::status(201).header("Docker-Content-Digest", &d);
            if !st.ecr {
                reply = reply.header("Location", &format!("/v2/{repo}/manifests/{d}"));
            }
            return if st.referrers_api && has_subject {
                reply.header("OCI-Subject", &d)
            } else {
                reply
            };
        }
        return match st.manifests.get(&repo).and_then(|m| m.get(&reference)) {
            Some((mt, b)) => Reply::status(200)
                .header("Content-Type", mt)
                .header("Docker-Content-Digest", &sha256_digest(b))
                .body(b.clone()),
            None => error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    Reply::status(404)
}

fn upload(
    st: &mut State,
    req: &Request,
    body: &[u8],
    repo: &str,
    id: &str,
    counter: &AtomicU64,
) -> Reply {
    let session_location = |id: &str| format!("/v2/{repo}/blobs/uploads/{id}?_state=opaque");
    let ecr = st.ecr;
    match req.method.as_str() {
        "POST" => {
            if st.ecr && req.query_param("mount").is_some() {
                return error(
                    405,
                    "UNSUPPORTED",
                    "cross-repository mount is not supported",
                );
            }
            if let (Some(d), Some(from)) = (req.query_param("mount"), req.query_param("from")) {
                if let Some(b) = st.blobs.get(&from).and_then(|m| m.get(&d)).cloned() {
                    st.blobs
                        .entry(repo.to_string())
                        .or_default()
                        .insert(d.clone(), b);
                    return Reply::status(201)
                        .header("Docker-Content-Digest", &d)
                        .header("Location", &format!("/v2/{repo}/blobs/{d}"));
                }
            }
            let id = format!("u{}", counter.fetch_add(1, Ordering::Relaxed));
            st.uploads
                .insert(id.clone(), (repo.to_string(), Vec::new()));
            Reply::status(202)
                .header("Location", &session_location(&id))
                .header("Range", "0-0")
        }
        "PATCH" => match st.uploads.get_mut(id) {
            Some((_, data)) => {
                data.extend_from_slice(body);
                let end = data.len().saturating_sub(1);
                let reply = Reply::status(202).header("Range", &format!("0-{end}"));
                if ecr {
                    reply
                } else {
                    reply.header("Location", &session_location(id))
                }
            }
            None => error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"),
        },
        "PUT" => {
            let Some((_, mut data)) = st.uploads.remove(id) else {
                return error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
            };
            data.extend_from_slice(body);
            let want = req.query_param("digest").unwrap_or_default();
            let got = sha256_digest(&data);
            if want != got {
                return error(
                    400,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
            st.blobs
                .entry(repo.to_string())
                .or_default()
                .insert(got.clone(), data);
            Reply::status(201)
                .header("Docker-Content-Digest", &got)
                .header("Location", &format!("/v2/{repo}/blobs/{got}"))
        }
        "DELETE" => {
            st.uploads.remove(id);
            Reply::status(204)
        }
        _ => Reply::status(405),
    }
}

/// How a `TokenService` behaves.
#[derive(Clone, Default)]
pub struct TokenServiceOptions {
    /// The loopback address to listen on (`127.0.0.1` when empty); another
    /// address plays a separate auth host, as the Hub's.
    pub ip: String,
    /// `user:password` it accepts; anyone else gets 401 (anonymous callers too).
    pub credentials: String,
    /// Answer GET with 405: only the OAuth2 password grant (POST) works.
    pub refuse_get: bool,
    /// The `service` parameter of the challenge.
    pub service: String,
}

impl TokenServiceOptions {
    /// A service on 127.0.0.1 that accepts `credentials` (`user:password`)
    /// and names `service` in its challenge.
    pub fn new(credentials: &str, service: &str) -> TokenServiceOptions {
        TokenServiceOptions {
            credentials: credentials.into(),
            service: service.into(),
            ..Default::default()
        }
    }
}

/// A token endpoint for a `FakeRegistry`, on its own port (and address): it
/// records every request (with its Authorization) and counts its 401 answers;
/// tokens it issues are valid at the registry.
pub struct TokenService {
    pub server: HttpServer,
    pub realm: String,
    log: Arc<Mutex<Vec<Request>>>,
    refusals: Arc<AtomicUsize>,
}

impl TokenService {
    /// Starts the service and makes `fake` challenge with its realm.
    pub fn start(fake: &FakeRegistry, opts: TokenServiceOptions) -> TokenService {
        use base64::Engine as _;
        let ip = if opts.ip.is_empty() {
            "127.0.0.1".to_string()
        } else {
            opts.ip.clone()
        };
        let state = fake.state.clone();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let refusals = Arc::new(AtomicUsize::new(0));
        let (log2, refusals2) = (log.clone(), refusals.clone());
        let counter = AtomicU64::new(0);
        let o = opts.clone();
        let server = HttpServer::start_on(
            &ip,
            |_| None,
            move |req, body| {
                log2.lock().unwrap().push(req.clone());
                let refuse = || {
                    refusals2.fetch_add(1, Ordering::Relaxed);
                    Reply::json(
                        401,
                        serde_json::json!({"details": "incorrect username or password"}),
                    )
                };
                let who = match req.method.as_str() {
                    "GET" if o.refuse_get => return Reply::status(405),
                    "GET" => req
                        .header("authorization")
                        .and_then(|a| a.strip_prefix("Basic "))
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|raw| String::from_utf8_lossy(&raw).into_owned()),
                    "POST" => {
                        let form: HashMap<String, String> = String::from_utf8_lossy(body)
                            .split('&')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), percent_decode(v)))
                            .collect();
                        if form.get("grant_type").map(String::as_str) != Some("password") {
                            return Reply::json(
                                400,
                                serde_json::json!({"error": "unsupported_grant_type"}),
                            );
                        }
                        Some(format!(
                            "{}:{}",
                            form.get("username").cloned().unwrap_or_default(),
                            form.get("password").cloned().unwrap_or_default()
                        ))
                    }
                    _ => return Reply::status(405),
                };
                if who.as_deref() != Some(o.credentials.as_str()) {
                    return refuse();
                }
                let tok = format!("svc-{}", counter.fetch_add(1, Ordering::Relaxed));
                state.lock().unwrap().tokens.push(tok.clone());
                // Both names, as the Hub answers.
                Reply::json(
                    200,
                    serde_json::json!({"token": tok, "access_token": tok, "expires_in": 300}),
                )
            },
        );
        let realm = format!("http://{ip}:{}/token", server.port);
        fake.state.lock().unwrap().realm = Some((realm.clone(), opts.service.clone()));
        TokenService {
            server,
            realm,
            log,
            refusals,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Requests that carried credentials (a Basic header or a password form).
    pub fn credentialed(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.header("authorization").is_some()
                    || String::from_utf8_lossy(&r.body).contains("password=")
            })
            .count()
    }

    pub fn refusals(&self) -> usize {
        self.refusals.load(Ordering::Relaxed)
    }
}
