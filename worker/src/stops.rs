//! Stop orders from coordinators (the control exchange): executions this
//! worker must not start, or must abandon. A job was cancelled, or paused
//! before its phase started, or a report of the execution was fenced (its
//! lease ran out, its job moved on). A stopped task is acked without
//! running; a running execution sees `ctx.cancelled()` resolve, and its
//! outcome is discarded (the coordinator would fence it anyway).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tributary_common::job::DispatchToken;

/// Stop orders remembered: the oldest are forgotten past this (a task
/// stopped that long ago has been dropped or fenced already).
const REMEMBERED: usize = 500_000;

/// The stop orders this worker has heard, and its running executions.
#[derive(Default)]
pub(crate) struct Stops {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    stopped: HashSet<DispatchToken>,
    order: VecDeque<DispatchToken>,
    running: HashMap<DispatchToken, CancellationToken>,
}

impl Stops {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // step below is a single insert or remove).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `tokens` and cancels their running executions; returns
    /// how many were running.
    pub(crate) fn stop(&self, tokens: &[DispatchToken]) -> usize {
        let mut inner = self.lock();
        let mut hit = 0;
        for t in tokens {
            if inner.stopped.insert(*t) {
                inner.order.push_back(*t);
            }
            if let Some(cancel) = inner.running.get(t) {
                cancel.cancel();
                hit += 1;
            }
        }
        while inner.order.len() > REMEMBERED {
            if let Some(old) = inner.order.pop_front() {
                inner.stopped.remove(&old);
            }
        }
        hit
    }

    /// Whether `token`'s execution was ordered to stop.
    pub(crate) fn is_stopped(&self, token: &DispatchToken) -> bool {
        self.lock().stopped.contains(token)
    }

    /// Registers a running execution; it is cancelled at once if its stop
    /// order came first. Deregistered when the guard drops.
    pub(crate) fn running(
        self: &Arc<Self>,
        token: DispatchToken,
        cancel: CancellationToken,
    ) -> Running {
        let mut inner = self.lock();
        if inner.stopped.contains(&token) {
            cancel.cancel();
        }
        inner.running.insert(token, cancel);
        Running {
            stops: self.clone(),
            token,
        }
    }
}

/// A registered execution (see [`Stops::running`]).
pub(crate) struct Running {
    stops: Arc<Stops>,
    token: DispatchToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stops.lock().running.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u64) -> DispatchToken {
        DispatchToken {
            job_id: uuid::Uuid::from_u64_pair(0, n),
            seq: 1,
            attempt: 1,
            nonce: n,
        }
    }

    #[test]
    fn a_stop_cancels_the_running_execution_and_is_remembered() {
        let stops = Arc::new(Stops::default());
        let cancel = CancellationToken::new();
        let guard = stops.running(token(1), cancel.clone());
        assert_eq!(stops.stop(&[token(1), token(2)]), 1);
        assert!(cancel.is_cancelled());
        assert!(stops.is_stopped(&token(2)));
        drop(guard);
        assert_eq!(stops.stop(&[token(1)]), 0, "deregistered on drop");
    }

    #[test]
    fn a_stop_that_came_first_cancels_at_registration() {
        let stops = Arc::new(Stops::default());
        stops.stop(&[token(3)]);
        let cancel = CancellationToken::new();
        let _guard = stops.running(token(3), cancel.clone());
        assert!(cancel.is_cancelled());
        let other = CancellationToken::new();
        let _g2 = stops.running(token(4), other.clone());
        assert!(!other.is_cancelled());
    }

    #[test]
    fn only_the_latest_orders_are_remembered() {
        let stops = Stops::default();
        let many: Vec<DispatchToken> = (0..REMEMBERED as u64 + 10).map(token).collect();
        stops.stop(&many);
        assert!(!stops.is_stopped(&token(0)));
        assert!(stops.is_stopped(&token(REMEMBERED as u64 + 9)));
    }
}
