//! `imgbuild push`: build, then push to each `--tag`; prints what was
//! uploaded and the pinned references (`REF@sha256:…`), one per line.

use super::args::PushArgs;
use super::output::{push_summary, write_atomic};
use super::prepare::{prepare, registry_client, run_build};
use super::progress::{event_printer, human, PushProgress};
use crate::digest::Digest;
use crate::output::push::PushReport;
use crate::output::BuildResult;
use crate::reference::Reference;
use crate::registry::{PushOutcome, TransferStats};
use anyhow::{Context, Result};
use std::time::Instant;

pub(super) fn cmd_push(args: PushArgs, verbose: bool) -> Result<()> {
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("--tag {t}")))
        .collect::<Result<Vec<_>>>()?;
    let mut ctx = prepare(&args.common)?;
    ctx.push_targets = tags.clone();
    let client = registry_client(&args.common, &args.registry, Some(&tags[0].registry))?;
    if verbose {
        client.on_retry(|n| eprintln!("retry: {n}"));
    }
    let printer = event_printer(verbose);
    let t0 = Instant::now();
    let result = run_build(&ctx, &args.common, client.clone(), &printer, &[])?;
    let t1 = Instant::now();
    let progress = PushProgress::new(&result);
    let on_blob = |d: &Digest, o: &PushOutcome| progress.on_blob(d, o);
    let report = crate::output::push::push(&client, &result, &tags, &ctx.store, &on_blob);
    progress.finish();
    let report = report?;
    if verbose {
        eprintln!("timing: build {:?}, push {:?}", t1 - t0, t1.elapsed());
    }
    // The figures describe the image; the attestations attached next are reported apart.
    let stats = client.stats();
    super::release::attach_on_push(&ctx, &result, &tags, &client, &args.attach)?;
    print_report(&result, &report, &stats, verbose);
    if args.common.json {
        let summary = push_summary(&result, &args.tags, &report, &stats);
        println!("{}", serde_json::to_string_pretty(&summary)?);
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
    Ok(())
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
