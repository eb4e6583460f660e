//! The dashboard (`/ui/`) in a real headless Chromium: a job appears live
//! on the jobs page, its tree counts reach the final numbers without a
//! reload, pause, resume and cancel from the buttons take effect, a failed
//! child's error is shown (and the child has its own URL), a token is asked
//! for and used, and the console stays free of errors throughout.
//!
//! The browser comes from `scripts/browser` (Debian's chromium and
//! chromium-driver); without it these tests fail. With
//! `TRIBUTARY_UI_SCREENSHOTS=docs/ui` they save the README's screenshots.

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::browser::{Browser, png_size};
use tributary_tests::{ClusterOptions, TestCluster};
use uuid::Uuid;

const LIVE: Duration = Duration::from_secs(30);

/// Fails the test with the console's errors, if any.
async fn assert_no_console_errors(b: &Browser, page: &str) {
    let errors = b.console_errors().await;
    assert!(
        errors.is_empty(),
        "console errors on the {page}: {errors:#?}"
    );
}

/// Saves a screenshot and checks it is 1280×800.
async fn shot(b: &Browser, name: &str) {
    let png = b.screenshot(name).await;
    assert_eq!(png_size(&png), (1280, 800), "{name}");
}

/// Waits until the job page's status badge says `status`.
async fn badge(b: &Browser, status: &str) {
    b.wait_for(
        &format!("the page to show {status}"),
        LIVE,
        &format!(
            "const b = document.querySelector('#job-status [data-status]'); \
             return b && b.dataset.status === '{status}'"
        ),
    )
    .await;
}

async fn status_of(c: &TestCluster, id: Uuid) -> String {
    c.job(id).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn completed_children(c: &TestCluster, id: Uuid) -> i64 {
    c.job(id).await["children"]["completed"]
        .as_i64()
        .unwrap_or_default()
}

async fn running_phases(c: &TestCluster, root: Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from jobs where root_id = $1 and phase_status = 'running' and parent_id is not null",
    )
    .bind(root)
    .fetch_one(&c.pool)
    .await
    .expect("count running")
}

#[tokio::test]
async fn a_job_appears_live_and_its_tree_counts_reach_the_end_without_a_reload() {
    let c = TestCluster::start().await;
    let b = Browser::start().await;
    b.goto(&format!("{}/ui/", c.url)).await;
    b.wait_for(
        "the jobs table",
        LIVE,
        "return document.querySelector('#jobs-body') && document.querySelector('#jobs-body').children.length",
    )
    .await;
    // A mark a reload would wipe out.
    b.eval("window.__noReload = true; return true").await;

    let n = 400;
    let id = c
        .submit("bench.fanout", json!({ "n": n, "sleep_ms": 20 }))
        .await;
    let row = format!("tr[data-job=\"{id}\"]");
    b.wait_for(
        "the new job's row on the jobs page",
        LIVE,
        &format!("return !!document.querySelector('{row}')"),
    )
    .await;
    shot(&b, "jobs.png").await;

    b.click(&format!("{row} a")).await;
    b.wait_for(
        "the job page",
        LIVE,
        "return !!document.querySelector('#tree-counts')",
    )
    .await;
    // Counted while it runs, from the event stream.
    let total = n + 1;
    b.wait_for(
        "some children counted while the tree runs",
        Duration::from_secs(60),
        "const t = document.querySelector('#tree-counts'); return t && Number(t.dataset.completed) > 1",
    )
    .await;
    shot(&b, "job.png").await;
    let done = b
        .wait_for(
            "the tree counts to reach the end",
            Duration::from_secs(90),
            &format!(
                "const t = document.querySelector('#tree-counts').dataset; \
                 return t.completed === '{total}' && t.total === '{total}' && t.failed === '0' && t"
            ),
        )
        .await;
    assert_eq!(done["running"], "0", "{done}");
    assert_eq!(done["pending"], "0", "{done}");
    c.wait_for(id, "completed", LIVE).await;
    badge(&b, "completed").await;
    assert_eq!(
        b.eval("return window.__noReload === true").await,
        Value::Bool(true),
        "the page reloaded"
    );
    assert_eq!(status_of(&c, id).await, "completed");
    // The per-phase bars and the rate panel are there too.
    let phases = b
        .eval(
            "return [...document.querySelectorAll('#tree [data-phase]')].map(e => e.dataset.phase)",
        )
        .await;
    assert!(
        phases.as_array().is_some_and(|p| !p.is_empty()),
        "no per-phase bars: {phases}"
    );
    assert_no_console_errors(&b, "jobs and job pages").await;

    b.goto(&format!("{}/ui/#/fleet", c.url)).await;
    b.wait_for(
        "the fleet page",
        LIVE,
        "return !!document.querySelector('#stats')",
    )
    .await;
    shot(&b, "fleet.png").await;
    assert_no_console_errors(&b, "fleet page").await;
    b.quit().await;
    c.shutdown().await;
}

