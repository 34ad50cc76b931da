//! Placing a wheel's entries in the venv: site-packages, the `.data` scheme
//! directories, scripts and launchers, each move mirrored in RECORD.

use super::archive::{Archive, ZipEntry};
use super::record::{record_hash, RecordRow};
use super::scripts::{
    format_shebang, launcher_script, reserved_data_script, rewrite_python_shebang, Script,
};
use super::{Ctx, WheelError};
use crate::layer::{Content, ImagePath, LayerPlan};
use crate::python::venv::VenvTarget;
use std::collections::{HashMap, HashSet};

/// Builds the plan and keeps RECORD in step with every file it moves.
pub(super) struct Planner<'a> {
    pub ctx: &'a Ctx<'a>,
    pub target: &'a VenvTarget,
    pub dist_info: &'a str,
    pub dist_name: &'a str,
    pub plan: LayerPlan,
    /// Normalised RECORD path → first row with it (uv updates the first match).
    pub record_index: HashMap<String, usize>,
    pub site_packages: ImagePath,
    pub entry_point_names: HashSet<String>,
}

impl Planner<'_> {
    pub fn site_path(&self, rel: &str) -> Result<ImagePath, WheelError> {
        self.site_packages
            .join(rel)
            .map_err(|e| self.ctx.path(rel, e))
    }

    pub fn place(
        &mut self,
        e: &ZipEntry,
        archive: &mut Archive,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        let dist_info_dir = format!("{}.dist-info/", self.dist_info);
        if let Some(file) = e.name.strip_prefix(&dist_info_dir) {
            // Regenerated (RECORD) or overwritten (INSTALLER, REQUESTED) by the installer.
            if !e.is_dir && matches!(file, "RECORD" | "INSTALLER" | "REQUESTED") {
                return Ok(());
            }
        }
        let data_dir = format!("{}.data", self.dist_info);
        let in_data = e.name.strip_prefix(&data_dir).and_then(|rest| {
            if rest.is_empty() {
                Some("")
            } else {
                rest.strip_prefix('/')
            }
        });
        match in_data {
            None => {
                let dest = self.site_path(&e.name)?;
                self.put(e, dest)
            }
            Some("") => Ok(()), // the .data directory itself is removed after spreading
            Some(rest) => self.place_data(e, rest, archive, record),
        }
    }

    /// Spreads `<dist>.data/<kind>/...` to its scheme directory.
    fn place_data(
        &mut self,
        e: &ZipEntry,
        rest: &str,
        archive: &mut Archive,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        let (kind, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let base = match kind {
            "data" => self.target.venv.clone(),
            "headers" => self
                .target
                .include()
                .join(self.dist_name)
                .map_err(|err| self.ctx.path(&e.name, err))?,
            "purelib" | "platlib" => self.site_packages.clone(),
            "scripts" => return self.place_script(e, sub, archive, record),
            other => {
                return Err(self
                    .ctx
                    .invalid(format!("unknown data directory {:?} in {}", other, e.name)))
            }
        };
        if sub.is_empty() {
            if !e.is_dir {
                return Err(self.ctx.invalid(format!("{} must be a directory", e.name)));
            }
            // uv creates the destination even when the subtree is empty.
            return self
                .plan
                .dir(base, 0o755)
                .map_err(|err| self.ctx.place(&e.name, err));
        }
        let dest = base.join(sub).map_err(|err| self.ctx.path(&e.name, err))?;
        // `.data/data/bin/python` lands in the venv's bin as surely as a script.
        if !e.is_dir && dest.parent().as_ref() == Some(&self.target.bin()) {
            refuse_reserved(self.ctx, e, dest.file_name())?;
        }
        if !e.is_dir {
            let rel = relative_path(&self.site_packages, &dest);
            self.record_row(record, &e.name)?.path = rel;
        }
        self.put(e, dest)
    }

    fn place_script(
        &mut self,
        e: &ZipEntry,
        sub: &str,
        archive: &mut Archive,
        record: &mut [RecordRow],
    ) -> Result<(), WheelError> {
        if sub.is_empty() {
            return Ok(()); // the scripts directory entry itself
        }
        if e.is_dir || sub.contains('/') {
            return Err(self.ctx.invalid(format!(
                "{} is a directory inside .data/scripts; only files are allowed there",
                e.name
            )));
        }
        refuse_reserved(self.ctx, e, sub)?;
        // A wheel may ship both a script and an entry point of the same name
        // (pip's rule); the entry point wins.
        let stem = sub
            .strip_suffix(".exe")
            .or_else(|| sub.strip_suffix("-script.py"))
            .or_else(|| sub.strip_suffix(".pya"))
            .unwrap_or(sub);
        if self.entry_point_names.contains(stem) {
            return Ok(());
        }
        let dest = self
            .target
            .bin()
            .join(sub)
            .map_err(|err| self.ctx.path(&e.name, err))?;
        let rel = relative_path(&self.site_packages, &dest);
        let rewritten = rewrite_python_shebang(archive, e, &self.target.python(), self.ctx)?;
        let row = self.record_row(record, &e.name)?;
        row.path = rel;
        match rewritten {
            Some(bytes) => {
                row.hash = Some(record_hash(&bytes));
                row.size = Some(bytes.len() as u64);
                self.plan.bytes(dest, 0o755, bytes)
            }
            None => self
                .plan
                .file(dest, 0o755, e.size, Content::External(e.index)),
        }
        .map_err(|err| self.ctx.place(&e.name, err))
    }

    fn put(&mut self, e: &ZipEntry, dest: ImagePath) -> Result<(), WheelError> {
        let mode = if e.executable { 0o755 } else { 0o644 };
        let res = if e.is_dir {
            self.plan.dir(dest, 0o755)
        } else {
            self.plan
                .file(dest, mode, e.size, Content::External(e.index))
        };
        res.map_err(|err| self.ctx.place(&e.name, err))
    }

    fn record_row<'r>(
        &self,
        record: &'r mut [RecordRow],
        entry: &str,
    ) -> Result<&'r mut RecordRow, WheelError> {
        match self.record_index.get(entry) {
            Some(&i) => Ok(&mut record[i]),
            None => Err(self.ctx.invalid(format!(
                "RECORD has no row for {entry}; the wheel was built wrongly"
            ))),
        }
    }

    pub fn launcher(
        &mut self,
        script: &Script,
        record: &mut Vec<RecordRow>,
    ) -> Result<(), WheelError> {
        let text = launcher_script(script, &format_shebang(&self.target.python()));
        let dest = self
            .target
            .bin()
            .join(&script.name)
            .map_err(|err| self.ctx.path(&script.name, err))?;
        if dest.parent().as_ref() != Some(&self.target.bin()) {
            return Err(self.ctx.invalid(format!(
                "entry point name {:?} is not a plain file name",
                script.name
            )));
        }
        record.push(RecordRow {
            path: relative_path(&self.site_packages, &dest),
            hash: Some(record_hash(text.as_bytes())),
            size: Some(text.len() as u64),
        });
        self.plan
            .bytes(dest, 0o755, text.into_bytes())
            .map_err(|err| self.ctx.place(&script.name, err))
    }

    pub fn generated(
        &mut self,
        rel: &str,
        mode: u32,
        bytes: Vec<u8>,
        record: &mut Vec<RecordRow>,
    ) -> Result<(), WheelError> {
        record.push(RecordRow {
            path: rel.to_string(),
            hash: Some(record_hash(&bytes)),
            size: Some(bytes.len() as u64),
        });
        let dest = self.site_path(rel)?;
        self.plan
            .bytes(dest, mode, bytes)
            .map_err(|err| self.ctx.place(rel, err))
    }
}

