//! A tiny, fully deterministic "Python" base image made in-process: just the
//! files imgbuild reads to know a base's Python (an ELF interpreter header, the
//! sysconfigdata, libc's version string, dpkg status). It cannot run, but its
//! digest never changes, so golden-digest tests can pin their output.

use imgbuild::digest::Digest;
use imgbuild::layer::tar::{write_layer, NoExternal};
use imgbuild::layer::{ImagePath, LayerPlan};
use serde_json::json;
use std::path::Path;

/// A minimal 64-bit little-endian x86_64 ELF whose only program header is PT_INTERP.
pub fn elf_with_interp(interp: &str, machine: u16) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little endian
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&machine.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let interp_off = (64 + 56) as u64;
    let ph = &mut e[64..120];
    ph[0..4].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
    ph[8..16].copy_from_slice(&interp_off.to_le_bytes());
    ph[32..40].copy_from_slice(&((interp.len() + 1) as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&((interp.len() + 1) as u64).to_le_bytes());
    e.extend_from_slice(interp.as_bytes());
    e.push(0);
    e
}

const SYSCONFIG: &str = "# system configuration generated and used by the sysconfig module
build_time_vars = {'ABIFLAGS': '',
 'EXT_SUFFIX': '.cpython-311-x86_64-linux-gnu.so',
 'MULTIARCH': 'x86_64-linux-gnu',
 'SOABI': 'cpython-311-x86_64-linux-gnu',
 'VERSION': '3.11',
 'prefix': '/usr'}
";

const DPKG_STATUS: &str = "Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6

";

/// Writes the synthetic amd64 base as an OCI layout at `dir`, tag `latest`.
pub fn write_base(dir: &Path) {
    write_base_with(dir, true)
}

/// The same base, or one that has everything but Python (`with_python = false`).
pub fn write_base_with(dir: &Path, with_python: bool) {
    let p = |s: &str| ImagePath::new(s).unwrap();
    let mut plan = LayerPlan::new();
    if with_python {
        add_python(&mut plan);
    }
    plan.bytes(
        p("usr/lib/x86_64-linux-gnu/libc.so.6"),
        0o755,
        b"\x7fELF....GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\n"
            .to_vec(),
    )
    .unwrap();
    plan.symlink(p("lib64"), "usr/lib64").unwrap();
    plan.bytes(
        p("usr/lib64/ld-linux-x86-64.so.2"),
        0o755,
        b"\x7fELF".to_vec(),
    )
    .unwrap();
    plan.bytes(p("var/lib/dpkg/status"), 0o644, DPKG_STATUS.into())
        .unwrap();
    plan.bytes(
        p("etc/os-release"),
        0o644,
        b"ID=debian\nVERSION_ID=\"12\"\n".to_vec(),
    )
    .unwrap();
    write_layout(dir, &plan);
}

fn add_python(plan: &mut LayerPlan) {
    let p = |s: &str| ImagePath::new(s).unwrap();
    plan.bytes(
        p("usr/bin/python3.11"),
        0o755,
        elf_with_interp("/lib64/ld-linux-x86-64.so.2", 62),
    )
    .unwrap();
    plan.symlink(p("usr/bin/python3"), "python3.11").unwrap();
    plan.bytes(
        p("usr/lib/python3.11/_sysconfigdata__x86_64-linux-gnu.py"),
        0o644,
        SYSCONFIG.into(),
    )
    .unwrap();
    plan.bytes(
        p("usr/lib/python3.11/EXTERNALLY-MANAGED"),
        0o644,
        b"[externally-managed]\n".to_vec(),
    )
    .unwrap();
}

fn write_layout(dir: &Path, plan: &LayerPlan) {
    let (layer, blob) = write_layer(plan, 0, &mut NoExternal, Vec::new()).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "synthetic test base"}]
    }))
    .unwrap();
    let config_digest = Digest::of_bytes(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest.to_string(), "size": layer.size}]
    }))
    .unwrap();
    let manifest_digest = Digest::of_bytes(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest.to_string(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    }))
    .unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(layer.digest.hex()), blob).unwrap();
    std::fs::write(blobs.join(config_digest.hex()), config).unwrap();
    std::fs::write(blobs.join(manifest_digest.hex()), manifest).unwrap();
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}