#[tokio::test]
async fn pause_resume_and_cancel_from_the_buttons_take_effect() {
    let c = TestCluster::start().await;
    let b = Browser::start().await;
    let id = c
        .submit("bench.fanout", json!({ "n": 3000, "sleep_ms": 200 }))
        .await;
    b.goto(&format!("{}/ui/#/job/{id}", c.url)).await;
    b.wait_for(
        "the pause button to be enabled",
        LIVE,
        "const p = document.querySelector('#btn-pause'); return p && !p.disabled",
    )
    .await;
    c.eventually("some children completed", LIVE, || async {
        (completed_children(&c, id).await > 10).then_some(())
    })
    .await;

    // Pause: the confirmation first, then the job and its subtree hold.
    b.click("#btn-pause").await;
    b.wait_for(
        "the confirmation",
        LIVE,
        "return document.getElementById('confirm-dialog').open",
    )
    .await;
    assert_ne!(
        status_of(&c, id).await,
        "paused",
        "paused before confirming"
    );
    b.click("#confirm-yes").await;
    c.eventually("the job paused", LIVE, || async {
        (status_of(&c, id).await == "paused").then_some(())
    })
    .await;
    badge(&b, "paused").await;
    // The pause is carried down the tree and running phases finish; then
    // nothing more completes.
    c.eventually(
        "the pause walked and no child running",
        Duration::from_secs(60),
        || async {
            let walked = c.job(id).await["control_pending"] == json!([]);
            (walked && running_phases(&c, id).await == 0).then_some(())
        },
    )
    .await;
    let held = completed_children(&c, id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        completed_children(&c, id).await,
        held,
        "children completed while paused"
    );
    assert!(held < 3000, "the tree ended before the pause held");
    b.wait_for(
        "why it is still paused, in words",
        LIVE,
        "const w = document.getElementById('why'); return !w.hidden && w.innerText",
    )
    .await;
    shot(&b, "job-paused.png").await;

    // Resume: children complete again.
    b.wait_for(
        "the resume button to be enabled",
        LIVE,
        "const p = document.querySelector('#btn-resume'); return p && !p.disabled",
    )
    .await;
    b.click("#btn-resume").await;
    b.click("#confirm-yes").await;
    c.eventually("the job resumed", LIVE, || async {
        (status_of(&c, id).await != "paused").then_some(())
    })
    .await;
    c.eventually("children complete again", LIVE, || async {
        (completed_children(&c, id).await > held + 20).then_some(())
    })
    .await;

    // Cancel: declining the confirmation does nothing; confirming ends it.
    b.click("#btn-cancel").await;
    b.click("#confirm-no").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(
        status_of(&c, id).await,
        "cancelled",
        "cancelled without confirmation"
    );
    b.click("#btn-cancel").await;
    b.click("#confirm-yes").await;
    c.eventually("the job cancelled", LIVE, || async {
        (status_of(&c, id).await == "cancelled").then_some(())
    })
    .await;
    badge(&b, "cancelled").await;
    c.eventually("the tree's children cancelled", Duration::from_secs(60), || async {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs where root_id = $1 and status not in ('completed', 'failed', 'cancelled')",
        )
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("count open");
        (open == 0).then_some(())
    })
    .await;
    assert_no_console_errors(&b, "job page").await;
    b.quit().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_failed_childs_error_is_shown_and_the_child_has_its_own_url() {
    let c = TestCluster::start().await;
    let b = Browser::start().await;
    let id = c
        .submit(
            "bench.fanout",
            json!({ "n": 40, "fail_every": 10, "fail": "permanent" }),
        )
        .await;
    c.wait_for(id, "completed", Duration::from_secs(60)).await;
    b.goto(&format!("{}/ui/#/job/{id}", c.url)).await;
    let errors = b
        .wait_for(
            "the failed children and their errors",
            LIVE,
            "const rows = [...document.querySelectorAll('#failures-body tr')]; \
             return rows.length === 4 && rows.map(r => r.innerText)",
        )
        .await;
    for leaf in [0, 10, 20, 30] {
        assert!(
            errors.as_array().is_some_and(|rows| rows.iter().any(|r| r
                .as_str()
                .is_some_and(|t| t.contains(&format!("leaf {leaf} failed for good"))))),
            "leaf {leaf}'s error is not shown: {errors}"
        );
    }
    b.wait_for(
        "the tree's failed count",
        LIVE,
        "return document.querySelector('#tree-counts').dataset.failed === '4'",
    )
    .await;
    shot(&b, "job-failures.png").await;

    // Page through the children, filtered to the failed ones.
    b.click("#children-toggle").await;
    b.wait_for(
        "a page of children",
        LIVE,
        "return document.querySelectorAll('#children-page tr[data-child]').length === 40",
    )
    .await;

    // Drill into a failed child, then reach it again by its URL alone.
    let child = b
        .eval("return document.querySelector('#failures-body tr').dataset.failed")
        .await;
    let child = child.as_str().expect("a child id").to_owned();
    b.click("#failures-body tr a").await;
    let text = b
        .wait_for(
            "the child's error on its page",
            LIVE,
            "const e = document.getElementById('job-error'); return e && e.innerText",
        )
        .await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("failed for good")),
        "{text}"
    );
    b.goto("about:blank").await;
    b.goto(&format!("{}/ui/#/job/{child}", c.url)).await;
    b.wait_for(
        "the child's page by URL",
        LIVE,
        "const e = document.getElementById('job-error'); return e && e.innerText.includes('failed for good')",
    )
    .await;
    assert_no_console_errors(&b, "job and child pages").await;
    b.quit().await;
    c.shutdown().await;
}

