//! The generated corpus: deterministic text from a seed, made in memory by
//! the chunk that counts it, so the demo runs without any files.

use std::collections::TryReserveError;

use serde::{Deserialize, Serialize};

use crate::job::PhaseError;
use crate::kinds::cap::Cap;

/// Files a generated corpus may have.
pub const MAX_FILES: Cap = Cap::new("demo.wordcount generate.files", 100_000);
/// Words a generated file may have (about 17 bytes a word at most, so a
/// file stays under 17 MB).
pub const MAX_WORDS_PER_FILE: Cap = Cap::new("demo.wordcount generate.words_per_file", 1_000_000);
/// Generated files one chunk may count.
/// Distinct words of a generated corpus: bounds the counts a chunk holds
/// and returns (its output must fit one report).
pub const MAX_VOCABULARY: Cap = Cap::new("demo.wordcount generate.vocabulary", 100_000);
/// Most files a chunk of the generated corpus counts.
pub const MAX_CHUNK_FILES: Cap = Cap::new("demo.wordcount chunk_files", 1_000);

/// A deterministic generated corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Files to generate (at most [`MAX_FILES`]).
    pub files: u32,
    /// Words per file (at most [`MAX_WORDS_PER_FILE`]).
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

impl Generate {
    /// Checks the spec against the caps.
    pub fn check(&self) -> Result<(), PhaseError> {
        MAX_FILES.check(self.files.into())?;
        MAX_WORDS_PER_FILE.check(self.words_per_file.into())?;
        MAX_VOCABULARY.check(self.vocabulary.into())?;
        Ok(())
    }

    /// Checks that files `first .. first + count` are a chunk of this
    /// (checked) corpus a chunk may count.
    pub fn check_chunk(&self, first: u32, count: u32) -> Result<(), PhaseError> {
        self.check()?;
        MAX_CHUNK_FILES.check(count.into())?;
        match first.checked_add(count) {
            Some(end) if end <= self.files => Ok(()),
            _ => Err(PhaseError::permanent(format!(
                "generated chunk of {count} files from file {first} runs past the corpus's {} files",
                self.files
            ))),
        }
    }
}

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zu", "pe", "da", "gi", "ho", "ja", "bu", "fe",
];

fn synth_word(idx: u32, out: &mut Vec<u8>) {
    let mut idx = u64::from(idx) + 1;
    while idx > 0 {
        out.extend_from_slice(SYLLABLES[(idx % 16) as usize].as_bytes());
        idx /= 16;
    }
}

/// The bytes of generated file `n` of `spec`. Call [`Generate::check`]
/// first: the buffer is sized from `words_per_file`, and an allocation the
/// machine cannot make is an error rather than an abort.
pub fn generate_file(spec: &Generate, n: u32) -> Result<Vec<u8>, TryReserveError> {
    let mut rng =
        fastrand::Rng::with_seed(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(n));
    let mut out = Vec::new();
    out.try_reserve(spec.words_per_file as usize * 8)?;
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::demo::words::WordCounter;

    #[test]
    fn generated_corpus_is_deterministic() {
        let spec = Generate {
            files: 3,
            words_per_file: 100,
            vocabulary: 50,
            seed: 7,
        };
        let file = |n| generate_file(&spec, n).expect("allocate");
        assert_eq!(file(1), file(1));
        assert_ne!(file(1), file(2));
        let mut counter = WordCounter::default();
        counter.feed(&file(0)).expect("short words");
        counter.end_word();
        assert_eq!(counter.total(), 100);
    }

    #[test]
    fn over_cap_specs_and_chunks_fail_permanently_naming_the_cap() {
        let huge = Generate {
            words_per_file: u32::MAX,
            ..Generate::default()
        };
        let err = huge.check().expect_err("over the cap");
        assert!(!err.is_retryable());
        assert!(err.message().contains("words_per_file"), "{err}");
        assert!(err.message().contains("1000000"), "{err}");
        let spec = Generate::default();
        assert!(spec.check_chunk(0, 8).is_ok());
        assert!(spec.check_chunk(192, 8).is_ok());
        assert!(spec.check_chunk(193, 8).is_err(), "past the end");
        assert!(spec.check_chunk(u32::MAX, 8).is_err(), "overflow");
        let wide = Generate {
            files: 100_000,
            ..Generate::default()
        };
        let err = wide
            .check_chunk(0, 5000)
            .expect_err("too many files per chunk");
        assert!(err.message().contains("cap of 1000"), "{err}");
    }

    #[test]
    fn the_largest_vocabulary_still_makes_words() {
        let mut out = Vec::new();
        synth_word(u32::MAX, &mut out);
        assert!(!out.is_empty() && out.len() <= 18);
    }
}
