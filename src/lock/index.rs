//! A PEP 691 (JSON) simple index client: the file list of one project, for
//! requirements.txt pins that carry hashes but no URLs.

use super::index_config::redact;
use super::{normalise_name, IndexFile, LockError, SimpleIndex};
use crate::http::{judge, read_capped, Failed, HttpError, RetryPolicy, Unanswered, INDEX_PAGE};
use reqwest::Url;
use serde::Deserialize;

/// Why a URL did not parse.
pub type UrlError = <Url as std::str::FromStr>::Err;

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json";

pub struct HttpSimpleIndex {
    client: reqwest::blocking::Client,
    policy: RetryPolicy,
    credentials: super::index_config::Credentials,
}

impl HttpSimpleIndex {
    /// A client of its own, as the default [`RetryPolicy`] builds it.
    #[cfg(test)]
    pub fn new() -> Self {
        let client = RetryPolicy::default()
            .client_builder(false)
            .build()
            .unwrap();
        Self::with_client(client)
    }

    /// Pages through `client`, retried as the default [`RetryPolicy`] says.
    pub fn with_client(client: reqwest::blocking::Client) -> Self {
        Self {
            client,
            policy: RetryPolicy::default(),
            credentials: Default::default(),
        }
    }

    /// Retries as `policy` says (the client's own, for a shared client).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sends basic auth to the indexes these credentials are for.
    pub fn with_credentials(mut self, credentials: super::index_config::Credentials) -> Self {
        self.credentials = credentials;
        self
    }
}

#[derive(Deserialize)]
struct ProjectPage {
    #[serde(default)]
    files: Vec<PageFile>,
}

#[derive(Deserialize)]
struct PageFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    size: Option<u64>,
    #[serde(rename = "upload-time")]
    upload_time: Option<String>,
    /// `false`, `true` or a reason (a string): anything but `false` is yanked.
    #[serde(default)]
    yanked: serde_json::Value,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
}

/// `{index}/{normalised-name}/`.
pub fn project_url(index_url: &str, project: &str) -> String {
    format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        // A name PEP 508 refuses goes in as written; the index answers 404.
        normalise_name(project).as_deref().unwrap_or(project)
    )
}

/// The files of a PEP 691 page, with URLs made absolute against the page URL.
pub fn parse_project_page(page_url: &str, body: &[u8]) -> Result<Vec<IndexFile>, LockError> {
    let url_err = |what: String, source| LockError::IndexUrl {
        url: redact(page_url),
        what,
        source,
    };
    let base = Url::parse(page_url).map_err(|e| url_err("the page URL".into(), e))?;
    let page: ProjectPage =
        serde_json::from_slice(body).map_err(|source| LockError::IndexPage {
            url: redact(page_url),
            source,
        })?;
    page.files
        .into_iter()
        .map(|f| {
            let url = base
                .join(&f.url)
                .map_err(|e| url_err(format!("file {}'s URL `{}`", f.filename, f.url), e))?;
            Ok(IndexFile {
                sha256: f
                    .hashes
                    .get("sha256")
                    .filter(|h| super::is_sha256_hex(h))
                    .map(|h| h.to_ascii_lowercase()),
                filename: f.filename,
                url: url.to_string(),
                size: f.size,
                upload_time: f.upload_time,
                yanked: !matches!(
                    f.yanked,
                    serde_json::Value::Null | serde_json::Value::Bool(false)
                ),
                requires_python: f.requires_python,
            })
        })
        .collect()
}

