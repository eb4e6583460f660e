//! `tributary watch <id>` and `submit --wait`: follow a job over its
//! tree's live event stream (`GET /v1/jobs/{id}/events`) until it ends,
//! then hand back its final state (`GET /v1/jobs/{id}`).
//!
//! ```text
//!  events (SSE) ─► sse::Decoder ─► view::View ─► render: Bars (a terminal) | Plain (anything else)
//!        ▲ dropped: reconnect with Last-Event-ID (bounded, with backoff)
//!  /tree once a second ─► rate, ETA, jobs by phase ─┘
//! ```
//!
//! - `sse`: the event-stream parser (a pure line reader and a decoder).
//! - `view`: what the events say of the job and its tree.
//! - `render`: bars on a terminal, plain lines elsewhere.
//!
//! The stream has no overall timeout (a watch may last hours): connecting
//! has [`CONNECT_TIMEOUT`], the answer's head the request timeout
//! (`--timeout-secs`), and a stream silent for [`READ_IDLE`] (the
//! coordinator sends a keep-alive every 15 s) counts as dropped.

mod render;
mod sse;
mod view;

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::{Api, CONNECT_TIMEOUT};
use view::{Change, Counts, Tree, View};

/// A stream that says nothing, not even a keep-alive, for this long is
/// dropped and opened again.
pub const READ_IDLE: Duration = Duration::from_secs(45);
/// Reconnections in a row (no byte received in between) before giving up.
const RECONNECTS: u32 = 5;
/// The wait before the first reconnection; doubled each time after.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How often `/tree` is read for rate, ETA and phases.
const TREE_EVERY: Duration = Duration::from_secs(1);
/// How often a job that is not a root is read: its tree's events tell a
/// child's moves one by one only when it fans out or fails, so its
/// completion (or cancellation) is seen here.
const JOB_EVERY: Duration = Duration::from_secs(2);

/// The client the stream is read with: the API's TLS and token, a connect
/// timeout, a read-idle timeout, and no overall timeout.
pub fn stream_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    builder
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_IDLE)
        .build()
}

/// Follows job `id` until it ends, showing its progress on stderr; returns
/// its final state.
pub async fn run(api: &Api, id: &str) -> anyhow::Result<Value> {
    let mut screen = if std::io::stderr().is_terminal() {
        Screen::Bars(render::Bars::new())
    } else {
        Screen::Plain(render::Plain::new(std::io::stderr()))
    };
    let mut view = View::new(id);
    follow(api, id, &mut view, &mut screen).await?;
    // The tree's last counts may come after the job's end: read them.
    if let Ok(tree) = api.get(&format!("/v1/jobs/{id}/tree")).await {
        view.counts = Counts::from_json(&tree["counts"]);
        view.tree = Some(Tree::from_json(&tree));
    }
    screen.finish(&view);
    api.job(id).await
}

/// Where the screen goes.
enum Screen {
    Bars(render::Bars),
    Plain(render::Plain<std::io::Stderr>),
}

impl Screen {
    fn show(&mut self, view: &View, change: Change) {
        match self {
            Self::Bars(bars) if change != Change::Nothing => bars.draw(view),
            Self::Bars(_) => {}
            Self::Plain(plain) => match change {
                Change::Snapshot => {
                    plain.job(view);
                    plain.counts(view, std::time::Instant::now(), false);
                }
                Change::Status => plain.job(view),
                Change::Counts => plain.counts(view, std::time::Instant::now(), false),
                Change::Progress | Change::Nothing => {}
            },
        }
    }

    /// Once a second: what is due (held-back counts, a new rate).
    fn tick(&mut self, view: &View) {
        match self {
            Self::Bars(bars) => bars.draw(view),
            Self::Plain(plain) => plain.counts(view, std::time::Instant::now(), false),
        }
    }

    fn note(&mut self, line: &str) {
        match self {
            Self::Bars(bars) => bars.note(line),
            Self::Plain(plain) => plain.note(line),
        }
    }

    fn finish(&mut self, view: &View) {
        match self {
            Self::Bars(bars) => {
                bars.draw(view);
                bars.finish();
            }
            Self::Plain(plain) => {
                plain.job(view);
                plain.counts(view, std::time::Instant::now(), true);
            }
        }
    }
}

/// Why the stream could not be opened.
enum OpenError {
    /// The coordinator refused (an unknown job, a bad token): stop.
    Refused(anyhow::Error),
    /// It did not answer, or failed (5xx): try again.
    Unanswered(anyhow::Error),
}

