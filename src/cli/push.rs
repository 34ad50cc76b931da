//! `imgbuild push`: build, then push to each `--tag`; prints what was
//! uploaded and the pinned references (`REF@sha256:…`), one per line.

use super::args::PushArgs;
use super::output::{push_summary, write_atomic};
use super::prepare::{prepare, registry_clients, run_build, Prepared};
use super::progress::{event_printer, human, PushProgress};
use crate::digest::Digest;
use crate::output::push::{PushError, PushReport};
use crate::output::BuildResult;
use crate::reference::Reference;
use crate::registry::{PushOutcome, RegistryClient, TransferStats};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Instant;

pub(super) fn cmd_push(args: PushArgs, verbose: bool) -> Result<()> {
    // Before anything of the project is read: a file changed after this is
    // racy, and keeps this push from being recorded (src/build/unchanged.rs).
    let started = std::time::SystemTime::now();
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("--tag {t}")))
        .collect::<Result<Vec<_>>>()?;
    let span = crate::trace::span(|| "push: prepare".into());
    let mut ctx = prepare(&args.common, verbose)?;
    drop(span);
    ctx.push_targets = tags.clone();
    // The attestations and base facts go up beside the image on a client of
    // their own, so the image's figures stay the image's.
    let mut clients = registry_clients(&args.common, &args.registry, Some(&tags[0].registry), 2)?;
    let (client, beside) = (clients.remove(0), clients.remove(0));
    if verbose {
        client.on_retry(|n| eprintln!("retry: {n}"));
    }
    let inputs = super::unchanged::Inputs::of(&ctx, &args, started);
    use super::unchanged::Recorded;
    let recorded = inputs
        .as_ref()
        .map_or(Recorded::Nothing, |i| i.recorded(&ctx));
    if let Recorded::Same(record) = &recorded {
        if super::unchanged::still_pushed(&client, &tags, record) {
            return super::unchanged::replay(record, &args, &client);
        }
    }
    // Upload sessions are opened ahead only where new blobs are likely.
    let inner_loop = matches!(recorded, Recorded::TreeChanged);
    let clients = Clients {
        image: &client,
        beside: &beside,
    };
    let (result, report, said) =
        match build_and_push(&ctx, &args, &clients, &tags, verbose, inner_loop)? {
            Ok(pushed) => pushed,
            // Once only: the second build reads no registry cache, so nothing it
            // pushes can vanish from one.
            Err(gone) => {
                eprintln!("warning: {}", vanished(&gone));
                ctx.registry_cache = false;
                let (result, report, said) = build_and_push(
                    &ctx, &args, &clients, &tags, verbose, inner_loop,
                )?
                .map_err(|again| {
                    let warning = vanished(&again);
                    anyhow::Error::new(again.error).context(warning)
                })?;
                if result.digest() != gone.planned {
                    // Layers are reproducible whatever their source (docs/reproducibility.md).
                    eprintln!(
                    "warning: the rebuild without the registry cache gave {}, not {} as planned",
                    result.digest(),
                    gone.planned
                );
                }
                (result, report, said)
            }
        };
    // The figures describe the image; the attestations are reported apart.
    let stats = client.stats();
    for line in said {
        eprintln!("{line}");
    }
    print_report(&result, &report, &stats, verbose);
    let summary = args
        .common
        .json
        .then(|| push_summary(&result, &args.tags, &report, &stats));
    if let Some(summary) = &summary {
        println!("{}", serde_json::to_string_pretty(summary)?);
    }
    if let Some(f) = &args.common.digest_file {
        write_atomic(f, format!("{}\n", result.digest()).as_bytes())?;
    }
    if let Some(f) = &args.image_refs {
        write_atomic(f, (report.pinned.join("\n") + "\n").as_bytes())?;
    }
    for p in &report.pinned {
        println!("{p}");
    }
    crate::build::remote_cache::keep_configs(&ctx.store, &result);
    // Last: a push that failed anywhere above is never taken as done.
    if let Some(inputs) = &inputs {
        inputs.keep(&ctx, &result, &report, summary.as_ref());
    }
    Ok(())
}

