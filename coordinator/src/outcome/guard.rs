//! What the applier refuses or cleans before anything reaches SQL. Report
//! items come from the broker, so they are hostile until checked: names must
//! be usable, sizes and counts stay under the operator's caps, and free text
//! loses NUL bytes (Postgres refuses them) and is capped in length.
//!
//! A refused item changes nothing itself; the job it names fails
//! permanently with the reason, so a bad report ends its job readably
//! instead of stalling it (or, as a database error, the whole batch).

use tributary_common::limits::{self, Limits, MAX_ATTEMPTS, MAX_TEXT_BYTES};
use tributary_common::wire::{ChildSpec, Outcome, ReportItem};

/// Why `item` must not be applied, if it must not: the text its job fails
/// with. `Spawned` items are checked here one by one; the tree-wide cap
/// needs the database and is checked by the applier.
pub fn refusal(item: &ReportItem, limits: &Limits) -> Option<String> {
    match item {
        ReportItem::Started { phase, .. } if !limits::valid_phase(phase) => Some(format!(
            "the worker reported an invalid phase name {}",
            quote(phase)
        )),
        ReportItem::Spawned {
            first_index,
            children,
            ..
        } => {
            let end = first_index.saturating_add(children.len() as u64);
            if end > limits.max_children_per_job {
                return Some(format!(
                    "the job spawned more than {} children, the cap per job (TRIBUTARY_MAX_CHILDREN_PER_JOB)",
                    limits.max_children_per_job
                ));
            }
            children.iter().enumerate().find_map(|(i, child)| {
                child_refusal(child, limits)
                    .map(|r| format!("child {} of a spawn batch: {r}", first_index + i as u64))
            })
        }
        ReportItem::Checkpoint { state, .. } if state.len() > limits.max_output_bytes => {
            Some(format!(
                "a checkpoint of {} bytes is over the {}-byte cap (TRIBUTARY_MAX_OUTPUT_BYTES)",
                state.len(),
                limits.max_output_bytes
            ))
        }
        ReportItem::Finished { outcome, .. } => match outcome {
            Outcome::Complete { output } if output.len() > limits.max_output_bytes => {
                Some(format!(
                    "an output of {} bytes is over the {}-byte cap (TRIBUTARY_MAX_OUTPUT_BYTES)",
                    output.len(),
                    limits.max_output_bytes
                ))
            }
            Outcome::Next { phase } if !limits::valid_phase(phase) => Some(format!(
                "the next phase has an invalid name {}",
                quote(phase)
            )),
            Outcome::Wait { then, .. } if !limits::valid_phase(then) => Some(format!(
                "the phase after the fan-in has an invalid name {}",
                quote(then)
            )),
            Outcome::Wait { children, .. } if *children > limits.max_children_per_job => {
                Some(format!(
                    "the job spawned {children} children, over the cap of {} per job (TRIBUTARY_MAX_CHILDREN_PER_JOB)",
                    limits.max_children_per_job
                ))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Why a child spec must not become a job.
fn child_refusal(child: &ChildSpec, limits: &Limits) -> Option<String> {
    if !limits::valid_kind(&child.kind) {
        return Some(format!(
            "invalid kind {}: use 1-{} characters from A-Z a-z 0-9 . _ -",
            quote(&child.kind),
            limits::MAX_NAME_BYTES
        ));
    }
    if child.input.len() > limits.max_input_bytes {
        return Some(format!(
            "an input of {} bytes is over the {}-byte cap (TRIBUTARY_MAX_INPUT_BYTES)",
            child.input.len(),
            limits.max_input_bytes
        ));
    }
    let options = child.options.as_ref()?;
    if let Some(phase) = options.phase.as_deref()
        && !limits::valid_phase(phase)
    {
        return Some(format!("invalid entry phase {}", quote(phase)));
    }
    if let Some(n) = options.max_attempts
        && !(1..=MAX_ATTEMPTS).contains(&n)
    {
        return Some(format!("max_attempts {n} is not within 1..={MAX_ATTEMPTS}"));
    }
    if let Some(n) = options.max_child_failures
        && i32::try_from(n).is_err()
    {
        return Some(format!("max_child_failures {n} is over {}", i32::MAX));
    }
    None
}

/// Worker text made storable: NUL stripped, at most [`MAX_TEXT_BYTES`].
pub fn text(s: &str) -> String {
    limits::sanitize_text(s, MAX_TEXT_BYTES).into_owned()
}

/// A log level as stored: one of four; anything else is `info`.
pub fn level(s: &str) -> &'static str {
    match s {
        "debug" | "trace" => "debug",
        "warn" | "warning" => "warn",
        "error" => "error",
        _ => "info",
    }
}

/// A name quoted into an error: escaped, and short.
fn quote(s: &str) -> String {
    let q = format!("{s:?}");
    limits::sanitize_text(&q, 80).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;
    use tributary_common::job::{DispatchToken, JobOptions};
    use uuid::Uuid;

    use super::*;

    fn token() -> DispatchToken {
        DispatchToken {
            job_id: Uuid::now_v7(),
            seq: 1,
            attempt: 1,
            nonce: 7,
        }
    }

    fn small() -> Limits {
        Limits {
            max_input_bytes: 10,
            max_output_bytes: 10,
            max_children_per_job: 5,
            max_jobs_per_tree: 100,
        }
    }

    fn spawn(first_index: u64, children: Vec<ChildSpec>) -> ReportItem {
        ReportItem::Spawned {
            token: token(),
            batch: 0,
            first_index,
            children,
        }
    }

    fn child(kind: &str, input: usize, options: Option<JobOptions>) -> ChildSpec {
        ChildSpec {
            kind: kind.into(),
            input: ByteBuf::from(vec![0u8; input]),
            options,
        }
    }

    fn finished(outcome: Outcome) -> ReportItem {
        ReportItem::Finished {
            token: token(),
            outcome,
        }
    }

    #[test]
    fn each_rule_refuses_and_names_its_cap() {
        let l = small();
        let cases: Vec<(ReportItem, Option<&str>)> = vec![
            (spawn(0, vec![child("ok", 1, None)]), None),
            (
                spawn(4, vec![child("ok", 1, None); 2]),
                Some("TRIBUTARY_MAX_CHILDREN_PER_JOB"),
            ),
            (
                spawn(0, vec![child("bad kind", 1, None)]),
                Some("invalid kind"),
            ),
            (spawn(0, vec![child("k\0", 1, None)]), Some("invalid kind")),
            (
                spawn(0, vec![child("ok", 11, None)]),
                Some("TRIBUTARY_MAX_INPUT_BYTES"),
            ),
            (
                spawn(
                    0,
                    vec![child(
                        "ok",
                        1,
                        Some(JobOptions {
                            max_attempts: Some(0),
                            ..Default::default()
                        }),
                    )],
                ),
                Some("max_attempts 0"),
            ),
            (
                spawn(
                    0,
                    vec![child(
                        "ok",
                        1,
                        Some(JobOptions {
                            max_attempts: Some(1 << 31),
                            ..Default::default()
                        }),
                    )],
                ),
                Some("max_attempts 2147483648"),
            ),
            (
                spawn(
                    0,
                    vec![child(
                        "ok",
                        1,
                        Some(JobOptions {
                            phase: Some("a\0".into()),
                            ..Default::default()
                        }),
                    )],
                ),
                Some("invalid entry phase"),
            ),
            (
                spawn(
                    0,
                    vec![child(
                        "ok",
                        1,
                        Some(JobOptions {
                            max_child_failures: Some(u32::MAX),
                            ..Default::default()
                        }),
                    )],
                ),
                Some("max_child_failures"),
            ),
            (
                ReportItem::Started {
                    token: token(),
                    phase: "x\0".into(),
                    lease_ms: 1,
                    worker: None,
                },
                Some("invalid phase name"),
            ),
            (
                ReportItem::Checkpoint {
                    token: token(),
                    state: ByteBuf::from(vec![0; 11]),
                },
                Some("TRIBUTARY_MAX_OUTPUT_BYTES"),
            ),
            (
                finished(Outcome::Complete {
                    output: ByteBuf::from(vec![0; 11]),
                }),
                Some("TRIBUTARY_MAX_OUTPUT_BYTES"),
            ),
            (
                finished(Outcome::Complete {
                    output: ByteBuf::from(vec![0; 10]),
                }),
                None,
            ),
            (
                finished(Outcome::Next { phase: "".into() }),
                Some("invalid name"),
            ),
            (
                finished(Outcome::Wait {
                    then: "agg".into(),
                    children: 6,
                }),
                Some("TRIBUTARY_MAX_CHILDREN_PER_JOB"),
            ),
            (
                finished(Outcome::Wait {
                    then: "agg\n".into(),
                    children: 1,
                }),
                Some("invalid name"),
            ),
            (
                finished(Outcome::Fail {
                    error: "x\0y".into(),
                    retryable: true,
                }),
                None,
            ),
            (
                ReportItem::Log {
                    token: token(),
                    level: "x\0".into(),
                    message: "\0".into(),
                },
                None,
            ),
        ];
        for (item, want) in cases {
            let got = refusal(&item, &l);
            match want {
                None => assert_eq!(got, None, "{item:?}"),
                Some(needle) => {
                    let got = got.unwrap_or_else(|| panic!("not refused: {item:?}"));
                    assert!(got.contains(needle), "{got:?} lacks {needle:?}");
                    assert!(!got.contains('\0'), "{got:?}");
                }
            }
        }
    }

    #[test]
    fn text_and_levels_are_storable() {
        assert_eq!(text("a\0b"), "ab");
        assert!(text(&"x".repeat(MAX_TEXT_BYTES * 2)).len() <= MAX_TEXT_BYTES);
        assert_eq!(level("warning"), "warn");
        assert_eq!(level("\0"), "info");
        assert_eq!(level("error"), "error");
    }
}
