//! Does the database agree with what was sent? For every accepted event,
//! each group that receives its type must have applied it
//! (`processed_events`) or dead-lettered it (`dead_letters`).

use std::collections::BTreeMap;

use shared::events::EventType;
use shared::groups::ConsumerGroup;
use sqlx::PgPool;
use uuid::Uuid;

/// Per group: deliveries expected, applied, dead-lettered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTotals {
    /// Accepted events of types this group receives.
    pub expected: i64,
    /// Of those, applied by the group.
    pub applied: i64,
    /// Of those, dead-lettered by the group.
    pub dead_lettered: i64,
}

impl GroupTotals {
    /// Expected deliveries neither applied nor dead-lettered (yet).
    pub fn missing(&self) -> i64 {
        self.expected - self.applied - self.dead_lettered
    }
}

/// The totals of every group for `accepted` events, read from the database.
pub async fn group_totals(
    pool: &PgPool,
    accepted: &[(Uuid, EventType)],
) -> Result<BTreeMap<ConsumerGroup, GroupTotals>, sqlx::Error> {
    let mut totals: BTreeMap<ConsumerGroup, GroupTotals> = ConsumerGroup::ALL
        .into_iter()
        .map(|group| (group, GroupTotals::default()))
        .collect();
    for (_, event_type) in accepted {
        for group in ConsumerGroup::ALL {
            if group.handles(*event_type)
                && let Some(entry) = totals.get_mut(&group)
            {
                entry.expected += 1;
            }
        }
    }
    let ids: Vec<Uuid> = accepted.iter().map(|(id, _)| *id).collect();
    let counted: Vec<(String, i64, i64)> = sqlx::query_as(
        "WITH ids AS (SELECT UNNEST($1::uuid[]) AS event_id)
         SELECT g.consumer_group,
                (SELECT count(*) FROM processed_events p JOIN ids USING (event_id)
                  WHERE p.consumer_group = g.consumer_group),
                (SELECT count(DISTINCT d.event_id) FROM dead_letters d JOIN ids USING (event_id)
                  WHERE d.consumer_group = g.consumer_group)
         FROM UNNEST($2::text[]) AS g(consumer_group)",
    )
    .bind(&ids)
    .bind(
        ConsumerGroup::ALL
            .iter()
            .map(|group| group.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_all(pool)
    .await?;
    for (name, applied, dead_lettered) in counted {
        if let Some(entry) = ConsumerGroup::ALL
            .into_iter()
            .find(|group| group.as_str() == name)
            .and_then(|group| totals.get_mut(&group))
        {
            entry.applied = applied;
            entry.dead_lettered = dead_lettered;
        }
    }
    Ok(totals)
}
