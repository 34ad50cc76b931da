//! Just enough of an ELF reader to learn a binary's CPU architecture and its
//! program interpreter (`PT_INTERP`, which tells glibc from musl), for 32 and
//! 64-bit files of either byte order.

/// Just enough of an ELF file: its machine and its program interpreter.
#[derive(Debug, PartialEq)]
pub(super) struct Elf {
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
