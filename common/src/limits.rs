//! Limits on what arrives from outside: the API, the broker, and users'
//! handlers. Everything here is hostile until checked: names are kept to
//! safe characters, text is stripped of NUL (Postgres refuses it in `text`)
//! and capped before it reaches SQL, and sizes and counts are bounded so one
//! request cannot exhaust the fleet.
//!
//! The fixed caps are constants; the ones an operator tunes live in
//! [`Limits`], with the defaults documented on each field.

use std::borrow::Cow;

/// Most executions of one phase a job may ask for (`max_attempts`).
pub const MAX_ATTEMPTS: u32 = 100;

/// Longest job kind or phase name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest free text stored from a worker (an error, a log line, a progress
/// message), in bytes; longer text is cut and marked.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Whether `kind` is a usable job kind: 1 to [`MAX_NAME_BYTES`] characters
/// from `A-Z a-z 0-9 . _ -`. A kind is a routing key and part of queue
/// names, so nothing else is allowed.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_NAME_BYTES
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `phase` is a usable phase name: 1 to [`MAX_NAME_BYTES`] bytes,
/// with no control characters (NUL among them).
pub fn valid_phase(phase: &str) -> bool {
    !phase.is_empty() && phase.len() <= MAX_NAME_BYTES && !phase.chars().any(char::is_control)
}

/// `text` without NUL characters and cut to at most `max` bytes (on a
/// character boundary, with a marker saying how much was cut), so it can
/// always be stored. Borrows when nothing had to change.
pub fn sanitize_text(text: &str, max: usize) -> Cow<'_, str> {
    let clean: Cow<'_, str> = if text.contains('\0') {
        Cow::Owned(text.replace('\0', ""))
    } else {
        Cow::Borrowed(text)
    };
    if clean.len() <= max {
        return clean;
    }
    let mut end = max.saturating_sub(40);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let cut = clean.len() - end;
    Cow::Owned(format!("{}… [{cut} bytes cut]", &clean[..end]))
}

/// `text` fit for one log line: control characters (newlines among them)
/// escaped, so nothing quoted can forge a line of its own, and cut like
/// [`sanitize_text`].
pub fn one_line(text: &str, max: usize) -> String {
    let escaped: String = if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                let esc: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                esc
            })
            .collect()
    } else {
        text.to_owned()
    };
    sanitize_text(&escaped, max).into_owned()
}

/// Caps an operator may tune (environment variables on the coordinator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest job input, MessagePack bytes, at submit and per spawned
    /// child (default 1 MiB; `TRIBUTARY_MAX_INPUT_BYTES`).
    pub max_input_bytes: usize,
    /// Largest output or checkpoint a phase may report, MessagePack bytes
    /// (default 8 MiB; `TRIBUTARY_MAX_OUTPUT_BYTES`).
    pub max_output_bytes: usize,
    /// Most children one job may spawn in one fan-out (default 1,000,000;
    /// `TRIBUTARY_MAX_CHILDREN_PER_JOB`).
    pub max_children_per_job: u64,
    /// Most jobs in one tree, root included (default 5,000,000;
    /// `TRIBUTARY_MAX_JOBS_PER_TREE`).
    pub max_jobs_per_tree: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 1024 * 1024,
            max_output_bytes: 8 * 1024 * 1024,
            max_children_per_job: 1_000_000,
            max_jobs_per_tree: 5_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_safe_characters_only() {
        assert!(valid_kind("demo.wordcount"));
        assert!(valid_kind("a-b_c.9"));
        assert!(!valid_kind(""));
        assert!(!valid_kind("a b"));
        assert!(!valid_kind("a\0b"));
        assert!(!valid_kind("é"));
        assert!(!valid_kind(&"k".repeat(MAX_NAME_BYTES + 1)));
        assert!(valid_kind(&"k".repeat(MAX_NAME_BYTES)));
    }

    #[test]
    fn phases_refuse_control_characters() {
        assert!(valid_phase("aggregate"));
        assert!(valid_phase("phase two ✓"));
        assert!(!valid_phase(""));
        assert!(!valid_phase("a\0b"));
        assert!(!valid_phase("line\nbreak"));
        assert!(!valid_phase(&"p".repeat(MAX_NAME_BYTES + 1)));
    }

    #[test]
    fn one_line_escapes_what_could_forge_a_line() {
        let forged = "x\n2026-11-23T13:13:00Z ERROR FAKE\r\0";
        let line = one_line(forged, 1000);
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\0'));
        assert!(line.contains("\\n2026"), "{line}");
        assert_eq!(one_line("plain", 100), "plain");
        assert!(one_line(&"\n".repeat(1000), 100).len() <= 100);
    }

    #[test]
    fn text_loses_nul_and_is_capped_on_a_char_boundary() {
        assert!(matches!(sanitize_text("fine", 100), Cow::Borrowed("fine")));
        assert_eq!(sanitize_text("a\0b\0", 100), "ab");
        let long = "é".repeat(1000); // 2000 bytes
        let cut = sanitize_text(&long, 100);
        assert!(cut.len() <= 100, "{} bytes", cut.len());
        assert!(cut.ends_with("bytes cut]"), "{cut}");
        assert!(cut.starts_with('é'));
        assert_eq!(sanitize_text(&"x".repeat(100), 100).len(), 100);
    }
}
