//! What a run learnt about how to reach a registry (the scheme its `/v2/`
//! answered on and the auth challenge it gave), kept in the cache for the
//! next run: a warm push then sends its first request with credentials
//! instead of pinging first (issue 26, the inner loop). Only a hint: a
//! remembered endpoint that fails on the wire is forgotten and pinged again,
//! and a 401 with another challenge replaces it.

use super::auth::Challenge;
use crate::digest::Digest;
use crate::store::Store;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const KIND: &str = "registry-endpoints";

#[derive(Serialize, Deserialize)]
struct Remembered {
    base: String,
    challenge: Option<RememberedChallenge>,
}

#[derive(Serialize, Deserialize)]
struct RememberedChallenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// The store where endpoints are remembered, when the caller gave one.
#[derive(Default)]
pub(super) struct EndpointMemory {
    store: Option<Store>,
}

impl EndpointMemory {
    pub(super) fn new(store: Store) -> Self {
        EndpointMemory { store: Some(store) }
    }

    /// The base URL and challenge `registry` had at an earlier run, if any.
    pub(super) fn recall(&self, registry: &str) -> Option<(Url, Option<Challenge>)> {
        let r: Remembered = self.store.as_ref()?.get_meta(KIND, registry)?;
        let base = Url::parse(&r.base).ok()?;
        let challenge = r.challenge.map(|c| Challenge {
            scheme: c.scheme,
            params: c.params,
        });
        Some((base, challenge))
    }

    pub(super) fn keep(&self, registry: &str, base: &Url, challenge: Option<&Challenge>) {
        let Some(store) = &self.store else { return };
        let r = Remembered {
            base: base.to_string(),
            challenge: challenge.map(|c| RememberedChallenge {
                scheme: c.scheme.clone(),
                params: c.params.clone(),
            }),
        };
        store.put_meta_best_effort(KIND, registry, &r);
    }

    pub(super) fn forget(&self, registry: &str) {
        if let Some(store) = &self.store {
            store.remove_meta(KIND, registry);
        }
    }

    /// Whether `registry` answered within [`HINT_LASTS`] that it has no
    /// referrers API: a push that attaches then asks only the fallback tag
    /// (issue 26: a request fewer in the inner loop). A registry that gains
    /// the API meanwhile gets the fallback tag too for a day, which readers
    /// of either still find.
    pub(super) fn lacks_referrers_api(&self, registry: &str) -> bool {
        self.hint(NO_REFERRERS_KIND, registry)
    }

    /// Keeps what `registry` answered to a referrers list: whether it has the API.
    pub(super) fn keep_referrers_api(&self, registry: &str, has_it: bool) {
        self.keep_hint(NO_REFERRERS_KIND, registry, !has_it);
    }

    /// Whether a run within [`HINT_LASTS`] saw `registry` hold the blob
    /// `digest` in `repository`. A hint: whoever skips the blob on its word
    /// sends it after all if the registry says it is missing.
    pub(super) fn knows_blob(&self, registry: &str, repository: &str, digest: &Digest) -> bool {
        self.hint(BLOB_KIND, &format!("{registry}/{repository}@{digest}"))
    }

    /// Keeps (or forgets) that `registry` holds the blob `digest` in `repository`.
    pub(super) fn keep_blob(&self, registry: &str, repository: &str, digest: &Digest, held: bool) {
        self.keep_hint(
            BLOB_KIND,
            &format!("{registry}/{repository}@{digest}"),
            held,
        );
    }

    /// Whether the hint `kind` about `key` was kept within [`HINT_LASTS`].
    fn hint(&self, kind: &str, key: &str) -> bool {
        self.store
            .as_ref()
            .is_some_and(|store| store.get_meta_within::<()>(kind, key, HINT_LASTS).is_some())
    }

    /// Keeps (dated now) or drops the hint `kind` about `key`.
    fn keep_hint(&self, kind: &str, key: &str, holds: bool) {
        let Some(store) = &self.store else { return };
        match holds {
            true => store.put_dated_meta_best_effort(kind, key, &()),
            false => store.remove_meta(kind, key),
        }
    }
}

/// How long a hint of [`EndpointMemory`] is trusted.
const HINT_LASTS: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const BLOB_KIND: &str = "registry-holds-blob";
const NO_REFERRERS_KIND: &str = "registry-without-referrers-api";
