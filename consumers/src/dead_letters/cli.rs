//! `consumers dead-letters …`: the operator's commands, printing tables for
//! people and JSON (`--json`) for scripts.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use shared::database::within;
use shared::printable::for_terminal;
use shared::settings::Settings;
use tokio_util::sync::CancellationToken;

use super::filter::Filter;
use super::operations::{self, Actor};
use super::query::{self, DeadLetterRow};
use super::replay::{self, Breaker, ReplayOptions, ReplayProgress};
use super::{manage, repair};

/// The subcommands of `dead-letters`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (open ones unless --status says otherwise), a page at a time.
    List(ListArgs),
    /// Open dead letters grouped by group, event type and failure
    /// fingerprint (the error with ids, numbers and quoted values taken
    /// out), with counts and first and last times.
    Summary(SummaryArgs),
    /// One dead letter in full: event, headers, every attempt, and every
    /// other dead letter of the same event (earlier failures, replays).
    Show(ShowArgs),
    /// Send matching open dead letters back to their own group's work
    /// queue (only), exactly once, with a fresh attempt budget.
    Replay(ReplayArgs),
    /// Repair an open dead letter's payload from a file or in $EDITOR;
    /// the event is validated against its schema and keeps its id.
    Edit(EditArgs),
    /// Write matching dead letters as NDJSON (edit `event`, then
    /// `replay --from-file`).
    Export(ExportArgs),
    /// Mark matching open dead letters resolved (handled outside).
    Resolve(ResolveArgs),
    /// Mark matching dead letters purged and delete their payloads.
    Purge(PurgeArgs),
    /// Open matching resolved dead letters again (undoes a resolve).
    Reopen(ResolveArgs),
    /// Every replay, edit, resolve, purge and expiry: who, when, filter,
    /// counts, outcome; newest first.
    History(HistoryArgs),
    /// Delete replayed, resolved and purged records past their retention.
    Expire(ExpireArgs),
}

/// Output as JSON instead of a table.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Rows per page (1–1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Start after this id (the `next` a page printed).
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter's id.
    pub id: i64,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Which open dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Print what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Most events per second (`50/s` or `50`); unlimited when absent.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Dead letters taken, republished and marked at a time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Stop when more than this share of the recently replayed events fail again.
    #[arg(long, default_value_t = 0.10)]
    pub breaker_share: f64,
    /// How many of the most recently replayed events the breaker looks at.
    #[arg(long, default_value_t = 100)]
    pub breaker_window: u32,
    /// Fewest replayed events before the breaker may trip.
    #[arg(long, default_value_t = 10)]
    pub breaker_min: u32,
    /// Apply the repaired events of an export file (validated first; a bad
    /// line refuses the whole file), then replay exactly the dead letters
    /// it lists.
    #[arg(long, conflicts_with = "dry_run")]
    pub from_file: Option<PathBuf>,
    /// JSON output (the final report).
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The dead letter's id.
    pub id: i64,
    /// The repaired event (structured-mode CloudEvent JSON); without it,
    /// the current payload opens in $EDITOR.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Write here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Which open dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: Filter,
    /// Required: purging deletes payloads.
    #[arg(long)]
    pub yes: bool,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Operations to show.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only operations older than this id (paging).
    #[arg(long)]
    pub before: Option<i64>,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Arguments of `expire`.
#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Keep closed records this many days (default: SWITCHYARD_DEAD_LETTER_RETENTION_DAYS).
    #[arg(long)]
    pub retention_days: Option<f64>,
    /// JSON output.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `50/s` or `50` → 50.0.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s").trim();
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate such as 50/s")),
    }
}

/// Runs one `dead-letters` subcommand.
pub async fn run(command: DeadLetterCommand, settings: &Settings) -> anyhow::Result<()> {
    let pool = shared::startup::prepare_database(settings, 2).await?;
    let result = run_with(command, settings, &pool).await;
    // A connection left on a database that stopped answering is never
    // given back; the command still ends.
    shared::database::close(&pool).await;
    result
}