#[tokio::test]
async fn the_page_asks_for_a_token_once_and_sends_it() {
    let token = "ui-test-token-0123456789";
    let c = TestCluster::start_with(ClusterOptions {
        coordinator_env: vec![("TRIBUTARY_API_TOKEN".into(), token.into())],
        worker_env: vec![("TRIBUTARY_API_TOKEN".into(), token.into())],
        client_token: Some(token.into()),
        ..ClusterOptions::default()
    })
    .await;
    let id = c.submit("bench.fanout", json!({ "n": 3 })).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/ui/", c.url)).await;
    b.wait_for(
        "the token dialog",
        LIVE,
        "return document.getElementById('token-dialog').open",
    )
    .await;
    shot(&b, "token.png").await;
    // The only console errors allowed here: the refused API calls.
    let errors = b.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("401"))),
        "{errors:#?}"
    );
    b.type_into("#token-input", token).await;
    b.click("#token-form button[type=submit]").await;
    b.wait_for(
        "the job listed with the token",
        LIVE,
        &format!("return !!document.querySelector('tr[data-job=\"{id}\"]')"),
    )
    .await;
    // Kept for the session: another page needs no second asking.
    b.goto(&format!("{}/ui/#/job/{id}", c.url)).await;
    b.wait_for(
        "the job page",
        LIVE,
        "return !!document.querySelector('#tree-counts')",
    )
    .await;
    assert_eq!(
        b.eval("return document.getElementById('token-dialog').open")
            .await,
        Value::Bool(false)
    );
    assert_no_console_errors(&b, "pages after the token").await;
    b.quit().await;
    c.shutdown().await;
}

