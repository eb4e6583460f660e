//! `demo.wordcount` and its children, `demo.wordcount.chunk`.
//!
//! `ingest` lists the files under a path in the demo root (or plans a
//! generated corpus) and spawns one chunk child per group of files;
//! `aggregate` merges the chunks' counts. A chunk names its files relative
//! to the root and opens each through [`DemoRoot`], so a file swapped for a
//! symlink after listing does not escape; a file list is accepted only from
//! a `demo.wordcount` parent, never from a direct submission.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::corpus::{Generate, MAX_CHUNK_FILES, generate_file};
use super::root::DemoRoot;
use super::words::{WordCounter, top_words};
use crate::context::Context;
use crate::job::{Child, Job, PhaseError, Step};
use crate::kinds::cap::Cap;
use crate::kinds::run_blocking;

/// Regular files one `demo.wordcount` path may hold (and one chunk may list).
pub const MAX_LISTED_FILES: Cap = Cap::new("files under a demo.wordcount path", 200_000);
/// Bytes read from a file at a time.
const READ_BUFFER: usize = 64 * 1024;

/// Input of `demo.wordcount`: a directory or a generated corpus.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordCountInput {
    /// A directory under the demo root (relative paths resolve against
    /// it): every regular file under it, recursively.
    #[serde(default)]
    pub path: Option<String>,
    /// A generated corpus.
    #[serde(default)]
    pub generate: Option<Generate>,
    /// Bytes per chunk (default 1 MiB; a file is never split).
    #[serde(default)]
    pub chunk_bytes: Option<u64>,
    /// Generated files per chunk (default 8, at most [`MAX_CHUNK_FILES`]).
    #[serde(default)]
    pub chunk_files: Option<u32>,
}

/// Output of `demo.wordcount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordCountOutput {
    /// Files read.
    pub files: u64,
    /// Words in all.
    pub total_words: u64,
    /// Distinct words.
    pub distinct_words: u64,
    /// The ten most frequent words, ties broken alphabetically.
    pub top: Vec<(String, u64)>,
    /// Children spawned.
    pub children: u64,
}

/// Input of `demo.wordcount.chunk`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Chunk {
    /// These files, relative to the demo root (only from a
    /// `demo.wordcount` parent).
    Files(Vec<String>),
    /// Generated files `first .. first + count`.
    Generated {
        /// The corpus.
        spec: Generate,
        /// First file number.
        first: u32,
        /// Files in the chunk (at most [`MAX_CHUNK_FILES`]).
        count: u32,
    },
}

/// Output of `demo.wordcount.chunk`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkCounts {
    /// Files read.
    pub files: u64,
    /// Words in all.
    pub total_words: u64,
    /// Count per word.
    pub counts: BTreeMap<String, u64>,
}

/// `demo.wordcount`: ingest, then aggregate.
pub struct WordCount;

impl Job for WordCount {
    const KIND: &'static str = "demo.wordcount";
    const START: &'static str = "ingest";
    type Input = WordCountInput;
    type Output = WordCountOutput;

    async fn run(
        &self,
        phase: &str,
        input: WordCountInput,
        ctx: &mut Context,
    ) -> Result<Step<WordCountOutput>, PhaseError> {
        match phase {
            "ingest" => {
                let plan = plan_chunks(input).await?;
                if plan.skipped > 0 {
                    ctx.log(
                        "warn",
                        format!("skipped {} files whose names are not UTF-8", plan.skipped),
                    );
                }
                ctx.log("info", format!("{} chunks", plan.chunks.len()));
                let children = plan
                    .chunks
                    .iter()
                    .map(Child::new::<WordCountChunk>)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Step::spawn(children, "aggregate"))
            }
            "aggregate" => {
                let mut merged = Merged::default();
                let mut pages = ctx.children::<ChunkCounts>();
                while let Some(page) = pages.next_page().await? {
                    merged = run_blocking("merging counts", move || merged.add(page)).await??;
                }
                run_blocking("ranking words", move || merged.finish()).await
            }
            other => Err(PhaseError::permanent(format!(
                "demo.wordcount has no phase {other:?}"
            ))),
        }
    }
}

/// The chunks' counts merged so far.
#[derive(Default)]
struct Merged {
    counts: HashMap<String, u64>,
    files: u64,
    total: u64,
    children: u64,
}

