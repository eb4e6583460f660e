//! The consume loop: gather deliveries into a batch (a short linger,
//! bounded by deliveries and items), apply it, then ack. Acks follow the
//! commit, so a crash in between redelivers the batch and the tokens fence
//! the replay. While the database is down the deliveries stay unacked (a
//! requeue would burn the queue's delivery limit); a message holding a
//! poisoned item is dead-lettered and the rest are acked.
//!
//! A coordinator killed while it holds unacked reports returns them to the
//! queue, and the quorum queue counts that as a delivery: killed often
//! enough in a row (ten times), a healthy report would be dead-lettered and
//! its job would wait forever. A report close to the limit is therefore
//! refreshed: published again as a new message (confirmed), then the old
//! one acked, at most [`MAX_REFRESHES`] times, so a report that really
//! crashes the coordinator still ends in the dead-letter queue. And until
//! its first batch commits, a (re)started applier holds only a few reports,
//! so a coordinator killed again and again during start-up returns few.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;
use tributary_common::broker;
use tributary_common::topology::{DELIVERY_LIMIT, Topology};
use tributary_common::wire::{self, Report, ReportItem};

use super::Applier;

/// Times one report may be refreshed (each refresh buys another
/// `DELIVERY_LIMIT - 2` deliveries).
pub const MAX_REFRESHES: i64 = 3;

/// Reports held unacked until the first batch after (re)connecting has
/// committed.
const STARTUP_PREFETCH: u16 = 32;

/// Where the reports consumer stands after (re)connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warmup {
    /// Holding at most [`STARTUP_PREFETCH`] reports: no batch has
    /// committed yet.
    Cold,
    /// A batch committed; the cold consumer is cancelled, and what it
    /// still holds is applied before the warm one starts.
    Draining,
    /// Consuming with the full prefetch.
    Warm,
}

impl Warmup {
    /// The consumer after the current one ended: the warm one if the cold
    /// one was cancelled and drained; otherwise the broker cancelled it.
    async fn next(
        &mut self,
        channel: &lapin::Channel,
        queue: &str,
        prefetch: u16,
    ) -> Result<lapin::Consumer, broker::BrokerError> {
        if *self != Self::Draining {
            return Err(broker::BrokerError::Cancelled);
        }
        let consumer = consume(channel, queue, prefetch).await?;
        *self = Self::Warm;
        tracing::debug!(prefetch, "report consumer warmed up");
        Ok(consumer)
    }
}

