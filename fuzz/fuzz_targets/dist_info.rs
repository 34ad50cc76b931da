#![no_main]
//! See imgbuild::fuzzing and docs/reliability.md, "Fuzzing".
use imgbuild::fuzzing::{run, Scratch};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| Scratch::new().expect("a scratch directory"));
    run("dist_info", data, scratch);
});
