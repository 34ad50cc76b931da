//! Registry authentication: `WWW-Authenticate` challenges, Basic, and Bearer
//! tokens from the registry's token service (GET with Basic credentials, or the
//! OAuth2 POST form for identity tokens), cached per registry and scope set and
//! refreshed before they expire. The caller (`client`) replays a request once
//! after a 401 with a fresh token.
//!
//! Credentials a registry refused are not sent again in the same run: the
//! refusal is remembered per registry, and the first credentialed exchange
//! with a registry is made by one thread at a time, so parallel blob uploads
//! cannot each try a wrong password (which locks accounts).

use super::credentials::{Credential, CredentialSource, Secret};
use super::error::RegistryError;
use super::transport::{status_error, Transport};
use base64::Engine as _;
use reqwest::Url;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: `bearer` or `basic`.
    pub scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235): quoted
/// values may hold commas and escaped quotes, and one header may carry several
/// challenges (`Basic realm="x", Bearer realm="y",service="z"`).
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let s = value.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b);
    let skip = |i: &mut usize, also_commas: bool| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || (also_commas && s[*i] == b',')) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && is_tchar(s[*i]) {
            *i += 1;
        }
        value[start..*i].to_string()
    };
    loop {
        skip(&mut i, true);
        if i >= s.len() {
            break;
        }
        let scheme = token(&mut i);
        if scheme.is_empty() {
            break; // not a challenge we understand; stop rather than loop
        }
        let mut params = BTreeMap::new();
        loop {
            skip(&mut i, false);
            let save = i;
            let key = token(&mut i);
            skip(&mut i, false);
            if key.is_empty() || i >= s.len() || s[i] != b'=' {
                i = save;
                break; // the next challenge's scheme (or the end)
            }
            i += 1;
            skip(&mut i, false);
            let v = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    v.push(s[i]);
                    i += 1;
                }
                i += 1; // closing quote
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let start = i;
                while i < s.len() && s[i] != b',' && s[i] != b' ' && s[i] != b'\t' {
                    i += 1;
                }
                value[start..i].to_string()
            };
            params.insert(key.to_ascii_lowercase(), v);
            skip(&mut i, false);
            if i < s.len() && s[i] == b',' {
                i += 1;
            } else {
                break;
            }
        }
        out.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
    }
    out
}

/// The challenge we act on: Bearer over Basic over anything else.
pub fn preferred_challenge(challenges: Vec<Challenge>) -> Option<Challenge> {
    let rank = |c: &Challenge| match c.scheme.as_str() {
        "bearer" => 0,
        "basic" => 1,
        _ => 2,
    };
    challenges
        .into_iter()
        .filter(|c| rank(c) < 2)
        .min_by_key(rank)
}