/// Refuses a file that would land in the venv's bin as `name` when that is
/// an interpreter launcher (`python`, `python3.12`, ...): it would replace the
/// venv's interpreter link, and uv refuses the same names.
fn refuse_reserved(ctx: &Ctx, e: &ZipEntry, name: &str) -> Result<(), WheelError> {
    match reserved_data_script(name) {
        Some(launcher) => Err(ctx.invalid(format!(
            "{} would replace the venv's interpreter `{launcher}`; a wheel may not \
             install a script of that name (uv refuses it too)",
            e.name
        ))),
        None => Ok(()),
    }
}

/// `dest` relative to `base`, with `..` steps, e.g. `../../../bin/uvicorn`.
fn relative_path(base: &ImagePath, dest: &ImagePath) -> String {
    let b: Vec<&str> = base.as_str().split('/').collect();
    let d: Vec<&str> = dest.as_str().split('/').collect();
    let common = b.iter().zip(&d).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<&str> = vec![".."; b.len() - common];
    parts.extend(&d[common..]);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_site_packages() {
        let sp = ImagePath::new("v/lib/python3.11/site-packages").unwrap();
        assert_eq!(
            relative_path(&sp, &ImagePath::new("v/bin/x").unwrap()),
            "../../../bin/x"
        );
        assert_eq!(
            relative_path(
                &sp,
                &ImagePath::new("v/lib/python3.11/site-packages/a/b").unwrap()
            ),
            "a/b"
        );
    }
}