/// `project` looked up on each of `indexes` in turn: the first thing `pick`
/// finds in an index's file list. An index that fails is passed over (with
/// extra indexes, a project missing from one of them is normal) unless it is
/// the only one, whose error is then the answer. `None` when no index has
/// what `pick` wants.
pub(crate) fn first_found<T>(
    index: &dyn SimpleIndex,
    indexes: &[String],
    project: &str,
    mut pick: impl FnMut(&str, Vec<IndexFile>) -> Result<Option<T>, LockError>,
) -> Result<Option<T>, LockError> {
    let mut first_error = None;
    for index_url in indexes {
        match index.project_files(index_url, project) {
            Ok(files) => {
                if let Some(found) = pick(index_url, files)? {
                    return Ok(Some(found));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (first_error, indexes.len()) {
        (Some(e), 1) => Err(e),
        _ => Ok(None),
    }
}

impl HttpSimpleIndex {
    /// One try at `url`'s page: its final URL (after redirects) and body.
    /// (Errors are boxed: a `LockError` is large.)
    fn fetch_page(
        &self,
        url: &str,
        project: &str,
    ) -> Result<(String, Vec<u8>), Failed<Box<LockError>>> {
        let wire_error = |what, e: reqwest::Error| LockError::IndexHttp {
            url: redact(url),
            what,
            source: e.without_url(),
        };
        let sent = self
            .credentials
            .apply(url, self.client.get(url))
            .header(reqwest::header::ACCEPT, ACCEPT)
            .send();
        let response = judge(sent).map_err(|f| {
            f.map(|unanswered| match unanswered {
                Unanswered::Reply(r) => Box::new(status_error(url, project, r.status())),
                Unanswered::Wire(e) => Box::new(wire_error("the request failed", e)),
            })
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failed::Final(Box::new(status_error(url, project, status))));
        }
        // Redirects move the page; relative file URLs are relative to where it ended up.
        let final_url = response.url().to_string();
        let what = format!("the page of `{project}`");
        let body = match read_capped(response, &INDEX_PAGE, &what) {
            Ok(body) => body,
            // A broken transfer may work the next time; a page over the cap will not.
            Err(HttpError::ReplyRead { source, .. }) => {
                return Err(Failed::Transient {
                    error: Box::new(LockError::Index {
                        url: redact(url),
                        message: format!("reading the page of `{project}` broke off ({source})"),
                    }),
                    retry_after: None,
                })
            }
            Err(e) => {
                return Err(Failed::Final(Box::new(LockError::Index {
                    url: redact(url),
                    message: e.to_string(),
                })))
            }
        };
        Ok((final_url, body))
    }
}

/// The error for a page that came back with `status`.
fn status_error(url: &str, project: &str, status: reqwest::StatusCode) -> LockError {
    let message = if status == reqwest::StatusCode::NOT_FOUND {
        format!("has no project `{project}`; check the index URL and the package name")
    } else {
        format!("answered HTTP {status}")
    };
    LockError::Index {
        url: redact(url),
        message,
    }
}

impl SimpleIndex for HttpSimpleIndex {
    fn project_files(&self, index_url: &str, project: &str) -> Result<Vec<IndexFile>, LockError> {
        let url = project_url(index_url, project);
        let (final_url, body) = self
            .policy
            .run(|| self.fetch_page(&url, project))
            .map_err(|e| *e)?;
        parse_project_page(&final_url, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_pages_resolve_relative_urls_and_keep_sha256() {
        let body = br#"{"meta": {"api-version": "1.1"}, "name": "h11", "files": [
            {"filename": "h11-0.16.0-py3-none-any.whl", "url": "../../packages/ab/h11-0.16.0-py3-none-any.whl",
             "hashes": {"sha256": "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"}, "size": 37515},
            {"filename": "h11-0.16.0.tar.gz", "url": "https://files.example/h11-0.16.0.tar.gz", "hashes": {}}
        ]}"#;
        let files = parse_project_page("https://index.example/simple/h11/", body).unwrap();
        assert_eq!(
            files[0].url,
            "https://index.example/packages/ab/h11-0.16.0-py3-none-any.whl"
        );
        assert_eq!(files[0].sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(files[0].size, Some(37515));
        assert_eq!(files[1].sha256, None);
    }

    #[test]
    fn project_urls_use_the_normalised_name() {
        assert_eq!(
            project_url("https://index.example/simple/", "Typing_Extensions"),
            "https://index.example/simple/typing-extensions/"
        );
    }

    #[test]
    fn an_html_page_is_a_clear_error() {
        let err = parse_project_page("https://index.example/simple/x/", b"<html>").unwrap_err();
        assert!(err.to_string().contains("PEP 691"), "{err}");
    }

    #[test]
    fn an_index_page_is_retried_after_a_server_error_and_a_404_names_the_project() {
        use crate::test_http::{Reply, Request, Server};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tries = AtomicUsize::new(0);
        let page = br#"{"files": [{"filename": "h11-0.16.0-py3-none-any.whl", "url": "h11-0.16.0-py3-none-any.whl", "hashes": {}}]}"#;
        let server = Server::start(move |r: &Request| match r.path() {
            "/simple/h11/" if tries.fetch_add(1, Ordering::SeqCst) == 0 => {
                Reply::status(503).header("Retry-After", "0")
            }
            "/simple/h11/" => Reply::status(200).body(page.to_vec()),
            "/simple/down/" => Reply::status(502),
            _ => Reply::status(404),
        });
        let index = HttpSimpleIndex::new().with_policy(RetryPolicy {
            retry_base: std::time::Duration::from_millis(1),
            ..Default::default()
        });
        let base = format!("http://{}/simple", server.addr);
        let files = index.project_files(&base, "h11").unwrap();
        assert_eq!(
            files[0].url,
            format!("{base}/h11/h11-0.16.0-py3-none-any.whl")
        );
        assert_eq!(server.lines(), ["GET /simple/h11/", "GET /simple/h11/"]);

        // A server error that lasts is the answer after the retries.
        let err = index.project_files(&base, "down").unwrap_err().to_string();
        assert!(err.contains("answered HTTP 502"), "{err}");
        assert_eq!(server.lines().len(), 2 + 4);

        // A 404 is not retried, and the password never shows.
        let with_password = format!("http://u:secret@{}/simple", server.addr);
        let err = index
            .project_files(&with_password, "gone")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no project `gone`"), "{err}");
        assert!(err.contains("u:***@") && !err.contains("secret"), "{err}");
        assert_eq!(server.lines().len(), 2 + 4 + 1);
    }

    #[test]
    fn an_endless_index_page_fails_with_one_line_and_memory_stays_bounded() {
        use crate::test_http::{peak_rss, Reply, Server};
        let server = Server::start(|_| Reply::endless(200, r#"{"files": ["#, b' '));
        let index = HttpSimpleIndex::new();
        let before = peak_rss();
        let base = format!("http://{}/simple", server.addr);
        let err = index.project_files(&base, "h11").unwrap_err().to_string();
        let grown = peak_rss().saturating_sub(before);
        assert_eq!(
            err,
            format!(
                "package index {base}/h11/: the page of `h11` is over 64 MiB, the most a \
                 package index page may hold; the server is not what was expected or sends \
                 without end"
            )
        );
        // Not retried: the same page would be as long the next time.
        assert_eq!(server.lines(), ["GET /simple/h11/"]);
        assert!(grown < 200 << 20, "peak RSS grew by {} MiB", grown >> 20);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("https://u:secret@index.example/simple/x/"),
            "https://u:***@index.example/simple/x/"
        );
    }
}
