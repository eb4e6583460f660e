//! In-process counters, served as Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::outcome::Applied;

/// Counters of one coordinator process.
#[derive(Debug, Default)]
pub struct Metrics {
    batches: AtomicU64,
    items_applied: AtomicU64,
    fenced: AtomicU64,
    fan_ins: AtomicU64,
    children_created: AtomicU64,
    tasks_published: AtomicU64,
    dead_lettered: AtomicU64,
    jobs_submitted: AtomicU64,
    forged: AtomicU64,
    refused: AtomicU64,
    poisoned: AtomicU64,
}

impl Metrics {
    /// Counts one applied batch.
    pub fn record_applied(&self, a: &Applied) {
        self.batches.fetch_add(1, Relaxed);
        self.items_applied.fetch_add(a.applied, Relaxed);
        self.fenced.fetch_add(a.fenced, Relaxed);
        self.fan_ins.fetch_add(a.fan_ins, Relaxed);
        self.children_created.fetch_add(a.children, Relaxed);
        self.forged.fetch_add(a.forged, Relaxed);
        self.refused.fetch_add(a.refused, Relaxed);
    }

    /// Counts a report item the database refused, dead-lettered.
    pub fn poisoned(&self) {
        self.poisoned.fetch_add(1, Relaxed);
    }

    /// Counts published tasks.
    pub fn published(&self, n: u64) {
        self.tasks_published.fetch_add(n, Relaxed);
    }

    /// Counts a report that could not be read.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }

    /// Counts a submitted root job.
    pub fn submitted(&self) {
        self.jobs_submitted.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "tributary_outcome_batches_total",
                "Report batches applied.",
                &self.batches,
            ),
            (
                "tributary_report_items_applied_total",
                "Report items that took effect.",
                &self.items_applied,
            ),
            (
                "tributary_reports_fenced_total",
                "Stale or duplicate report items ignored.",
                &self.fenced,
            ),
            ("tributary_fan_ins_total", "Fan-ins fired.", &self.fan_ins),
            (
                "tributary_children_created_total",
                "Child jobs created.",
                &self.children_created,
            ),
            (
                "tributary_tasks_published_total",
                "Tasks published with a confirm.",
                &self.tasks_published,
            ),
            (
                "tributary_dead_letters_total",
                "Reports dead-lettered as unreadable.",
                &self.dead_lettered,
            ),
            (
                "tributary_reports_forged_total",
                "Report items fenced for a wrong nonce (forged, or from a publish that never committed).",
                &self.forged,
            ),
            (
                "tributary_reports_refused_total",
                "Report items refused by a rule (names, sizes, caps); their jobs failed.",
                &self.refused,
            ),
            (
                "tributary_report_items_poisoned_total",
                "Report items the database refused, isolated and dead-lettered.",
                &self.poisoned,
            ),
            (
                "tributary_jobs_submitted_total",
                "Root jobs submitted.",
                &self.jobs_submitted,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let trips = crate::store::round_trips();
        let _ = writeln!(
            out,
            "# HELP tributary_pg_round_trips_total Postgres statements, begins and commits.\n# TYPE tributary_pg_round_trips_total counter\ntributary_pg_round_trips_total {trips}"
        );
        out
    }
}