/// Pushes what the build learnt about each base beside the image in each
/// repository pushed to (docs/reproducibility.md, "Base facts"), for the
/// next fresh runner. Best effort: the image is pushed already, and a runner
/// without the facts reads them from the base.
fn publish_base_facts(
    result: &BuildResult,
    tags: &[Reference],
    client: &RegistryClient,
    store: &crate::store::Store,
    verbose: bool,
) {
    let scratch = &store.root().join("tmp");
    use crate::output::base_facts;
    let mut done: Vec<(&str, &str)> = Vec::new();
    for t in tags {
        let repo = (t.registry.as_str(), t.repository.as_str());
        if done.contains(&repo) {
            continue;
        }
        done.push(repo);
        for doc in &result.base_facts {
            let tag = base_facts::tag(&doc.base);
            let facts = Digest::of_bytes(&base_facts::manifest(doc));
            if !seen_lately(store, t, &tag, &facts) {
                let published = base_facts::publish(client, t, doc);
                if published.is_ok() {
                    keep_seen(store, t, &tag, &facts);
                }
                say_published(published, "base facts", t, &tag, verbose);
            }
            let Some(root) = &doc.compile_root else {
                continue;
            };
            let tag = base_facts::compile_root_tag(&doc.base);
            // Named by the base it comes from: any manifest under the tag will do.
            let any = Digest::of_bytes(tag.as_bytes());
            if seen_lately(store, t, &tag, &any) {
                continue;
            }
            // A root this runner fetched in part is packed whole.
            let pack = || {
                crate::python::bytecode::packed::complete(root)?;
                crate::python::bytecode::packed::pack(root, scratch)
            };
            let published = base_facts::publish_compile_root(client, t, &doc.base, pack);
            if published.is_ok() {
                keep_seen(store, t, &tag, &any);
            }
            say_published(published, "compile root", t, &tag, verbose);
        }
    }
}

/// The store's record of what this cache published (or found) beside an
/// image, by repository and tag: a warm push does not ask again within
/// [`SEEN_FOR`] (issue 26: two HEADs fewer in the inner loop). One deleted
/// from the registry meanwhile costs fresh runners a read of the base, and
/// is put back a day later at most.
const SEEN_KIND: &str = "published-beside";
const SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn seen_key(repo: &Reference, tag: &str) -> String {
    let key = format!("{}/{}:{tag}", repo.registry, repo.repository);
    Digest::of_bytes(key.as_bytes()).hex().to_owned()
}

fn seen_lately(store: &crate::store::Store, repo: &Reference, tag: &str, digest: &Digest) -> bool {
    store
        .get_meta_within::<String>(SEEN_KIND, &seen_key(repo, tag), SEEN_FOR)
        .is_some_and(|seen| seen == digest.to_string())
}

fn keep_seen(store: &crate::store::Store, repo: &Reference, tag: &str, digest: &Digest) {
    store.put_dated_meta_best_effort(SEEN_KIND, &seen_key(repo, tag), &digest.to_string());
}

/// What publishing `what` beside the image under `tag` came to: a line with
/// `-v` when it went up, a warning when it failed (a fresh runner then reads
/// the base), nothing when the registry had it already.
fn say_published<E: std::error::Error + 'static>(
    outcome: Result<bool, E>,
    what: &str,
    repo: &Reference,
    tag: &str,
    verbose: bool,
) {
    match outcome {
        Ok(true) if verbose => eprintln!("pushed {what} {}:{tag}", repo.name()),
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: {what} not pushed to {} ({}); fresh runners will read the base",
            repo.name(),
            crate::text::error_chain(&e)
        ),
    }
}

/// A push that failed because a layer reused from a registry cache vanished
/// after the build planned it, and the digest that build had.
struct Vanished {
    label: String,
    digest: Digest,
    cache: Box<Reference>,
    planned: Digest,
    error: PushError,
}

/// The client the image goes up on, and the one its attestations and base
/// facts go up on beside it.
struct Clients<'a> {
    image: &'a Arc<RegistryClient>,
    beside: &'a Arc<RegistryClient>,
}

type Pushed = (BuildResult, PushReport, Vec<String>);