/// Starts a consumer of `queue` holding at most `prefetch` unacked
/// reports.
async fn consume(
    channel: &lapin::Channel,
    queue: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, broker::BrokerError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    Ok(channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// The header counting a report's refreshes.
const REFRESHED: &str = "x-tributary-refreshed";

/// Whether a report delivered `deliveries` times before, and refreshed
/// `refreshed` times, is published again as a new message.
fn refresh(deliveries: i64, refreshed: i64) -> bool {
    deliveries + 2 >= DELIVERY_LIMIT && refreshed < MAX_REFRESHES
}

impl Applier {
    /// Consumes the reports queue until `cancel` fires, applying batches.
    /// Reconnects (with backoff) when the broker goes away.
    pub async fn run(self, amqp_url: String, topology: Topology, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            match self.consume(&amqp_url, &topology, &cancel).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("outcome applier lost RabbitMQ: {e}; reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Decodes one delivery into `items`; an unreadable one is
    /// dead-lettered, one near the delivery limit refreshed.
    async fn take(
        &self,
        delivery: lapin::message::Delivery,
        items: &mut Vec<ReportItem>,
        owners: &mut Vec<usize>,
        good: &mut Vec<lapin::message::Delivery>,
        republish: &Republish<'_>,
    ) -> Result<(), broker::BrokerError> {
        let deliveries = broker::delivery_count(&delivery);
        let refreshed = broker::int_header(&delivery, REFRESHED);
        if refresh(deliveries, refreshed) {
            let mut headers = FieldTable::default();
            headers.insert(REFRESHED.into(), AMQPValue::LongLongInt(refreshed + 1));
            let properties = broker::message_properties().with_headers(headers);
            broker::publish_with(
                republish.channel,
                "",
                republish.queue,
                &delivery.data,
                true,
                properties,
            )
            .await?
            .confirmed()
            .await?;
            broker::settle(delivery.ack(BasicAckOptions::default())).await?;
            tracing::warn!(
                deliveries,
                refreshed = refreshed + 1,
                "a report was returned by crashed coordinators {deliveries} times; published it again so it is not dead-lettered"
            );
            return Ok(());
        }
        match wire::decode::<Report>(&delivery.data) {
            Ok(report) => {
                owners.extend(std::iter::repeat_n(good.len(), report.items.len()));
                items.extend(report.items);
                good.push(delivery);
            }
            Err(e) => {
                tracing::error!(
                    "dead-lettering a report that cannot be read ({} bytes): {e}",
                    delivery.data.len()
                );
                self.metrics.dead_lettered();
                broker::settle(delivery.reject(BasicRejectOptions { requeue: false })).await?;
            }
        }
        Ok(())
    }

    async fn consume(
        &self,
        amqp_url: &str,
        topology: &Topology,
        cancel: &CancellationToken,
    ) -> Result<(), broker::BrokerError> {
        let conn = broker::connect(amqp_url, "tributary-coordinator-applier", cancel).await?;
        let channel = conn.create_channel().await?;
        broker::declare_base(&channel, topology).await?;
        // Only for the rare refresh of a report near the delivery limit.
        let publish = broker::confirm_channel(&conn).await?;
        let queue = topology.reports_queue();
        let republish = Republish {
            channel: &publish,
            queue: &queue,
        };
        // A coordinator that dies before its first commit returns every
        // report it holds, and each return counts towards the delivery
        // limit: hold few until a batch has committed, then the full
        // prefetch.
        //
        // RabbitMQ applies a consumer's prefetch when the consumer is
        // created, never to a running one: the warm consumer is a new one,
        // started once the cold one is cancelled and drained (so every
        // delivery tag of the cold one is acked before the warm one takes
        // any, and acking `multiple` never covers an unapplied report).
        let prefetch = u16::try_from(self.config.max_batch * 2).unwrap_or(u16::MAX);
        let mut warm = Warmup::Cold;
        let mut consumer = consume(&channel, &queue, prefetch.min(STARTUP_PREFETCH)).await?;
        tracing::info!(queue = %queue, "applying outcomes");
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                d = consumer.next() => d,
            };
            let Some(first) = first else {
                consumer = warm.next(&channel, &queue, prefetch).await?;
                continue;
            };
            let mut items = Vec::new();
            let mut owners = Vec::new();
            let mut good = Vec::new();
            self.take(first?, &mut items, &mut owners, &mut good, &republish)
                .await?;
            // The consumer ended (the cold one, drained): the batch is
            // applied, then the warm one starts.
            let mut ended = false;
            let deadline = tokio::time::sleep(self.config.linger);
            tokio::pin!(deadline);
            // A batch ends at max_batch deliveries or max_items items: small
            // enough that a fan-in is never held behind a long transaction.
            while good.len() < self.config.max_batch && items.len() < self.config.max_items {
                tokio::select! {
                    _ = &mut deadline => break,
                    d = consumer.next() => match d {
                        Some(d) => self.take(d?, &mut items, &mut owners, &mut good, &republish).await?,
                        None => {
                            ended = true;
                            break;
                        }
                    },
                }
            }
            if items.is_empty() {
                if ended {
                    consumer = warm.next(&channel, &queue, prefetch).await?;
                }
                continue;
            }
            // Keep the deliveries (unacked) and retry until the database
            // answers: requeueing would burn the queue's delivery limit.
            // Data the database refuses is isolated, not retried.
            let mut delay = Duration::from_millis(100);
            let poisoned = loop {
                match self.apply_isolating(&items).await {
                    Ok(poisoned) => break poisoned,
                    Err(e) => {
                        tracing::warn!(
                            "cannot apply a batch of {} report items: {e}; retrying in {delay:?}",
                            items.len()
                        );
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            if warm == Warmup::Cold {
                channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await?;
                warm = Warmup::Draining;
            }
            let bad: HashSet<usize> = poisoned.iter().map(|&i| owners[i]).collect();
            if bad.is_empty() {
                if let Some(last) = good.last() {
                    broker::settle(last.acker.ack(BasicAckOptions { multiple: true })).await?;
                }
            } else {
                // The message holding a poisoned item goes to the dead-letter
                // queue for an operator to inspect (its healthy items are
                // applied; replaying it later is fenced).
                for (i, delivery) in good.iter().enumerate() {
                    if bad.contains(&i) {
                        broker::settle(delivery.reject(BasicRejectOptions { requeue: false }))
                            .await?;
                    } else {
                        broker::settle(delivery.ack(BasicAckOptions::default())).await?;
                    }
                }
            }
            if ended {
                consumer = warm.next(&channel, &queue, prefetch).await?;
            }
        }
        Ok(())
    }
}

/// Where a refreshed report goes.
struct Republish<'a> {
    channel: &'a lapin::Channel,
    queue: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_near_the_delivery_limit_is_refreshed_a_few_times_only() {
        assert!(!refresh(0, 0));
        assert!(!refresh(DELIVERY_LIMIT - 3, 0));
        assert!(
            refresh(DELIVERY_LIMIT - 2, 0),
            "two returns before the limit"
        );
        assert!(refresh(DELIVERY_LIMIT - 2, MAX_REFRESHES - 1));
        assert!(
            !refresh(DELIVERY_LIMIT - 2, MAX_REFRESHES),
            "one that keeps crashing coordinators is left to the dead-letter queue"
        );
    }
}