async fn run_with(
    command: DeadLetterCommand,
    settings: &Settings,
    pool: &sqlx::PgPool,
) -> anyhow::Result<()> {
    let actor = Actor::os_user();
    // Each step's database work (a statement, or a transaction of a few)
    // fails past this instead of waiting on a silent database for good.
    let patience = settings.dead_letters.database_timeout;
    match command {
        DeadLetterCommand::List(args) => {
            args.filter.validate()?;
            let page = within(
                patience,
                query::list(pool, &args.filter, args.after, args.limit),
            )
            .await?;
            if args.output.json {
                print_json(&page)
            } else {
                print!("{}", row_table(&page.items));
                match page.next_after {
                    Some(next) => println!("more: --after {next}"),
                    None => println!("{} shown, no more", page.items.len()),
                }
                Ok(())
            }
        }
        DeadLetterCommand::Summary(args) => {
            args.filter.validate()?;
            let lines = within(patience, query::summary(pool, &args.filter)).await?;
            if args.output.json {
                return print_json(&lines);
            }
            println!(
                "{:>7}  {:<10} {:<24} {:<20} {:<20} fingerprint (example id)",
                "count", "group", "type", "first", "last"
            );
            for line in lines {
                println!(
                    "{:>7}  {:<10} {:<24} {:<20} {:<20} {} ({})",
                    line.count,
                    line.group,
                    for_terminal(line.event_type.as_deref().unwrap_or("-")),
                    line.first_failed_at.format("%Y-%m-%d %H:%M:%S"),
                    line.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
                    for_terminal(&line.fingerprint),
                    line.example_id
                );
            }
            Ok(())
        }
        DeadLetterCommand::Show(args) => {
            let detail = within(patience, query::show(pool, args.id))
                .await?
                .with_context(|| format!("no dead letter {}", args.id))?;
            // The JSON is the readable form too: nested attempts, headers, body.
            let _ = args.output.json;
            print_json(&detail)
        }
        DeadLetterCommand::Replay(args) => replay_command(args, settings, pool, &actor).await,
        DeadLetterCommand::Edit(args) => {
            let bytes = match &args.file {
                Some(path) => std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => edit_in_editor(pool, args.id, patience).await?,
            };
            let edited = repair::edit(
                pool,
                args.id,
                &bytes,
                &actor,
                settings.max_event_bytes,
                patience,
            )
            .await?;
            println!(
                "dead letter {} repaired (event {}); operation {}. Replay it with: \
                 consumers dead-letters replay --id {}",
                edited.id, edited.event_id, edited.operation_id, edited.id
            );
            Ok(())
        }
        DeadLetterCommand::Export(args) => {
            let written = match &args.output {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    let written = repair::export(pool, &args.filter, &mut out, patience).await?;
                    out.flush()?;
                    written
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let written = repair::export(pool, &args.filter, &mut out, patience).await?;
                    out.flush()?;
                    written
                }
            };
            eprintln!("{written} dead letters exported");
            Ok(())
        }
        DeadLetterCommand::Resolve(args) => {
            let closed = manage::resolve(pool, &args.filter, &actor, patience).await?;
            print_closed("resolved", &closed, args.output.json)
        }
        DeadLetterCommand::Reopen(args) => {
            let closed = manage::reopen(pool, &args.filter, &actor, patience).await?;
            print_closed("reopened", &closed, args.output.json)
        }
        DeadLetterCommand::Purge(args) => {
            anyhow::ensure!(args.yes, "refusing: purge deletes payloads; pass --yes");
            let closed = manage::purge(pool, &args.filter, &actor, patience).await?;
            print_closed("purged", &closed, args.output.json)
        }
        DeadLetterCommand::History(args) => {
            let operations =
                within(patience, operations::history(pool, args.before, args.limit)).await?;
            if args.output.json {
                return print_json(&operations);
            }
            println!(
                "{:>6}  {:<8} {:<18} {:<20} {:>8} {:>8} {:>8} {:>8}  {:<11} filter",
                "id",
                "action",
                "actor",
                "started",
                "matched",
                "affected",
                "skipped",
                "failed",
                "outcome"
            );
            for operation in operations {
                println!(
                    "{:>6}  {:<8} {:<18} {:<20} {:>8} {:>8} {:>8} {:>8}  {:<11} {}{}",
                    operation.id,
                    operation.action,
                    for_terminal(&operation.actor),
                    operation.started_at.format("%Y-%m-%d %H:%M:%S"),
                    operation.matched,
                    operation.affected,
                    operation.skipped,
                    operation.failed_again,
                    operation.outcome,
                    operation.filter,
                    operation
                        .detail
                        .map(|detail| format!(" — {}", for_terminal(&detail)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        DeadLetterCommand::Expire(args) => {
            let retention = match args.retention_days {
                // Bounded like the variable: a huge number would overflow a Duration.
                Some(days) if (0.0..=36_500.0).contains(&days) => {
                    std::time::Duration::from_secs_f64(days * 86_400.0)
                }
                Some(_) => anyhow::bail!("--retention-days must be 0 to 36500"),
                None => settings.dead_letters.retention,
            };
            let closed = manage::expire(pool, retention, &actor, patience).await?;
            print_closed("deleted", &closed, args.output.json)
        }
    }
}

async fn replay_command(
    args: ReplayArgs,
    settings: &Settings,
    pool: &sqlx::PgPool,
    actor: &Actor,
) -> anyhow::Result<()> {
    let mut options = ReplayOptions {
        filter: args.filter,
        rate: args.rate,
        batch: args.batch,
        breaker: Breaker {
            share: args.breaker_share,
            window: args.breaker_window,
            min_sample: args.breaker_min,
        },
    };
    if let Some(path) = &args.from_file {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let checked = repair::apply_file(
            pool,
            std::io::BufReader::new(file),
            actor,
            settings.max_event_bytes,
            settings.dead_letters.database_timeout,
        )
        .await?;
        let ids = match checked {
            Ok(ids) => ids,
            Err(errors) => {
                for error in &errors {
                    eprintln!("{error}");
                }
                anyhow::bail!(
                    "{} refused: {} bad lines; nothing was changed",
                    path.display(),
                    errors.len()
                );
            }
        };
        anyhow::ensure!(!ids.is_empty(), "{} lists no dead letters", path.display());
        options.filter = Filter {
            ids,
            ..Filter::default()
        };
    }
    if args.dry_run {
        let mut shown = 0_u64;
        let report = replay::dry_run(pool, settings, &options, &mut |candidate| {
            shown += 1;
            if !args.output.json {
                println!(
                    "{:>10}  {:<10} {:<24} {:<36} {}",
                    candidate.id,
                    candidate.group,
                    candidate.event_type.as_deref().unwrap_or("-"),
                    candidate
                        .event_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    candidate
                        .skip
                        .map(|reason| format!("would skip: {reason}"))
                        .unwrap_or_else(|| "would replay".to_owned())
                );
            }
        })
        .await?;
        return print_report(&report, args.output.json);
    }
    let (sender, mut receiver) = tokio::sync::watch::channel(ReplayProgress::default());
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} replayed {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let follower = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while receiver.changed().await.is_ok() {
                let state = receiver.borrow_and_update().clone();
                bar.set_length(u64::try_from(state.matched).unwrap_or(0));
                bar.set_position(u64::try_from(state.replayed + state.skipped).unwrap_or(0));
                bar.set_message(format!(
                    "skipped {} failed again {}",
                    state.skipped, state.failed_again
                ));
            }
        })
    };
    let cancel = CancellationToken::new();
    tokio::spawn(shared::shutdown::stop_on_signals(
        cancel.clone(),
        "stopping the replay after the batch in flight",
    ));
    let result = replay::replay(pool, settings, actor, &options, &sender, &cancel).await;
    drop(sender);
    let _ = follower.await;
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let state = bar.position();
            anyhow::bail!("replay failed after {state} dead letters: {error}");
        }
    };
    print_report(&report, args.output.json)?;
    anyhow::ensure!(
        report.outcome != "tripped",
        "the replay was stopped by its breaker"
    );
    Ok(())
}

