//! Who a worker is, for operators: `"{pid}-{random}@{host}"`, made once when
//! the worker starts and sent in every `Started` report, so the coordinator
//! can say which worker holds a running phase's lease
//! (`GET /v1/jobs/{id}/waiting`, `tributary why`).
//!
//! The process id finds the process on its host; the random part tells
//! apart two workers that got the same process id (containers often run
//! their one process as pid 1). The host is `HOSTNAME` if set, else the
//! kernel's host name.

use tributary_common::wire;

/// This worker's identity: `"{pid}-{4 hex digits}@{host}"`, cleaned and
/// capped by [`wire::worker_identity`].
pub fn new() -> String {
    let raw = format!(
        "{}-{:04x}@{}",
        std::process::id(),
        fastrand::u16(..),
        host()
    );
    wire::worker_identity(&raw).unwrap_or(raw)
}

/// The host name: `HOSTNAME`, else `/proc/sys/kernel/hostname` or
/// `/etc/hostname`, else `"unknown"`.
fn host() -> String {
    host_from(
        std::env::var("HOSTNAME").ok(),
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok()),
    )
}

fn host_from(env: Option<String>, file: Option<String>) -> String {
    [env, file]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_comes_from_the_environment_then_the_kernel() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(host_from(s("web-1"), s("kernel\n")), "web-1");
        assert_eq!(host_from(None, s("kernel\n")), "kernel");
        assert_eq!(host_from(s("  "), s("kernel\n")), "kernel");
        assert_eq!(host_from(None, None), "unknown");
    }

    #[test]
    fn an_identity_names_the_process_and_is_clean() {
        let id = new();
        let (who, host) = id.split_once('@').expect("id@host");
        assert!(who.starts_with(&format!("{}-", std::process::id())), "{id}");
        assert!(!host.is_empty());
        assert_eq!(wire::worker_identity(&id).as_deref(), Some(id.as_str()));
    }
}
