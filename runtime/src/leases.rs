//! Group leases: one process at a time applies a group's events.
//!
//! Batches of one group from two processes touch the same hot aggregates
//! (every order locks its SKUs; the events of one order arrive in any
//! process), so they wait on each other's locks, and a payment that
//! overtakes its order in another process waits a retry: measured on the
//! store mix, three processes competing for every group drained it at
//! 0.6–0.8 of one process's rate. So a group is consumed by the process
//! holding its lease, a session advisory lock in PostgreSQL; the others
//! stand by and take it over when the holder stops or dies (its session
//! ends, the lock with it). A group has `group_concurrency` leases (slots,
//! 1 by default) and a process holds at most one of each group, so that
//! many processes consume it at once where its batches do not collide. Processes spread the groups between them: a
//! process holding two leases more than another member able to run one of
//! them hands that one over (stops consuming it, commits and acknowledges
//! what it holds, then unlocks). More workers for one group run in the
//! holder's process (`--workers`).
//!
//! Every process holds a member lock too, whose id carries the groups it
//! runs, so each sees from `pg_locks` who is alive, runs what, and holds
//! what. Processes started together share the groups out from the start,
//! without handing any over: a process takes no lease during its first
//! tick (the join window, in which the others started with it show up),
//! and then takes a free lease only when it is that lease's designated
//! taker — of the live members running the group and holding none of its
//! leases, the one holding fewest, ties to the lowest backend pid, the same
//! answer for every process reading the same `pg_locks` — or when the lease
//! has stayed free for [`FREE_PATIENCE`] (its designated taker is not
//! taking it). The locks live on a connection of their own, kept for the
//! process's life. When that connection is lost the workers keep going (the
//! server may still hold the session, or the database is down and nobody
//! applies anything); once reconnected, a lease someone else took meanwhile
//! is given up, and the overlap only ever cost speed: effects stay
//! idempotent and every batch keeps its own aggregate locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::groups::ConsumerGroup;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often leases are looked at: the longest a free lease waits for a
/// standby process to take it.
pub const LEASE_TICK: Duration = Duration::from_secs(1);
/// After handing a lease over, how long this process leaves it for another
/// to take before taking it back itself.
const HAND_OVER_PATIENCE: Duration = Duration::from_secs(5);
/// How long a lease stays free before any member running its group takes
/// it, designated or not.
pub const FREE_PATIENCE: Duration = Duration::from_secs(3);

/// Longest wait for the database's answer to a look at the leases or an
/// unlock.
const LEASE_PATIENCE: Duration = Duration::from_secs(5);

/// The leases of one process, kept by a task of their own.
#[derive(Clone)]
pub struct Leases {
    held: Arc<HashMap<ConsumerGroup, watch::Sender<Option<CancellationToken>>>>,
    released: mpsc::UnboundedSender<ConsumerGroup>,
}

/// A lease in hand: consume the group until `revoked` is cancelled.
pub struct Lease {
    /// Cancelled when the lease is to be handed over (or the process stops).
    pub revoked: CancellationToken,
}

impl Leases {
    /// Starts keeping leases for `groups` of `namespace`, `slots` per group,
    /// on a connection of their own from `pool`, until `stop`.
    pub fn start(
        namespace: &str,
        groups: &[ConsumerGroup],
        slots: u16,
        pool: PgPool,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let held: HashMap<_, _> = groups
            .iter()
            .map(|group| (*group, watch::channel(None).0))
            .collect();
        let held = Arc::new(held);
        let (released, released_rx) = mpsc::unbounded_channel();
        for group in groups {
            crate::metrics::group_lease(*group, false);
        }
        let keeper = Keeper {
            keys: Keys::new(namespace, groups),
            groups: groups.to_vec(),
            slots: i32::from(slots.max(1)),
            pool,
            connection: None,
            held: Arc::clone(&held),
            slot_of: HashMap::new(),
            releasing: BTreeMap::new(),
            cooling: HashMap::new(),
            joined: false,
            free_since: HashMap::new(),
        };
        let task = tokio::spawn(keeper.run(released_rx, stop));
        (Self { held, released }, task)
    }

