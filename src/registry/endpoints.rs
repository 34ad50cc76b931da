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
}