/// `repository:<name>:pull` or `…:pull,push`.
pub fn repository_scope(repository: &str, push: bool) -> String {
    format!(
        "repository:{repository}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub value: Secret,
    /// When we stop using it: a little before the server's expiry.
    pub refresh_at: Instant,
}

/// The parts of a token response we use. `token` and `access_token` are both
/// seen in the wild; treat the value as opaque (it is not always a JWT).
#[derive(serde::Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

const DEFAULT_TOKEN_LIFETIME: u64 = 60;
const CLIENT_ID: &str = "imgbuild";

/// Per-registry credentials and a token cache keyed by (registry, scopes).
pub(crate) struct Authenticator {
    source: Box<dyn CredentialSource>,
    credentials: Mutex<HashMap<String, Credential>>,
    tokens: Mutex<HashMap<(String, Vec<String>), Token>>,
    /// registry → why its credentials were refused (never the secret).
    refused: Mutex<HashMap<String, String>>,
    /// Registries that accepted our Basic credentials once.
    accepted: Mutex<HashSet<String>>,
    /// Held across token requests, and across a Basic request until the
    /// registry has accepted the credentials once.
    gate: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Authenticator {
    pub fn new(source: Box<dyn CredentialSource>) -> Self {
        Authenticator {
            source,
            credentials: Mutex::default(),
            tokens: Mutex::default(),
            refused: Mutex::default(),
            accepted: Mutex::default(),
            gate: Mutex::default(),
        }
    }

    /// The refusal of `registry`'s credentials earlier in this run, as the error.
    pub fn refusal(&self, what: &str, registry: &str) -> Result<(), RegistryError> {
        match lock(&self.refused).get(registry) {
            Some(detail) => Err(RegistryError::Unauthorized {
                what: what.to_string(),
                registry: registry.to_string(),
                detail: format!("{detail}; not sent again in this run"),
            }),
            None => Ok(()),
        }
    }

    /// Remembers that `registry` refused our credentials (`error` says how).
    pub fn record_refusal(&self, registry: &str, error: &RegistryError) {
        if let RegistryError::Unauthorized { detail, .. } = error {
            lock(&self.refused)
                .entry(registry.to_string())
                .or_insert_with(|| detail.clone());
        }
    }

    /// For a Basic request to `registry`: the gate to hold while it is sent,
    /// until the registry has accepted the credentials once.
    pub fn basic_gate(&self, registry: &str) -> Option<MutexGuard<'_, ()>> {
        if lock(&self.accepted).contains(registry) {
            return None;
        }
        let gate = lock(&self.gate);
        // The requests that queued behind the first one go together once it
        // was accepted, not one at a time.
        if lock(&self.accepted).contains(registry) {
            return None;
        }
        Some(gate)
    }

    pub fn record_accepted(&self, registry: &str) {
        lock(&self.accepted).insert(registry.to_string());
    }

    /// The credential for a registry (and repository, for namespaced
    /// auth.json keys), resolved once per pair.
    pub fn credential(
        &self,
        registry: &str,
        repository: Option<&str>,
    ) -> Result<Credential, RegistryError> {
        let key = credential_key(registry, repository);
        if let Some(c) = lock(&self.credentials).get(&key) {
            return Ok(c.clone());
        }
        let c = self.source.resolve_for(registry, repository)?.credential;
        lock(&self.credentials).insert(key, c.clone());
        Ok(c)
    }

    pub fn forget_token(&self, registry: &str, scopes: &[String]) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(registry.to_string(), scopes.to_vec()));
    }

    /// The `Authorization` value for a request under `challenge`, or `None` to
    /// send the request anonymously.
    /// `registry_https` says whether the registry itself is reached over https.
    pub fn authorization(
        &self,
        transport: &Transport,
        registry: &str,
        registry_https: bool,
        challenge: Option<&Challenge>,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        let repository = scopes.first().and_then(|s| scope_repository(s));
        let credential = self.credential(registry, repository)?;
        if credential != Credential::Anonymous {
            self.refusal(&format!("authenticating to {registry}"), registry)?;
        }
        if challenge.scheme == "basic" {
            return Ok(match &credential {
                Credential::Basic { username, password } => Some(basic_header(username, password)),
                Credential::IdentityToken { username, token } => Some(basic_header(
                    username.as_deref().unwrap_or("<token>"),
                    token,
                )),
                Credential::RegistryToken(t) => Some(format!("Bearer {}", t.expose())),
                Credential::Anonymous => None,
            });
        }
        if let Credential::RegistryToken(t) = &credential {
            return Ok(Some(format!("Bearer {}", t.expose())));
        }
        let key = (registry.to_string(), scopes.to_vec());
        let cached = || {
            lock(&self.tokens)
                .get(&key)
                .filter(|t| Instant::now() < t.refresh_at)
                .map(|t| format!("Bearer {}", t.value.expose()))
        };
        if let Some(header) = cached() {
            return Ok(Some(header));
        }
        // One token request at a time: a refusal seen by one thread stops the others.
        let _gate = lock(&self.gate);
        // Another thread may have been refused, or fetched this token, meanwhile.
        let credential = self.credential(registry, repository)?;
        if credential != Credential::Anonymous {
            self.refusal(&format!("authenticating to {registry}"), registry)?;
        }
        if let Some(header) = cached() {
            return Ok(Some(header));
        }
        let fetched = fetch_token(
            transport,
            registry,
            registry_https,
            challenge,
            scopes,
            &credential,
        );
        let (token, refresh) = match fetched {
            Ok(t) => t,
            Err(e) => {
                if credential != Credential::Anonymous {
                    self.record_refusal(registry, &e);
                }
                return Err(e);
            }
        };
        let header = format!("Bearer {}", token.value.expose());
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token);
        if let Some(refresh) = refresh {
            // The service handed us a refresh token: later token requests use it (as ggcr does).
            let username = match credential {
                Credential::Basic { username, .. } => Some(username),
                Credential::IdentityToken { username, .. } => username,
                _ => None,
            };
            self.credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    credential_key(registry, repository),
                    Credential::IdentityToken {
                        username,
                        token: refresh,
                    },
                );
        }
        Ok(Some(header))
    }
}