    /// Waits until this process holds `group`'s lease; `None` when `stop`
    /// comes first.
    pub async fn acquire(&self, group: ConsumerGroup, stop: &CancellationToken) -> Option<Lease> {
        let mut receiver = self.held.get(&group)?.subscribe();
        if receiver
            .borrow()
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            // Revoked while no worker of this process ran the group (between
            // broker connections): nothing to finish, it may be unlocked.
            self.released(group);
        }
        let held =
            receiver.wait_for(|held| held.as_ref().is_some_and(|token| !token.is_cancelled()));
        let token = stop.run_until_cancelled(held).await?.ok()?.clone()?;
        Some(Lease { revoked: token })
    }

    /// The workers of a revoked lease have finished: it may be unlocked.
    pub fn released(&self, group: ConsumerGroup) {
        let _ = self.released.send(group);
    }
}

/// The advisory-lock keys of a namespace: `(members, member id)` for a
/// process, `(leases, group << 16 | slot)` for a lease. Two 31-bit keys, so `pg_locks`
/// shows them as they were taken (`classid`, `objid`, `objsubid = 2`).
struct Keys {
    members: i32,
    leases: i32,
    /// This process's member id: random (a v7 UUID's random tail), with the groups it runs in the
    /// low bits.
    member: i32,
}

impl Keys {
    fn new(namespace: &str, groups: &[ConsumerGroup]) -> Self {
        let mask = groups
            .iter()
            .fold(0, |mask, group| mask | group_bit(*group));
        let random = (uuid::Uuid::now_v7().as_u128() as i32) & 0x07ff_ffff;
        Self {
            members: key(&format!("switchyard members {namespace}")),
            leases: key(&format!("switchyard leases {namespace}")),
            member: (random << GROUP_BITS) | mask,
        }
    }
}

const GROUP_BITS: u32 = 3;

/// The member lock a process running `groups` in `namespace` takes: the
/// two keys of `pg_advisory_lock(class, id)`, the id fresh each call.
pub fn member_lock(namespace: &str, groups: &[ConsumerGroup]) -> (i32, i32) {
    let keys = Keys::new(namespace, groups);
    (keys.members, keys.member)
}

fn group_index(group: ConsumerGroup) -> i32 {
    ConsumerGroup::ALL
        .iter()
        .position(|g| *g == group)
        .unwrap_or_default() as i32
}

fn group_bit(group: ConsumerGroup) -> i32 {
    1 << group_index(group)
}

/// The lock id of `group`'s lease `slot`.
fn lease_id(group: ConsumerGroup, slot: i32) -> i32 {
    (group_index(group) << 16) | slot
}

/// A stable, positive 31-bit key (FNV-1a).
fn key(text: &str) -> i32 {
    (crate::fnv::fnv1a_32(text.as_bytes()) & 0x7fff_ffff) as i32
}

struct Keeper {
    keys: Keys,
    groups: Vec<ConsumerGroup>,
    /// Leases per group.
    slots: i32,
    pool: PgPool,
    connection: Option<PgConnection>,
    held: Arc<HashMap<ConsumerGroup, watch::Sender<Option<CancellationToken>>>>,
    /// The slot of each lease this process holds (revoked ones included).
    slot_of: HashMap<ConsumerGroup, i32>,
    /// Revoked leases whose workers have not finished yet.
    releasing: BTreeMap<ConsumerGroup, ()>,
    /// Leases handed over, and until when not to take them back.
    cooling: HashMap<ConsumerGroup, Instant>,
    /// Whether the member lock was taken once (the join window is over).
    joined: bool,
    /// Free leases (by id), and since when this process has seen them free.
    free_since: HashMap<i32, Instant>,
}

/// Who holds what, from `pg_locks`.
#[derive(Debug, Default)]
struct Snapshot {
    /// Live members: backend pid → the groups it runs (bit mask).
    members: HashMap<i32, i32>,
    /// Held leases: lease id → holder's backend pid.
    leases: HashMap<i32, i32>,
    /// Our own backend pid.
    me: i32,
}

impl Snapshot {
    fn held_by(&self, pid: i32) -> usize {
        self.leases
            .values()
            .filter(|holder| **holder == pid)
            .count()
    }