async fn open(api: &Api, id: &str, last_id: Option<&str>) -> Result<reqwest::Response, OpenError> {
    let url = format!("{}/v1/jobs/{id}/events", api.base());
    let mut request = api
        .stream()
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(last) = last_id {
        request = request.header("last-event-id", last);
    }
    // The answer's head comes within the request timeout, as any other
    // request's; the stream after it has only the read-idle timeout.
    let sent = tokio::time::timeout(api.timeout(), request.send())
        .await
        .map_err(|_| OpenError::Unanswered(api.silent()))?;
    let response = sent.map_err(|e| {
        OpenError::Unanswered(if e.is_timeout() && !e.is_connect() {
            anyhow::anyhow!(
                "the coordinator at {} did not answer the event stream's request within {}s",
                tributary_common::config::mask_url(api.base()),
                READ_IDLE.as_secs()
            )
        } else {
            api.unanswered(e)
        })
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let refusal = api.refusal(status, &body, &format!("the events of job {id}"));
    Err(if status.is_server_error() {
        OpenError::Unanswered(refusal)
    } else {
        OpenError::Refused(refusal)
    })
}

/// What the once-a-second read brings: `/tree`, and the job if asked.
type Poll<'a> = Pin<Box<dyn Future<Output = (Option<Value>, Option<Value>)> + 'a>>;

/// Reads events into `view` until the job is terminal.
async fn follow(api: &Api, id: &str, view: &mut View, screen: &mut Screen) -> anyhow::Result<()> {
    // The first connection's failure is the command's: nothing was shown.
    let mut response = match open(api, id, None).await {
        Ok(r) => r,
        Err(OpenError::Refused(e) | OpenError::Unanswered(e)) => return Err(e),
    };
    let mut decoder = sse::Decoder::new();
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(TREE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut poll: Option<Poll<'_>> = None;
    let mut job_read = Instant::now();
    while !view.job.terminal() {
        let lost = tokio::select! {
            chunk = response.chunk() => match chunk {
                Ok(Some(bytes)) => {
                    failures = 0;
                    for event in decoder.push(&bytes) {
                        if event.id.is_some() {
                            last_id.clone_from(&event.id);
                        }
                        // A data line that is not JSON is not ours to show.
                        if let Ok(data) = serde_json::from_str::<Value>(&event.data) {
                            let change = view.apply(&event.event, &data);
                            screen.show(view, change);
                        }
                    }
                    None
                }
                Ok(None) => Some("the coordinator closed the stream".to_owned()),
                Err(e) if e.is_timeout() => Some(format!(
                    "nothing, not even a keep-alive, for {}s",
                    READ_IDLE.as_secs()
                )),
                Err(e) => Some(tributary_common::config::error_chain(&e.without_url())),
            },
            got = async {
                match poll.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            } => {
                poll = None;
                if let (Some(tree), _) = &got {
                    view.tree = Some(Tree::from_json(tree));
                }
                if let (_, Some(job)) = &got
                    && view.apply_job(job)
                {
                    screen.show(view, Change::Status);
                }
                screen.tick(view);
                None
            },
            _ = tick.tick(), if poll.is_none() => {
                let read_job = !view.root_id.is_empty()
                    && view.root_id != id
                    && job_read.elapsed() >= JOB_EVERY;
                if read_job {
                    job_read = Instant::now();
                }
                poll = Some(Box::pin(async move {
                    let tree = api.get(&format!("/v1/jobs/{id}/tree")).await.ok();
                    let job = if read_job { api.job(id).await.ok() } else { None };
                    (tree, job)
                }));
                None
            },
        };
        let Some(mut why) = lost else { continue };
        // Dropped: open it again from the last event seen.
        loop {
            failures += 1;
            if failures > RECONNECTS {
                bail!(
                    "lost the event stream of job {id} at {} {RECONNECTS} times in a row: {why}",
                    tributary_common::config::mask_url(api.base())
                );
            }
            let wait = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(8))
                .min(MAX_BACKOFF);
            screen.note(&format!(
                "event stream lost ({why}); reconnecting in {wait:?} ({failures}/{RECONNECTS})"
            ));
            tokio::time::sleep(wait).await;
            match open(api, id, last_id.as_deref()).await {
                Ok(r) => {
                    response = r;
                    decoder = sse::Decoder::new();
                    break;
                }
                Err(OpenError::Refused(e)) => return Err(e),
                Err(OpenError::Unanswered(e)) => why = format!("{e:#}"),
            }
        }
    }
    Ok(())
}
