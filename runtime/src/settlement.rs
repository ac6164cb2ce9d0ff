//! The one settling rule, enforced by one type.
//!
//! A delivery is acked only once its own outcome is committed (applied,
//! duplicate, dead-lettered, or its retry confirmed by a wait queue). A
//! `multiple` ack covers only a prefix of the channel's outstanding tags
//! all of which are committed. Whatever is not to be acked — a batch held
//! by a failing database when the worker is stopped, a retry the broker
//! would not take before the stop — goes back to the broker by a nack with
//! requeue (never a `multiple` one), so no later ack can cover it.
//!
//! [`Ledger`] holds every delivery a worker's channel received and has not
//! settled, in tag order, and is the only code that sends acks and nacks.

use std::collections::VecDeque;
use std::future::Future;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};

/// What settles one delivery with the broker: its own acker (lapin's dies
/// with its channel, so a tag of a lost connection is never sent on a new
/// one); an in-memory double in the simulation.
pub trait Acknowledge {
    /// Acks this delivery, and with `multiple` every earlier unsettled
    /// delivery of the channel. False when nothing was sent (the channel
    /// is gone: the broker gives the deliveries back by itself).
    fn ack(&self, multiple: bool) -> impl Future<Output = bool> + Send;
    /// Gives this delivery (only) back to the queue.
    fn requeue(&self) -> impl Future<Output = bool> + Send;
}

impl Acknowledge for Acker {
    async fn ack(&self, multiple: bool) -> bool {
        sent(Acker::ack(self, BasicAckOptions { multiple }).await, "ack")
    }

    async fn requeue(&self) -> bool {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        sent(Acker::nack(self, options).await, "nack")
    }
}

fn sent(result: Result<bool, lapin::Error>, what: &str) -> bool {
    match result {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(
                what,
                "not sent: the connection was lost since the delivery arrived; the broker gives it back, and what was committed is skipped as a duplicate"
            );
            false
        }
        Err(error) => {
            tracing::warn!(what, %error,
                "not sent: the broker gives the delivery back, and what was committed is skipped as a duplicate");
            false
        }
    }
}

/// What becomes of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its outcome is committed: ack it.
    Ack,
    /// Nothing of it is settled: give it back to the queue.
    Return,
}

/// What a [`Ledger::settle`] sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Deliveries acked (by one `multiple` ack or one by one).
    pub acked: usize,
    /// Deliveries given back with a requeue.
    pub returned: usize,
}

struct Entry<A> {
    tag: u64,
    acker: A,
    committed: bool,
}

/// The deliveries one channel received and has not settled, in tag order.
pub struct Ledger<A> {
    outstanding: VecDeque<Entry<A>>,
}

impl<A> Default for Ledger<A> {
    fn default() -> Self {
        Self {
            outstanding: VecDeque::new(),
        }
    }
}

impl<A: Acknowledge> Ledger<A> {
    /// Notes a delivery as received (tags arrive in ascending order).
    pub fn received(&mut self, tag: u64, acker: A) {
        debug_assert!(self.outstanding.back().is_none_or(|last| last.tag < tag));
        self.outstanding.push_back(Entry {
            tag,
            acker,
            committed: false,
        });
    }

    /// Deliveries received and not settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Settles `decisions` (tags of this channel): first gives back those
    /// to [`Decision::Return`], one by one; then acks the committed prefix
    /// of what is outstanding, with one `multiple` ack when it holds more
    /// than one delivery, and any other committed delivery (one behind a
    /// delivery not yet decided) on its own.
    pub async fn settle(
        &mut self,
        decisions: impl IntoIterator<Item = (u64, Decision)>,
    ) -> Settled {
        let mut settled = Settled::default();
        for (tag, decision) in decisions {
            // Tags are outstanding in ascending order.
            let Ok(position) = self
                .outstanding
                .binary_search_by_key(&tag, |entry| entry.tag)
            else {
                tracing::error!(tag, "a settled delivery is not outstanding; ignored");
                continue;
            };
            match decision {
                Decision::Ack => self.outstanding[position].committed = true,
                Decision::Return => {
                    if let Some(entry) = self.outstanding.remove(position) {
                        entry.acker.requeue().await;
                        settled.returned += 1;
                    }
                }
            }
        }
        let prefix = self
            .outstanding
            .iter()
            .take_while(|entry| entry.committed)
            .count();
        if let Some(last) = self.outstanding.drain(..prefix).last() {
            last.acker.ack(prefix > 1).await;
            settled.acked += prefix;
        }
        let mut index = 0;
        while index < self.outstanding.len() {
            if self.outstanding[index].committed {
                if let Some(entry) = self.outstanding.remove(index) {
                    entry.acker.ack(false).await;
                    settled.acked += 1;
                }
            } else {
                index += 1;
            }
        }
        settled
    }

