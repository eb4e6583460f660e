//! `tributary why <id>`: why a job is not progressing, from
//! `GET /v1/jobs/{id}/waiting`: the one-line reason, then the details
//! (open children, the oldest of them, queues, stopped ancestors), or the
//! route's JSON with `--output json`.

use std::fmt::Write;

use clap::ValueEnum;
use serde_json::Value;

use crate::client::Api;
use crate::logs::utc;

/// How `why` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The reason, then the details, for people.
    Text,
    /// The route's JSON, pretty-printed.
    Json,
}

/// Prints why job `id` is not progressing.
pub async fn run(api: &Api, id: &str, output: Output) -> anyhow::Result<()> {
    let w = api.waiting(id).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&w)?),
        Output::Text => print!("{}", render(&w)),
    }
    Ok(())
}

/// `s` or `-` when absent.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The waiting view as text: the reason first, then what it rests on.
pub fn render(w: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {} ({}) is {}, phase {} ({}), attempt {} of {}",
        text(&w["id"]),
        text(&w["kind"]),
        text(&w["status"]),
        text(&w["phase"]),
        text(&w["stage"]),
        text(&w["attempt"]),
        text(&w["max_attempts"])
    );
    let _ = writeln!(out, "why: {}", text(&w["reason"]));
    if let Some(lease) = w["lease"].as_object() {
        let _ = writeln!(
            out,
            "lease: held by {}, started {}, until {}",
            text(&lease["holder"]),
            lease["started_ms"].as_i64().map(utc).unwrap_or("-".into()),
            lease["until_ms"].as_i64().map(utc).unwrap_or("-".into())
        );
    }
    if !w["last_error"].is_null() {
        let _ = writeln!(out, "last error: {}", text(&w["last_error"]));
    }
    let c = &w["children"];
    if c.is_object() {
        let _ = writeln!(
            out,
            "children: {} counted in of {} spawned; {} completed, {} failed, {} cancelled, {} open",
            text(&c["total"]),
            text(&c["expected"]),
            text(&c["completed"]),
            text(&c["failed"]),
            text(&c["cancelled"]),
            text(&c["open"])
        );
        for key in ["open_by_status", "open_by_stage"] {
            if let Some(map) = c[key].as_object().filter(|m| !m.is_empty()) {
                let parts: Vec<String> = map.iter().map(|(k, n)| format!("{k} {n}")).collect();
                let _ = writeln!(out, "  {}: {}", key.replace('_', " "), parts.join(", "));
            }
        }
        if c["counted_all"] == Value::Bool(false) {
            let _ = writeln!(
                out,
                "  (only {} open children were looked at)",
                text(&c["counted"])
            );
        }
        let oldest = c["oldest"].as_array().cloned().unwrap_or_default();
        if !oldest.is_empty() {
            let _ = writeln!(out, "oldest open children:");
        }
        for o in &oldest {
            let _ = writeln!(
                out,
                "  #{} {} {} {} attempt {}/{} worker {} last error: {}",
                text(&o["index"]),
                text(&o["id"]),
                text(&o["kind"]),
                text(&o["stage"]),
                text(&o["attempt"]),
                text(&o["max_attempts"]),
                text(&o["lease_holder"]),
                text(&o["last_error"])
            );
        }
    }
    for q in w["queues"].as_array().into_iter().flatten() {
        let what = match q["state"].as_str() {
            Some("found") => format!(
                "{} ready, {} consumers",
                text(&q["messages"]),
                text(&q["consumers"])
            ),
            Some("missing") => "no queue (no worker has ever served this kind)".to_owned(),
            _ => format!("unknown ({})", text(&q["error"])),
        };
        let _ = writeln!(out, "queue of {}: {what}", text(&q["kind"]));
    }
    for a in w["stopped_ancestors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "ancestor {} ({}) is {}, {} level(s) up",
            text(&a["id"]),
            text(&a["kind"]),
            text(&a["status"]),
            text(&a["depth"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_reason_comes_first_then_the_details() {
        let w = json!({
            "id": "J", "kind": "bench.fanout", "status": "waiting", "phase": "start",
            "stage": "waiting", "attempt": 1, "max_attempts": 3,
            "reason": "12 children of kind bench.leaf queued, but no worker consumes bench.leaf",
            "lease": null, "last_error": null,
            "children": {
                "expected": 20, "total": 20, "completed": 8, "failed": 0, "cancelled": 0,
                "open": 12, "open_by_status": {"pending": 12}, "open_by_stage": {"queued": 12},
                "counted": 12, "counted_all": true,
                "oldest": [{"index": 3, "id": "C", "kind": "bench.leaf", "stage": "queued",
                            "attempt": 2, "max_attempts": 3, "lease_holder": null,
                            "last_error": "boom"}]
            },
            "queues": [
                {"kind": "bench.leaf", "state": "found", "messages": 12, "consumers": 0},
                {"kind": "x", "state": "missing"}
            ],
            "stopped_ancestors": [{"id": "A", "kind": "demo.du", "status": "paused", "depth": 1}]
        });
        let text = render(&w);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "job J (bench.fanout) is waiting, phase start (waiting), attempt 1 of 3",
                "why: 12 children of kind bench.leaf queued, but no worker consumes bench.leaf",
                "children: 20 counted in of 20 spawned; 8 completed, 0 failed, 0 cancelled, 12 open",
                "  open by status: pending 12",
                "  open by stage: queued 12",
                "oldest open children:",
                "  #3 C bench.leaf queued attempt 2/3 worker - last error: boom",
                "queue of bench.leaf: 12 ready, 0 consumers",
                "queue of x: no queue (no worker has ever served this kind)",
                "ancestor A (demo.du) is paused, 1 level(s) up",
            ]
        );
    }

    #[test]
    fn a_running_job_shows_its_lease() {
        let w = json!({
            "id": "J", "kind": "k", "status": "running", "phase": "p", "stage": "running",
            "attempt": 2, "max_attempts": 3, "reason": "running",
            "lease": {"holder": "7-ab@h", "started_ms": 0, "until_ms": 30000},
            "last_error": "boom", "children": null, "queues": [], "stopped_ancestors": []
        });
        assert_eq!(
            render(&w).lines().skip(2).collect::<Vec<_>>(),
            [
                "lease: held by 7-ab@h, started 1970-01-01T00:00:00.000Z, until 1970-01-01T00:00:30.000Z",
                "last error: boom",
            ]
        );
    }
}
