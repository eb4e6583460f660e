//! The handler trait a job kind implements, and the values it returns.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_common::job::JobOptions;
use tributary_common::wire::{self, ChildSpec};

use crate::context::Context;

/// A job kind: a stable name, typed input and output, and a handler that
/// runs one named phase at a time and says what happens next.
///
/// ```no_run
/// use tributary_worker::{Context, Job, PhaseError, Step};
///
/// struct Double;
///
/// impl Job for Double {
///     const KIND: &'static str = "example.double";
///     type Input = u64;
///     type Output = u64;
///
///     async fn run(&self, _phase: &str, input: u64, _ctx: &mut Context) -> Result<Step<u64>, PhaseError> {
///         Ok(Step::Complete(input * 2))
///     }
/// }
/// ```
pub trait Job: Send + Sync + 'static {
    /// The kind's name: part of the durable contract (stored with every job
    /// and used as the routing key), so renaming it is a migration.
    const KIND: &'static str;
    /// The phase a new job runs first.
    const START: &'static str = "start";
    /// How long one execution of a phase may run before it fails as
    /// retryable (default one hour). A worker that hangs as a whole is
    /// caught by the coordinator's lease instead.
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
    /// The input, decoded from MessagePack for every phase.
    type Input: DeserializeOwned + Send;
    /// The output of the last phase.
    type Output: Serialize + Send;

    /// Runs `phase`. Called again for a retried or redelivered phase, with
    /// the last checkpoint available through [`Context::state`].
    fn run(
        &self,
        phase: &str,
        input: Self::Input,
        ctx: &mut Context,
    ) -> impl Future<Output = Result<Step<Self::Output>, PhaseError>> + Send;
}

/// What happens after a phase.
#[derive(Debug)]
pub enum Step<O> {
    /// The job is done with this output.
    Complete(O),
    /// Run this phase next.
    Next(String),
    /// Spawn these children (after any spawned with [`Context::spawn`]) and
    /// resume at phase `then` once every child is terminal.
    Spawn {
        /// The children.
        children: Vec<Child>,
        /// The phase after the fan-in.
        then: String,
    },
    /// The children spawned with [`Context::spawn`] are all there: resume
    /// at phase `then` once every one is terminal. With none spawned, `then`
    /// runs at once.
    Wait {
        /// The phase after the fan-in.
        then: String,
    },
}

impl<O> Step<O> {
    /// [`Step::Next`].
    pub fn next(phase: impl Into<String>) -> Self {
        Self::Next(phase.into())
    }

    /// [`Step::Spawn`].
    pub fn spawn(children: Vec<Child>, then: impl Into<String>) -> Self {
        Self::Spawn {
            children,
            then: then.into(),
        }
    }

    /// [`Step::Wait`].
    pub fn wait(then: impl Into<String>) -> Self {
        Self::Wait { then: then.into() }
    }
}

/// A child job to spawn.
#[derive(Debug, Clone)]
pub struct Child {
    pub(crate) spec: ChildSpec,
}

impl Child {
    /// A child of kind `J`.
    pub fn new<J: Job>(input: &J::Input) -> Result<Self, PhaseError>
    where
        J::Input: Serialize,
    {
        Self::of_kind(J::KIND, input)
    }

    /// A child of a kind named at run time (possibly served by another worker).
    pub fn of_kind(kind: &str, input: &impl Serialize) -> Result<Self, PhaseError> {
        let input = wire::to_payload(input)
            .map_err(|e| PhaseError::permanent(format!("child input: {e}")))?;
        Ok(Self {
            spec: ChildSpec {
                kind: kind.to_owned(),
                input,
                options: None,
            },
        })
    }

    /// Sets the child's options (attempts, fan-in policy of its own children).
    pub fn with_options(mut self, options: JobOptions) -> Self {
        self.spec.options = Some(options);
        self
    }
}

/// A phase failure: retryable (another attempt may succeed, after backoff)
/// or permanent (the job fails now). Any error converts with `?` as
/// retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseError {
    message: String,
    retryable: bool,
}

impl PhaseError {
    /// A failure another attempt may fix.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no attempt will fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl std::fmt::Display for PhaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for PhaseError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::retryable(message)
    }
}
