//! What the broker says about a kind's task queue: how many tasks wait in
//! it and how many consumers (live workers serving the kind) it has, and
//! the dead-letter queue's depth. Read for `GET /v1/jobs/{id}/waiting` and
//! `GET /v1/fleet` with a passive `queue.declare`.
//!
//! The probe keeps its own connection, opened on first use, and not the
//! relay's: a passive declare of a queue that does not exist makes the
//! broker close the channel (`404 NOT_FOUND`), which must never cost the
//! relay its publishing channel. The connection is kept for the next
//! request; a channel closed by a missing queue is opened again. Every
//! probe has a time limit, so a slow or absent broker makes the answer say
//! "unknown", never hang the request.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde::Serialize;
use tokio::sync::Mutex;
use tributary_common::broker;
use tributary_common::config::mask_url;
use tributary_common::topology::Topology;

/// How long one probe (connecting included) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The AMQP reply code of a passive declare for a queue that does not exist.
const NOT_FOUND: u16 = 404;

/// What the broker said about one task queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueueState {
    /// The queue exists.
    Found {
        /// Tasks ready in it (not counting those delivered and unacked).
        messages: u32,
        /// Consumers attached: live workers serving the kind.
        consumers: u32,
    },
    /// No queue: no worker has ever served the kind in this namespace.
    Missing,
    /// The broker could not be asked.
    Unknown {
        /// Why.
        error: String,
    },
}

/// Asks the broker about task queues, over a connection of its own.
pub struct QueueProbe {
    amqp_url: String,
    topology: Topology,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl QueueProbe {
    /// A probe for `topology`'s queues on the broker at `amqp_url`; it
    /// connects on first use.
    pub fn new(amqp_url: String, topology: Topology) -> Self {
        Self {
            amqp_url,
            topology,
            link: Mutex::new(None),
        }
    }

    /// The task queue of `kind`: its depth and consumers, within
    /// [`PROBE_TIMEOUT`].
    pub async fn kind(&self, kind: &str) -> QueueState {
        self.queue(&self.topology.task_queue(kind)).await
    }

    /// The dead-letter queue (`{ns}.dead`): messages the broker gave up on.
    pub async fn dead_letters(&self) -> QueueState {
        self.queue(&self.topology.dead_letter_queue()).await
    }

    /// Any queue of this namespace by name, within [`PROBE_TIMEOUT`].
    async fn queue(&self, queue: &str) -> QueueState {
        let mut link = self.link.lock().await;
        match tokio::time::timeout(PROBE_TIMEOUT, self.declare(&mut link, queue)).await {
            Ok(state) => state,
            Err(_) => {
                // Whatever was half done is dropped; the next probe starts over.
                *link = None;
                QueueState::Unknown {
                    error: format!(
                        "RabbitMQ at {} did not answer within {PROBE_TIMEOUT:?}",
                        mask_url(&self.amqp_url)
                    ),
                }
            }
        }
    }

    async fn declare(&self, link: &mut Option<(Connection, Channel)>, queue: &str) -> QueueState {
        let channel = match self.channel(link).await {
            Ok(channel) => channel,
            Err(e) => {
                *link = None;
                return QueueState::Unknown {
                    error: format!("cannot reach RabbitMQ at {}: {e}", mask_url(&self.amqp_url)),
                };
            }
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => QueueState::Found {
                messages: q.message_count(),
                consumers: q.consumer_count(),
            },
            Err(e) if is_not_found(&e) => QueueState::Missing,
            Err(e) => {
                *link = None;
                QueueState::Unknown {
                    error: format!("RabbitMQ refused a passive declare of {queue}: {e}"),
                }
            }
        }
    }

    /// The open channel, opening the connection or the channel if needed.
    async fn channel(&self, link: &mut Option<(Connection, Channel)>) -> lapin::Result<Channel> {
        if let Some((conn, channel)) = link.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        if let Some((conn, _)) = link.take()
            && conn.status().connected()
        {
            // A missing queue closed the channel: open another.
            let channel = conn.create_channel().await?;
            *link = Some((conn, channel.clone()));
            return Ok(channel);
        }
        let props = ConnectionProperties::default()
            .with_connection_name("tributary-coordinator-queue-probe".into());
        let conn = Connection::connect(&broker::with_heartbeat(&self.amqp_url), props).await?;
        let channel = conn.create_channel().await?;
        *link = Some((conn, channel.clone()));
        Ok(channel)
    }
}

/// Whether the broker answered `404 NOT_FOUND`: the queue does not exist.
fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == NOT_FOUND)
}
