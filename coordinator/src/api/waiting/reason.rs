//! The one-line reason of `GET /v1/jobs/{id}/waiting`: pure, from facts
//! the handler gathered (the job, its fan-out's open children, the task
//! queues, stopped ancestors), so every case is a row in a table test.
//!
//! The first thing that holds the job back wins, in this order: the job
//! is over; it or an ancestor is paused or cancelled; then its own stage
//! (a scheduled retry, the outbox, the broker's queue, a running phase);
//! for a job waiting on a fan-out, the children: of a kind no worker
//! consumes, paused, running, retrying, queued, waiting on their own.

use std::collections::BTreeMap;

use crate::queues::QueueState;

/// Where a phase stands (the store's `stage` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Due later: a retry's backoff, or a delayed start.
    Scheduled,
    /// Due, not yet published by the relay.
    Unpublished,
    /// Published: in the broker's queue (or just delivered).
    Queued,
    /// Started by a worker, holding a lease.
    Running,
    /// Waiting on its own fan-out.
    Waiting,
    /// Paused.
    Paused,
    /// Terminal.
    Done,
}

impl Stage {
    /// The stage the store named; an unknown name reads as `Queued`.
    pub fn parse(s: &str) -> Self {
        match s {
            "scheduled" => Self::Scheduled,
            "unpublished" => Self::Unpublished,
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "paused" => Self::Paused,
            "done" => Self::Done,
            _ => Self::Queued,
        }
    }

    /// Whether a task for this stage needs a worker of its kind.
    fn needs_worker(self) -> bool {
        matches!(self, Self::Scheduled | Self::Unpublished | Self::Queued)
    }
}

/// The job being explained.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// Its kind.
    pub kind: String,
    /// Its status (`completed`, `failed`...).
    pub status: String,
    /// Its current phase.
    pub phase: String,
    /// Where that phase stands.
    pub stage: Stage,
    /// Current attempt.
    pub attempt: i32,
    /// Executions per phase.
    pub max_attempts: i32,
    /// When the phase is due, ms since the epoch.
    pub available_ms: i64,
    /// When it started.
    pub started_ms: Option<i64>,
    /// Its lease.
    pub lease_until_ms: Option<i64>,
    /// Who runs it.
    pub lease_holder: Option<String>,
    /// The latest error in its history, or its own.
    pub last_error: Option<String>,
}

/// Open children of one kind at one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Their kind.
    pub kind: String,
    /// Their stage.
    pub stage: Stage,
    /// How many.
    pub n: i64,
    /// The earliest due time among them.
    pub next_ms: Option<i64>,
    /// The earliest start among them.
    pub oldest_started_ms: Option<i64>,
    /// Who runs that one.
    pub oldest_holder: Option<String>,
}

/// The current fan-out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fanout {
    /// Children the sealed fan-out spawned.
    pub expected: Option<i64>,
    /// Children counted in.
    pub total: i64,
    /// Of which terminal.
    pub terminal: i64,
    /// Open ones by kind and stage; `None` when they could not be
    /// counted in time.
    pub groups: Option<Vec<Group>>,
}

/// Everything the reason is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The database's clock, ms since the epoch.
    pub now_ms: i64,
    /// The job.
    pub job: Subject,
    /// Its current fan-out, if it has one.
    pub fanout: Option<Fanout>,
    /// Task queues by kind.
    pub queues: BTreeMap<String, QueueState>,
    /// The nearest paused or cancelled ancestor: (id, kind, status).
    pub stopped_ancestor: Option<(String, String, String)>,
}