/// Builds (with the registry cache unless `ctx` turns it off) and pushes,
/// with the attestations and base facts going up at the same time (issue
/// 26: pipelined, not after). The inner error is a reused layer gone from
/// its registry cache, which a build without the cache repairs; every other
/// failure is the outer one.
fn build_and_push(
    ctx: &Prepared,
    args: &PushArgs,
    clients: &Clients,
    tags: &[Reference],
    verbose: bool,
    inner_loop: bool,
) -> Result<Result<Pushed, Vanished>> {
    let printer = event_printer(verbose);
    let t0 = Instant::now();
    let writes: Vec<&std::path::Path> = args.image_refs.iter().map(|p| p.as_path()).collect();
    // While the image builds: what the first tag names, and upload sessions
    // for the new blobs a change makes (the app layer and config, and each
    // attestation document), so the push after the build starts with PUTs.
    let attested = usize::from(args.attach.sbom) + usize::from(args.attach.provenance);
    let uploads = if inner_loop { 2 + attested } else { 0 };
    let (result, ahead) = std::thread::scope(|s| {
        let ahead = s.spawn(|| {
            let _span = crate::trace::span(|| "push: look ahead".into());
            let build_reads_tag = super::prepare::reads_registry_cache(ctx, &args.common);
            crate::output::push::look_ahead(clients.image, &tags[0], uploads, build_reads_tag)
        });
        let built = run_build(ctx, &args.common, clients.image.clone(), &printer, &writes);
        (built, ahead.join().expect("the look-ahead's thread ended"))
    });
    // A build that failed leaves no session it opened ahead behind.
    let result = result.inspect_err(|_| clients.image.cancel_unused_uploads())?;
    let ahead = ahead.settle(clients.image);
    let t1 = Instant::now();
    let progress = PushProgress::new(&result);
    let on_blob = |d: &Digest, o: &PushOutcome| progress.on_blob(d, o);
    let gate = crate::parallel::Gate::default();
    let subject_push = crate::output::referrers::SubjectPush {
        pushed: &|| gate.wait(),
        // A push that moves the tag: the image is most likely new there.
        likely_new: ahead.tag_named() != Some(&result.digest()),
    };
    let (report, attached) = std::thread::scope(|s| {
        // Only beside an image that went up: a failed push's error says it all.
        s.spawn(|| {
            if gate.wait() {
                publish_base_facts(&result, tags, clients.beside, &ctx.store, verbose)
            }
        });
        let attach = s.spawn(|| {
            let _span = crate::trace::span(|| "push: attestations".into());
            super::release::attach_on_push(
                ctx,
                &result,
                tags,
                clients.beside,
                &args.attach,
                &subject_push,
            )
        });
        let span = crate::trace::span(|| "push: image".into());
        let answered = gate.no_unless_answered();
        let report = crate::output::push::push(
            clients.image,
            &result,
            tags,
            &ctx.store,
            &on_blob,
            Some(ahead),
        );
        gate.answer(report.is_ok());
        drop((answered, span));
        (
            report,
            attach.join().expect("the attestations' thread ended"),
        )
    });
    progress.finish();
    clients.image.cancel_unused_uploads();
    if verbose {
        eprintln!("timing: build {:?}, push {:?}", t1 - t0, t1.elapsed());
    }
    match report {
        // The image is in; an attestation that failed fails the push, as before.
        Ok(report) => Ok(Ok((result, report, attached?))),
        Err(PushError::CachedLayerGone {
            label,
            digest,
            cache,
            source,
        }) => Ok(Err(Vanished {
            error: PushError::Registry(*source),
            label,
            digest,
            cache,
            planned: result.digest(),
        })),
        Err(e) => Err(e.into()),
    }
}

/// The warning for a push built again without the registry cache.
fn vanished(v: &Vanished) -> String {
    let (what, source) = match v.label.as_str() {
        "stdlib bytecode" => ("the stdlib bytecode".to_string(), "the base's interpreter"),
        package => (format!("package {package}"), "its wheel"),
    };
    format!(
        "layer {} of {what} vanished from {} between planning and push; rebuilt from {source} \
         (this push was built again without the registry cache)",
        v.digest.short(),
        v.cache
    )
}

/// On stderr: each uploaded layer (every layer with `-v`), then one line for
/// the whole push.
fn print_report(result: &BuildResult, report: &PushReport, stats: &TransferStats, verbose: bool) {
    for (i, img) in result.images.iter().enumerate() {
        for (j, l) in img.layers.iter().enumerate() {
            let outcome = report.outcome(i, j);
            if verbose || outcome == "uploaded" {
                eprintln!(
                    "[{}] {outcome} {} {} {}",
                    img.platform,
                    l.layer.digest.short(),
                    human(l.layer.size),
                    l.label
                );
            }
        }
    }
    eprintln!(
        "pushed {} ({} uploaded, {} requests)",
        result.digest(),
        human(stats.blob_bytes_uploaded),
        stats.requests
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(label: &str) -> Vanished {
        let digest = Digest::of_bytes(b"layer");
        Vanished {
            label: label.into(),
            digest: digest.clone(),
            cache: Box::new(Reference::parse("127.0.0.1:5000/cache:main").unwrap()),
            planned: Digest::of_bytes(b"manifest"),
            error: PushError::Registry(crate::registry::RegistryError::Auth {
                what: "x".into(),
                detail: "y".into(),
            }),
        }
    }

    #[test]
    fn the_warning_names_the_layer_its_package_and_the_cache_it_vanished_from() {
        let v = gone("fastapi 0.115.0");
        assert_eq!(
            vanished(&v),
            format!(
                "layer {} of package fastapi 0.115.0 vanished from 127.0.0.1:5000/cache:main \
                 between planning and push; rebuilt from its wheel (this push was built again \
                 without the registry cache)",
                v.digest.short()
            )
        );
        assert!(vanished(&gone("stdlib bytecode"))
            .contains(" of the stdlib bytecode vanished from 127.0.0.1:5000/cache:main "));
    }
}