    /// Gives back everything outstanding, one by one (a stop that cannot
    /// finish what it received).
    pub async fn return_all(&mut self) -> usize {
        let tags: Vec<u64> = self.outstanding.iter().map(|entry| entry.tag).collect();
        self.settle(tags.into_iter().map(|tag| (tag, Decision::Return)))
            .await
            .returned
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the broker was sent: (tag, "ack" | "ack-multiple" | "requeue").
    type Sent = Arc<Mutex<Vec<(u64, &'static str)>>>;

    struct Recorder {
        tag: u64,
        sent: Sent,
    }

    impl Acknowledge for Recorder {
        async fn ack(&self, multiple: bool) -> bool {
            let what = if multiple { "ack-multiple" } else { "ack" };
            self.sent.lock().unwrap().push((self.tag, what));
            true
        }

        async fn requeue(&self) -> bool {
            self.sent.lock().unwrap().push((self.tag, "requeue"));
            true
        }
    }

    fn ledger(tags: impl IntoIterator<Item = u64>) -> (Ledger<Recorder>, Sent) {
        let sent = Sent::default();
        let mut ledger = Ledger::default();
        for tag in tags {
            let sent = Arc::clone(&sent);
            ledger.received(tag, Recorder { tag, sent });
        }
        (ledger, sent)
    }

    fn sent(sent: &Sent) -> Vec<(u64, &'static str)> {
        sent.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_committed_batch_is_acked_by_one_multiple_ack_of_its_last_tag() {
        let (mut ledger, log) = ledger(1..=4);
        let settled = ledger.settle((1..=3).map(|tag| (tag, Decision::Ack))).await;
        assert_eq!(
            settled,
            Settled {
                acked: 3,
                returned: 0
            }
        );
        assert_eq!(sent(&log), [(3, "ack-multiple")]);
        assert_eq!(ledger.outstanding(), 1);
    }

    #[tokio::test]
    async fn a_returned_delivery_is_nacked_before_the_ack_that_follows_it() {
        let (mut ledger, log) = ledger(1..=3);
        ledger
            .settle([
                (1, Decision::Ack),
                (2, Decision::Return),
                (3, Decision::Ack),
            ])
            .await;
        assert_eq!(sent(&log), [(2, "requeue"), (3, "ack-multiple")]);
        assert_eq!(ledger.outstanding(), 0);
    }

    #[tokio::test]
    async fn a_later_batch_never_acks_an_earlier_undecided_delivery() {
        let (mut ledger, log) = ledger(1..=4);
        // The first batch (1, 2) was held and never decided.
        ledger
            .settle([(3, Decision::Ack), (4, Decision::Ack)])
            .await;
        assert_eq!(sent(&log), [(3, "ack"), (4, "ack")]);
        assert_eq!(ledger.return_all().await, 2);
        assert_eq!(
            sent(&log),
            [(3, "ack"), (4, "ack"), (1, "requeue"), (2, "requeue")]
        );
    }

    #[tokio::test]
    async fn a_lone_committed_delivery_is_acked_on_its_own() {
        let (mut ledger, log) = ledger([7]);
        ledger.settle([(7, Decision::Ack)]).await;
        assert_eq!(sent(&log), [(7, "ack")]);
    }
}
