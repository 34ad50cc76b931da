//! What a run learnt about how to reach a registry (the scheme its `/v2/`
//! answered on and the auth challenge it gave), kept in the cache for the
//! next run: a warm push then sends its first request with credentials
//! instead of pinging first (issue 26, the inner loop). Only a hint: a
//! remembered endpoint that fails on the wire is forgotten and pinged again,
//! and a 401 with another challenge replaces it.

use super::auth::Challenge;
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

    /// Whether `registry` answered within [`NO_REFERRERS_FOR`] that it has
    /// no referrers API: a push that attaches then asks only the fallback
    /// tag (issue 26: a request fewer in the inner loop). A registry that
    /// gains the API meanwhile gets the fallback tag too for a day, which
    /// readers of either still find.
    pub(super) fn lacks_referrers_api(&self, registry: &str) -> bool {
        self.store.as_ref().is_some_and(|store| {
            store
                .get_meta_within::<()>(NO_REFERRERS_KIND, registry, NO_REFERRERS_FOR)
                .is_some()
        })
    }

    /// Keeps what `registry` answered to a referrers list: whether it has the API.
    pub(super) fn keep_referrers_api(&self, registry: &str, has_it: bool) {
        let Some(store) = &self.store else { return };
        match has_it {
            true => store.remove_meta(NO_REFERRERS_KIND, registry),
            false => store.put_dated_meta_best_effort(NO_REFERRERS_KIND, registry, &()),
        }
    }

    /// Whether a run within [`BLOB_HELD_FOR`] saw `registry` hold the blob
    /// `key` (repository and digest). A hint: whoever skips the blob on its
    /// word sends it after all if the registry says it is missing.
    pub(super) fn knows_blob(&self, registry: &str, key: &str) -> bool {
        self.store.as_ref().is_some_and(|store| {
            store
                .get_meta_within::<()>(BLOB_KIND, &format!("{registry}/{key}"), BLOB_HELD_FOR)
                .is_some()
        })
    }

    /// Keeps (or forgets) that `registry` holds the blob `key`.
    pub(super) fn keep_blob(&self, registry: &str, key: &str, held: bool) {
        let Some(store) = &self.store else { return };
        let key = format!("{registry}/{key}");
        match held {
            true => store.put_dated_meta_best_effort(BLOB_KIND, &key, &()),
            false => store.remove_meta(BLOB_KIND, &key),
        }
    }
}

const BLOB_KIND: &str = "registry-holds-blob";
const BLOB_HELD_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const NO_REFERRERS_KIND: &str = "registry-without-referrers-api";
const NO_REFERRERS_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
