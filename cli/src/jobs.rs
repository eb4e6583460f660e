//! `tributary jobs ls`: find jobs through `GET /v1/jobs`, as a table or
//! as JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::Api;

/// `tributary jobs …`.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs: roots newest first by default, a whole tree with --root,
    /// or one job's children (in spawn order) with --parent.
    Ls(LsArgs),
}

/// How `jobs ls` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns: id, kind, status, phase, children done/total, age.
    Table,
    /// The API's answer: `{"jobs": [...], "next_cursor": ...}`.
    Json,
}

/// `jobs ls` options.
#[derive(Args)]
pub struct LsArgs {
    /// Only jobs in this status (pending, running, waiting, paused,
    /// completed, failed, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// List this job's children instead of roots.
    #[arg(long, conflicts_with = "root")]
    parent: Option<String>,
    /// List every job of this tree (root included) instead of roots.
    #[arg(long)]
    root: Option<String>,
    /// Only jobs made at or after this time (RFC 3339, or ms since the epoch).
    #[arg(long)]
    created_after: Option<String>,
    /// Jobs per page (1-500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Follow the cursors to the last page (otherwise one page, and a hint
    /// on stderr if more follow).
    #[arg(long)]
    all: bool,
    /// Start at this cursor (a `next_cursor` from an earlier page).
    #[arg(long)]
    cursor: Option<String>,
    /// Table or JSON.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Runs a `jobs` subcommand.
pub async fn run(api: &Api, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Ls(args) => ls(api, &args).await,
    }
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved
/// characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query string for one page.
fn query(args: &LsArgs, cursor: Option<&str>) -> String {
    let mut pairs = vec![format!("limit={}", args.limit)];
    for (name, value) in [
        ("status", args.status.as_deref()),
        ("kind", args.kind.as_deref()),
        ("parent", args.parent.as_deref()),
        ("root", args.root.as_deref()),
        ("created_after", args.created_after.as_deref()),
        ("cursor", cursor),
    ] {
        if let Some(value) = value {
            pairs.push(format!("{name}={}", encode(value)));
        }
    }
    format!("/v1/jobs?{}", pairs.join("&"))
}

async fn ls(api: &Api, args: &LsArgs) -> anyhow::Result<()> {
    let mut jobs = Vec::new();
    let mut cursor = args.cursor.clone();
    loop {
        let page = api.get(&query(args, cursor.as_deref())).await?;
        let listed = page["jobs"]
            .as_array()
            .context("the coordinator answered no job list")?;
        jobs.extend(listed.iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !args.all || cursor.is_none() {
            break;
        }
    }
    match args.output {
        Output::Json => {
            let answer = json!({ "jobs": jobs, "next_cursor": cursor });
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Output::Table => {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default();
            print!("{}", table(&jobs, now_ms));
            if let Some(cursor) = &cursor {
                eprintln!("more jobs follow: add --all, or --cursor {cursor}");
            }
        }
    }
    Ok(())
}

/// `done/total` of a job's current fan-out, or `-` if it has none.
fn children(job: &Value) -> String {
    let c = &job["children"];
    let n = |field: &str| c[field].as_i64().unwrap_or(0);
    let total = c["expected"].as_i64().unwrap_or(n("total"));
    if total == 0 && n("total") == 0 {
        return "-".into();
    }
    format!("{}/{total}", n("completed") + n("failed") + n("cancelled"))
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
fn age(created_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - created_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The table, header first, columns padded to their widest cell.
fn table(jobs: &[Value], now_ms: i64) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut rows = vec![["ID", "KIND", "STATUS", "PHASE", "CHILDREN", "AGE"].map(String::from)];
    for job in jobs {
        rows.push([
            text(&job["id"]),
            text(&job["kind"]),
            text(&job["status"]),
            format!("{} ({})", text(&job["phase"]), text(&job["phase_status"])),
            children(job),
            age(job["created_ms"].as_i64().unwrap_or(now_ms), now_ms),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(encode("bench.leaf"), "bench.leaf");
        assert_eq!(
            encode("2026-11-23T14:00:00+01:00"),
            "2026-11-23T14%3A00%3A00%2B01%3A00"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn the_table_shows_children_and_age() {
        let jobs = [
            json!({"id": "0190", "kind": "bench.fanout", "status": "waiting", "phase": "start",
                   "phase_status": "completed", "created_ms": 0,
                   "children": {"expected": 10, "total": 10, "completed": 6, "failed": 1, "cancelled": 0}}),
            json!({"id": "0191", "kind": "bench.leaf", "status": "pending", "phase": "start",
                   "phase_status": "not_started", "created_ms": 3_500_000,
                   "children": {"expected": null, "total": 0, "completed": 0, "failed": 0, "cancelled": 0}}),
        ];
        let out = table(&jobs, 3_600_000);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID    KIND"), "{out}");
        assert!(
            lines[1].contains("7/10") && lines[1].ends_with("1h"),
            "{out}"
        );
        assert!(lines[2].contains("start (not_started)"), "{out}");
        assert!(lines[2].ends_with("-         1m"), "{out}");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(0, 59_999), "59s");
        assert_eq!(age(0, 60_000), "1m");
        assert_eq!(age(0, 7_200_000), "2h");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
        assert_eq!(age(10, 0), "0s");
    }
}