    /// Whether `pid` holds a lease of `group`.
    fn holds_group(&self, pid: i32, group: ConsumerGroup) -> bool {
        self.leases
            .iter()
            .any(|(id, holder)| *holder == pid && id >> 16 == group_index(group))
    }

    /// The designated taker of each free lease (`slots` per group): in a
    /// fixed order of groups and slots, the live member that runs the
    /// group, holds none of its leases and holds fewest (counting those
    /// designated to it before), ties to the lowest pid. Every process
    /// reading the same locks gets the same answer, so processes started
    /// together split the groups without handing any over.
    fn designated(&self, slots: i32) -> HashMap<i32, i32> {
        let mut members: Vec<(i32, i32)> = self
            .members
            .iter()
            .map(|(pid, runs)| (*pid, *runs))
            .collect();
        members.sort_unstable();
        let mut load: HashMap<i32, usize> = members
            .iter()
            .map(|(pid, _)| (*pid, self.held_by(*pid)))
            .collect();
        let mut given: Vec<(i32, ConsumerGroup)> = Vec::new();
        let mut designated = HashMap::new();
        for group in ConsumerGroup::ALL {
            for slot in 0..slots {
                let id = lease_id(group, slot);
                if self.leases.contains_key(&id) {
                    continue;
                }
                let taker = members
                    .iter()
                    .filter(|(pid, runs)| {
                        runs & group_bit(group) != 0
                            && !self.holds_group(*pid, group)
                            && !given.contains(&(*pid, group))
                    })
                    .min_by_key(|(pid, _)| (load[pid], *pid));
                if let Some((pid, _)) = taker {
                    *load.entry(*pid).or_default() += 1;
                    given.push((*pid, group));
                    designated.insert(id, *pid);
                }
            }
        }
        designated
    }
}

