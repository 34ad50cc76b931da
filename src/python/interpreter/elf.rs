//! Just enough of an ELF reader to learn a binary's CPU architecture and its
//! program interpreter (`PT_INTERP`, which tells glibc from musl), for 32 and
//! 64-bit files of either byte order.

/// Just enough of an ELF file: its machine and its program interpreter.
#[derive(Debug, PartialEq)]
pub(crate) struct Elf {
    pub machine: u16,
    pub little_endian: bool,
    pub interp: Option<String>,
}

/// Whether an ELF file is 64-bit and little-endian; None when `data` is not
/// an ELF file with a whole 32-bit header (52 bytes) or names an unknown
/// class or byte order.
pub(crate) fn ident(data: &[u8]) -> Option<(bool, bool)> {
    if !data.starts_with(b"\x7fELF") || data.len() < 52 {
        return None;
    }
    let class64 = match data[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little_endian = match data[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    Some((class64, little_endian))
}

/// The `n`-byte (at most 8) unsigned integer at `off`, in the given byte order.
pub(crate) fn uint_at(data: &[u8], off: usize, n: usize, little_endian: bool) -> Option<u64> {
    let b = data.get(off..off.checked_add(n)?)?;
    let mut v: u64 = 0;
    for i in 0..n {
        let byte = if little_endian { b[n - 1 - i] } else { b[i] };
        v = (v << 8) | u64::from(byte);
    }
    Some(v)
}

impl Elf {
    pub fn parse(data: &[u8]) -> Option<Elf> {
        let (class64, little_endian) = ident(data)?;
        let u16_at = |off: usize| uint_at(data, off, 2, little_endian).map(|v| v as u16);
        let u32_at = |off: usize| uint_at(data, off, 4, little_endian).map(|v| v as u32);
        let u64_at = |off: usize| uint_at(data, off, 8, little_endian);
        let machine = u16_at(18)?;
        let (phoff, phentsize, phnum) = if class64 {
            (u64_at(32)?, u16_at(54)?, u16_at(56)?)
        } else {
            (u64::from(u32_at(28)?), u16_at(42)?, u16_at(44)?)
        };
        let mut interp = None;
        for i in 0..u64::from(phnum) {
            let Some(base) = phoff
                .checked_add(i * u64::from(phentsize))
                .and_then(|b| usize::try_from(b).ok())
            else {
                break;
            };
            const PT_INTERP: u32 = 3;
            if u32_at(base) != Some(PT_INTERP) {
                continue;
            }
            let (offset, size) = if class64 {
                (u64_at(base + 8), u64_at(base + 32))
            } else {
                (
                    u32_at(base + 4).map(u64::from),
                    u32_at(base + 16).map(u64::from),
                )
            };
            let (Some(offset), Some(size)) = (offset, size) else {
                break;
            };
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            if let Some(bytes) = data.get(start..end) {
                let bytes = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
                interp = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            break;
        }
        Some(Elf {
            machine,
            little_endian,
            interp,
        })
    }

    pub fn arch(&self) -> Option<String> {
        Some(
            match self.machine {
                0x3e => "x86_64",
                0xb7 => "aarch64",
                0x28 => "armv7l",
                0x03 => "i686",
                0x15 if self.little_endian => "ppc64le",
                0x15 => "ppc64",
                0x16 => "s390x",
                0xf3 => "riscv64",
                0x102 => "loongarch64",
                _ => return None,
            }
            .to_owned(),
        )
    }
}

/// The dynamic section of an ELF file: DT_NEEDED, DT_RPATH and DT_RUNPATH.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfDeps {
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
}

/// Whether `head` (the first bytes of a file) starts an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// Reads DT_NEEDED and RPATH/RUNPATH; None when `data` is not a dynamic ELF file.
pub fn parse_elf(data: &[u8]) -> Option<ElfDeps> {
    let (class64, le) = ident(data)?;
    let rd = |off: u64, n: usize| uint_at(data, usize::try_from(off).ok()?, n, le);
    let word = if class64 { 8 } else { 4 };
    let (phoff, phentsize, phnum) = if class64 {
        (rd(32, 8)?, rd(54, 2)?, rd(56, 2)?)
    } else {
        (rd(28, 4)?, rd(42, 2)?, rd(44, 2)?)
    };
    // Program headers: PT_LOAD maps addresses to offsets, PT_DYNAMIC is the table.
    let mut loads: Vec<(u64, u64, u64)> = Vec::new(); // (vaddr, offset, filesz)
    let mut dynamic: Option<(u64, u64)> = None;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = rd(ph, 4)?;
        let (offset, vaddr, filesz) = if class64 {
            (rd(ph + 8, 8)?, rd(ph + 16, 8)?, rd(ph + 32, 8)?)
        } else {
            (rd(ph + 4, 4)?, rd(ph + 8, 4)?, rd(ph + 16, 4)?)
        };
        match p_type {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let (dyn_off, dyn_size) = dynamic?;
    let entry = 2 * word as u64;
    let mut needed_offsets = Vec::new();
    let mut rpath_offsets = Vec::new();
    let mut strtab = None;
    let mut at = dyn_off;
    while at + entry <= dyn_off + dyn_size {
        let tag = rd(at, word)?;
        let val = rd(at + word as u64, word)?;
        match tag {
            0 => break,
            1 => needed_offsets.push(val),
            5 => strtab = Some(val),
            15 | 29 => rpath_offsets.push(val),
            _ => {}
        }
        at += entry;
    }
    let strtab = strtab?;
    let str_off = loads
        .iter()
        .find(|(v, _, sz)| strtab >= *v && strtab < v + sz)
        .map(|(v, o, _)| strtab - v + o)
        .unwrap_or(strtab);
    let string = |off: u64| -> Option<String> {
        let start = usize::try_from(str_off.checked_add(off)?).ok()?;
        let rest = data.get(start..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    Some(ElfDeps {
        needed: needed_offsets.into_iter().filter_map(string).collect(),
        rpath: rpath_offsets
            .into_iter()
            .filter_map(string)
            .flat_map(|r| r.split(':').map(str::to_owned).collect::<Vec<_>>())
            .filter(|r| !r.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_images::fake_elf64;
    use super::*;

    #[test]
    fn elf_reader_handles_big_endian_and_32_bit() {
        let be = Elf::parse(&fake_elf64(0x16, false, "/lib/ld64.so.1")).unwrap();
        assert_eq!(be.arch().as_deref(), Some("s390x"));
        assert_eq!(be.interp.as_deref(), Some("/lib/ld64.so.1"));

        // 32-bit little-endian ARM: header 52 bytes, program header 32 bytes.
        let mut d = vec![0u8; 52 + 32];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 1;
        d[5] = 1;
        d[18..20].copy_from_slice(&0x28u16.to_le_bytes());
        d[28..32].copy_from_slice(&52u32.to_le_bytes());
        d[42..44].copy_from_slice(&32u16.to_le_bytes());
        d[44..46].copy_from_slice(&1u16.to_le_bytes());
        d[52..56].copy_from_slice(&3u32.to_le_bytes());
        d[56..60].copy_from_slice(&84u32.to_le_bytes());
        let interp = b"/lib/ld-linux-armhf.so.3\0";
        d[68..72].copy_from_slice(&(interp.len() as u32).to_le_bytes());
        d.extend_from_slice(interp);
        let arm = Elf::parse(&d).unwrap();
        assert_eq!(arm.arch().as_deref(), Some("armv7l"));
        assert_eq!(arm.interp.as_deref(), Some("/lib/ld-linux-armhf.so.3"));
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), None);
    }
}
