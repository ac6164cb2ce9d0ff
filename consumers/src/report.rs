//! End-of-run reports shared by the demo and the `switchyard` main job:
//! how batches were applied, and the projections' totals in the database.

use shared::groups::ConsumerGroup;
use sqlx::PgPool;

use runtime::metrics::{BatchPath, batches_committed};

/// How this process's batches were applied, per group.
pub fn print_batch_paths() {
    println!("batches this run (set-wise / event by event):");
    for group in ConsumerGroup::ALL {
        let count = |path| batches_committed(group, path);
        println!(
            "  {:<21} {} / {}",
            group.as_str(),
            count(BatchPath::SetWise),
            count(BatchPath::EventByEvent)
        );
    }
}

/// Projection totals read from the database (all runs).
pub async fn print_totals(pool: &PgPool) -> Result<(), sqlx::Error> {
    println!("database totals (all runs):");
    let applied: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer_group, count(*) FROM processed_events GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for (group, count) in applied {
        println!("  applied by {group:<10} {count}");
    }
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await?;
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(status, count)| format!("{status} {count}"))
        .collect();
    println!("  orders                {}", statuses.join(", "));
    let (on_hand, reserved): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT sum(on_hand)::bigint, sum(reserved)::bigint FROM stock")
            .fetch_one(pool)
            .await?;
    println!(
        "  stock                 {} on hand, {} reserved",
        on_hand.unwrap_or(0),
        reserved.unwrap_or(0)
    );
    let (revenue, units): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT sum(revenue_cents)::bigint, sum(units)::bigint FROM sales_daily")
            .fetch_one(pool)
            .await?;
    println!(
        "  sales                 {} units, {:.2} revenue",
        units.unwrap_or(0),
        revenue.unwrap_or(0) as f64 / 100.0
    );
    let dead: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT consumer_group, error_kind, count(*) FROM dead_letters WHERE status = 'open' \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    if dead.is_empty() {
        println!("  dead letters          none");
    }
    for (group, kind, count) in dead {
        println!("  dead letters          {group}/{kind}: {count}");
    }
    Ok(())
}
