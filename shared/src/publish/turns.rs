//! The order single publishes are sent in: each takes a ticket when it
//! starts (its first poll) and is sent when its ticket is served. A turn
//! ends once, when the publish has been handed to the connection, or when
//! it is given up (timed out, dropped): a publish that never sends holds up
//! none after it. A turn held longer than the patience (the publish
//! timeout, which a publish that is still polled would have hit) is passed
//! over, so a publish future left unpolled and undropped cannot stall the
//! publisher.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Hands out turns; one per publisher.
#[derive(Debug)]
pub(super) struct Sequencer {
    state: Mutex<State>,
    changed: Notify,
    patience: Duration,
}

#[derive(Debug)]
struct State {
    issued: u64,
    serving: u64,
    /// Since when `serving` has been served (its turn came, or it was
    /// issued, whichever is later).
    serving_since: Instant,
    /// Tickets after `serving` whose publishes ended before their turn.
    given_up: BTreeSet<u64>,
}

impl State {
    fn advance(&mut self) {
        self.serving += 1;
        while self.given_up.remove(&self.serving) {
            self.serving += 1;
        }
        self.serving_since = Instant::now();
    }
}

/// One publish's place in the order.
#[derive(Debug)]
pub(super) struct Turn<'a> {
    sequencer: &'a Sequencer,
    ticket: u64,
    ended: bool,
}

impl Sequencer {
    pub(super) fn new(patience: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                issued: 0,
                serving: 0,
                serving_since: Instant::now(),
                given_up: BTreeSet::new(),
            }),
            changed: Notify::new(),
            patience,
        }
    }

    /// The next turn; take it when the publish starts.
    pub(super) fn take(&self) -> Turn<'_> {
        let mut state = self.lock();
        let ticket = state.issued;
        state.issued += 1;
        if ticket == state.serving {
            state.serving_since = Instant::now();
        }
        Turn {
            sequencer: self,
            ticket,
            ended: false,
        }
    }

    /// Every change is one step: what it guards stays consistent if a
    /// holder panicked.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Turn<'_> {
    /// Returns when this turn is served.
    pub(super) async fn wait(&self) {
        let sequencer = self.sequencer;
        loop {
            let notified = sequencer.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let overdue = {
                let mut state = sequencer.lock();
                if state.serving == self.ticket {
                    return;
                }
                let overdue = state.serving_since + sequencer.patience;
                if Instant::now() >= overdue {
                    tracing::warn!(
                        ticket = state.serving,
                        "a publish held its turn past the publish timeout without sending; passing it over"
                    );
                    state.advance();
                    drop(state);
                    sequencer.changed.notify_waiters();
                    continue;
                }
                overdue
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(overdue.into()) => {}
            }
        }
    }

    /// Ends the turn (once): the publish was handed over, or gave up.
    pub(super) fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let sequencer = self.sequencer;
        let mut state = sequencer.lock();
        if state.serving == self.ticket {
            state.advance();
            drop(state);
            sequencer.changed.notify_waiters();
        } else if self.ticket > state.serving {
            state.given_up.insert(self.ticket);
        }
        // An earlier ticket was passed over already: nothing to do.
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn that is never served fails the test instead of hanging it.
    async fn served(turn: &Turn<'_>) {
        tokio::time::timeout(Duration::from_secs(30), turn.wait())
            .await
            .expect("the turn is served");
    }

    #[tokio::test]
    async fn turns_are_served_in_the_order_taken_and_a_given_up_one_is_skipped() {
        let sequencer = Sequencer::new(Duration::from_secs(3600));
        let mut first = sequencer.take();
        let second = sequencer.take();
        let mut third = sequencer.take();
        served(&first).await;
        drop(second); // given up before its turn
        assert!(
            futures_util::FutureExt::now_or_never(third.wait()).is_none(),
            "the third waits while the first is served"
        );
        first.end();
        served(&third).await;
        third.end();
        let fourth = sequencer.take();
        served(&fourth).await;
    }

    #[tokio::test]
    async fn a_turn_held_past_the_patience_is_passed_over() {
        let sequencer = Sequencer::new(Duration::from_millis(50));
        let stuck = sequencer.take();
        served(&stuck).await;
        let next = sequencer.take();
        // `stuck` is neither ended nor dropped: `next` is served anyway.
        served(&next).await;
        drop(stuck); // late: changes nothing
        let after = sequencer.take();
        drop(next);
        served(&after).await;
    }
}
