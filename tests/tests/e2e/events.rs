//! Live events over SSE: a watcher sees a tree fill up (snapshot, status
//! moves, coalesced counts, progress) without polling, resumes with
//! `Last-Event-ID` without loss or repeat, hears changes another
//! coordinator made, and a thousand streams are served at once.

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::TestCluster;
use uuid::Uuid;

/// One SSE event as received.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// An open event stream.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(http: &reqwest::Client, url: &str, last_id: Option<i64>) -> Self {
        let mut req = http.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("GET events");
        assert_eq!(resp.status().as_u16(), 200, "events answer 200");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or None at the end
    /// or after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                let Some(id) = id else { continue };
                let data = serde_json::from_str(&data).expect("event data is JSON");
                let e = Sse { id, event, data };
                documented(&e);
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until `done` says so (that event included).
    async fn until(&mut self, what: &str, done: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .next(Duration::from_secs(60))
                .await
                .unwrap_or_else(|| panic!("stream ended before {what}; saw {seen:?}"));
            let stop = done(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }
}

/// Panics unless `e`'s data is exactly the type the OpenAPI document
/// names for its event (no field unknown, none missing).
fn documented(e: &Sse) {
    use serde_json::from_value as read;
    use tributary_coordinator::event_data::*;
    let data = e.data.clone();
    let r = match e.event.as_str() {
        "snapshot" => read::<SnapshotData>(data).map(drop),
        "counts" => read::<CountsData>(data).map(drop),
        "status" => read::<JobEventData<StatusChange>>(data).map(drop),
        "progress" => read::<JobEventData<ProgressChange>>(data).map(drop),
        "log" => read::<JobEventData<LogLine>>(data).map(drop),
        other => panic!("an event the document does not name: {other}"),
    };
    if let Err(err) = r {
        panic!(
            "a {} event does not match its type: {err}: {}",
            e.event, e.data
        );
    }
}

fn is_status(e: &Sse, job: Uuid, status: &str) -> bool {
    e.event == "status" && e.data["job_id"] == json!(job) && e.data["data"]["status"] == status
}

#[tokio::test]
async fn a_watcher_sees_the_tree_fill_up_and_resumes_without_loss() {
    let c = TestCluster::start().await;
    let n = 300;
    let root = c
        .submit(
            "bench.fanout",
            json!({ "n": n, "batch": 50, "sleep_ms": 20 }),
        )
        .await;
    let url = format!("{}/v1/jobs/{root}/events", c.url);
    let mut s = Stream::open(&c.http, &url, None).await;
    let all = s
        .until("the root completed", |e| is_status(e, root, "completed"))
        .await;
    assert_eq!(
        all[0].event, "snapshot",
        "a fresh watcher starts from a snapshot"
    );
    assert_eq!(all[0].data["job"]["id"], json!(root));
    for pair in all.windows(2) {
        assert!(pair[0].id <= pair[1].id, "ids never go back: {pair:?}");
    }
    for pair in all
        .iter()
        .filter(|e| e.event != "counts")
        .collect::<Vec<_>>()
        .windows(2)
    {
        assert!(pair[0].id < pair[1].id, "events are not repeated: {pair:?}");
    }
    let kinds: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert!(
        kinds.contains(&"progress"),
        "the spawning phase's progress: {kinds:?}"
    );
    assert!(
        all.iter().any(|e| is_status(e, root, "waiting")),
        "the root's moves are told"
    );
    // Counts arrive coalesced, and reach the final numbers without polling.
    let counts: Vec<&Sse> = all.iter().filter(|e| e.event == "counts").collect();
    assert!(!counts.is_empty());
    assert!(
        counts.len() < n / 2,
        "counts are coalesced ({} for {n} children)",
        counts.len()
    );
    let last_counts = loop {
        // The root's completion may come before the last counts event.
        match counts.last() {
            Some(c) if c.data["counts"]["completed"] == json!(n + 1) => break (*c).clone(),
            _ => {}
        }
        let e = s
            .next(Duration::from_secs(10))
            .await
            .expect("the final counts");
        if e.event == "counts" && e.data["counts"]["completed"] == json!(n + 1) {
            break e;
        }
    };
    assert_eq!(last_counts.data["counts"]["running"], 0);
    // The tree by phase: every job counted once, the root done in "sum".
    let (_, tree) = c.get(&format!("/v1/jobs/{root}/tree")).await;
    let phases = tree["phases"].as_object().expect("phases").clone();
    let counted: i64 = phases
        .values()
        .flat_map(|by_status| by_status.as_object().into_iter().flatten())
        .map(|(_, n)| n.as_i64().unwrap_or_default())
        .sum();
    assert_eq!(counted, n as i64 + 1, "{tree}");
    assert_eq!(tree["phases"]["sum"]["completed"], 1, "{tree}");

    // Resume from the middle: exactly the events after it, no snapshot.
    let non_counts: Vec<&Sse> = all.iter().filter(|e| e.event != "counts").collect();
    let mid = non_counts[non_counts.len() / 2].id;
    let mut again = Stream::open(&c.http, &url, Some(mid)).await;
    let resumed = again
        .until("the root completed again", |e| {
            is_status(e, root, "completed")
        })
        .await;
    let want: Vec<(i64, &str)> = non_counts
        .iter()
        .filter(|e| e.id > mid)
        .map(|e| (e.id, e.event.as_str()))
        .collect();
    let got: Vec<(i64, &str)> = resumed
        .iter()
        .filter(|e| e.event != "counts")
        .map(|e| (e.id, e.event.as_str()))
        .collect();
    assert_eq!(got, want, "a resume loses and repeats nothing");
    // `?after=` is the same for clients that cannot set the header.
    let mut q = Stream::open(&c.http, &format!("{url}?after={mid}"), None).await;
    let first = q.next(Duration::from_secs(10)).await.expect("an event");
    assert!(first.id > mid && first.event != "snapshot", "{first:?}");
    // A position this tree never reached (another tree's, another
    // database's) cannot be resumed: a fresh snapshot, marked reset.
    let mut bogus = Stream::open(&c.http, &url, Some(i64::MAX)).await;
    let first = bogus.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(first.event, "snapshot", "{first:?}");
    assert_eq!(first.data["reset"], true, "{first:?}");
    assert!(first.id <= all.last().map_or(0, |e| e.id).max(last_counts.id));
    c.shutdown().await;
}

