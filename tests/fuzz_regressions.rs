//! Every input the fuzzers ever broke a parser with (fuzz/regressions/<target>/),
//! and the seed corpus (fuzz/corpus/<target>/), replayed on stable through the
//! same entry points the cargo-fuzz targets use. A panic here is a regression.

use imgbuild::fuzzing::{run, Scratch, TARGETS};
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let scratch = Scratch::new().unwrap();
    let mut total = 0;
    for target in TARGETS {
        let files = inputs(&root.join(target));
        assert!(
            !files.is_empty(),
            "fuzz/{kind}/{target}/ has no inputs; every target keeps at least one"
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let result = std::panic::catch_unwind(|| run(target, &data, &scratch));
            assert!(result.is_ok(), "{} panics again", file.display());
            total += 1;
        }
    }
    total
}

#[test]
fn every_committed_crash_input_is_handled() {
    assert!(replay("regressions") >= TARGETS.len());
}

#[test]
fn every_seed_is_handled() {
    assert!(replay("corpus") >= TARGETS.len());
}

#[test]
fn no_stray_target_directories() {
    for kind in ["regressions", "corpus"] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(kind);
        for dir in inputs(&root) {
            let name = dir.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                TARGETS.contains(&name.as_str()),
                "fuzz/{kind}/{name} is not a fuzz target"
            );
        }
    }
}
