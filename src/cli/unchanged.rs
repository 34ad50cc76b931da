//! The no-op push: when a push's inputs are those of the last successful
//! push from this cache (src/build/unchanged.rs says which inputs) and each
//! tag still names the digest that push gave (one manifest HEAD per tag),
//! nothing is built or uploaded: the push says so and prints what it printed
//! then. Like `make`, it trusts file status; another `--cache-dir` or any
//! change to the inputs builds as usual.

use super::args::PushArgs;
use super::output::write_atomic;
use super::prepare::Prepared;
use crate::build::unchanged;
use crate::digest::Digest;
use crate::output::push::PushReport;
use crate::output::BuildResult;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::SystemTime;

const KIND: &str = "push-records";

/// What a successful push left for the next one with the same inputs.
#[derive(Serialize, Deserialize)]
pub(super) struct PushRecord {
    /// The directories the tree fingerprint covers.
    dirs: Vec<PathBuf>,
    /// None when a file changed while the push ran (racy): the record then
    /// never says that nothing changed since.
    tree: Option<Digest>,
    /// The tree's fingerprint racy or not: what tells the next push that
    /// the tree changed (the inner loop) rather than maybe not.
    seen: Option<Digest>,
    digest: Digest,
    /// `REF@sha256:…` per tag, as the push printed them.
    pinned: Vec<String>,
    /// The `--json` summary it printed, with `--json`.
    summary: Option<serde_json::Value>,
}

/// This run's inputs key, when it started (what a racy file is judged by),
/// and what it writes itself (left out of the tree fingerprint).
pub(super) struct Inputs {
    key: Digest,
    started: SystemTime,
    own: Vec<PathBuf>,
}

/// What the cache recorded for a push's inputs.
pub(super) enum Recorded {
    /// No push with these inputs.
    Nothing,
    /// A push with these inputs and this source tree: the no-op push.
    Same(PushRecord),
    /// A push with these inputs, of a tree that looks the same but changed
    /// too close to a push's start to be sure: built, nothing assumed.
    Unsure,
    /// A push with these inputs, of a tree that changed since (or is
    /// changing now): the inner loop, where a new app layer is likely.
    TreeChanged,
}

impl Inputs {
    /// `None` when the inputs cannot be keyed without the network (a base by tag).
    pub(super) fn of(ctx: &Prepared, args: &PushArgs, started: SystemTime) -> Option<Inputs> {
        let argv: Vec<_> = std::env::args_os().collect();
        let cwd = std::env::current_dir().ok()?;
        let key = unchanged::inputs_key(&ctx.spec, &argv, &cwd)?;
        let written = [&args.common.digest_file, &args.image_refs];
        let mut own: Vec<PathBuf> = written.into_iter().flatten().cloned().collect();
        own.push(ctx.store.root().to_path_buf());
        let own = own
            .iter()
            .map(|p| unchanged::real_path(&cwd.join(p)))
            .collect();
        Some(Inputs { key, started, own })
    }

    /// What the cache holds for these inputs: the record of the last push
    /// with them when the project's files are as they were then.
    pub(super) fn recorded(&self, ctx: &Prepared) -> Recorded {
        let _span = crate::trace::span(|| "push: inputs unchanged?".into());
        let Some(record) = ctx.store.get_meta::<PushRecord>(KIND, self.key.hex()) else {
            return Recorded::Nothing;
        };
        let Some(now) = unchanged::tree_status(&record.dirs, &self.own, self.started) else {
            return Recorded::Nothing;
        };
        if !now.racy && record.tree.as_ref() == Some(&now.fingerprint) {
            Recorded::Same(record)
        } else if record.seen.as_ref() == Some(&now.fingerprint) {
            Recorded::Unsure
        } else {
            Recorded::TreeChanged
        }
    }

    /// Keeps what the next push with these inputs needs. When a project file
    /// changed while this one ran, the record's tree is racy: the next push
    /// builds, and knows whether the tree changed since.
    pub(super) fn keep(
        &self,
        ctx: &Prepared,
        result: &BuildResult,
        report: &PushReport,
        summary: Option<&serde_json::Value>,
    ) {
        let mut dirs = unchanged::project_dirs(&ctx.spec);
        dirs.extend(result.local_dirs.iter().cloned());
        let status = unchanged::tree_status(&dirs, &self.own, self.started);
        let tree = status
            .as_ref()
            .and_then(|t| (!t.racy).then(|| t.fingerprint.clone()));
        let seen = status.map(|t| t.fingerprint);
        let record = PushRecord {
            dirs,
            tree,
            seen,
            digest: result.digest(),
            pinned: report.pinned.clone(),
            summary: summary.cloned(),
        };
        ctx.store
            .put_meta_best_effort(KIND, self.key.hex(), &record);
    }
}

/// Whether every tag still names the recorded digest (a HEAD each). Any
/// other answer, or an error, means the push runs in full.
pub(super) fn still_pushed(
    client: &RegistryClient,
    tags: &[Reference],
    record: &PushRecord,
) -> bool {
    tags.iter()
        .all(|t| matches!(client.head_manifest(t), Ok(Some((d, _))) if d == record.digest))
}

/// Says what the recorded push said, and writes its `--digest-file` and
/// `--image-refs` again.
pub(super) fn replay(record: &PushRecord, args: &PushArgs, client: &RegistryClient) -> Result<()> {
    let requests = client.stats().requests;
    eprintln!(
        "pushed {} (0 B uploaded, {requests} requests; unchanged since the last push from this cache)",
        record.digest
    );
    if args.common.json {
        let mut summary = record.summary.clone().unwrap_or_default();
        replayed_summary(&mut summary, requests);
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    if let Some(f) = &args.common.digest_file {
        write_atomic(f, format!("{}\n", record.digest).as_bytes())?;
    }
    if let Some(f) = &args.image_refs {
        write_atomic(f, (record.pinned.join("\n") + "\n").as_bytes())?;
    }
    for p in &record.pinned {
        println!("{p}");
    }
    Ok(())
}

/// The recorded `--json` summary as this run's: every layer existed,
/// nothing was downloaded or uploaded, and `unchanged` says why.
fn replayed_summary(summary: &mut serde_json::Value, requests: u64) {
    for img in summary["images"].as_array_mut().into_iter().flatten() {
        for l in img["layers"].as_array_mut().into_iter().flatten() {
            l["outcome"] = "existed".into();
        }
        for k in [
            "wheels_downloaded",
            "layers_from_registry_cache",
            "base_layers_downloaded",
        ] {
            img[k] = 0.into();
        }
    }
    summary["bytes_uploaded"] = 0.into();
    summary["requests"] = requests.into();
    summary["unchanged"] = true.into();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_summary_says_nothing_moved_and_why() {
        let mut s = serde_json::json!({
            "digest": "sha256:00",
            "images": [{
                "layers": [{"outcome": "uploaded"}],
                "wheels_downloaded": 3,
                "layers_from_registry_cache": 2,
                "base_layers_downloaded": 1,
            }],
            "bytes_uploaded": 9000,
            "requests": 40,
        });
        replayed_summary(&mut s, 1);
        assert_eq!(s["images"][0]["layers"][0]["outcome"], "existed");
        assert_eq!(s["images"][0]["wheels_downloaded"], 0);
        assert_eq!(s["bytes_uploaded"], 0);
        assert_eq!(s["requests"], 1);
        assert_eq!(s["unchanged"], true);
    }
}
