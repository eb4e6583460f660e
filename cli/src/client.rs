//! A small client for the coordinator's HTTP API.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The coordinator's API at one base URL.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:7070`), sending no token.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            // A CA file that cannot be used is a configuration error: stop here.
            http: tributary_common::tls::http_client().unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(2)
            }),
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` on every
    /// request when a token is given (the header is marked sensitive, so it
    /// is never logged).
    pub fn with_token(mut self, token: Option<&str>) -> anyhow::Result<Self> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(self);
        };
        self.http = tributary_common::tls::http_client_with_token(Some(token))
            .context("building the HTTP client")?;
        Ok(self)
    }

    /// GETs `path` (with its query string) and reads the JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.answer(self.http.get(&url), &url).await
    }

    /// Sends a request and reads its JSON answer; a 4xx/5xx becomes an
    /// error carrying the coordinator's reason.
    async fn answer(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        // Messages never carry credentials a URL may hold (reqwest's errors
        // quote the URL: it is left out and the masked one shown instead).
        let what = tributary_common::config::mask_url(what);
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the coordinator at {}: is it running? ({})",
                tributary_common::config::mask_url(&self.base),
                tributary_common::config::error_chain(&e.without_url())
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            anyhow::anyhow!(
                "reading the answer to {what}: {}",
                tributary_common::config::error_chain(&e.without_url())
            )
        })?;
        if !status.is_success() {
            let hint = match status {
                reqwest::StatusCode::UNAUTHORIZED => {
                    " (set TRIBUTARY_API_TOKEN to the coordinator's API token)"
                }
                reqwest::StatusCode::FORBIDDEN => {
                    " (this token may only read; set TRIBUTARY_API_TOKEN to the coordinator's API token)"
                }
                _ => "",
            };
            bail!(
                "{what}: {status}: {}{hint}",
                body["error"].as_str().unwrap_or("no reason given")
            );
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

    /// A job's status.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    /// Prints a job's log.
    pub async fn logs(&self, id: &str) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let page = self
                .get(&format!("/v1/jobs/{id}/logs?after={after}&limit=1000"))
                .await?;
            let lines = page["logs"].as_array().cloned().unwrap_or_default();
            if lines.is_empty() {
                return Ok(());
            }
            for l in &lines {
                println!(
                    "{} {:5} {}",
                    l["at_ms"],
                    l["level"].as_str().unwrap_or(""),
                    l["message"].as_str().unwrap_or("")
                );
                after = l["id"].as_i64().unwrap_or(after);
            }
        }
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
