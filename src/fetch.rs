//! Downloads locked wheels into the store, each checked against the lock's
//! sha256 before it is kept. Bounded parallelism; results in a fixed order.

use crate::digest::Digest;
use crate::http::{judge, Failed, HttpClient, HttpError, RetryPolicy};
use crate::lock::select::SelectedWheel;
use crate::store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{filename}: the lock's sha256 {sha256:?} is not a valid sha256")]
    BadHash { filename: String, sha256: String },
    #[error("{filename}: not in the cache and --offline is set; run once without --offline to fill the cache")]
    Offline { filename: String },
    #[error("{filename}: the lock gives no URL or path to download it from")]
    NoUrl { filename: String },
    #[error("{filename}: the lock names a file with a path in it")]
    BadFilename { filename: String },
    #[error("{filename}: cannot read {path}")]
    ReadLocal {
        filename: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{filename}: download from {url} failed")]
    Download {
        filename: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{filename}: cannot download it")]
    Http {
        filename: String,
        #[source]
        source: Arc<HttpError>,
    },
    #[error("{filename}: downloaded bytes do not match the lock's sha256 (expected {expected}, got {actual}); the file was not cached. Re-lock if the index really changed, otherwise check for a proxy rewriting downloads")]
    HashMismatch {
        filename: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Store(StoreError),
}

/// The HTTP client for package indexes and wheel downloads ([`HttpClient`],
/// with the one retry policy), made on first use: loading the system trust
/// store costs tens of milliseconds that a warm build never needs.
pub struct LazyHttp {
    ca_files: Vec<PathBuf>,
    client: std::sync::OnceLock<Result<HttpClient, Arc<HttpError>>>,
    /// For the configured package indexes (never logged).
    credentials: std::sync::RwLock<crate::lock::index_config::Credentials>,
}

impl LazyHttp {
    pub fn new(ca_files: Vec<PathBuf>) -> Self {
        LazyHttp {
            ca_files,
            client: std::sync::OnceLock::new(),
            credentials: Default::default(),
        }
    }

    /// Credentials for the package indexes, sent with index pages and downloads from their hosts.
    pub fn set_credentials(&self, credentials: crate::lock::index_config::Credentials) {
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = credentials;
    }

    fn credentials(&self) -> crate::lock::index_config::Credentials {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The client, which trusts the system store (and SSL_CERT_FILE) and
    /// every --ca-file, and its retry policy.
    pub fn get(&self) -> Result<(&reqwest::blocking::Client, &RetryPolicy), Arc<HttpError>> {
        let http = self
            .client
            .get_or_init(|| {
                HttpClient::new(RetryPolicy::default(), false, &self.ca_files).map_err(Arc::new)
            })
            .as_ref()
            .map_err(Arc::clone)?;
        Ok((http.verified().map_err(Arc::new)?, http.policy()))
    }
}

impl crate::lock::SimpleIndex for LazyHttp {
    fn project_files(
        &self,
        index_url: &str,
        project: &str,
    ) -> Result<Vec<crate::lock::IndexFile>, crate::lock::LockError> {
        let (client, policy) = self.get().map_err(|e| crate::lock::LockError::Index {
            url: crate::lock::index_config::redact(index_url),
            // LockError carries text; the whole chain, once.
            message: crate::registry::error::chain_message(&*e),
        })?;
        crate::lock::index::HttpSimpleIndex::with_client(client.clone())
            .with_policy(policy.clone())
            .with_credentials(self.credentials())
            .project_files(index_url, project)
    }
}

pub struct Fetcher<'a> {
    pub store: &'a Store,
    pub client: &'a LazyHttp,
    pub offline: bool,
    pub jobs: usize,
    /// Relative wheel paths (pylock.toml `path`) resolve against the lockfile's directory.
    pub lock_dir: PathBuf,
}

/// What happened to one wheel; `downloaded` is 0 when the cache had it.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub downloaded: u64,
    /// The cached copy no longer matched the lock's sha256: it was dropped and fetched again.
    pub repaired: bool,
}

enum Cached {
    Sound(PathBuf),
    Absent,
    Dropped,
}

impl Fetcher<'_> {
    pub fn wheel_digest(w: &SelectedWheel) -> Result<Digest, FetchError> {
        Digest::from_hex(&w.sha256.to_ascii_lowercase()).map_err(|_| FetchError::BadHash {
            filename: w.filename.clone(),
            sha256: w.sha256.clone(),
        })
    }

    pub fn fetch_all(
        &self,
        wheels: &[SelectedWheel],
        on_done: &(dyn Fn(&SelectedWheel, &Fetched) + Sync),
    ) -> Result<Vec<Fetched>, FetchError> {
        crate::parallel::map_ordered(wheels, self.jobs, |w| {
            let r = self.fetch_one(w);
            if let Ok(f) = &r {
                on_done(w, f);
            }
            r
        })
        .into_iter()
        .collect()
    }

    /// The installer reads a wheel's tags from its file name, so each cached
    /// wheel is also linked under `wheels/<sha256>/<filename>`.
    fn named_path(&self, w: &SelectedWheel, digest: &Digest) -> Result<PathBuf, FetchError> {
        if w.filename.contains('/') || w.filename.starts_with('.') {
            return Err(FetchError::BadFilename {
                filename: w.filename.clone(),
            });
        }
        let dir = self.store.root().join("wheels").join(digest.hex());
        let path = dir.join(&w.filename);
        if !path.is_file() {
            let io = |e: std::io::Error| {
                FetchError::Store(StoreError::Io {
                    path: path.clone(),
                    source: e,
                })
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            // Linked through a temp name and renamed, so concurrent builds never see a half-made link.
            let tmp = dir.join(format!(".{}.tmp{}", w.filename, std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(self.store.blob_path(digest), &tmp).is_err() {
                std::fs::copy(self.store.blob_path(digest), &tmp).map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        Ok(path)
    }

    /// Whether the cached wheel still matches the lock: the copy the installer
    /// reads (its named link, else the blob) is checked on every use, hashed in
    /// full unless it passed before and its stat is unchanged since
    /// ([`Store::file_verified`]). A corrupt copy is dropped, link and blob, so
    /// it is fetched again.
    fn check_cached(&self, w: &SelectedWheel, digest: &Digest) -> Result<Cached, FetchError> {
        if !self.store.has_blob(digest) {
            return Ok(Cached::Absent);
        }
        let named = self.named_path(w, digest)?;
        if self.store.file_verified(&named, digest) {
            return Ok(Cached::Sound(named));
        }
        let _ = std::fs::remove_file(&named);
        self.store.remove_blob(digest);
        Ok(Cached::Dropped)
    }

    /// Downloads `url` into the store, checked against the lock's sha256, and
    /// tries again under the one retry policy: a dropped connection, 408, 429
    /// and 5xx, and a body that broke off (or a write that failed) midway.
    fn download(&self, w: &SelectedWheel, url: &str, digest: &Digest) -> Result<u64, FetchError> {
        let (client, policy) = self.client.get().map_err(|source| FetchError::Http {
            filename: w.filename.clone(),
            source,
        })?;
        let credentials = self.client.credentials();
        let download_error = |e: reqwest::Error| FetchError::Download {
            filename: w.filename.clone(),
            url: crate::lock::index_config::redact(url),
            source: e.without_url(),
        };
        policy.run(|| {
            let sent = credentials.apply(url, client.get(url)).send();
            let resp = judge(sent).map_err(|f| f.map(|u| download_error(u.into_error())))?;
            let resp = resp
                .error_for_status()
                .map_err(|e| Failed::Final(download_error(e)))?;
            match self.store.put_verified(digest, &w.filename, resp) {
                Ok(size) => Ok(size),
                Err(e @ StoreError::Io { .. }) => Err(Failed::Transient {
                    error: self.store_error(w, e),
                    retry_after: None,
                }),
                Err(e) => Err(Failed::Final(self.store_error(w, e))),
            }
        })
    }

    /// A store error for `w`; bytes that do not match the lock say so.
    fn store_error(&self, w: &SelectedWheel, e: StoreError) -> FetchError {
        match e {
            StoreError::Mismatch {
                expected, actual, ..
            } => FetchError::HashMismatch {
                filename: w.filename.clone(),
                expected,
                actual,
            },
            e => FetchError::Store(e),
        }
    }

    fn fetch_one(&self, w: &SelectedWheel) -> Result<Fetched, FetchError> {
        let digest = Self::wheel_digest(w)?;
        let repaired = match self.check_cached(w, &digest)? {
            Cached::Sound(path) => {
                return Ok(Fetched {
                    path,
                    downloaded: 0,
                    repaired: false,
                })
            }
            Cached::Absent => false,
            Cached::Dropped => true,
        };
        if self.offline {
            return Err(FetchError::Offline {
                filename: w.filename.clone(),
            });
        }
        let url = w.url.clone().ok_or_else(|| FetchError::NoUrl {
            filename: w.filename.clone(),
        })?;
        let size = if let Some(local) = url
            .strip_prefix("file://")
            .map(PathBuf::from)
            .or_else(|| (!url.contains("://")).then(|| self.lock_dir.join(&url)))
        {
            let f = std::fs::File::open(&local).map_err(|source| FetchError::ReadLocal {
                filename: w.filename.clone(),
                path: local.clone(),
                source,
            })?;
            self.store
                .put_verified(&digest, &w.filename, f)
                .map_err(|e| self.store_error(w, e))?
        } else {
            self.download(w, &url, &digest)?
        };
        Ok(Fetched {
            path: self.named_path(w, &digest)?,
            downloaded: size,
            repaired,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::{Reply, Request, Server};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WHEEL: &[u8] = b"PK fake wheel bytes";
    const NAME: &str = "demo-1.0-py3-none-any.whl";

    fn wheel(filename: &str, url: Option<String>, bytes: &[u8]) -> SelectedWheel {
        SelectedWheel {
            name: "demo".into(),
            version: "1.0".into(),
            filename: filename.into(),
            url,
            sha256: Digest::of_bytes(bytes).hex().to_uppercase(),
            size: Some(bytes.len() as u64),
            index: None,
            from_sdist: false,
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        http: LazyHttp,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join(NAME), WHEEL).unwrap();
        Fixture {
            dir,
            store,
            http: LazyHttp::new(Vec::new()),
        }
    }

    impl Fixture {
        fn fetcher(&self, offline: bool) -> Fetcher<'_> {
            Fetcher {
                store: &self.store,
                client: &self.http,
                offline,
                jobs: 2,
                lock_dir: self.dir.path().to_path_buf(),
            }
        }
    }

    #[test]
    fn a_relative_path_is_read_beside_the_lock_then_served_from_the_cache_by_name() {
        let f = fixture();
        let w = wheel(NAME, Some(NAME.into()), WHEEL);
        let done = AtomicUsize::new(0);
        let on_done = |_: &SelectedWheel, _: &Fetched| {
            done.fetch_add(1, Ordering::SeqCst);
        };
        let first = f
            .fetcher(false)
            .fetch_all(std::slice::from_ref(&w), &on_done)
            .unwrap();
        assert_eq!(first[0].downloaded, WHEEL.len() as u64);
        assert!(first[0].path.ends_with(NAME));
        assert_eq!(std::fs::read(&first[0].path).unwrap(), WHEEL);
        // Offline now works: the cache has it, and says nothing was downloaded.
        let again = f.fetcher(true).fetch_all(&[w], &on_done).unwrap();
        assert_eq!(again[0].downloaded, 0);
        assert_eq!(again[0].path, first[0].path);
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_cached_wheel_that_no_longer_matches_the_lock_is_dropped_and_fetched_again() {
        let f = fixture();
        let w = wheel(NAME, Some(NAME.into()), WHEEL);
        let first = f
            .fetcher(false)
            .fetch_all(std::slice::from_ref(&w), &|_, _| {})
            .unwrap();
        assert!(!first[0].repaired);
        // Bit rot (or tampering) in the cache: same size, one byte changed.
        let mut rotten = WHEEL.to_vec();
        rotten[3] ^= 1;
        std::fs::write(&first[0].path, &rotten).unwrap();
        let again = f
            .fetcher(false)
            .fetch_all(std::slice::from_ref(&w), &|_, _| {})
            .unwrap();
        assert!(again[0].repaired);
        assert_eq!(again[0].downloaded, WHEEL.len() as u64);
        assert_eq!(std::fs::read(&again[0].path).unwrap(), WHEEL);
        let digest = Fetcher::wheel_digest(&w).unwrap();
        assert_eq!(std::fs::read(f.store.blob_path(&digest)).unwrap(), WHEEL);
        // Offline, a corrupt entry is dropped and reported as missing, never used.
        std::fs::write(&again[0].path, &rotten).unwrap();
        let err = f.fetcher(true).fetch_all(&[w], &|_, _| {}).unwrap_err();
        assert!(matches!(err, FetchError::Offline { .. }), "{err}");
    }

    #[test]
    fn bytes_that_do_not_match_the_lock_are_refused_and_not_cached() {
        let f = fixture();
        let mut w = wheel(NAME, Some(NAME.into()), b"what the lock promised");
        w.sha256 = w.sha256.to_lowercase();
        let err = f
            .fetcher(false)
            .fetch_all(std::slice::from_ref(&w), &|_, _| {})
            .unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
        assert!(!f.store.has_blob(&Fetcher::wheel_digest(&w).unwrap()));
        assert!(!f.store.has_blob(&Digest::of_bytes(WHEEL)));
    }

    #[test]
    fn offline_without_the_wheel_and_names_with_paths_are_errors_of_their_own() {
        let f = fixture();
        let w = wheel(NAME, Some("http://127.0.0.1:9/x".into()), b"x");
        let err = f.fetcher(true).fetch_all(&[w], &|_, _| {}).unwrap_err();
        assert!(matches!(err, FetchError::Offline { .. }), "{err}");

        let w = wheel(&format!("../{NAME}"), Some(NAME.into()), WHEEL);
        let err = f.fetcher(false).fetch_all(&[w], &|_, _| {}).unwrap_err();
        assert!(matches!(err, FetchError::BadFilename { .. }), "{err}");

        let mut w = wheel(NAME, None, WHEEL);
        w.sha256 = "not-hex".into();
        let err = f.fetcher(false).fetch_all(&[w], &|_, _| {}).unwrap_err();
        assert!(matches!(err, FetchError::BadHash { .. }), "{err}");
    }

    #[test]
    fn a_download_is_retried_after_a_server_error_and_a_404_is_reported_with_its_cause() {
        let tries = AtomicUsize::new(0);
        let server = Server::start(move |r: &Request| match r.path() {
            "/demo-1.0-py3-none-any.whl" if tries.fetch_add(1, Ordering::SeqCst) == 0 => {
                Reply::status(503)
            }
            "/demo-1.0-py3-none-any.whl" => Reply::status(200).body(WHEEL),
            _ => Reply::status(404),
        });
        let f = fixture();
        let url = format!("http://{}/demo-1.0-py3-none-any.whl", server.addr);
        let w = wheel(NAME, Some(url), WHEEL);
        let got = f.fetcher(false).fetch_all(&[w], &|_, _| {}).unwrap();
        assert_eq!(got[0].downloaded, WHEEL.len() as u64);
        assert_eq!(server.requests().len(), 2);

        let url = format!("http://{}/gone.whl", server.addr);
        let w = wheel("gone-1.0-py3-none-any.whl", Some(url.clone()), b"gone");
        let err = f.fetcher(false).fetch_all(&[w], &|_, _| {}).unwrap_err();
        assert!(matches!(err, FetchError::Download { .. }), "{err}");
        let chain = crate::registry::error::chain_message(&err);
        assert!(chain.contains(&url) && chain.contains("404"), "{chain}");
    }
}
