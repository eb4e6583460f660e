//! Demo kinds.
//!
//! `demo.wordcount` is the two-phase job: `ingest` splits a corpus into
//! chunks and spawns one `demo.wordcount.chunk` child per chunk; `aggregate`
//! merges their counts. A word is a maximal run of ASCII letters and digits,
//! lowercased; every regular file under the directory is read as bytes.
//!
//! `demo.du` is a nested tree: each directory spawns one child per
//! subdirectory and sums their sizes and counts level by level, like `du`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::job::{Child, Job, PhaseError, Step};

/// A deterministic generated corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Files to generate.
    pub files: u32,
    /// Words per file.
    pub words_per_file: u32,
    /// Distinct words to draw from.
    pub vocabulary: u32,
    /// Seed: the same spec always yields the same corpus.
    pub seed: u64,
}

impl Default for Generate {
    fn default() -> Self {
        Self {
            files: 200,
            words_per_file: 5000,
            vocabulary: 20_000,
            seed: 42,
        }
    }
}

/// Input of `demo.wordcount`: a directory or a generated corpus.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordCountInput {
    /// A directory: every regular file under it, recursively.
    #[serde(default)]
    pub path: Option<String>,
    /// A generated corpus.
    #[serde(default)]
    pub generate: Option<Generate>,
    /// Bytes per chunk (default 1 MiB; a file is never split).
    #[serde(default)]
    pub chunk_bytes: Option<u64>,
    /// Generated files per chunk (default 8).
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
    /// These files.
    Files(Vec<String>),
    /// Generated files `first .. first + count`.
    Generated {
        /// The corpus.
        spec: Generate,
        /// First file number.
        first: u32,
        /// Files in the chunk.
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
                let chunks = plan_chunks(&input).await?;
                ctx.log("info", format!("{} chunks", chunks.len()));
                let children = chunks
                    .iter()
                    .map(Child::new::<WordCountChunk>)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Step::spawn(children, "aggregate"))
            }
            "aggregate" => {
                let mut merged: HashMap<String, u64> = HashMap::new();
                let (mut files, mut total, mut children) = (0, 0, 0);
                let mut pages = ctx.children::<ChunkCounts>();
                while let Some(page) = pages.next_page().await? {
                    for child in page {
                        children += 1;
                        let counts = child.result.map_err(|e| {
                            PhaseError::permanent(format!("chunk {} failed: {e}", child.index))
                        })?;
                        files += counts.files;
                        total += counts.total_words;
                        for (word, n) in counts.counts {
                            *merged.entry(word).or_default() += n;
                        }
                    }
                }
                Ok(Step::Complete(WordCountOutput {
                    files,
                    total_words: total,
                    distinct_words: merged.len() as u64,
                    top: top_words(merged, 10),
                    children,
                }))
            }
            other => Err(PhaseError::permanent(format!(
                "demo.wordcount has no phase {other:?}"
            ))),
        }
    }
}

/// The `n` most frequent words, ties broken alphabetically.
pub fn top_words(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

async fn plan_chunks(input: &WordCountInput) -> Result<Vec<Chunk>, PhaseError> {
    match (&input.path, &input.generate) {
        (Some(path), None) => {
            let root = PathBuf::from(path);
            let chunk_bytes = input.chunk_bytes.unwrap_or(1 << 20).max(1);
            let files = tokio::task::spawn_blocking(move || list_files(&root))
                .await
                .map_err(|e| PhaseError::retryable(e.to_string()))?
                .map_err(|e| PhaseError::permanent(format!("cannot read {path}: {e}")))?;
            let mut chunks = Vec::new();
            let (mut current, mut bytes) = (Vec::new(), 0u64);
            for (file, size) in files {
                if !current.is_empty() && bytes + size > chunk_bytes {
                    chunks.push(Chunk::Files(std::mem::take(&mut current)));
                    bytes = 0;
                }
                current.push(file);
                bytes += size;
            }
            if !current.is_empty() {
                chunks.push(Chunk::Files(current));
            }
            Ok(chunks)
        }
        (None, Some(spec)) => {
            let per = input.chunk_files.unwrap_or(8).max(1);
            Ok((0..spec.files)
                .step_by(per as usize)
                .map(|first| Chunk::Generated {
                    spec: *spec,
                    first,
                    count: per.min(spec.files - first),
                })
                .collect())
        }
        _ => Err(PhaseError::permanent(
            "demo.wordcount input needs exactly one of \"path\" or \"generate\"",
        )),
    }
}

/// Every regular file under `root` (symlinks are not followed), sorted, with sizes.
fn list_files(root: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path().to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Adds the words of `bytes` to `counts`; returns how many there were.
pub fn count_words(bytes: &[u8], counts: &mut HashMap<Vec<u8>, u64>) -> u64 {
    let mut total = 0;
    let mut word = Vec::new();
    for &b in bytes.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_alphanumeric() {
            word.push(b.to_ascii_lowercase());
        } else if !word.is_empty() {
            total += 1;
            match counts.get_mut(word.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(std::mem::take(&mut word), 1);
                }
            }
            word.clear();
        }
    }
    total
}

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zu", "pe", "da", "gi", "ho", "ja", "bu", "fe",
];