impl Merged {
    fn add(mut self, page: Vec<crate::ChildOutcome<ChunkCounts>>) -> Result<Self, PhaseError> {
        for child in page {
            self.children += 1;
            let counts = child
                .result
                .map_err(|e| PhaseError::permanent(format!("chunk {} failed: {e}", child.index)))?;
            self.files += counts.files;
            self.total += counts.total_words;
            for (word, n) in counts.counts {
                *self.counts.entry(word).or_default() += n;
            }
        }
        Ok(self)
    }

    fn finish(self) -> Step<WordCountOutput> {
        Step::Complete(WordCountOutput {
            files: self.files,
            total_words: self.total,
            distinct_words: self.counts.len() as u64,
            top: top_words(self.counts, 10),
            children: self.children,
        })
    }
}

/// The chunks of a word count, and the files left out.
struct Plan {
    chunks: Vec<Chunk>,
    /// Files whose names are not UTF-8 (a chunk names files in JSON).
    skipped: u64,
}

async fn plan_chunks(input: WordCountInput) -> Result<Plan, PhaseError> {
    match (input.path, input.generate) {
        (Some(path), None) => {
            let chunk_bytes = input.chunk_bytes.unwrap_or(1 << 20).max(1);
            let root = DemoRoot::from_env().map_err(|e| e.into_phase())?;
            let (files, skipped) =
                run_blocking("listing files", move || list_files(&root, Path::new(&path)))
                    .await??;
            let mut chunks = Vec::new();
            let (mut current, mut bytes) = (Vec::new(), 0u64);
            for (file, size) in files {
                if !current.is_empty() && bytes.saturating_add(size) > chunk_bytes {
                    chunks.push(Chunk::Files(std::mem::take(&mut current)));
                    bytes = 0;
                }
                current.push(file);
                bytes = bytes.saturating_add(size);
            }
            if !current.is_empty() {
                chunks.push(Chunk::Files(current));
            }
            Ok(Plan { chunks, skipped })
        }
        (None, Some(spec)) => {
            spec.check()?;
            let per = MAX_CHUNK_FILES.check(input.chunk_files.unwrap_or(8).max(1).into())? as u32;
            let chunks = (0..spec.files)
                .step_by(per as usize)
                .map(|first| Chunk::Generated {
                    spec,
                    first,
                    count: per.min(spec.files - first),
                })
                .collect();
            Ok(Plan { chunks, skipped: 0 })
        }
        _ => Err(PhaseError::permanent(
            "demo.wordcount input needs exactly one of \"path\" or \"generate\"",
        )),
    }
}

/// Every regular file under `start` in the root (symlinks are not
/// followed), relative to the root and sorted, with sizes; and how many
/// files were left out for names that are not UTF-8.
fn list_files(root: &DemoRoot, start: &Path) -> Result<(Vec<(String, u64)>, u64), PhaseError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut stack: Vec<PathBuf> = vec![root.relative(start).map_err(|e| e.into_phase())?];
    while let Some(dir) = stack.pop() {
        for entry in root.read_dir(&dir).map_err(|e| e.into_phase())? {
            if entry.meta.is_dir() {
                stack.push(entry.path);
            } else if entry.meta.is_file() {
                let Some(name) = entry.path.to_str() else {
                    skipped += 1;
                    continue;
                };
                MAX_LISTED_FILES.check(out.len() as u64 + 1)?;
                out.push((name.to_owned(), entry.meta.len()));
            }
        }
    }
    out.sort();
    Ok((out, skipped))
}

/// `demo.wordcount.chunk`: counts the words of some files.
pub struct WordCountChunk;

impl Job for WordCountChunk {
    const KIND: &'static str = "demo.wordcount.chunk";
    type Input = Chunk;
    type Output = ChunkCounts;

