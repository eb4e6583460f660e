//! TLS on every link we can test here: the coordinator to Postgres
//! (`sslmode=require`, `verify-full`), and the worker and the CLI to an
//! `https://` coordinator behind a TLS-terminating proxy. (`amqps://` is
//! covered by a unit test in `common::broker`: the shared RabbitMQ speaks
//! plain AMQP only.)
//!
//! This machine's Postgres must have TLS on (Debian's default: `ssl = on`
//! with the snakeoil certificate, issued to `localhost`). Without it these
//! tests fail, they do not skip.

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tributary_tests::tls_proxy::{TestPki, TlsProxy};
use tributary_tests::{AMQP_URL, ClusterOptions, PG_SERVER, TestCluster, bin};

const N: u64 = 300;

/// Connects to this machine's Postgres over TLS with `sslmode=require`;
/// panics with what to do if the server has no TLS.
async fn require_tls_postgres() -> PgConnection {
    let url = format!("{PG_SERVER}/postgres?sslmode=require");
    let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "Postgres at {PG_SERVER} refuses TLS ({e}): these tests need `ssl = on` \
             (Debian's default, with the snakeoil certificate)"
        )
    });
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "sslmode=require gave a connection without TLS");
    conn
}

/// The server's certificate file (`ssl_cert_file`), which must be readable
/// here to serve as its own root for `verify-full`.
async fn server_certificate(conn: &mut PgConnection) -> String {
    let path: String = sqlx::query_scalar("select current_setting('ssl_cert_file')")
        .fetch_one(&mut *conn)
        .await
        .expect("ssl_cert_file");
    let pem = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read Postgres's certificate {path}: {e}"));
    assert!(
        pem.contains("BEGIN CERTIFICATE"),
        "{path} is not a PEM certificate"
    );
    path
}

/// The coordinator's `application_name` in these tests, to tell its
/// connections from the harness's.
const APP_NAME: &str = "tributary-tls-test";

/// Asserts that every connection the coordinator holds to the cluster's
/// database is encrypted.
async fn assert_coordinator_uses_tls(c: &TestCluster) {
    let (conns, encrypted): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where s.ssl)
         from pg_stat_activity a join pg_stat_ssl s using (pid)
         where a.datname = $1 and a.backend_type = 'client backend'
           and a.application_name = $2",
    )
    .bind(&c.database)
    .bind(APP_NAME)
    .fetch_one(&c.pool)
    .await
    .expect("pg_stat_activity");
    assert!(
        conns > 0,
        "no coordinator connection to {} seen",
        c.database
    );
    assert_eq!(
        encrypted,
        conns,
        "{} of {conns} coordinator connections are not TLS",
        conns - encrypted
    );
}

#[tokio::test]
async fn coordinator_runs_a_fanout_over_postgres_sslmode_require() {
    drop(require_tls_postgres().await);
    let c = TestCluster::start_with(ClusterOptions {
        pg_params: Some(format!("sslmode=require&application_name={APP_NAME}")),
        ..Default::default()
    })
    .await;
    assert!(c.process_database_url.contains("?sslmode=require&"));
    let id = c.submit("bench.fanout", json!({ "n": N })).await;
    c.assert_fanout_exact(id, N, Duration::from_secs(120)).await;
    assert_coordinator_uses_tls(&c).await;
    c.shutdown().await;
}