fn print_report(report: &ReplayProgress, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    if report.outcome == "dry-run" {
        println!(
            "dry run: {} matched, {} would be replayed, {} skipped; nothing changed",
            report.matched, report.replayed, report.skipped
        );
        return Ok(());
    }
    println!(
        "replay {}: {} matched, {} replayed, {} skipped, {} failed again so far — {}{}",
        report.operation_id,
        report.matched,
        report.replayed,
        report.skipped,
        report.failed_again,
        report.outcome,
        report
            .detail
            .as_deref()
            .map(|detail| format!(" ({})", for_terminal(detail)))
            .unwrap_or_default()
    );
    if report.replayed > 0 {
        println!(
            "a replayed event that fails again does so once its retries are used up, \
             which can be after this: `consumers dead-letters history` keeps counting them"
        );
    }
    Ok(())
}

fn print_closed(verb: &str, closed: &manage::Closed, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(closed);
    }
    println!(
        "{} dead letters {verb} (operation {})",
        closed.affected, closed.operation_id
    );
    if let Some(note) = &closed.note {
        eprintln!("note: {note}");
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn row_table(rows: &[DeadLetterRow]) -> String {
    let mut table = format!(
        "{:>8}  {:<9} {:<9} {:<22} {:<36} {:<22} {:>3}  {:<19}  reason\n",
        "id", "group", "status", "type", "event id", "error kind", "att", "last failed"
    );
    for row in rows {
        let reason: String = row.reason.chars().take(80).collect();
        table.push_str(&format!(
            "{:>8}  {:<9} {:<9} {:<22} {:<36} {:<22} {:>3}  {:<19}  {}\n",
            row.id,
            row.group,
            row.status,
            for_terminal(row.event_type.as_deref().unwrap_or("-")),
            row.event_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            for_terminal(&row.error_kind),
            row.attempts,
            row.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
            for_terminal(&reason)
        ));
    }
    table
}

/// Opens the payload of dead letter `id` in `$EDITOR` (`$VISUAL`, else
/// `vi`) and returns what was saved.
async fn edit_in_editor(
    pool: &sqlx::PgPool,
    id: i64,
    patience: std::time::Duration,
) -> anyhow::Result<Vec<u8>> {
    let detail = within(patience, query::show(pool, id))
        .await?
        .with_context(|| format!("no dead letter {id}"))?;
    let text = match &detail.body {
        query::Body::Json(value) => serde_json::to_string_pretty(value)?,
        query::Body::Text(text) => text.clone(),
        query::Body::Hex(hex) => format!("(not text; hex bytes:)\n{hex}"),
    };
    let path = std::env::temp_dir().join(format!(
        "switchyard-dead-letter-{id}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, text)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    // The editor may be a command with arguments (`code --wait`).
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("editor")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot start {editor}"))?;
    let saved = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(
        status.success(),
        "{editor} exited with {status}; nothing changed"
    );
    Ok(saved?)
}
