//! Downloads locked wheels into the store, each checked against the lock's
//! sha256 before it is kept. Bounded parallelism; results in a fixed order.

use crate::digest::Digest;
use crate::lock::select::SelectedWheel;
use crate::store::{Store, StoreError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{filename}: the lock's sha256 {sha256:?} is not a valid sha256")]
    BadHash { filename: String, sha256: String },
    #[error("{filename}: not in the cache and --offline is set; run once without --offline to fill the cache")]
    Offline { filename: String },
    #[error("{filename}: the lock gives no URL or path to download it from")]
    NoUrl { filename: String },
    #[error("{filename}: download from {url} failed: {message}")]
    Download {
        filename: String,
        url: String,
        message: String,
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

/// The HTTP client for package indexes, made on first use: loading the
/// system trust store costs tens of milliseconds that a warm build never needs.
pub struct LazyHttp {
    ca_files: Vec<PathBuf>,
    client: std::sync::OnceLock<Result<reqwest::blocking::Client, String>>,
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

    /// The client: the system trust store (and SSL_CERT_FILE) through reqwest's
    /// default TLS, plus every --ca-file.
    pub fn get(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                let mut b = reqwest::blocking::Client::builder()
                    .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")));
                for f in &self.ca_files {
                    let pem =
                        std::fs::read(f).map_err(|e| format!("--ca-file {}: {e}", f.display()))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        format!(
                            "--ca-file {}: not a PEM certificate bundle: {e}",
                            f.display()
                        )
                    })?;
                    for cert in certs {
                        b = b.add_root_certificate(cert);
                    }
                }
                b.build()
                    .map_err(|e| format!("setting up the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl crate::lock::SimpleIndex for LazyHttp {
    fn project_files(
        &self,
        index_url: &str,
        project: &str,
    ) -> Result<Vec<crate::lock::IndexFile>, crate::lock::LockError> {
        let client = self
            .get()
            .map_err(|message| crate::lock::LockError::Index {
                url: crate::lock::index_config::redact(index_url),
                message,
            })?;
        crate::lock::index::HttpSimpleIndex::with_client(client.clone())
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
            return Err(FetchError::Download {
                filename: w.filename.clone(),
                url: crate::lock::index_config::redact(w.url.as_deref().unwrap_or_default()),
                message: "the lock names a file with a path in it".into(),
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

    fn fetch_one(&self, w: &SelectedWheel) -> Result<Fetched, FetchError> {
        let digest = Self::wheel_digest(w)?;
        if self.store.has_blob(&digest) {
            return Ok(Fetched {
                path: self.named_path(w, &digest)?,
                downloaded: 0,
            });
        }
        if self.offline {
            return Err(FetchError::Offline {
                filename: w.filename.clone(),
            });
        }
        let url = w.url.clone().ok_or_else(|| FetchError::NoUrl {
            filename: w.filename.clone(),
        })?;
        let dl_err = |message: String| FetchError::Download {
            filename: w.filename.clone(),
            url: crate::lock::index_config::redact(&url),
            message,
        };
        let map_store = |e: StoreError| match e {
            StoreError::Mismatch {
                expected, actual, ..
            } => FetchError::HashMismatch {
                filename: w.filename.clone(),
                expected,
                actual,
            },
            e => FetchError::Store(e),
        };
        let size = if let Some(local) = url
            .strip_prefix("file://")
            .map(PathBuf::from)
            .or_else(|| (!url.contains("://")).then(|| self.lock_dir.join(&url)))
        {
            let f = std::fs::File::open(&local).map_err(|e| dl_err(e.to_string()))?;
            self.store
                .put_verified(&digest, &w.filename, f)
                .map_err(map_store)?
        } else {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = self.client.get().map_err(&dl_err)?;
                let resp = self
                    .client
                    .credentials()
                    .apply(&url, client.get(&url))
                    .send()
                    .and_then(|r| r.error_for_status());
                match resp {
                    Ok(r) => match self.store.put_verified(&digest, &w.filename, r) {
                        Ok(n) => break n,
                        Err(StoreError::Io { .. }) if attempt < 3 => continue,
                        Err(e) => return Err(map_store(e)),
                    },
                    Err(e)
                        if attempt < 3
                            && (e.is_connect()
                                || e.is_timeout()
                                || e.status().is_some_and(|s| s.is_server_error())) =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(500 * attempt));
                        continue;
                    }
                    Err(e) => return Err(dl_err(e.without_url().to_string())),
                }
            }
        };
        Ok(Fetched {
            path: self.named_path(w, &digest)?,
            downloaded: size,
        })
    }
}