#[tokio::test]
async fn coordinator_runs_a_fanout_over_postgres_verify_full() {
    // The snakeoil certificate is self-signed for `localhost`: trusted as
    // its own root, it verifies for that name.
    let mut conn = require_tls_postgres().await;
    let cert = server_certificate(&mut conn).await;
    drop(conn);
    let c = TestCluster::start_with(ClusterOptions {
        pg_server: Some("postgres://postgres@localhost:5432".into()),
        pg_params: Some(format!(
            "sslmode=verify-full&sslrootcert={cert}&application_name={APP_NAME}"
        )),
        ..Default::default()
    })
    .await;
    let id = c.submit("bench.fanout", json!({ "n": N })).await;
    c.assert_fanout_exact(id, N, Duration::from_secs(120)).await;
    assert_coordinator_uses_tls(&c).await;
    c.shutdown().await;
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_name() {
    // The same certificate names `localhost`, not `127.0.0.1`: verify-full
    // must refuse it, and the coordinator must say so in its retry line.
    let mut conn = require_tls_postgres().await;
    let cert = server_certificate(&mut conn).await;
    drop(conn);
    let url = format!("{PG_SERVER}/postgres?sslmode=verify-full&sslrootcert={cert}");
    let options = PgConnectOptions::from_str(&url).expect("URL");
    let err = PgConnection::connect_with(&options)
        .await
        .expect_err("verify-full to 127.0.0.1 must fail: the certificate is for localhost");
    let text = format!("{err}");
    assert!(
        text.contains("certificate") && text.contains("127.0.0.1"),
        "not a clear certificate-name error: {text}"
    );

    let database = format!("trib_tls_refused_{}", std::process::id());
    let url = format!("{PG_SERVER}/{database}?sslmode=verify-full&sslrootcert={cert}");
    let mut coordinator = Command::new(bin("tributary-coordinator"))
        .env("TRIBUTARY_LISTEN", "127.0.0.1:0")
        .env("TRIBUTARY_DATABASE_URL", &url)
        .env("TRIBUTARY_AMQP_URL", AMQP_URL)
        .env(
            "TRIBUTARY_NAMESPACE",
            format!("tlsrefused{}", std::process::id()),
        )
        .env_remove("TRIBUTARY_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the coordinator");
    let mut lines = BufReader::new(coordinator.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("cannot reach Postgres") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("the coordinator did not report the refused certificate within 30 s");
    let _ = coordinator.kill().await;
    assert!(
        line.contains("certificate") && line.contains("sslmode=verify-full"),
        "the coordinator's line does not say why: {line}"
    );
}

/// Runs the CLI's `status` against `url`; returns (success, stdout, stderr).
async fn cli_status(
    url: &str,
    ca: Option<&std::path::Path>,
    id: uuid::Uuid,
) -> (bool, String, String) {
    let mut cmd = Command::new(bin("tributary"));
    cmd.args(["status", &id.to_string()])
        .env("TRIBUTARY_COORDINATOR_URL", url)
        .env_remove("TRIBUTARY_CA_FILE");
    if let Some(ca) = ca {
        cmd.env("TRIBUTARY_CA_FILE", ca);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the CLI answered within 30 s")
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn workers_and_the_cli_reach_an_https_coordinator() {
    let pki = TestPki::generate();
    let proxy = TlsProxy::start(&pki).await;
    let ca = pki.ca().display().to_string();
    // The workers know the coordinator only by its https URL.
    let c = TestCluster::start_with(ClusterOptions {
        worker_env: vec![
            ("TRIBUTARY_COORDINATOR_URL".into(), proxy.url()),
            ("TRIBUTARY_CA_FILE".into(), ca),
        ],
        ..Default::default()
    })
    .await;
    proxy.forward_to(c.listen.parse().expect("listen address"));

    // The aggregate pages its children's results through the proxy.
    let id = c.submit("bench.fanout", json!({ "n": N })).await;
    c.assert_fanout_exact(id, N, Duration::from_secs(120)).await;
    assert!(
        proxy.handshakes() >= 1,
        "the aggregate did not read its children through the https proxy"
    );

    // The CLI over https, trusting the test CA.
    let handshakes = proxy.handshakes();
    let (ok, stdout, stderr) = cli_status(&proxy.url(), Some(&pki.ca()), id).await;
    assert!(ok, "tributary status over https failed: {stderr}");
    let job: Value = serde_json::from_str(&stdout).expect("status prints JSON");
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["output"]["sum"], N * (N - 1) / 2, "{job}");
    assert!(
        proxy.handshakes() > handshakes,
        "the CLI did not go through the proxy"
    );

    // Without the CA, the certificate is refused with a clear error.
    let (ok, _, stderr) = cli_status(&proxy.url(), None, id).await;
    assert!(!ok, "an untrusted certificate was accepted");
    assert!(
        stderr.contains("certificate"),
        "not a certificate error: {stderr}"
    );

    // A CA file that cannot be read stops the CLI with a message naming it.
    let missing = std::path::Path::new("/nonexistent/tributary-ca.pem");
    let (ok, _, stderr) = cli_status(&proxy.url(), Some(missing), id).await;
    assert!(!ok && stderr.contains("TRIBUTARY_CA_FILE"), "{stderr}");

    c.shutdown().await;
}
