//! RabbitMQ: connecting with retry, declaring the topology, and publishing
//! with publisher confirms. Shared by the coordinator and the worker so both
//! declare queues with the same arguments (RabbitMQ refuses a redeclare with
//! different ones).

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;

use crate::config::mask_url;
use crate::topology::{DELIVERY_LIMIT, Topology};

/// How long a publish may wait for its confirm before it counts as failed
/// (a broker that closes cleanly can leave a confirm pending forever).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An AMQP operation failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message.
    #[error("RabbitMQ refused (nacked) a message published to {0:?}")]
    Nacked(String),
    /// No queue is bound for the routing key: the broker returned the
    /// message (basic.return).
    #[error("{0}")]
    Unroutable(Returned),
    /// The confirm did not come in time.
    #[error("no publisher confirm from RabbitMQ within {0:?}")]
    ConfirmTimeout(Duration),
    /// Stopped while waiting for the broker.
    #[error("stopped before RabbitMQ could be reached")]
    Cancelled,
    /// An ack, nack or reject did not go through in time: the channel is
    /// taken as lost.
    #[error("an ack to RabbitMQ did not go through within {0:?}; the channel is lost")]
    AckLost(Duration),
}

/// What is kept of a message the broker returned as unroutable: where it
/// was going, how big it was and why it came back, never its body (a task
/// body holds users' input; a 1 MiB input must not become a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The routing key nobody was bound to.
    pub routing_key: String,
    /// The size of the returned body, in bytes.
    pub body_bytes: usize,
    /// The broker's reason, e.g. `312 NO_ROUTE`.
    pub reply: String,
}

impl std::fmt::Display for Returned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no queue is bound for routing key {:?} (RabbitMQ returned the {}-byte message: {})",
            self.routing_key, self.body_bytes, self.reply
        )
    }
}

impl Returned {
    /// Keeps the routing key, size and reason of `message`; drops the body.
    pub fn of(message: &lapin::message::BasicReturnMessage) -> Self {
        Self {
            routing_key: message.delivery.routing_key.as_str().to_owned(),
            body_bytes: message.delivery.data.len(),
            reply: format!("{} {}", message.reply_code, message.reply_text),
        }
    }
}

/// A `Result` with [`BrokerError`].
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Connects to `url`, retrying with capped exponential backoff and logging
/// each failure in one line, until it succeeds or `cancel` fires. `name`
/// shows in the RabbitMQ management UI.
pub async fn connect(url: &str, name: &str, cancel: &CancellationToken) -> Result<Connection> {
    let mut delay = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(&with_heartbeat(url), props).await {
            Ok(conn) => {
                if tries > 0 {
                    tracing::info!(url = %mask_url(url), "connected to RabbitMQ after {tries} failed tries");
                }
                return Ok(conn);
            }
            Err(e) => {
                tries += 1;
                tracing::warn!(
                    "cannot reach RabbitMQ at {}: {e}: is it running? (start it with `rabbitmq-server -detached`); retry {tries} in {delay:?}",
                    mask_url(url)
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BrokerError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// AMQP heartbeat asked for when the URL names none: a peer that hangs
/// (or a silent link) is noticed in two intervals, and its unacked tasks go
/// back to the queue, instead of RabbitMQ's default of 60 s.
pub const DEFAULT_HEARTBEAT_SECS: u32 = 10;

/// `url` with `heartbeat=DEFAULT_HEARTBEAT_SECS` added unless it sets one.
pub fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={DEFAULT_HEARTBEAT_SECS}")
    } else {
        format!("{url}?heartbeat={DEFAULT_HEARTBEAT_SECS}")
    }
}

/// How long an ack, nack or reject may take. A connection that dies while
/// one is sent can leave it pending forever; a consumer must not hang on it.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs an ack, nack or reject with [`SETTLE_TIMEOUT`]; an error, a refusal
/// or a timeout is [`BrokerError::AckLost`] (reconnect: the broker
/// redelivers whatever was not settled).
pub async fn settle(op: impl Future<Output = lapin::Result<bool>>) -> Result<()> {
    match tokio::time::timeout(SETTLE_TIMEOUT, op).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(false)) | Err(_) => Err(BrokerError::AckLost(SETTLE_TIMEOUT)),
    }
}

/// Opens a channel with publisher confirms on.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

