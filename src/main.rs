use clap::Parser;

fn main() {
    imgbuild::trace_start();
    fixed_mmap_threshold();
    let cli = imgbuild::cli::Cli::parse();
    if let Err(e) = imgbuild::cli::run(cli) {
        eprintln!("error: {}", imgbuild::cli::error_line(&e));
        std::process::exit(1);
    }
}

/// Large buffers (the 1 MiB blocks layers are compressed in, src/layer/compress.rs)
/// are mapped from the OS and given back when freed. glibc's default raises its mmap
/// threshold after each such free and then serves them from per-thread arenas that
/// keep their pages: a cold build of hello-api peaked at 78 MiB RSS that way, 43 MiB
/// with the threshold fixed (scripts/bench.sh push-memory holds builds to 64 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: glibc's mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}
