//! `demo.du`: a nested tree. Each directory spawns one child per
//! subdirectory and sums their sizes and counts level by level, like `du`.
//! Directories are read through [`DemoRoot`]; children name their
//! directories relative to the root.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::root::DemoRoot;
use crate::context::Context;
use crate::job::{Child, Job, PhaseError, Step};
use crate::kinds::run_blocking;

/// Input of `demo.du`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuInput {
    /// The directory, under the demo root (a relative path resolves
    /// against it).
    pub path: String,
}

/// Output of `demo.du`: totals for a directory and everything under it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DuOutput {
    /// The directory, as its input named it.
    pub path: String,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Regular files.
    pub files: u64,
    /// Directories, itself included.
    pub dirs: u64,
    /// Levels below it (0 for a directory without subdirectories).
    pub depth: u64,
}

/// One directory's own totals and its subdirectories.
struct Scan {
    own: DuOutput,
    /// Subdirectories, relative to the root.
    subdirs: Vec<String>,
    /// Subdirectories left out for names that are not UTF-8.
    skipped: u64,
}

fn scan_dir(root: &DemoRoot, path: &str) -> Result<Scan, PhaseError> {
    let mut scan = Scan {
        own: DuOutput {
            path: path.to_owned(),
            dirs: 1,
            ..DuOutput::default()
        },
        subdirs: Vec::new(),
        skipped: 0,
    };
    for entry in root.read_dir(Path::new(path)).map_err(|e| e.into_phase())? {
        if entry.meta.is_dir() {
            match entry.path.to_str() {
                Some(sub) => scan.subdirs.push(sub.to_owned()),
                None => scan.skipped += 1,
            }
        } else if entry.meta.is_file() {
            scan.own.files += 1;
            scan.own.bytes += entry.meta.len();
        }
    }
    Ok(scan)
}

/// `demo.du`: one child per subdirectory, summed level by level.
pub struct DiskUsage;

impl Job for DiskUsage {
    const KIND: &'static str = "demo.du";
    type Input = DuInput;
    type Output = DuOutput;

    async fn run(
        &self,
        phase: &str,
        input: DuInput,
        ctx: &mut Context,
    ) -> Result<Step<DuOutput>, PhaseError> {
        let root = DemoRoot::from_env().map_err(|e| e.into_phase())?;
        let Scan {
            mut own,
            subdirs,
            skipped,
        } = run_blocking("scanning a directory", move || scan_dir(&root, &input.path)).await??;
        match phase {
            "start" => {
                if skipped > 0 {
                    ctx.log(
                        "warn",
                        format!("skipped {skipped} subdirectories whose names are not UTF-8"),
                    );
                }
                if subdirs.is_empty() {
                    return Ok(Step::Complete(own));
                }
                let children = subdirs
                    .into_iter()
                    .map(|path| Child::new::<DiskUsage>(&DuInput { path }))
                    .collect::<Result<_, _>>()?;
                Ok(Step::spawn(children, "sum"))
            }
            "sum" => {
                for child in ctx.children::<DuOutput>().collect().await? {
                    let sub = child
                        .result
                        .map_err(|e| PhaseError::permanent(format!("subdirectory failed: {e}")))?;
                    own.bytes += sub.bytes;
                    own.files += sub.files;
                    own.dirs += sub.dirs;
                    own.depth = own.depth.max(sub.depth + 1);
                }
                Ok(Step::Complete(own))
            }
            other => Err(PhaseError::permanent(format!(
                "demo.du has no phase {other:?}"
            ))),
        }
    }
}
