//! Showing a [`View`]: bars that redraw in place on a terminal
//! ([`Bars`], with indicatif), plain lines anywhere else ([`Plain`]: a
//! line per move of the watched job, a counts line at most every
//! [`COUNTS_EVERY`], never an escape sequence).

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::view::{Counts, Job, View};

/// Least time between two counts lines of [`Plain`].
pub const COUNTS_EVERY: Duration = Duration::from_secs(2);

/// `1h02m`, `2m05s`, `4.2s`, `250ms`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// `waiting, phase start (waiting), attempt 1 · 200/300 spawning`.
pub fn job_line(job: &Job) -> String {
    let mut line = format!(
        "{}, phase {} ({}), attempt {}",
        job.status.map_or("?", |s| s.as_str()),
        job.phase,
        job.phase_status,
        job.attempt
    );
    if let Some((done, total, message)) = &job.progress {
        if *total > 0 {
            line.push_str(&format!(" · {done}/{total}"));
        }
        if !message.is_empty() {
            line.push(' ');
            line.push_str(message);
        }
    }
    if let Some(error) = &job.error {
        line.push_str(&format!(" · error: {error}"));
    }
    line
}

/// `pending 0 running 12 ... cancelled 0`.
pub fn counts_words(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `· 35.2/s · eta 4.0s · 12.0s elapsed`, from the latest `/tree` read.
pub fn rate_words(view: &View) -> String {
    let Some(tree) = &view.tree else {
        return String::new();
    };
    let mut words = String::new();
    if let Some(rate) = tree.rate_per_s {
        words.push_str(&format!(" · {rate:.1}/s"));
    }
    if let Some(eta) = tree.eta_ms {
        words.push_str(&format!(" · eta {}", duration(eta)));
    }
    if let Some(elapsed) = tree.elapsed_ms {
        words.push_str(&format!(" · {} elapsed", duration(elapsed)));
    }
    words
}

/// Plain lines, for logs and pipes.
pub struct Plain<W> {
    out: W,
    /// The job's moves as last printed, to print a line only when they
    /// change.
    last_job: Option<(Option<&'static str>, String, String, i64)>,
    /// The counts as last printed, and when.
    last_counts: Option<(Counts, Instant)>,
}

impl<W: Write> Plain<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            last_job: None,
            last_counts: None,
        }
    }

    /// The writer (for tests).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    fn print(&mut self, line: &str) {
        // A closed stderr must not end the watch.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// A line if the watched job moved since the last one.
    pub fn job(&mut self, view: &View) {
        let job = &view.job;
        let (status, phase, phase_status, attempt) = job.moves();
        let now = (
            status.map(|s| s.as_str()),
            phase.to_owned(),
            phase_status.to_owned(),
            attempt,
        );
        if job.status.is_none() || self.last_job.as_ref() == Some(&now) {
            return;
        }
        self.last_job = Some(now);
        let line = format!("job {} {}: {}", job.id, job.kind, job_line(job));
        self.print(&line);
    }

    /// A counts line if they changed and the last one is
    /// [`COUNTS_EVERY`] old (or `force`, for the last one).
    pub fn counts(&mut self, view: &View, now: Instant, force: bool) {
        if let Some((counts, at)) = self.last_counts
            && (counts == view.counts || (!force && now.duration_since(at) < COUNTS_EVERY))
        {
            return;
        }
        self.last_counts = Some((view.counts, now));
        let line = format!(
            "tree {}: {}/{} ended · {}{}",
            view.root_id,
            view.counts.ended(),
            view.counts.total(),
            counts_words(&view.counts),
            rate_words(view)
        );
        self.print(&line);
    }

    /// A note (a lost connection, say).
    pub fn note(&mut self, line: &str) {
        self.print(line);
    }
}

/// Bars on a terminal: the tree (jobs ended of all), a counts line with
/// rate and ETA, one bar per phase, and the watched job's line.
pub struct Bars {
    multi: MultiProgress,
    tree: ProgressBar,
    counts: ProgressBar,
    job: ProgressBar,
    phases: Vec<(String, ProgressBar)>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one would show the default bar.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

const BAR: &str = "{prefix:>12} [{bar:30}] {pos}/{len} {msg}";

impl Bars {
    /// Bars on stderr.
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let job = multi.add(ProgressBar::new(0).with_style(style("{prefix:>12} {msg}")));
        job.set_prefix("job");
        let tree = multi.add(ProgressBar::new(0).with_style(style(BAR)));
        tree.set_prefix("tree");
        tree.set_message("ended");
        let counts = multi.add(ProgressBar::new(0).with_style(style("{prefix:>12} {msg}")));
        Self {
            multi,
            tree,
            counts,
            job,
            phases: Vec::new(),
        }
    }

