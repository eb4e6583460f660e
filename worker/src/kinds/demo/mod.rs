//! Demo kinds.
//!
//! `demo.wordcount` is the two-phase job: `ingest` splits a corpus into
//! chunks and spawns one `demo.wordcount.chunk` child per chunk; `aggregate`
//! merges their counts. A word is a maximal run of ASCII letters and digits,
//! lowercased; every regular file under the directory is read as bytes.
//!
//! `demo.du` is a nested tree: each directory spawns one child per
//! subdirectory and sums their sizes and counts level by level, like `du`.
//!
//! Both read only under the demo root ([`root::ROOT_ENV`], default the
//! worker's working directory): a path outside it, or leading out of it
//! through a symlink, fails the job permanently naming the root. The
//! numbers a submitter picks are capped ([`corpus::MAX_FILES`],
//! [`corpus::MAX_WORDS_PER_FILE`], [`corpus::MAX_CHUNK_FILES`],
//! [`wordcount::MAX_LISTED_FILES`], [`words::MAX_WORD_BYTES`]), and
//! listing, reading, generating and counting run on the blocking pool.
//!
//! # Layout
//! - [`root`]: [`DemoRoot`], the confinement of every path.
//! - [`corpus`]: the generated corpus and its caps.
//! - [`words`]: word counting in pieces, the top words.
//! - [`wordcount`]: `demo.wordcount` and `demo.wordcount.chunk`.
//! - [`du`]: the `demo.du` kind.

pub mod corpus;
pub mod du;
pub mod root;
pub mod wordcount;
pub mod words;

pub use corpus::{Generate, generate_file};
pub use du::{DiskUsage, DuInput, DuOutput};
pub use root::{DemoRoot, ROOT_ENV, RootError};
pub use wordcount::{
    Chunk, ChunkCounts, WordCount, WordCountChunk, WordCountInput, WordCountOutput,
};
pub use words::{WordCounter, top_words};