/// Why the job is not progressing, in one line.
pub fn reason(f: &Facts) -> String {
    let job = &f.job;
    if job.stage != Stage::Done
        && let Some((id, kind, status)) = &f.stopped_ancestor
    {
        return match status.as_str() {
            "cancelled" => {
                format!("ancestor {id} ({kind}) is cancelled: this job will be cancelled too")
            }
            _ => format!(
                "ancestor {id} ({kind}) is {status}: nothing in its subtree starts until it resumes"
            ),
        };
    }
    let until = |at: i64| span(at - f.now_ms);
    match job.stage {
        Stage::Done => match &job.last_error {
            Some(e) if job.status == "failed" => format!("the job failed: {e}"),
            _ => format!("the job is {}: nothing is waiting", job.status),
        },
        Stage::Paused => "the job is paused: resume it to go on".to_owned(),
        Stage::Scheduled if job.attempt > 1 => format!(
            "a retry is scheduled in {} (attempt {} of {}){}",
            until(job.available_ms),
            job.attempt,
            job.max_attempts,
            job.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        Stage::Scheduled => format!("scheduled to start in {}", until(job.available_ms)),
        Stage::Unpublished => format!(
            "queued for dispatch: due {} ago, not yet published (the relay publishes within a second while a coordinator runs)",
            span(f.now_ms - job.available_ms)
        ),
        Stage::Queued => queued(&job.kind, None, &f.queues),
        Stage::Running => running(f),
        Stage::Waiting => match &f.fanout {
            Some(fanout) => waiting(f, fanout),
            None => "waiting for children".to_owned(),
        },
    }
}

/// A queued task (or `n` children's tasks) of `kind`, by its queue.
fn queued(kind: &str, n: Option<i64>, queues: &BTreeMap<String, QueueState>) -> String {
    let what = match n {
        Some(n) => format!(
            "{n} {} of kind {kind} queued",
            plural(n, "child", "children")
        ),
        None => format!("queued for a worker of kind {kind}"),
    };
    match queues.get(kind) {
        Some(QueueState::Missing) => format!(
            "{what}, but no worker consumes {kind}: no worker has ever served it (it has no queue)"
        ),
        Some(QueueState::Found { consumers: 0, .. }) => {
            format!("{what}, but no worker consumes {kind}")
        }
        Some(QueueState::Found {
            messages,
            consumers,
        }) => format!(
            "{what}: {messages} {} ready in its queue, {consumers} {} serving it",
            plural(i64::from(*messages), "task", "tasks"),
            plural(i64::from(*consumers), "consumer", "consumers")
        ),
        Some(QueueState::Unknown { error }) => {
            format!("{what} (the broker could not be asked: {error})")
        }
        None => what,
    }
}

fn running(f: &Facts) -> String {
    let job = &f.job;
    let mut line = format!(
        "running phase {} (attempt {} of {})",
        job.phase, job.attempt, job.max_attempts
    );
    if let Some(holder) = &job.lease_holder {
        line.push_str(&format!(" on worker {holder}"));
    }
    if let Some(started) = job.started_ms {
        line.push_str(&format!(", started {} ago", span(f.now_ms - started)));
    }
    match job.lease_until_ms {
        Some(until) if until <= f.now_ms => line.push_str(&format!(
            "; its lease ran out {} ago: it will be retried",
            span(f.now_ms - until)
        )),
        _ => {
            if matches!(
                f.queues.get(&job.kind),
                Some(QueueState::Found { consumers: 0, .. })
            ) {
                line.push_str(&format!(
                    "; no worker consumes {} now: if its worker is gone, the lease runs out and it is retried",
                    job.kind
                ));
            }
        }
    }
    line
}

fn waiting(f: &Facts, fanout: &Fanout) -> String {
    let open = fanout.total - fanout.terminal;
    let missing = fanout.expected.map_or(0, |e| e - fanout.total);
    if open <= 0 {
        return if missing > 0 {
            format!(
                "waiting for {missing} of {} children the phase spawned that have not been counted in yet",
                fanout.expected.unwrap_or_default()
            )
        } else {
            format!("all {} children are done: the fan-in is due", fanout.total)
        };
    }
    let Some(groups) = &fanout.groups else {
        return format!(
            "waiting for {open} open {} (too many to look at in time)",
            plural(open, "child", "children")
        );
    };
    let count = |pred: &dyn Fn(&Group) -> bool| -> i64 {
        groups.iter().filter(|g| pred(g)).map(|g| g.n).sum()
    };
    // Children whose tasks no live worker can take.
    let mut stuck: BTreeMap<&str, i64> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.stage.needs_worker()) {
        if matches!(
            f.queues.get(&g.kind),
            Some(QueueState::Missing | QueueState::Found { consumers: 0, .. })
        ) {
            *stuck.entry(g.kind.as_str()).or_default() += g.n;
        }
    }
    if let Some((kind, n)) = stuck.iter().max_by_key(|(_, n)| **n) {
        return queued(kind, Some(*n), &f.queues);
    }
    let paused = count(&|g| g.stage == Stage::Paused);
    if paused > 0 {
        return format!(
            "{paused} {} paused: resume {} to go on",
            plural(paused, "child is", "children are"),
            plural(paused, "it", "them")
        );
    }
    let running = count(&|g| g.stage == Stage::Running);
    let rest = open - running;
    if running > 0 {
        let oldest = groups
            .iter()
            .filter(|g| g.stage == Stage::Running)
            .filter_map(|g| {
                g.oldest_started_ms
                    .map(|at| (at, g.oldest_holder.as_deref()))
            })
            .min_by_key(|(at, _)| *at);
        let mut line = format!(
            "waiting for {running} running {}",
            plural(running, "child", "children")
        );
        if let Some((at, holder)) = oldest {
            line.push_str(&format!(" (oldest started {} ago", span(f.now_ms - at)));
            if let Some(holder) = holder {
                line.push_str(&format!(" on worker {holder}"));
            }
            line.push(')');
        }
        if rest > 0 {
            line.push_str(&format!(", {rest} more open"));
        }
        return line;
    }
    let scheduled = count(&|g| g.stage == Stage::Scheduled);
    if scheduled > 0 {
        let next = groups
            .iter()
            .filter(|g| g.stage == Stage::Scheduled)
            .filter_map(|g| g.next_ms)
            .min();
        return format!(
            "waiting for {open} {}: {scheduled} {} a retry scheduled{}",
            plural(open, "child", "children"),
            plural(scheduled, "has", "have"),
            next.map(|at| format!(" (next in {})", span(at - f.now_ms)))
                .unwrap_or_default()
        );
    }
    let ready = count(&|g| matches!(g.stage, Stage::Queued | Stage::Unpublished));
    if ready > 0 {
        let kind = groups
            .iter()
            .filter(|g| matches!(g.stage, Stage::Queued | Stage::Unpublished))
            .max_by_key(|g| g.n)
            .map(|g| g.kind.as_str())
            .unwrap_or_default();
        return queued(kind, Some(ready), &f.queues);
    }
    let waiting = count(&|g| g.stage == Stage::Waiting);
    format!(
        "waiting for {waiting} {} on their own children (ask why on them)",
        plural(waiting, "child that waits", "children that wait")
    )
}

fn plural<'a>(n: i64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// A duration for people: `850ms`, `12s`, `4m05s`, `3h07m`.
pub fn span(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests;
