//! The registry: job kinds by name, behind one object-safe trait so the
//! runtime can call any of them.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_bytes::ByteBuf;
use tributary_common::wire;

use crate::context::Context;
use crate::job::{Job, PhaseError, Step};

/// A step with the output already encoded.
pub(crate) type RawStep = Step<ByteBuf>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`Job`] with its types erased.
pub(crate) trait ErasedJob: Send + Sync {
    fn start(&self) -> &'static str;
    fn timeout(&self) -> std::time::Duration;
    fn run<'a>(
        &'a self,
        phase: &'a str,
        input: &'a [u8],
        ctx: &'a mut Context,
    ) -> BoxFuture<'a, Result<RawStep, PhaseError>>;
}

impl<J: Job> ErasedJob for J {
    fn start(&self) -> &'static str {
        J::START
    }

    fn timeout(&self) -> std::time::Duration {
        J::TIMEOUT
    }

    fn run<'a>(
        &'a self,
        phase: &'a str,
        input: &'a [u8],
        ctx: &'a mut Context,
    ) -> BoxFuture<'a, Result<RawStep, PhaseError>> {
        Box::pin(async move {
            let input: J::Input = wire::from_payload(input).map_err(|e| {
                PhaseError::permanent(format!("input does not fit job kind {:?}: {e}", J::KIND))
            })?;
            let step = Job::run(self, phase, input, ctx).await?;
            Ok(match step {
                Step::Complete(output) => Step::Complete(
                    wire::to_payload(&output)
                        .map_err(|e| PhaseError::permanent(format!("output: {e}")))?,
                ),
                Step::Next(p) => Step::Next(p),
                Step::Spawn { children, then } => Step::Spawn { children, then },
                Step::Wait { then } => Step::Wait { then },
            })
        })
    }
}

/// Job kinds a worker serves.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedJob>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind (a later registration of the same name replaces it).
    pub fn register<J: Job>(&mut self, job: J) -> &mut Self {
        self.kinds.insert(J::KIND, Arc::new(job));
        self
    }

    /// The names served, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub(crate) fn get(&self, kind: &str) -> Option<Arc<dyn ErasedJob>> {
        self.kinds.get(kind).cloned()
    }
}