#[tokio::test]
async fn the_page_and_its_assets_are_open_cache_busted_and_compressed() {
    let c = TestCluster::start_with(ClusterOptions {
        workers: 0,
        coordinator_env: vec![("TRIBUTARY_API_TOKEN".into(), "secret-token".into())],
        ..ClusterOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/ui/", c.url))
        .send()
        .await
        .expect("GET /ui/");
    assert_eq!(page.status(), 200, "the page needs no token");
    let h = page.headers().clone();
    assert_eq!(h["cache-control"], "no-cache");
    assert!(
        h["content-security-policy"]
            .to_str()
            .is_ok_and(|v| v.contains("script-src 'self'"))
    );
    let etag = h["etag"].clone();
    let html = page.text().await.expect("the page");
    let asset = html
        .split('"')
        .find(|s| s.starts_with("/ui/assets/app.") && s.ends_with(".js"))
        .expect("the script's hashed name")
        .to_owned();
    // Unchanged: 304.
    let again = http
        .get(format!("{}/ui/", c.url))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET /ui/ again");
    assert_eq!(again.status(), 304);
    // The asset: immutable, gzip to whoever takes it, plain otherwise.
    let gz = http
        .get(format!("{}{asset}", c.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET the asset");
    assert_eq!(gz.status(), 200);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert!(
        gz.headers()["cache-control"]
            .to_str()
            .is_ok_and(|v| v.contains("immutable"))
    );
    let gz_len = gz.bytes().await.expect("body").len();
    let plain = http
        .get(format!("{}{asset}", c.url))
        .send()
        .await
        .expect("GET the asset plain");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.expect("body");
    assert!(plain.starts_with(b"// Tributary dashboard"));
    assert!(gz_len * 2 < plain.len(), "{gz_len} vs {}", plain.len());
    // Another hash is not served; the API itself still needs the token.
    let stale = http
        .get(format!("{}/ui/assets/app.0000000000000000.js", c.url))
        .send()
        .await
        .expect("GET a stale name");
    assert_eq!(stale.status(), 404);
    let api = http
        .get(format!("{}/v1/jobs", c.url))
        .send()
        .await
        .expect("GET /v1/jobs");
    assert_eq!(api.status(), 401);
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/ui", c.url))
        .send()
        .await
        .expect("GET /ui");
    assert_eq!(redirect.status(), 308);
    c.shutdown().await;
}

/// Load time of a job page over a tree of 100,000 children (the issue asks
/// for under a second on this machine). Ignored by default: the tree takes
/// minutes to build. Run it with
/// `cargo nextest run --run-ignored only -E 'test(/100k/)'`.
#[tokio::test]
#[ignore = "builds a 100k-child tree: minutes"]
async fn a_100k_child_job_page_loads_within_a_second() {
    let c = TestCluster::start().await;
    let id = c
        .submit("bench.fanout", json!({ "n": 100_000, "batch": 10_000 }))
        .await;
    c.eventually("the fan-out sealed", Duration::from_secs(300), || async {
        let j = c.job(id).await;
        (j["children"]["expected"].as_i64() == Some(100_000)).then_some(())
    })
    .await;
    let b = Browser::start().await;
    let mut worst: f64 = 0.0;
    for _ in 0..3 {
        b.goto("about:blank").await;
        b.goto(&format!("{}/ui/#/job/{id}", c.url)).await;
        let ms = b
            .wait_for(
                "the tree's counts",
                LIVE,
                "const m = performance.getEntriesByName('tributary:tree')[0]; \
                 return m && document.querySelector('#rate-value') && m.startTime",
            )
            .await
            .as_f64()
            .expect("a time");
        eprintln!("job page of a 100k-child tree: tree counts shown after {ms:.0} ms");
        worst = worst.max(ms);
    }
    assert!(worst < 1000.0, "the job page took {worst:.0} ms");
    assert_no_console_errors(&b, "100k job page").await;
    b.quit().await;
    c.shutdown().await;
}