fn synth_word(mut idx: u32, out: &mut Vec<u8>) {
    idx += 1;
    while idx > 0 {
        out.extend_from_slice(SYLLABLES[(idx % 16) as usize].as_bytes());
        idx /= 16;
    }
}

/// The bytes of generated file `n` of `spec`.
pub fn generate_file(spec: &Generate, n: u32) -> Vec<u8> {
    let mut rng =
        fastrand::Rng::with_seed(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(n));
    let mut out = Vec::with_capacity(spec.words_per_file as usize * 8);
    for i in 0..spec.words_per_file {
        // Skewed draw: a few words are common, most are rare.
        let idx = (f64::from(spec.vocabulary.max(1)) * rng.f64().powi(3)) as u32;
        let start = out.len();
        synth_word(idx, &mut out);
        if rng.u8(..10) == 0 {
            out[start] = out[start].to_ascii_uppercase();
        }
        out.push(if i % 12 == 11 {
            b'\n'
        } else if rng.u8(..20) == 0 {
            b','
        } else {
            b' '
        });
    }
    out
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
        _ctx: &mut Context,
    ) -> Result<Step<ChunkCounts>, PhaseError> {
        let counts = tokio::task::spawn_blocking(move || -> Result<ChunkCounts, PhaseError> {
            let mut counts = HashMap::new();
            let (mut files, mut total) = (0, 0);
            match input {
                Chunk::Files(paths) => {
                    for p in paths {
                        let bytes = std::fs::read(&p)
                            .map_err(|e| PhaseError::retryable(format!("{p}: {e}")))?;
                        total += count_words(&bytes, &mut counts);
                        files += 1;
                    }
                }
                Chunk::Generated { spec, first, count } => {
                    for n in first..first + count {
                        total += count_words(&generate_file(&spec, n), &mut counts);
                        files += 1;
                    }
                }
            }
            let counts = counts
                .into_iter()
                .map(|(w, n)| (String::from_utf8_lossy(&w).into_owned(), n))
                .collect();
            Ok(ChunkCounts {
                files,
                total_words: total,
                counts,
            })
        })
        .await
        .map_err(|e| PhaseError::retryable(e.to_string()))??;
        Ok(Step::Complete(counts))
    }
}

/// Input of `demo.du`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuInput {
    /// The directory.
    pub path: String,
}

/// Output of `demo.du`: totals for a directory and everything under it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DuOutput {
    /// The directory.
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

/// `demo.du`: one child per subdirectory, summed level by level.
pub struct DiskUsage;

fn scan_dir(path: &str) -> Result<(DuOutput, Vec<String>), PhaseError> {
    let mut own = DuOutput {
        path: path.to_owned(),
        dirs: 1,
        ..DuOutput::default()
    };
    let mut subdirs = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| PhaseError::permanent(format!("cannot read {path}: {e}")))?;
    for entry in entries {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            subdirs.push(entry.path().to_string_lossy().into_owned());
        } else if meta.is_file() {
            own.files += 1;
            own.bytes += meta.len();
        }
    }
    subdirs.sort();
    Ok((own, subdirs))
}

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
        let (mut own, subdirs) = scan_dir(&input.path)?;
        match phase {
            "start" if subdirs.is_empty() => Ok(Step::Complete(own)),
            "start" => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_maximal_alphanumeric_runs_lowercased() {
        let mut counts = HashMap::new();
        let total = count_words(b"Hello, hello WORLD! x2y_z\n\xffabc9", &mut counts);
        assert_eq!(total, 6);
        assert_eq!(counts.get(b"hello".as_slice()), Some(&2));
        assert_eq!(counts.get(b"world".as_slice()), Some(&1));
        assert_eq!(counts.get(b"x2y".as_slice()), Some(&1));
        assert_eq!(counts.get(b"z".as_slice()), Some(&1));
        assert_eq!(counts.get(b"abc9".as_slice()), Some(&1));
    }

    #[test]
    fn generated_corpus_is_deterministic() {
        let spec = Generate {
            files: 3,
            words_per_file: 100,
            vocabulary: 50,
            seed: 7,
        };
        assert_eq!(generate_file(&spec, 1), generate_file(&spec, 1));
        assert_ne!(generate_file(&spec, 1), generate_file(&spec, 2));
        let mut counts = HashMap::new();
        assert_eq!(count_words(&generate_file(&spec, 0), &mut counts), 100);
    }

    #[test]
    fn top_breaks_ties_alphabetically() {
        let counts = HashMap::from([
            ("b".to_owned(), 2),
            ("a".to_owned(), 2),
            ("c".to_owned(), 5),
            ("d".to_owned(), 1),
        ]);
        assert_eq!(
            top_words(counts, 3),
            vec![
                ("c".to_owned(), 5),
                ("a".to_owned(), 2),
                ("b".to_owned(), 2)
            ]
        );
    }
}
