//! A small client for the coordinator's HTTP API.

use std::time::Duration;

use anyhow::Context;
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
    /// For the event stream (`watch`): no overall timeout, a read-idle one.
    stream: reqwest::Client,
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
        let stream = crate::watch::stream_client(
            tributary_common::tls::http_client_builder_with_token(token)?,
        )
        .context("building the HTTP client for event streams")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            stream,
            timeout,
        })
    }

    /// The coordinator's base URL (it may hold credentials: mask it before
    /// showing it).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The longest one request may take (`--timeout-secs`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client for event streams ([`crate::watch::stream_client`]).
    pub fn stream(&self) -> &reqwest::Client {
        &self.stream
    }

    /// GETs `path` (with its query string) and reads the JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.answer(self.http.get(&url), &url).await
    }

    /// Why a request got no answer, in words that say what to do.
    pub(crate) fn unanswered(&self, e: reqwest::Error) -> anyhow::Error {
        // Messages never carry credentials a URL may hold (reqwest's errors
        // quote the URL: it is left out and the masked one shown instead).
        let base = tributary_common::config::mask_url(&self.base);
        let (connect, timeout) = (e.is_connect(), e.is_timeout());
        let chain = tributary_common::config::error_chain(&e.without_url());
        if connect {
            anyhow::anyhow!("cannot reach the coordinator at {base}: is it running? ({chain})")
        } else if timeout {
            self.silent()
        } else {
            anyhow::anyhow!("no answer from the coordinator at {base} ({chain})")
        }
    }

    /// A request unanswered within the request timeout, in words that say
    /// what to do.
    pub(crate) fn silent(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "the coordinator at {} did not answer within {:?}: is it overloaded or hung? (raise --timeout-secs or TRIBUTARY_CLI_TIMEOUT_SECS if it is only slow)",
            tributary_common::config::mask_url(&self.base),
            self.timeout
        )
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
            return Err(self.refusal(status, &body, &what));
        }
        Ok(body)
    }

    /// A 4xx/5xx answer (`body` the coordinator's JSON) to the request for
    /// `what`, as an error carrying the coordinator's reason.
    pub(crate) fn refusal(
        &self,
        status: reqwest::StatusCode,
        body: &Value,
        what: &str,
    ) -> anyhow::Error {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        if status == reqwest::StatusCode::NOT_FOUND && reason.starts_with("no job ") {
            return anyhow::anyhow!(
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
        anyhow::anyhow!("{what}: {status}: {reason}{hint}")
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

/// Follows a job until it is terminal, showing its progress on stderr
/// ([`crate::watch`]); returns its final state.
pub async fn watch(api: &Api, id: &str) -> anyhow::Result<Value> {
    crate::watch::run(api, id).await
}