fn credential_key(registry: &str, repository: Option<&str>) -> String {
    match repository {
        Some(r) => format!("{registry}/{r}"),
        None => registry.to_string(),
    }
}

/// `team/app` from `repository:team/app:pull,push` (names may hold `host:port`).
fn scope_repository(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix("repository:")?;
    rest.rsplit_once(':').map(|(name, _)| name)
}

fn basic_header(username: &str, password: &Secret) -> String {
    let raw = format!("{username}:{}", password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Asks the token service for a token covering `scopes` (push scope first:
/// some registries read only the first).
fn fetch_token(
    transport: &Transport,
    registry: &str,
    registry_https: bool,
    challenge: &Challenge,
    scopes: &[String],
    credential: &Credential,
) -> Result<(Token, Option<Secret>), RegistryError> {
    let what = format!("authenticating to {registry}");
    let auth_err = |detail: String| RegistryError::Auth {
        what: what.clone(),
        detail,
    };
    let realm = challenge
        .param("realm")
        .ok_or_else(|| auth_err("the Bearer challenge has no realm".into()))?;
    let (realm_url, realm_host) =
        token_realm(transport, registry, registry_https, realm).map_err(auth_err)?;
    let sent = Instant::now();
    let request = TokenRequest {
        transport,
        what: &what,
        realm_url: &realm_url,
        realm_host: &realm_host,
        service: challenge.param("service"),
        scopes,
    };
    let resp = request.send(credential)?;
    let resp = accepted_token_reply(&what, registry, realm, credential, resp)?;
    read_token_reply(resp, realm, sent).map_err(auth_err)
}

/// The realm's URL and `host[:port]`, if credentials may be sent there: over
/// https, or over plain http only where plain http is allowed at all. The
/// error is the detail of an authentication error.
fn token_realm(
    transport: &Transport,
    registry: &str,
    registry_https: bool,
    realm: &str,
) -> Result<(Url, String), String> {
    let realm_url =
        Url::parse(realm).map_err(|_| format!("the token realm {realm:?} is not a URL"))?;
    let realm_host = match (realm_url.host_str(), realm_url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(format!("the token realm {realm:?} has no host")),
    };
    match realm_url.scheme() {
        "https" => {}
        // A registry reached over TLS must not have its credentials sent in clear.
        "http" if registry_https => {
            return Err(format!(
                "the token realm {realm} would downgrade {registry} from https to plain http; \
                 refusing to send credentials there (the registry's auth settings need an https realm)"
            ))
        }
        // Credentials may travel in clear only where plain http is allowed at all.
        "http" if transport.allows_http(&realm_host) => {}
        other => {
            return Err(format!(
                "refusing to send credentials to the token realm {realm} over {other}; it must be https"
            ))
        }
    }
    Ok((realm_url, realm_host))
}

/// One token request to a realm: the GET with Basic credentials, or the
/// OAuth2 POST form, for the challenge's service and the wanted scopes.
struct TokenRequest<'a> {
    transport: &'a Transport,
    what: &'a str,
    realm_url: &'a Url,
    realm_host: &'a str,
    service: Option<&'a str>,
    scopes: &'a [String],
}

impl TokenRequest<'_> {
    /// Sends the request `credential` calls for, falling back between GET and
    /// the OAuth2 POST where the token service lacks one of them.
    fn send(&self, credential: &Credential) -> Result<reqwest::blocking::Response, RegistryError> {
        let get = |client: &reqwest::blocking::Client| self.get(client, credential);
        let send =
            |build: &dyn Fn(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder| {
                self.transport
                    .send_retrying(self.what, self.realm_host, build)
            };
        if let Credential::IdentityToken { token, .. } = credential {
            let post = |client: &reqwest::blocking::Client| {
                self.post(
                    client,
                    vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", token.expose().to_string()),
                        ("client_id", CLIENT_ID.to_string()),
                    ],
                )
            };
            let resp = send(&post)?;
            // Token services without the OAuth2 endpoint answer 404 (or 405): use GET.
            if matches!(resp.status().as_u16(), 404 | 405) {
                send(&get)
            } else {
                Ok(resp)
            }
        } else if let Credential::Basic { username, password } = credential {
            let resp = send(&get)?;
            // Token services that refuse GET (405, or 404 where only the OAuth2
            // endpoint exists) take the OAuth2 password grant, as Docker sends it.
            if matches!(resp.status().as_u16(), 404 | 405) {
                let post = |client: &reqwest::blocking::Client| {
                    self.post(
                        client,
                        vec![
                            ("grant_type", "password".to_string()),
                            ("username", username.clone()),
                            ("password", password.expose().to_string()),
                            ("client_id", CLIENT_ID.to_string()),
                        ],
                    )
                };
                send(&post)
            } else {
                Ok(resp)
            }
        } else {
            send(&get)
        }
    }

    /// The GET form: service and scopes in the query, credentials as Basic.
    fn get(
        &self,
        client: &reqwest::blocking::Client,
        credential: &Credential,
    ) -> reqwest::blocking::RequestBuilder {
        let mut url = self.realm_url.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = self.service {
                q.append_pair("service", s);
            }
            for s in self.scopes {
                q.append_pair("scope", s);
            }
        }
        let req = client.get(url);
        match credential {
            Credential::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
            Credential::IdentityToken { username, token } => req.basic_auth(
                username.as_deref().unwrap_or("<token>"),
                Some(token.expose()),
            ),
            _ => req,
        }
    }

    /// The OAuth2 POST: the grant's fields, then the service and the scopes
    /// both grants share.
    fn post(
        &self,
        client: &reqwest::blocking::Client,
        mut form: Vec<(&'static str, String)>,
    ) -> reqwest::blocking::RequestBuilder {
        if let Some(s) = self.service {
            form.push(("service", s.to_string()));
        }
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        client.post(self.realm_url.clone()).form(&form)
    }
}

/// `resp` if the token service granted a token; otherwise the error that
/// names whose credentials it refused (or its status).
fn accepted_token_reply(
    what: &str,
    registry: &str,
    realm: &str,
    credential: &Credential,
    resp: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, RegistryError> {
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        let who = match credential {
            Credential::Basic { username, .. } => format!("user {username:?}"),
            Credential::IdentityToken { .. } => "the identity token".to_string(),
            _ => "anonymous access".to_string(),
        };
        let base = status_error(what, registry, resp);
        if *credential == Credential::Anonymous {
            return Err(RegistryError::NoCredentials {
                what: what.to_string(),
                registry: registry.to_string(),
                detail: format!(
                    "the token service at {realm} refused anonymous access: {}",
                    inner_detail(&base)
                ),
            });
        }
        return Err(RegistryError::Unauthorized {
            what: what.to_string(),
            registry: registry.to_string(),
            detail: format!(
                "the token service at {realm} rejected {who}: {}",
                inner_detail(&base)
            ),
        });
    }
    if !resp.status().is_success() {
        return Err(status_error(
            &format!("{what} (token service {realm})"),
            registry,
            resp,
        ));
    }
    Ok(resp)
}

/// The token and refresh token from a granted reply, the token to be renewed
/// a little before it lapses (`sent` is when it was asked for). The error is
/// the detail of an authentication error.
fn read_token_reply(
    resp: reqwest::blocking::Response,
    realm: &str,
    sent: Instant,
) -> Result<(Token, Option<Secret>), String> {
    let what = format!("the reply of the token service at {realm}");
    let body = crate::http::read_capped(resp, &crate::http::TOKEN_REPLY, &what)
        .map_err(|e| super::error::chain_message(&e))?;
    let reply: TokenReply = serde_json::from_slice(&body)
        .map_err(|_| format!("the token service at {realm} sent no JSON"))?;
    let value = reply
        .token
        .filter(|t| !t.is_empty())
        .or(reply.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| format!("the token service at {realm} sent no token"))?;
    let lifetime = token_lifetime(
        reply.expires_in,
        reply.issued_at.as_deref(),
        SystemTime::now(),
    );
    // Renew a little early so a request is never sent with a token about to lapse.
    let margin = (lifetime / 5).min(Duration::from_secs(30));
    let token = Token {
        value: Secret::new(value),
        refresh_at: sent + lifetime - margin,
    };
    Ok((
        token,
        reply
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    ))
}

fn inner_detail(e: &RegistryError) -> String {
    match e {
        RegistryError::Status { detail, .. }
        | RegistryError::Unauthorized { detail, .. }
        | RegistryError::Denied { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// How long a token stays valid from now: `expires_in` (default 60 s), less
/// the time since `issued_at` when that is plausible (clocks can disagree).
fn token_lifetime(expires_in: Option<u64>, issued_at: Option<&str>, now: SystemTime) -> Duration {
    let total = Duration::from_secs(
        expires_in
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME),
    );
    let age = issued_at
        .and_then(parse_rfc3339)
        .and_then(|t| now.duration_since(t).ok());
    match age {
        Some(age) if age < total => total - age,
        _ => total,
    }
}

/// `2024-05-01T12:00:00Z`, with optional fraction and `±hh:mm` offset.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let m = o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60;
            if o.starts_with('-') {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_inside_quotes() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let c = parse_www_authenticate(
            r#"Basic realm="Registry Realm", Bearer realm="https://t.example/token", service=reg, error="invalid_token""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        assert_eq!(preferred_challenge(c).unwrap().scheme, "bearer");
    }

    #[test]
    fn escaped_quotes_and_odd_spacing() {
        let c = parse_www_authenticate(r#"bearer  Realm = "a\"b" ,scope="x""#);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("scope"), Some("x"));
        assert!(parse_www_authenticate("").is_empty());
        assert!(preferred_challenge(parse_www_authenticate("Negotiate abc")).is_none());
    }

    #[test]
    fn token_lifetime_defaults_and_counts_from_issued_at() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let cases = [
            (None, None, 60),
            (Some(0), None, 60),
            // 1_700_000_000 = 2023-11-14T22:13:20Z
            (Some(300), Some("2023-11-14T22:13:20Z"), 200),
            (Some(300), Some("2023-11-14T23:13:20.5+01:00"), 200),
            // A token "issued" long ago by a skewed clock is not treated as already expired.
            (Some(300), Some("2000-01-01T00:00:00Z"), 300),
            (Some(300), Some("garbage"), 300),
        ];
        for (expires_in, issued_at, want) in cases {
            assert_eq!(
                token_lifetime(expires_in, issued_at, now),
                Duration::from_secs(want),
                "{expires_in:?} {issued_at:?}"
            );
        }
    }

    #[test]
    fn scopes_keep_host_port_repositories_whole() {
        assert_eq!(
            repository_scope("team/app", true),
            "repository:team/app:pull,push"
        );
        assert_eq!(repository_scope("a", false), "repository:a:pull");
    }
}