impl Keeper {
    async fn run(
        mut self,
        mut released: mpsc::UnboundedReceiver<ConsumerGroup>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LEASE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = true;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(group) = released.recv() => self.unlock(group).await,
                _ = tick.tick() => {}
            }
            // Bounded: a database that stops answering (a network cut)
            // would otherwise hold the keeper, and a stop, for as long as
            // TCP takes to notice; past it the connection is dropped as on
            // an error (its session ends, and every lock with it).
            match shared::database::within(LEASE_PATIENCE, self.look()).await {
                Ok(()) if !healthy => {
                    healthy = true;
                    tracing::info!("group leases: the database answers again");
                }
                Ok(()) => {}
                Err(error) => {
                    if healthy {
                        tracing::warn!(%error, "group leases: the database failed; workers keep their groups meanwhile, and leases are looked at again every second");
                    }
                    healthy = false;
                    self.connection = None;
                }
            }
        }
        for (group, sender) in self.held.iter() {
            sender.send_replace(None);
            crate::metrics::group_lease(*group, false);
        }
        if let Some(connection) = self.connection.take() {
            // Closing ends the session and frees every lock; so does exiting.
            let _ = tokio::time::timeout(LEASE_PATIENCE, connection.close()).await;
        }
    }

    async fn unlock(&mut self, group: ConsumerGroup) {
        if self.releasing.remove(&group).is_none() {
            return;
        }
        if let Some(sender) = self.held.get(&group) {
            sender.send_replace(None);
        }
        self.cooling
            .insert(group, Instant::now() + HAND_OVER_PATIENCE);
        let slot = self.slot_of.remove(&group).unwrap_or_default();
        if let Some(connection) = self.connection.as_mut() {
            let unlocking = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(self.keys.leases)
                .bind(lease_id(group, slot))
                .execute(&mut *connection);
            let unlocked = shared::database::within(LEASE_PATIENCE, unlocking).await;
            if let Err(error) = unlocked {
                tracing::warn!(%error, %group, "group lease not unlocked; reconnecting frees it");
                self.connection = None;
            }
        }
        crate::metrics::group_lease(group, false);
        tracing::info!(%group, "group lease handed over");
    }

    /// Connects if needed (the first time, joins: takes the member lock
    /// and no lease until the next tick), then takes the free leases it is
    /// designated for (or that stayed free too long) and hands one over
    /// when another member holds two fewer.
    async fn look(&mut self) -> Result<(), sqlx::Error> {
        if self.connection.is_none() {
            let mut connection = self.pool.acquire().await?.detach();
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(self.keys.members)
                .bind(self.keys.member)
                .execute(&mut connection)
                .await?;
            self.connection = Some(connection);
            self.confirm_held().await?;
            if !self.joined {
                self.joined = true;
                tracing::info!("group leases: joined; taking leases from the next look on");
                return Ok(());
            }
        }
        let snapshot = self.snapshot().await?;
        let now = Instant::now();
        self.free_since
            .retain(|id, _| !snapshot.leases.contains_key(id));
        for group in ConsumerGroup::ALL {
            for slot in 0..self.slots {
                let id = lease_id(group, slot);
                if !snapshot.leases.contains_key(&id) {
                    self.free_since.entry(id).or_insert(now);
                }
            }
        }
        let designated = snapshot.designated(self.slots);
        for group in self.groups.clone() {
            if self.slot_of.contains_key(&group)
                || self.cooling.get(&group).is_some_and(|until| *until > now)
            {
                continue;
            }
            let free = (0..self.slots).find(|slot| {
                let id = lease_id(group, *slot);
                !snapshot.leases.contains_key(&id)
                    && (designated.get(&id) == Some(&snapshot.me)
                        || self
                            .free_since
                            .get(&id)
                            .is_some_and(|since| now.duration_since(*since) >= FREE_PATIENCE))
            });
            let Some(slot) = free else { continue };
            if self.try_lock(group, slot).await? {
                self.slot_of.insert(group, slot);
                self.cooling.remove(&group);
                let token = CancellationToken::new();
                self.held[&group].send_replace(Some(token));
                crate::metrics::group_lease(group, true);
                tracing::info!(%group, slot, "group lease taken: consuming");
            }
        }
        self.hand_over_one(&snapshot);
        Ok(())
    }

    fn holds(&self, group: ConsumerGroup) -> bool {
        self.held[&group]
            .borrow()
            .as_ref()
            .is_some_and(|token| !token.is_cancelled())
    }

    /// After a reconnect: the leases we think we hold are locked again,
    /// or given up when another process took them meanwhile.
    async fn confirm_held(&mut self) -> Result<(), sqlx::Error> {
        for (group, slot) in self.slot_of.clone() {
            if !self.try_lock(group, slot).await? {
                tracing::warn!(%group, "group lease taken by another process while the database was away; handing over");
                self.revoke(group);
            }
        }
        Ok(())
    }

    async fn try_lock(&mut self, group: ConsumerGroup, slot: i32) -> Result<bool, sqlx::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(false);
        };
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(self.keys.leases)
            .bind(lease_id(group, slot))
            .fetch_one(connection)
            .await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, sqlx::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(Snapshot::default());
        };
        let rows: Vec<(i64, i64, i32)> = sqlx::query_as(
            "SELECT classid::bigint, objid::bigint, pid FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 2
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid::bigint IN ($1, $2)",
        )
        .bind(i64::from(self.keys.members))
        .bind(i64::from(self.keys.leases))
        .fetch_all(&mut *connection)
        .await?;
        let me: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await?;
        let mut snapshot = Snapshot {
            me,
            ..Snapshot::default()
        };
        for (class, object, pid) in rows {
            let object = object as i32;
            if class == i64::from(self.keys.members) {
                snapshot
                    .members
                    .insert(pid, object & ((1 << GROUP_BITS) - 1));
            } else {
                snapshot.leases.insert(object, pid);
            }
        }
        Ok(snapshot)
    }

    /// Revokes one lease when a member that runs its group holds at least
    /// two fewer than this process: its workers stop, then it is unlocked.
    fn hand_over_one(&mut self, snapshot: &Snapshot) {
        if !self.releasing.is_empty() {
            return;
        }
        let mine = snapshot.held_by(snapshot.me);
        for group in self.groups.clone() {
            if !self.holds(group) {
                continue;
            }
            let lighter = snapshot.members.iter().any(|(pid, runs)| {
                *pid != snapshot.me
                    && runs & group_bit(group) != 0
                    && !snapshot.holds_group(*pid, group)
                    && snapshot.held_by(*pid) + 2 <= mine
            });
            if lighter {
                tracing::info!(%group, "another process holds fewer groups: handing this one over");
                self.revoke(group);
                return;
            }
        }
    }

    fn revoke(&mut self, group: ConsumerGroup) {
        if let Some(token) = self.held[&group].borrow().as_ref() {
            token.cancel();
        }
        self.releasing.insert(group, ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_positive_and_separate_namespaces() {
        let a = Keys::new("a", &ConsumerGroup::ALL);
        let b = Keys::new("b", &[ConsumerGroup::Orders]);
        assert!(a.members > 0 && a.leases > 0 && a.member > 0);
        assert_ne!(a.members, b.members);
        assert_ne!(a.leases, a.members);
        assert_eq!(a.member & 0b111, 0b111);
        assert_eq!(b.member & 0b111, group_bit(ConsumerGroup::Orders));
    }

    const ALL_GROUPS: i32 = 0b111;

    fn snapshot(members: &[(i32, i32)], leases: &[(ConsumerGroup, i32, i32)]) -> Snapshot {
        Snapshot {
            members: members.iter().copied().collect(),
            leases: leases
                .iter()
                .map(|(group, slot, pid)| (lease_id(*group, *slot), *pid))
                .collect(),
            me: 0,
        }
    }

    fn taker(designated: &HashMap<i32, i32>, group: ConsumerGroup, slot: i32) -> Option<i32> {
        designated.get(&lease_id(group, slot)).copied()
    }

    #[test]
    fn processes_started_together_split_the_groups_the_same_way() {
        use ConsumerGroup::{Inventory, Orders, Sales};
        // Two processes, nothing held: two groups to the lower pid, one to the other.
        let both = snapshot(&[(200, ALL_GROUPS), (100, ALL_GROUPS)], &[]);
        let designated = both.designated(1);
        assert_eq!(taker(&designated, Orders, 0), Some(100));
        assert_eq!(taker(&designated, Inventory, 0), Some(200));
        assert_eq!(taker(&designated, Sales, 0), Some(100));
        // Read after the first took its first lease: the same split.
        let later = snapshot(&[(200, ALL_GROUPS), (100, ALL_GROUPS)], &[(Orders, 0, 100)]);
        let designated = later.designated(1);
        assert_eq!(taker(&designated, Orders, 0), None, "held");
        assert_eq!(taker(&designated, Inventory, 0), Some(200));
        assert_eq!(taker(&designated, Sales, 0), Some(100));
        // Three processes: one group each.
        let three = snapshot(
            &[(300, ALL_GROUPS), (100, ALL_GROUPS), (200, ALL_GROUPS)],
            &[],
        );
        let mut takers: Vec<i32> = three.designated(1).into_values().collect();
        takers.sort_unstable();
        assert_eq!(takers, vec![100, 200, 300]);
    }

    #[test]
    fn a_lease_is_designated_only_to_a_member_running_its_group_and_holding_none_of_it() {
        use ConsumerGroup::{Inventory, Orders, Sales};
        // 100 runs only orders; 200 runs everything and already holds orders slot 0.
        let snapshot = snapshot(
            &[(100, group_bit(Orders)), (200, ALL_GROUPS)],
            &[(Orders, 0, 200)],
        );
        let designated = snapshot.designated(2);
        assert_eq!(taker(&designated, Orders, 1), Some(100));
        assert_eq!(taker(&designated, Inventory, 0), Some(200));
        assert_eq!(
            taker(&designated, Inventory, 1),
            None,
            "200 holds one already"
        );
        assert_eq!(taker(&designated, Sales, 0), Some(200));
        assert_eq!(taker(&designated, Sales, 1), None);
        // Nobody alive runs a group: no taker.
        let alone = super::tests::snapshot(&[(100, group_bit(Orders))], &[]);
        assert_eq!(taker(&alone.designated(1), Sales, 0), None);
    }
}
