//! Word counting: a word is a maximal run of ASCII letters and digits,
//! lowercased. Text is fed in pieces, so a file is read in fixed buffers
//! however large it is.

use std::collections::HashMap;

use crate::job::PhaseError;

/// The longest word counted: a longer run of letters and digits (a binary
/// blob, a hex dump on one line) fails the chunk instead of growing one
/// buffer without bound.
pub const MAX_WORD_BYTES: usize = 64 * 1024;

/// Counts the words of text fed in pieces.
#[derive(Debug, Default)]
pub struct WordCounter {
    /// Count per word.
    counts: HashMap<Vec<u8>, u64>,
    /// The word being read, which may continue in the next piece.
    word: Vec<u8>,
    /// Words counted.
    total: u64,
}

impl WordCounter {
    /// Adds the words of `bytes`; a word at the end may continue in the
    /// next piece (call [`WordCounter::end_word`] at the end of a file).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), PhaseError> {
        for &b in bytes {
            if b.is_ascii_alphanumeric() {
                if self.word.len() >= MAX_WORD_BYTES {
                    return Err(PhaseError::permanent(format!(
                        "a word is longer than the cap of {MAX_WORD_BYTES} bytes"
                    )));
                }
                self.word.push(b.to_ascii_lowercase());
            } else {
                self.end_word();
            }
        }
        Ok(())
    }

    /// Ends the word being read, if any.
    pub fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        self.total += 1;
        match self.counts.get_mut(self.word.as_slice()) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(std::mem::take(&mut self.word), 1);
            }
        }
        self.word.clear();
    }

    /// Words counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Words counted and the count per word.
    pub fn finish(mut self) -> (u64, HashMap<Vec<u8>, u64>) {
        self.end_word();
        (self.total, self.counts)
    }
}

/// The `n` most frequent words, ties broken alphabetically.
pub fn top_words(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_maximal_alphanumeric_runs_lowercased() {
        let mut counter = WordCounter::default();
        counter
            .feed(b"Hello, hello WORLD! x2y_z\n\xffabc9")
            .expect("short words");
        let (total, counts) = counter.finish();
        assert_eq!(total, 6);
        assert_eq!(counts.get(b"hello".as_slice()), Some(&2));
        assert_eq!(counts.get(b"world".as_slice()), Some(&1));
        assert_eq!(counts.get(b"x2y".as_slice()), Some(&1));
        assert_eq!(counts.get(b"z".as_slice()), Some(&1));
        assert_eq!(counts.get(b"abc9".as_slice()), Some(&1));
    }

    #[test]
    fn a_word_split_across_pieces_counts_once_but_not_across_files() {
        let mut counter = WordCounter::default();
        counter.feed(b"hel").expect("feed");
        counter.feed(b"lo wor").expect("feed");
        counter.end_word();
        counter.feed(b"ld").expect("feed");
        let (total, counts) = counter.finish();
        assert_eq!(total, 3);
        assert_eq!(counts.get(b"hello".as_slice()), Some(&1));
        assert_eq!(counts.get(b"wor".as_slice()), Some(&1));
        assert_eq!(counts.get(b"ld".as_slice()), Some(&1));
    }

    #[test]
    fn a_word_over_the_cap_fails_permanently_naming_it() {
        let mut counter = WordCounter::default();
        counter
            .feed(&vec![b'a'; MAX_WORD_BYTES])
            .expect("at the cap");
        let err = counter.feed(b"a").expect_err("over the cap");
        assert!(!err.is_retryable());
        assert!(err.message().contains(&MAX_WORD_BYTES.to_string()), "{err}");
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
