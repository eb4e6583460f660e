//! What the watcher knows of the job and its tree, folded from the events
//! (and `/tree` for rate, ETA and phases).

use std::collections::BTreeMap;

use serde_json::Value;
use tributary_common::status::JobStatus;

/// The watched job as the events tell it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// Its kind (from the snapshot).
    pub kind: String,
    /// Its status, once known.
    pub status: Option<JobStatus>,
    /// Its current phase.
    pub phase: String,
    /// Its current phase's status.
    pub phase_status: String,
    /// Its attempt at the current phase.
    pub attempt: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The current phase's progress: done, total and message.
    pub progress: Option<(i64, i64, String)>,
}

impl Job {
    /// Whether it has ended.
    pub fn terminal(&self) -> bool {
        self.status.is_some_and(JobStatus::is_terminal)
    }

    /// What a status line shows, to tell when it changed.
    pub fn moves(&self) -> (Option<JobStatus>, &str, &str, i64) {
        (self.status, &self.phase, &self.phase_status, self.attempt)
    }

    /// Takes the fields `v` (a snapshot's `job`, a `status` event's
    /// `data`, or `GET /v1/jobs/{id}`) carries.
    fn update(&mut self, v: &Value) {
        if let Some(s) = v["status"].as_str() {
            self.status = JobStatus::parse(s);
        }
        if let Some(k) = v["kind"].as_str() {
            k.clone_into(&mut self.kind);
        }
        if let Some(p) = v["phase"].as_str() {
            if p != self.phase {
                // Progress is the phase's: a new phase has none yet.
                self.progress = None;
            }
            p.clone_into(&mut self.phase);
        }
        if let Some(p) = v["phase_status"].as_str() {
            p.clone_into(&mut self.phase_status);
        }
        if let Some(a) = v["attempt"].as_i64() {
            self.attempt = a;
        }
        if v.get("error").is_some() {
            self.error = v["error"].as_str().map(str::to_owned);
        }
        if let Some(p) = v.get("progress") {
            self.progress = progress(p);
        }
    }
}

