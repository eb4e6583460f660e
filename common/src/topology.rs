//! Names of every queue and exchange, all under one namespace prefix so
//! several deployments (and parallel tests) share a broker without crossing.
//!
//! ```text
//!  {ns}.tasks (direct) ──kind──► {ns}.task.{kind}  (quorum, one per job kind)
//!  default exchange ─────────► {ns}.reports      (quorum, worker → coordinator)
//!  {ns}.dlx (fanout) ────────► {ns}.dead         (quorum, dead letters)
//!  {ns}.control (fanout) ────► one exclusive queue per worker (stop orders)
//! ```

/// Why a namespace was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid namespace {0:?}: use 1-64 characters from a-z, 0-9, '-' and '_'")]
pub struct InvalidNamespace(pub String);

/// Deliveries of one message before the broker dead-letters it, so a poison
/// message never crash-loops a worker.
pub const DELIVERY_LIMIT: i64 = 10;

/// The names for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    ns: String,
}

impl Topology {
    /// Validates the namespace.
    pub fn new(namespace: &str) -> Result<Self, InvalidNamespace> {
        let ok = !namespace.is_empty()
            && namespace.len() <= 64
            && namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self {
                ns: namespace.to_owned(),
            })
        } else {
            Err(InvalidNamespace(namespace.to_owned()))
        }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The direct exchange tasks are published to, routed by job kind.
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.ns)
    }

    /// The queue holding tasks of one job kind.
    pub fn task_queue(&self, kind: &str) -> String {
        format!("{}.task.{kind}", self.ns)
    }

    /// The queue workers publish reports to and coordinators consume.
    pub fn reports_queue(&self) -> String {
        format!("{}.reports", self.ns)
    }

    /// The exchange rejected and over-delivered messages go to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.ns)
    }

    /// The fanout exchange coordinators tell every worker which
    /// executions to stop through.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.ns)
    }

    /// The queue an operator inspects for dead letters.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace() {
        let t = Topology::new("prod-eu").expect("valid");
        assert_eq!(
            t.task_queue("demo.wordcount"),
            "prod-eu.task.demo.wordcount"
        );
        assert_eq!(t.reports_queue(), "prod-eu.reports");
        assert_eq!(t.dead_letter_queue(), "prod-eu.dead");
    }

    #[test]
    fn bad_namespaces_are_refused() {
        for bad in ["", "Upper", "has space", "dot.ted", &"x".repeat(65)] {
            assert!(Topology::new(bad).is_err(), "{bad:?}");
        }
    }
}
