//! The demo root: the one directory the demo kinds may read.
//!
//! A worker's files are not its submitters' to read, so `demo.wordcount`,
//! `demo.wordcount.chunk` and `demo.du` resolve every path against
//! [`ROOT_ENV`] (default: the worker's working directory). A relative path
//! resolves against the root; an absolute one must lie under it. Each path
//! is checked three times:
//!
//! ```text
//!  requested ──lexical──► under the root? (`..` cannot climb out; no disk access)
//!            ──canonical─► still under it once symlinks are resolved?
//!            ──opened────► is the opened file or directory the one a fresh
//!                          resolution names under the root? (a file swapped
//!                          for a symlink after it was listed does not escape)
//! ```
//!
//! Every refusal is a [`RootError`] naming the root; the kinds turn it into
//! a permanent failure with [`RootError::into_phase`].

use std::fs::{File, Metadata};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::job::PhaseError;

/// The variable that names the demo root.
pub const ROOT_ENV: &str = "TRIBUTARY_DEMO_ROOT";

/// Why a demo path was refused.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The root itself cannot be used.
    #[error("the demo root {} cannot be opened: {source}; set {ROOT_ENV} to a readable directory", .root.display())]
    Root {
        /// The root as configured.
        root: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path lies outside the root, lexically or once symlinks are resolved.
    #[error("{path:?} is outside the demo root {}: the demo kinds read only under {ROOT_ENV}", .root.display())]
    Outside {
        /// The path as requested.
        path: String,
        /// The canonical root.
        root: PathBuf,
    },
    /// The path changed between its check and its opening.
    #[error("{path:?} changed while it was opened and may lead outside the demo root {}", .root.display())]
    Changed {
        /// The path as requested.
        path: String,
        /// The canonical root.
        root: PathBuf,
    },
    /// The path is under the root but cannot be read (missing, wrong type,
    /// no permission).
    #[error("cannot read {path:?} under the demo root {}: {source}", .root.display())]
    Unreadable {
        /// The path as requested.
        path: String,
        /// The canonical root.
        root: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl RootError {
    /// A permanent phase failure: no attempt reads outside the root, and a
    /// missing path stays missing.
    pub fn into_phase(self) -> PhaseError {
        PhaseError::permanent(self.to_string())
    }
}

/// An entry of a directory under the root.
#[derive(Debug)]
pub struct Entry {
    /// Its path relative to the root.
    pub path: PathBuf,
    /// Its metadata, symlinks not followed.
    pub meta: Metadata,
}

/// The directory the demo kinds may read, canonical.
#[derive(Debug, Clone)]
pub struct DemoRoot {
    /// The root as configured: an absolute path under it passes the lexical
    /// check even when the configured root goes through a symlink.
    given: PathBuf,
    /// The canonical root: what every resolved path must lie under.
    dir: PathBuf,
}

impl DemoRoot {
    /// The root named by [`ROOT_ENV`], or the working directory.
    pub fn from_env() -> Result<Self, RootError> {
        match std::env::var_os(ROOT_ENV) {
            Some(dir) if !dir.is_empty() => Self::new(dir),
            _ => {
                let dir = std::env::current_dir().map_err(|source| RootError::Root {
                    root: PathBuf::from("."),
                    source,
                })?;
                Self::new(dir)
            }
        }
    }

    /// The root `dir`, which must be an existing directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, RootError> {
        let given = std::path::absolute(dir.into()).map_err(|source| RootError::Root {
            root: PathBuf::from("."),
            source,
        })?;
        let root_error = |source| RootError::Root {
            root: given.clone(),
            source,
        };
        let dir = std::fs::canonicalize(&given).map_err(root_error)?;
        if !std::fs::metadata(&dir).map_err(root_error)?.is_dir() {
            return Err(root_error(io::Error::other("not a directory")));
        }
        Ok(Self {
            given: normalize(&given),
            dir,
        })
    }

    /// The canonical root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `requested` joined to the root and normalized without touching the
    /// disk, if that lies under the root.
    pub fn lexical(&self, requested: &Path) -> Result<PathBuf, RootError> {
        let joined = normalize(&self.dir.join(requested));
        if joined.starts_with(&self.dir) {
            return Ok(joined);
        }
        // An absolute path spelled through the configured root.
        let joined = normalize(&self.given.join(requested));
        if joined.starts_with(&self.given) {
            return Ok(joined);
        }
        Err(self.outside(requested))
    }

    /// The canonical path of `requested`, if it exists and lies under the
    /// root once symlinks are resolved.
    pub fn resolve(&self, requested: &Path) -> Result<PathBuf, RootError> {
        let lexical = self.lexical(requested)?;
        let canonical =
            std::fs::canonicalize(&lexical).map_err(|e| self.unreadable(requested, e))?;
        if canonical.starts_with(&self.dir) {
            Ok(canonical)
        } else {
            Err(self.outside(requested))
        }
    }

    /// `requested` resolved, relative to the root (empty for the root).
    pub fn relative(&self, requested: &Path) -> Result<PathBuf, RootError> {
        let canonical = self.resolve(requested)?;
        canonical
            .strip_prefix(&self.dir)
            .map(Path::to_path_buf)
            .map_err(|_| self.outside(requested))
    }

    /// Opens the regular file `requested` under the root.
    pub fn open_file(&self, requested: &Path) -> Result<File, RootError> {
        let (file, meta) = self.open(requested)?;
        if !meta.is_file() {
            return Err(self.unreadable(requested, io::Error::other("not a regular file")));
        }
        Ok(file)
    }

    /// The entries of the directory `requested` under the root, sorted by
    /// name, with their metadata (symlinks not followed). The listing is
    /// of the directory that was checked, even if its path changes later.
    pub fn read_dir(&self, requested: &Path) -> Result<Vec<Entry>, RootError> {
        let (dir, meta) = self.open(requested)?;
        if !meta.is_dir() {
            return Err(self.unreadable(requested, io::Error::other("not a directory")));
        }
        let base = self.relative(requested)?;
        let listed = pinned(&dir).unwrap_or_else(|| self.dir.join(&base));
        let unreadable = |e| self.unreadable(requested, e);
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&listed).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            // `DirEntry::metadata` does not follow a symlink.
            let meta = entry.metadata().map_err(unreadable)?;
            entries.push(Entry {
                path: base.join(entry.file_name()),
                meta,
            });
        }
        // Without a pinned handle the listing went by path: check it still
        // names the directory that was opened.
        self.verify(requested, &meta)?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Opens `requested` (after [`DemoRoot::resolve`]) and checks the
    /// opened object is what a fresh resolution names under the root.
    fn open(&self, requested: &Path) -> Result<(File, Metadata), RootError> {
        let path = self.resolve(requested)?;
        let file = File::open(&path).map_err(|e| self.unreadable(requested, e))?;
        let meta = file.metadata().map_err(|e| self.unreadable(requested, e))?;
        self.verify(requested, &meta)?;
        Ok((file, meta))
    }

    /// Whether `opened` is the object `requested` resolves to under the
    /// root now: a symlink swapped in before the open either resolves
    /// outside (refused) or names another file (refused).
    fn verify(&self, requested: &Path, opened: &Metadata) -> Result<(), RootError> {
        let again = self.resolve(requested)?;
        let named = std::fs::metadata(&again).map_err(|e| self.unreadable(requested, e))?;
        if same_object(opened, &named) {
            Ok(())
        } else {
            Err(RootError::Changed {
                path: requested.display().to_string(),
                root: self.dir.clone(),
            })
        }
    }

    fn outside(&self, requested: &Path) -> RootError {
        RootError::Outside {
            path: requested.display().to_string(),
            root: self.dir.clone(),
        }
    }

    fn unreadable(&self, requested: &Path, source: io::Error) -> RootError {
        RootError::Unreadable {
            path: requested.display().to_string(),
            root: self.dir.clone(),
            source,
        }
    }
}