#[tokio::test]
async fn another_coordinators_change_reaches_the_stream() {
    let c = TestCluster::start().await;
    let (_other, other_url) = c.extra_coordinator().await;
    let root = c
        .submit("bench.fanout", json!({ "n": 50, "sleep_ms": 3000 }))
        .await;
    // Watch on the other coordinator; cancel through this one.
    let mut s = Stream::open(&c.http, &format!("{other_url}/v1/jobs/{root}/events"), None).await;
    let first = s.next(Duration::from_secs(10)).await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    let (status, _) = c.post(&format!("/v1/jobs/{root}/cancel"), None).await;
    assert_eq!(status, 202);
    s.until("the cancel seen from the other coordinator", |e| {
        is_status(e, root, "cancelled")
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_streams_at_once() {
    let c = TestCluster::start().await;
    let root = c
        .submit("bench.fanout", json!({ "n": 20, "sleep_ms": 4000 }))
        .await;
    let streams = 1000;
    let url = format!("{}/v1/jobs/{root}/events", c.url);
    let opened = std::time::Instant::now();
    let open =
        futures_util::future::join_all((0..streams).map(|_| Stream::open(&c.http, &url, None)))
            .await;
    eprintln!("EVENTS {streams} streams open in {:?}", opened.elapsed());
    let (_, tree) = c.get(&format!("/v1/jobs/{root}/tree")).await;
    let done = futures_util::future::join_all(open.into_iter().map(|mut s| async move {
        let seen = s
            .until("completed", |e| {
                is_status(e, root, "completed")
                    || (e.event == "snapshot" && e.data["job"]["status"] == "completed")
            })
            .await;
        seen.iter().any(|e| e.event == "status")
    }))
    .await;
    let live = done.iter().filter(|live| **live).count();
    eprintln!("EVENTS {live} of {streams} streams saw the completion live; tree was {tree}");
    assert!(
        live > streams / 2,
        "most streams were open before the end: {live}"
    );
    assert_eq!(done.len(), streams, "every stream saw the end");
    c.shutdown().await;
}

#[tokio::test]
async fn events_refuse_bad_requests_with_a_reason() {
    let c = TestCluster::start_with(tributary_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let (status, body) = c.get(&format!("/v1/jobs/{}/events", Uuid::now_v7())).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = c.get("/v1/jobs/nope/events").await;
    assert_eq!(status, 400);
    let id = c.submit("bench.leaf", json!({ "value": 1 })).await;
    let (status, body) = c.get(&format!("/v1/jobs/{id}/events?after=-1")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = c.get(&format!("/v1/jobs/{id}/events?after=x")).await;
    assert_eq!(status, 400, "{body}");
    let resp = c
        .http
        .get(format!("{}/v1/jobs/{id}/events", c.url))
        .header("last-event-id", "abc")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 400);
    c.shutdown().await;
}