    async fn run(
        &self,
        _phase: &str,
        input: Chunk,
        ctx: &mut Context,
    ) -> Result<Step<ChunkCounts>, PhaseError> {
        let counter = match input {
            Chunk::Files(_) if ctx.parent_id().is_none() => {
                return Err(PhaseError::permanent(
                    "demo.wordcount.chunk takes a file list only from a demo.wordcount parent: \
                     submit demo.wordcount with a \"path\" under the demo root instead",
                ));
            }
            Chunk::Files(files) => {
                MAX_LISTED_FILES.check(files.len() as u64)?;
                let root = DemoRoot::from_env().map_err(|e| e.into_phase())?;
                run_blocking("counting words", move || count_files(&root, &files)).await??
            }
            Chunk::Generated { spec, first, count } => {
                spec.check_chunk(first, count)?;
                run_blocking("counting words", move || {
                    count_generated(&spec, first, count)
                })
                .await??
            }
        };
        let (files, counter) = counter;
        let (total_words, counts) = counter.finish();
        let counts = counts
            .into_iter()
            .map(|(w, n)| (String::from_utf8_lossy(&w).into_owned(), n))
            .collect();
        Ok(Step::Complete(ChunkCounts {
            files,
            total_words,
            counts,
        }))
    }
}

/// Counts the words of `files` (relative to the root), each opened through
/// the root's checks and read in fixed buffers.
fn count_files(root: &DemoRoot, files: &[String]) -> Result<(u64, WordCounter), PhaseError> {
    let mut counter = WordCounter::default();
    let mut buf = vec![0; READ_BUFFER];
    for name in files {
        let mut file = root
            .open_file(Path::new(name))
            .map_err(|e| e.into_phase())?;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PhaseError::retryable(format!("reading {name}: {e}"))),
            };
            counter
                .feed(&buf[..n])
                .map_err(|e| PhaseError::permanent(format!("{name}: {e}")))?;
        }
        counter.end_word();
    }
    Ok((files.len() as u64, counter))
}

/// Counts the words of generated files `first .. first + count` (checked).
fn count_generated(
    spec: &Generate,
    first: u32,
    count: u32,
) -> Result<(u64, WordCounter), PhaseError> {
    let mut counter = WordCounter::default();
    for n in first..first + count {
        let bytes = generate_file(spec, n).map_err(|e| {
            PhaseError::retryable(format!("generating file {n} of the corpus: {e}"))
        })?;
        counter.feed(&bytes)?;
        counter.end_word();
    }
    Ok((u64::from(count), counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trib-wc-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(dir.join("root/a")).expect("mkdir");
        std::fs::create_dir_all(dir.join("outside")).expect("mkdir");
        std::fs::write(dir.join("root/top.txt"), "one two").expect("write");
        std::fs::write(dir.join("root/a/b.txt"), "Two three").expect("write");
        std::fs::write(dir.join("outside/secret.txt"), "secret").expect("write");
        dir
    }

    #[cfg(unix)]
    #[test]
    fn listing_names_files_relative_to_the_root_and_skips_symlinks() {
        let dir = scratch("list");
        std::os::unix::fs::symlink(dir.join("outside/secret.txt"), dir.join("root/leak.txt"))
            .expect("symlink");
        let root = DemoRoot::new(dir.join("root")).expect("root");
        let (files, skipped) = list_files(&root, Path::new("")).expect("list");
        assert_eq!(skipped, 0);
        assert_eq!(
            files,
            [("a/b.txt".to_owned(), 9), ("top.txt".to_owned(), 7)]
        );
        let (files, _) = list_files(&root, &dir.join("root/a")).expect("list a");
        assert_eq!(files, [("a/b.txt".to_owned(), 9)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_chunk_rechecks_every_file_when_it_reads_it() {
        let dir = scratch("chunk");
        let root = DemoRoot::new(dir.join("root")).expect("root");
        let names = ["top.txt".to_owned(), "a/b.txt".to_owned()];
        let (files, counter) = count_files(&root, &names).expect("count");
        let (total, counts) = counter.finish();
        assert_eq!((files, total), (2, 4));
        assert_eq!(counts.get(b"two".as_slice()), Some(&2));
        // Swapped for a symlink out of the root after it was listed.
        std::fs::remove_file(dir.join("root/a/b.txt")).expect("rm");
        std::os::unix::fs::symlink(dir.join("outside/secret.txt"), dir.join("root/a/b.txt"))
            .expect("symlink");
        let err = count_files(&root, &names).expect_err("escapes");
        assert!(!err.is_retryable());
        assert!(err.message().contains("outside the demo root"), "{err}");
        for name in ["/etc/passwd", "../outside/secret.txt"] {
            let err = count_files(&root, &[name.to_owned()]).expect_err(name);
            assert!(err.message().contains("outside the demo root"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