/// `path` with `.` dropped and `..` applied, without touching the disk
/// (`..` at the top stays at the top, as the kernel does).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.parent().is_some() {
                    out.pop();
                } else if !out.has_root() {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Whether two metadata describe the same file system object.
#[cfg(unix)]
fn same_object(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether two metadata describe the same file system object (best effort
/// where there are no inode numbers).
#[cfg(not(unix))]
fn same_object(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type() && a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// A path that names the very directory `dir` is open on, whatever its
/// original path now leads to (Linux: `/proc/self/fd/N`).
#[cfg(target_os = "linux")]
fn pinned(dir: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.exists().then_some(path)
}

#[cfg(not(target_os = "linux"))]
fn pinned(_dir: &File) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory holding `root/` and `outside/`, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "trib-root-{name}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(dir.join("root/sub")).expect("mkdir root");
            std::fs::create_dir_all(dir.join("outside")).expect("mkdir outside");
            std::fs::write(dir.join("root/sub/in.txt"), "inside words").expect("write");
            std::fs::write(dir.join("outside/secret.txt"), "secret words").expect("write");
            Self(dir)
        }

        fn root(&self) -> DemoRoot {
            DemoRoot::new(self.0.join("root")).expect("root")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn normalize_applies_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize(Path::new("/a/../../..")), Path::new("/"));
        assert_eq!(normalize(Path::new("/r/")), Path::new("/r"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
    }

    #[test]
    fn relative_paths_resolve_against_the_root_and_dots_cannot_climb_out() {
        let s = Scratch::new("lexical");
        let root = s.root();
        let dir = root.dir().to_path_buf();
        assert_eq!(
            root.lexical(Path::new("sub/in.txt")).ok(),
            Some(dir.join("sub/in.txt"))
        );
        assert_eq!(root.lexical(Path::new("")).ok(), Some(dir.clone()));
        assert_eq!(
            root.lexical(Path::new("sub/../sub")).ok(),
            Some(dir.join("sub"))
        );
        for escape in [
            "..",
            "../outside/secret.txt",
            "sub/../../outside",
            "/etc/passwd",
            "/",
        ] {
            let err = root.lexical(Path::new(escape)).expect_err(escape);
            assert!(matches!(err, RootError::Outside { .. }), "{escape}: {err}");
            assert!(
                err.to_string().contains(&dir.display().to_string()),
                "{err}"
            );
        }
        // An absolute path under the root is fine.
        let abs = dir.join("sub/in.txt");
        assert_eq!(root.lexical(&abs).ok(), Some(abs));
    }

    #[test]
    fn a_root_with_a_shared_prefix_is_not_the_root() {
        let s = Scratch::new("prefix");
        std::fs::create_dir_all(s.0.join("root2")).expect("mkdir");
        let root = s.root();
        let sibling = s.0.join("root2");
        assert!(matches!(
            root.lexical(&sibling),
            Err(RootError::Outside { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let s = Scratch::new("symlink");
        let root = s.root();
        std::os::unix::fs::symlink(s.0.join("outside"), s.0.join("root/out")).expect("symlink");
        std::os::unix::fs::symlink(s.0.join("outside/secret.txt"), s.0.join("root/leak.txt"))
            .expect("symlink");
        for p in ["out", "out/secret.txt", "leak.txt"] {
            let err = root.resolve(Path::new(p)).expect_err(p);
            assert!(matches!(err, RootError::Outside { .. }), "{p}: {err}");
            assert!(matches!(
                root.open_file(Path::new(p)),
                Err(RootError::Outside { .. })
            ));
        }
        assert!(matches!(
            root.read_dir(Path::new("out")),
            Err(RootError::Outside { .. })
        ));
        // A symlink that stays inside is followed.
        std::os::unix::fs::symlink(s.0.join("root/sub"), s.0.join("root/alias")).expect("symlink");
        assert!(root.open_file(Path::new("alias/in.txt")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_swapped_for_a_symlink_after_listing_is_refused() {
        let s = Scratch::new("swap");
        let root = s.root();
        let listed: Vec<PathBuf> = root
            .read_dir(Path::new("sub"))
            .expect("list")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(listed, [PathBuf::from("sub/in.txt")]);
        let file = s.0.join("root/sub/in.txt");
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink(s.0.join("outside/secret.txt"), &file).expect("symlink");
        let err = root.open_file(&listed[0]).expect_err("swapped file");
        assert!(matches!(err, RootError::Outside { .. }), "{err}");
        assert!(!err.into_phase().is_retryable());
    }

    #[test]
    fn listing_gives_paths_relative_to_the_root_without_following_symlinks() {
        let s = Scratch::new("list");
        let root = s.root();
        let entries = root.read_dir(Path::new("")).expect("list");
        let names: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(names, [PathBuf::from("sub")]);
        assert!(entries[0].meta.is_dir());
        let err = root.read_dir(Path::new("sub/in.txt")).expect_err("a file");
        assert!(matches!(err, RootError::Unreadable { .. }), "{err}");
        let err = root
            .open_file(Path::new("missing.txt"))
            .expect_err("missing");
        assert!(matches!(err, RootError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn a_missing_root_is_named() {
        let err = DemoRoot::new("/nonexistent/trib-root").expect_err("missing root");
        assert!(err.to_string().contains("/nonexistent/trib-root"), "{err}");
        assert!(err.to_string().contains(ROOT_ENV), "{err}");
    }
}