    /// Redraws everything from `view`.
    pub fn draw(&mut self, view: &View) {
        let job = &view.job;
        self.job
            .set_message(format!("{} {}: {}", job.id, job.kind, job_line(job)));
        self.tree.set_length(view.counts.total().max(0) as u64);
        self.tree.set_position(view.counts.ended().max(0) as u64);
        self.counts.set_message(format!(
            "{}{}",
            counts_words(&view.counts),
            rate_words(view)
        ));
        let Some(tree) = &view.tree else { return };
        for (phase, counts) in &tree.phases {
            let bar = match self.phases.iter().find(|(p, _)| p == phase) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(0).with_style(style(BAR)));
                    bar.set_prefix(format!("phase {phase}"));
                    self.phases.push((phase.clone(), bar.clone()));
                    bar
                }
            };
            bar.set_length(counts.total().max(0) as u64);
            bar.set_position(counts.ended().max(0) as u64);
            let open: Vec<String> = counts
                .iter()
                .filter(|(s, n)| *n > 0 && !matches!(*s, "completed" | "failed" | "cancelled"))
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            bar.set_message(open.join(" "));
        }
    }

    /// A line above the bars.
    pub fn note(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Leaves the bars drawn as they are, for the final JSON to follow.
    pub fn finish(&self) {
        for bar in [&self.job, &self.tree, &self.counts]
            .into_iter()
            .chain(self.phases.iter().map(|(_, b)| b))
        {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::watch::view::Tree;

    fn view() -> View {
        let mut v = View::new("J");
        v.apply(
            "snapshot",
            &json!({
                "root_id": "J",
                "job": { "id": "J", "kind": "bench.fanout", "status": "waiting", "phase": "start",
                         "phase_status": "waiting", "attempt": 1, "error": null, "progress": null },
                "counts": { "running": 3, "waiting": 1, "completed": 6 },
            }),
        );
        v
    }

    fn text(p: Plain<Vec<u8>>) -> String {
        String::from_utf8(p.into_inner()).expect("UTF-8")
    }

    #[test]
    fn plain_lines_tell_each_move_once_and_counts_at_most_every_two_seconds() {
        let t0 = Instant::now();
        let mut v = view();
        let mut p = Plain::new(Vec::new());
        p.job(&v);
        p.counts(&v, t0, false);
        // Nothing moved: nothing printed.
        p.job(&v);
        p.counts(&v, t0 + Duration::from_secs(5), false);
        // Counts moved, too soon: held back; later: printed.
        v.apply(
            "counts",
            &json!({ "counts": { "running": 1, "waiting": 1, "completed": 8 } }),
        );
        p.counts(&v, t0 + Duration::from_millis(1500), false);
        v.tree = Some(Tree {
            rate_per_s: Some(4.0),
            eta_ms: Some(500),
            elapsed_ms: Some(2500),
            ..Tree::default()
        });
        p.counts(&v, t0 + Duration::from_millis(2100), false);
        v.apply(
            "status",
            &json!({ "job_id": "J", "data": { "status": "completed", "phase": "sum",
                     "phase_status": "completed", "attempt": 1, "error": null } }),
        );
        p.job(&v);
        v.apply("counts", &json!({ "counts": { "completed": 10 } }));
        p.counts(&v, t0 + Duration::from_millis(2200), true);
        let out = text(p);
        assert_eq!(
            out,
            "job J bench.fanout: waiting, phase start (waiting), attempt 1\n\
             tree J: 6/10 ended · pending 0 running 3 waiting 1 paused 0 completed 6 failed 0 cancelled 0\n\
             tree J: 8/10 ended · pending 0 running 1 waiting 1 paused 0 completed 8 failed 0 cancelled 0 · 4.0/s · eta 500ms · 2.5s elapsed\n\
             job J bench.fanout: completed, phase sum (completed), attempt 1\n\
             tree J: 10/10 ended · pending 0 running 0 waiting 0 paused 0 completed 10 failed 0 cancelled 0 · 4.0/s · eta 500ms · 2.5s elapsed\n"
        );
        assert!(!out.contains('\x1b'), "no escape sequences");
    }

    #[test]
    fn the_job_line_shows_progress_and_error() {
        let mut v = view();
        v.job.progress = Some((200, 300, "spawning".to_owned()));
        assert_eq!(
            job_line(&v.job),
            "waiting, phase start (waiting), attempt 1 · 200/300 spawning"
        );
        v.job.progress = None;
        v.job.error = Some("boom".to_owned());
        assert!(job_line(&v.job).ends_with(" · error: boom"));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(duration(-5), "0ms");
    }
}
