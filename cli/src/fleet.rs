//! A local fleet: one coordinator and N workers, each a separate process of
//! this same binary, logging to files under a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `url` on the same server with database `name` (query kept): the demo
/// and the bench each use a database of their own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = base[scheme_end..]
        .find('/')
        .map_or(base, |slash| &base[..scheme_end + slash]);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The database `url` names (`None` when it names none).
pub fn database_of(url: &str) -> Option<&str> {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let after_scheme = base.find("://").map_or(base, |i| &base[i + 3..]);
    after_scheme
        .split_once('/')
        .map(|(_, db)| db)
        .filter(|db| !db.is_empty())
}

/// How to start a fleet.
pub struct FleetOptions {
    /// Postgres URL for the coordinator.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Namespace of the fleet's queues.
    pub namespace: String,
    /// Worker processes.
    pub workers: usize,
    /// Phases each worker runs at once.
    pub concurrency: usize,
    /// The only directory the workers' demo kinds may read
    /// (`TRIBUTARY_DEMO_ROOT`); `None` gives them an empty one, so a fleet
    /// started for the generated corpus or the bench reads no files.
    pub demo_root: Option<PathBuf>,
}

/// A running fleet.
pub struct Fleet {
    coordinator: Child,
    workers: Vec<Child>,
    /// The coordinator's API.
    pub url: String,
    /// Where the processes log.
    pub log_dir: PathBuf,
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(dir.join(name))
        .with_context(|| format!("creating a log file in {}", dir.display()))
}

/// The first line in a log that says a service cannot be reached.
fn unreachable_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find(|l| l.contains("cannot reach")).map(|l| {
        let start = l.find("cannot reach").unwrap_or(0);
        l[start..].to_owned()
    })
}

impl Fleet {
    /// Starts the coordinator, waits until it listens, then the workers,
    /// waiting until each consumes.
    pub async fn start(opts: &FleetOptions) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the tributary binary")?;
        let log_dir = std::env::temp_dir().join(format!("tributary-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let coordinator_log = log_dir.join("coordinator.log");
        let mut coordinator = Command::new(&exe)
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--namespace",
                &opts.namespace,
            ])
            .args([
                "--database-url",
                &opts.database_url,
                "--amqp-url",
                &opts.amqp_url,
            ])
            // A local fleet listens on loopback only and runs open: tokens
            // from this shell would lock its own demo client out.
            .env_remove("TRIBUTARY_API_TOKEN")
            .env_remove("TRIBUTARY_READ_TOKEN")
            .env_remove("TRIBUTARY_METRICS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(log_file(&log_dir, "coordinator.log")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the coordinator")?;
        let stdout = coordinator.stdout.take().context("coordinator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let addr = loop {
            tokio::select! {
                line = lines.next_line() => match line? {
                    Some(l) if l.starts_with("listening on ") => break l["listening on ".len()..].to_owned(),
                    Some(_) => {}
                    None => bail!("the coordinator exited; see {}", coordinator_log.display()),
                },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if let Some(line) = unreachable_line(&coordinator_log) {
                        bail!("coordinator: {line}");
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        bail!("the coordinator did not start within 60 s; see {}", coordinator_log.display());
                    }
                }
            }
        };
        let url = format!("http://{addr}");
        let demo_root = match &opts.demo_root {
            Some(root) => root.clone(),
            None => {
                let empty = log_dir.join("demo-root");
                std::fs::create_dir_all(&empty)
                    .with_context(|| format!("creating {}", empty.display()))?;
                empty
            }
        };
        let mut workers = Vec::new();
        for i in 0..opts.workers {
            let name = format!("worker-{i}.log");
            workers.push(
                Command::new(&exe)
                    .args([
                        "worker",
                        "--namespace",
                        &opts.namespace,
                        "--coordinator-url",
                        &url,
                    ])
                    .args([
                        "--amqp-url",
                        &opts.amqp_url,
                        "--concurrency",
                        &opts.concurrency.to_string(),
                    ])
                    .env(tributary_worker::kinds::demo::ROOT_ENV, &demo_root)
                    .env_remove("TRIBUTARY_API_TOKEN")
                    .env_remove("TRIBUTARY_READ_TOKEN")
                    .stdout(Stdio::null())
                    .stderr(log_file(&log_dir, &name)?)
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting a worker")?,
            );
        }
        // A worker consumes once it has declared its queues: only then can
        // a submission be routed.
        for i in 0..opts.workers {
            let path = log_dir.join(format!("worker-{i}.log"));
            let started = Instant::now();
            loop {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.contains("worker consuming") {
                    break;
                }
                if let Some(line) = unreachable_line(&path) {
                    bail!("worker: {line}");
                }
                if started.elapsed() > Duration::from_secs(60) {
                    bail!(
                        "worker {i} did not start within 60 s; see {}",
                        path.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(Self {
            coordinator,
            workers,
            url,
            log_dir,
        })
    }

    /// Process ids: the coordinator's, then the workers'.
    pub fn pids(&self) -> (Option<u32>, Vec<u32>) {
        (
            self.coordinator.id(),
            self.workers.iter().filter_map(Child::id).collect(),
        )
    }

    /// Stops the workers, then the coordinator, with SIGTERM; kills what has
    /// not exited within 15 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            terminate(w);
        }
        for w in &mut self.workers {
            wait_or_kill(w).await;
        }
        terminate(&self.coordinator);
        wait_or_kill(&mut self.coordinator).await;
        Ok(())
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

async fn wait_or_kill(child: &mut Child) {
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{database_of, with_database};

    #[test]
    fn database_of_reads_the_name() {
        assert_eq!(
            database_of("postgres://u@h:5432/tributary"),
            Some("tributary")
        );
        assert_eq!(database_of("postgres://h/x?sslmode=disable"), Some("x"));
        assert_eq!(database_of("postgres://u@h:5432"), None);
        assert_eq!(database_of("postgres://u@h:5432/"), None);
    }

    #[test]
    fn with_database_replaces_the_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/tributary", "d"),
            "postgres://u@h:5432/d"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "d"),
            "postgres://u@h:5432/d"
        );
        assert_eq!(
            with_database("postgres://h/x?sslmode=disable", "d"),
            "postgres://h/d?sslmode=disable"
        );
    }
}
