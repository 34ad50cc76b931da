use super::*;

/// A 64-bit little-endian ELF header with `phnum` program headers, the
/// first of type `first_type`.
fn elf(first_type: u8) -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20] = 64; // e_phoff
    elf[0x36] = 56; // e_phentsize
    elf[0x38] = 1; // e_phnum
    elf[64] = first_type;
    elf
}

#[test]
fn only_an_executable_without_a_program_interpreter_can_run_inside() {
    assert!(contains_interp(&elf(3)), "PT_INTERP: needs host libraries");
    assert!(!contains_interp(&elf(1)), "PT_LOAD only: static");
    assert!(!contains_interp(b"\x7fELF\x02\x01"), "truncated");
}

#[test]
fn a_watchdog_kills_a_process_past_its_deadline_and_only_then() {
    let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
    let dog = Watchdog::start(slow.id(), Duration::from_millis(100));
    let status = slow.wait().unwrap();
    assert!(dog.done(), "the watchdog reports the kill");
    assert!(!status.success());

    let mut quick = Command::new("true").spawn().unwrap();
    let dog = Watchdog::start(quick.id(), Duration::from_secs(30));
    assert!(quick.wait().unwrap().success());
    assert!(!dog.done());
}

#[test]
fn mount_points_are_real_directories_even_where_the_tree_had_a_link() {
    let tree = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", tree.path().join("tmp")).unwrap();
    let limits = Limits {
        memory: 1 << 30,
        scratch: 1 << 20,
        time: Duration::from_secs(1),
    };
    namespaces::Plan::new(tree.path(), &[], limits).unwrap();
    for dir in ["tmp", "dev"] {
        let meta = std::fs::symlink_metadata(tree.path().join(dir)).unwrap();
        assert!(
            meta.is_dir(),
            "{dir} is a directory of the tree, not a link out"
        );
    }
}
