//! A small client for the coordinator's HTTP API.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// How long one request may take, connecting included, unless
/// `--timeout-secs` (`TRIBUTARY_CLI_TIMEOUT_SECS`) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take (at most the request timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator's API at one base URL.
pub struct Api {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:7070`), sending no
    /// token, with the default timeouts; exits 2 if `TRIBUTARY_CA_FILE` is
    /// unusable (a configuration error: stop here).
    pub fn new(base: &str) -> Self {
        Self::build(base, None, DEFAULT_TIMEOUT).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        })
    }

    /// A client for `base`, sending `Authorization: Bearer <token>` on
    /// every request when a token is given (the header is marked
    /// sensitive, so it is never logged). Every request, connecting
    /// included, ends within `timeout`: a coordinator that accepts and never
    /// answers is an error naming it, not a hang.
    pub fn build(base: &str, token: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let http = tributary_common::tls::http_client_builder_with_token(token)?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            timeout,
        })
    }

    /// GETs `path` (with its query string) and reads the JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.answer(self.http.get(&url), &url).await
    }

    /// Why a request got no answer, in words that say what to do.
    fn unanswered(&self, e: reqwest::Error) -> anyhow::Error {
        // Messages never carry credentials a URL may hold (reqwest's errors
        // quote the URL: it is left out and the masked one shown instead).
        let base = tributary_common::config::mask_url(&self.base);
        let (connect, timeout) = (e.is_connect(), e.is_timeout());
        let chain = tributary_common::config::error_chain(&e.without_url());
        if connect {
            anyhow::anyhow!("cannot reach the coordinator at {base}: is it running? ({chain})")
        } else if timeout {
            anyhow::anyhow!(
                "the coordinator at {base} did not answer within {:?}: is it overloaded or hung? (raise --timeout-secs or TRIBUTARY_CLI_TIMEOUT_SECS if it is only slow)",
                self.timeout
            )
        } else {
            anyhow::anyhow!("no answer from the coordinator at {base} ({chain})")
        }
    }

    /// Sends a request and reads its JSON answer; a 4xx/5xx becomes an
    /// error carrying the coordinator's reason.
    async fn answer(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let what = tributary_common::config::mask_url(what);
        let response = request.send().await.map_err(|e| self.unanswered(e))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            if e.is_timeout() {
                self.unanswered(e)
            } else {
                anyhow::anyhow!(
                    "reading the answer to {what}: {}",
                    tributary_common::config::error_chain(&e.without_url())
                )
            }
        })?;
        if !status.is_success() {
            let reason = body["error"].as_str().unwrap_or("no reason given");
            if status == reqwest::StatusCode::NOT_FOUND && reason.starts_with("no job ") {
                bail!(
                    "{reason}: the coordinator at {} does not know this id",
                    tributary_common::config::mask_url(&self.base)
                );
            }
            let hint = match status {
                reqwest::StatusCode::UNAUTHORIZED => {
                    " (set TRIBUTARY_API_TOKEN to the coordinator's API token)"
                }
                reqwest::StatusCode::FORBIDDEN => {
                    " (this token may only read; set TRIBUTARY_API_TOKEN to the coordinator's API token)"
                }
                _ => "",
            };
            bail!("{what}: {status}: {reason}{hint}");
        }
        Ok(body)
    }

    /// Submits a job; returns its id.
    pub async fn submit(
        &self,
        kind: &str,
        input: &Value,
        options: Option<&Value>,
    ) -> anyhow::Result<String> {
        self.submit_once(kind, input, options, None).await
    }

    /// Submits a job under an idempotency key, if given: the same key and
    /// request return the same job for 24 h. Returns its id.
    pub async fn submit_once(
        &self,
        kind: &str,
        input: &Value,
        options: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "kind": kind, "input": input });
        if let Some(o) = options {
            body["options"] = o.clone();
        }
        let mut request = self.http.post(format!("{}/v1/jobs", self.base)).json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let answer = self.answer(request, "submission").await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .context("the coordinator answered no id")
    }

    /// Steers a job and its subtree: `action` is `cancel`, `pause`,
    /// `resume` or `retry`, with an optional JSON body. Returns the answer
    /// (`{"id", "action", "status"}`).
    pub async fn steer(
        &self,
        id: &str,
        action: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/v1/jobs/{id}/{action}", self.base);
        let mut request = self.http.post(&url);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request, &format!("{action} {id}")).await
    }

    /// A job's status.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    /// One page of a job's log: the lines after line `after`.
    pub async fn logs(&self, id: &str, after: i64, limit: i64) -> anyhow::Result<Value> {
        self.get(&format!("/v1/jobs/{id}/logs?after={after}&limit={limit}"))
            .await
    }

    /// Why a job is not progressing (`GET /v1/jobs/{id}/waiting`).
    pub async fn waiting(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/jobs/{id}/waiting")).await
    }
}

/// One line describing a job's progress.
pub fn progress_line(job: &Value) -> String {
    let c = &job["children"];
    let total = c["expected"]
        .as_i64()
        .unwrap_or(c["total"].as_i64().unwrap_or(0));
    let done = c["completed"].as_i64().unwrap_or(0)
        + c["failed"].as_i64().unwrap_or(0)
        + c["cancelled"].as_i64().unwrap_or(0);
    let width = 30usize;
    let filled = if total > 0 {
        (done as usize * width) / total as usize
    } else {
        0
    };
    format!(
        "[{}{}] {done}/{total} children ({} failed) · {} · phase {} ({})",
        "=".repeat(filled.min(width)),
        " ".repeat(width - filled.min(width)),
        c["failed"].as_i64().unwrap_or(0),
        job["status"].as_str().unwrap_or("?"),
        job["phase"].as_str().unwrap_or("?"),
        job["phase_status"].as_str().unwrap_or("?"),
    )
}

/// Polls a job until it is terminal, redrawing one progress line on stderr.
pub async fn watch(api: &Api, id: &str) -> anyhow::Result<Value> {
    let mut stderr = std::io::stderr();
    loop {
        let job = api.job(id).await?;
        let _ = write!(stderr, "\r\x1b[2K{}", progress_line(&job));
        let _ = stderr.flush();
        if job["terminal"].as_bool().unwrap_or(false) {
            let _ = writeln!(stderr);
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