fn progress(p: &Value) -> Option<(i64, i64, String)> {
    if p.is_null() {
        return None;
    }
    Some((
        p["done"].as_i64().unwrap_or(0),
        p["total"].as_i64().unwrap_or(0),
        p["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The tree's jobs by status, in [`JobStatus::ALL`]'s order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [i64; 7]);

impl Counts {
    /// Reads `{"pending": n, ...}`; a missing status counts 0.
    pub fn from_json(v: &Value) -> Self {
        Self(JobStatus::ALL.map(|s| v[s.as_str()].as_i64().unwrap_or(0)))
    }

    /// Jobs in the tree.
    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    /// Jobs that ended.
    pub fn ended(&self) -> i64 {
        JobStatus::ALL
            .iter()
            .zip(self.0)
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// `(status, n)` for every status.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        JobStatus::ALL.iter().map(|s| s.as_str()).zip(self.0)
    }
}

/// What `GET /v1/jobs/{id}/tree` adds: rate, ETA and the jobs by phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    /// Jobs that ended per second lately (`None` while unknown).
    pub rate_per_s: Option<f64>,
    /// Time left at that rate (`None` while the rate is 0 or unknown).
    pub eta_ms: Option<i64>,
    /// Since the root was created (until it ended).
    pub elapsed_ms: Option<i64>,
    /// By phase: the jobs in it, and how many of them ended.
    pub phases: BTreeMap<String, Counts>,
}

impl Tree {
    /// Reads the route's answer.
    pub fn from_json(v: &Value) -> Self {
        let phases = v["phases"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(phase, by_status)| (phase.clone(), Counts::from_json(by_status)))
            .collect();
        Self {
            rate_per_s: v["rate_per_s"].as_f64(),
            eta_ms: v["eta_ms"].as_i64(),
            elapsed_ms: v["elapsed_ms"].as_i64(),
            phases,
        }
    }
}

/// Everything shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The watched job.
    pub job: Job,
    /// Its tree's root (the events are the whole tree's).
    pub root_id: String,
    /// The tree's counts, from the latest `snapshot` or `counts` event.
    pub counts: Counts,
    /// The latest `/tree` read, if any.
    pub tree: Option<Tree>,
}

/// What an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A snapshot: everything may have changed.
    Snapshot,
    /// The watched job's status, phase or attempt.
    Status,
    /// The tree's counts.
    Counts,
    /// The watched job's progress.
    Progress,
    /// Nothing shown (another job's event, a log line, an unknown event).
    Nothing,
}

impl View {
    /// A view of job `id`, nothing known yet.
    pub fn new(id: &str) -> Self {
        Self {
            job: Job {
                id: id.to_owned(),
                ..Job::default()
            },
            ..Self::default()
        }
    }

    /// Folds in one event (`event` its name, `data` its JSON).
    pub fn apply(&mut self, event: &str, data: &Value) -> Change {
        if let Some(root) = data["root_id"].as_str() {
            root.clone_into(&mut self.root_id);
        }
        let mine = data["job_id"].as_str() == Some(self.job.id.as_str());
        match event {
            "snapshot" => {
                if data["job"].is_object() {
                    self.job.update(&data["job"]);
                }
                self.counts = Counts::from_json(&data["counts"]);
                Change::Snapshot
            }
            "counts" => {
                self.counts = Counts::from_json(&data["counts"]);
                Change::Counts
            }
            "status" if mine => {
                self.job.update(&data["data"]);
                Change::Status
            }
            "progress" if mine => {
                self.job.progress = progress(&data["data"]);
                Change::Progress
            }
            _ => Change::Nothing,
        }
    }

    /// Folds in `GET /v1/jobs/{id}` (the safety net for jobs whose moves
    /// are not told one by one); returns whether the status line changed.
    pub fn apply_job(&mut self, job: &Value) -> bool {
        let before = self.job.clone();
        self.job.update(job);
        before.moves() != self.job.moves()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_fold_into_the_view() {
        let mut v = View::new("J");
        let snapshot = json!({
            "root_id": "R",
            "job": { "id": "J", "kind": "bench.fanout", "status": "running", "phase": "start",
                     "phase_status": "running", "attempt": 1, "error": null, "progress": null },
            "counts": { "pending": 1, "running": 2, "completed": 3 },
            "reset": false,
        });
        assert_eq!(v.apply("snapshot", &snapshot), Change::Snapshot);
        assert_eq!(v.root_id, "R");
        assert_eq!(v.job.kind, "bench.fanout");
        assert_eq!(v.counts.total(), 6);
        assert_eq!(v.counts.ended(), 3);
        let other = json!({ "root_id": "R", "job_id": "K", "data": { "status": "failed" } });
        assert_eq!(v.apply("status", &other), Change::Nothing);
        let progress = json!({ "root_id": "R", "job_id": "J",
                               "data": { "done": 5, "total": 10, "message": "spawning" } });
        assert_eq!(v.apply("progress", &progress), Change::Progress);
        assert_eq!(v.job.progress, Some((5, 10, "spawning".to_owned())));
        let status = json!({ "root_id": "R", "job_id": "J",
                             "data": { "status": "completed", "phase": "sum", "phase_seq": 2,
                                       "attempt": 1, "phase_status": "completed", "error": null } });
        assert_eq!(v.apply("status", &status), Change::Status);
        assert!(v.job.terminal());
        assert_eq!(v.job.phase, "sum");
        assert_eq!(v.job.progress, None, "the new phase has no progress yet");
        let counts = json!({ "root_id": "R", "counts": { "completed": 7 } });
        assert_eq!(v.apply("counts", &counts), Change::Counts);
        assert_eq!((v.counts.total(), v.counts.ended()), (7, 7));
    }

    #[test]
    fn the_tree_route_reads_into_rate_eta_and_phases() {
        let t = Tree::from_json(&json!({
            "rate_per_s": 12.5, "eta_ms": null, "elapsed_ms": 3000,
            "phases": { "start": { "waiting": 1 }, "leaf": { "completed": 4, "running": 2 } },
        }));
        assert_eq!(t.rate_per_s, Some(12.5));
        assert_eq!(t.eta_ms, None);
        assert_eq!(t.phases["leaf"].total(), 6);
        assert_eq!(t.phases["leaf"].ended(), 4);
        assert_eq!(t.phases["start"].ended(), 0);
    }
}