fn quorum_args(topology: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_letter_exchange().into()),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares what every process needs: the tasks exchange, the reports
/// queue, and the dead-letter exchange and queue. Idempotent.
pub async fn declare_base(channel: &Channel, topology: &Topology) -> Result<()> {
    let exchange_opts = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            topology.dead_letter_exchange().into(),
            ExchangeKind::Fanout,
            exchange_opts,
            FieldTable::default(),
        )
        .await?;
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(topology.dead_letter_queue().into(), durable(), dead_args)
        .await?;
    channel
        .queue_bind(
            topology.dead_letter_queue().into(),
            topology.dead_letter_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            topology.tasks_exchange().into(),
            ExchangeKind::Direct,
            exchange_opts,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            topology.reports_queue().into(),
            durable(),
            quorum_args(topology),
        )
        .await?;
    channel
        .exchange_declare(
            topology.control_exchange().into(),
            ExchangeKind::Fanout,
            exchange_opts,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares this process's own queue on the control exchange: exclusive,
/// server-named, gone with the connection; a message it rejects goes to the
/// dead-letter exchange. Returns the queue's name.
pub async fn declare_control_queue(channel: &Channel, topology: &Topology) -> Result<String> {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_letter_exchange().into()),
    );
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let name = queue.name().to_string();
    channel
        .queue_bind(
            name.as_str().into(),
            topology.control_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(name)
}

/// Declares the task queue of one job kind and binds it. Idempotent.
pub async fn declare_task_queue(channel: &Channel, topology: &Topology, kind: &str) -> Result<()> {
    let queue = topology.task_queue(kind);
    channel
        .queue_declare(queue.as_str().into(), durable(), quorum_args(topology))
        .await?;
    channel
        .queue_bind(
            queue.into(),
            topology.tasks_exchange().into(),
            kind.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Properties of every message we publish: persistent MessagePack.
pub fn message_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/msgpack".into())
}

/// A publish whose confirm has not been awaited yet, so many can be in
/// flight at once.
pub struct Pending {
    routing_key: String,
    confirm: lapin::PublisherConfirm,
}

/// An integer header of a delivery (0 when absent or not an integer).
pub fn int_header(delivery: &lapin::message::Delivery, name: &str) -> i64 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get(name) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(*n),
        _ => 0,
    }
}

/// How often the broker has redelivered a message (quorum queues count it
/// in `x-delivery-count`; 0 for a first delivery). At [`DELIVERY_LIMIT`]
/// returns the broker dead-letters it.
pub fn delivery_count(delivery: &lapin::message::Delivery) -> i64 {
    int_header(delivery, "x-delivery-count")
}

/// Publishes without waiting for the confirm; await it with [`Pending::confirmed`].
/// `mandatory` makes an unroutable message come back as an error.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    mandatory: bool,
) -> Result<Pending> {
    publish_with(
        channel,
        exchange,
        routing_key,
        body,
        mandatory,
        message_properties(),
    )
    .await
}

/// [`publish`] with these properties (e.g. headers added to
/// [`message_properties`]).
pub async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    mandatory: bool,
    properties: BasicProperties,
) -> Result<Pending> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    Ok(Pending {
        routing_key: routing_key.to_owned(),
        confirm,
    })
}

impl Pending {
    /// Waits (at most [`CONFIRM_TIMEOUT`]) for the broker to take the message.
    /// Only `Ack(None)` is success: a mandatory message nobody could route
    /// also resolves to an ack, carrying the returned message.
    pub async fn confirmed(self) -> Result<()> {
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm)
            .await
            .map_err(|_| BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            // basic.return: lapin hands the returned message back whole,
            // body included; keep only its routing key, size and reason.
            Confirmation::Ack(Some(returned)) => {
                let returned = Returned::of(&returned);
                tracing::debug!(
                    routing_key = %returned.routing_key,
                    body_bytes = returned.body_bytes,
                    reply = %returned.reply,
                    "RabbitMQ returned an unroutable message"
                );
                Err(BrokerError::Unroutable(returned))
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(BrokerError::Nacked(self.routing_key))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::uri::{AMQPScheme, AMQPUri};

    use super::with_heartbeat;
    use crate::config::mask_url;

    #[test]
    fn amqps_urls_are_accepted() {
        // What `connect` hands lapin: TLS (lapin's `rustls` feature, system
        // roots) on the AMQPS port unless the URL names one.
        let url = "amqps://app:s%2Fcret@rabbit.internal/%2f";
        let uri: AMQPUri = with_heartbeat(url).parse().expect("an amqps URI");
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(uri.authority.userinfo.password, "s/cret");
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(mask_url(url), "amqps://app:***@rabbit.internal/%2f");
    }

    #[test]
    fn a_heartbeat_is_added_unless_set() {
        assert_eq!(
            with_heartbeat("amqp://h:5672/%2f"),
            "amqp://h:5672/%2f?heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192&heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?heartbeat=2"),
            "amqp://h/%2f?heartbeat=2"
        );
    }
}
