//! `producers publish`: validate and publish CloudEvents from NDJSON.

use std::io::BufRead;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use shared::events::Event;
use shared::publish::Publisher;
use shared::settings::Settings;

use crate::cli::PublishArgs;

/// Lines published together; bounds memory on large files.
const CHUNK_LINES: usize = 1_000;

/// A line that was not published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based line number in the input.
    pub line: usize,
    /// The decode or publish error.
    pub reason: String,
}

/// What `publish` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Events the broker confirmed.
    pub published: usize,
    /// Lines not published, in input order.
    pub rejected: Vec<Rejection>,
}

pub async fn run(args: PublishArgs, settings: &Settings) -> anyhow::Result<()> {
    let (connection, topology) =
        shared::startup::prepare_broker(settings, "switchyard-publish").await?;
    let _ = connection.close(200, "OK".into()).await;
    let publisher =
        Publisher::connect(settings, topology.events_exchange(), "switchyard-publish").await?;
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
    };
    let progress = progress_bar(args.file.as_deref());
    let report = publish_ndjson(input, &publisher, settings.max_event_bytes, &progress).await?;
    progress.finish_and_clear();
    publisher.close().await;
    println!("published: {}", report.published);
    println!("rejected:  {}", report.rejected.len());
    for rejection in &report.rejected {
        println!("  line {}: {}", rejection.line, rejection.reason);
    }
    anyhow::ensure!(
        report.rejected.is_empty(),
        "{} lines were not published",
        report.rejected.len()
    );
    Ok(())
}

/// A bar over the file's bytes, or a counter for stdin; drawn on stderr
/// only when it is a terminal.
fn progress_bar(file: Option<&std::path::Path>) -> ProgressBar {
    let size = file
        .filter(|path| path.as_os_str() != "-")
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len());
    match size {
        Some(bytes) => ProgressBar::new(bytes).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

/// Decodes each non-blank line as a CloudEvent and publishes the valid ones
/// with confirms, [`CHUNK_LINES`] at a time; `progress` advances by the
/// bytes read and shows the counts. A line is held in memory only up to
/// the event size limit: a longer one is rejected unread, as is one that
/// is not an event (invalid UTF-8 included), each with its number.
pub async fn publish_ndjson(
    mut input: impl BufRead,
    publisher: &Publisher,
    max_event_bytes: usize,
    progress: &ProgressBar,
) -> std::io::Result<PublishReport> {
    let mut report = PublishReport::default();
    let mut chunk: Vec<(usize, Event)> = Vec::with_capacity(CHUNK_LINES);
    let mut line = Vec::new();
    // Room for the line ending too.
    let limit = max_event_bytes.saturating_add(2);
    let mut number = 0;
    loop {
        line.clear();
        let (read, fits) = shared::lines::read_line_within(&mut input, &mut line, limit)?;
        if read == 0 {
            break;
        }
        number += 1;
        progress.inc(read as u64);
        if !fits {
            report.rejected.push(Rejection {
                line: number,
                reason: format!("longer than {max_event_bytes} bytes, the largest event accepted"),
            });
            continue;
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Event::decode(content, max_event_bytes) {
            Ok(event) => chunk.push((number, event)),
            Err(error) => report.rejected.push(Rejection {
                line: number,
                reason: error.to_string(),
            }),
        }
        if chunk.len() == CHUNK_LINES {
            publish_chunk(&mut chunk, publisher, &mut report).await;
            progress.set_message(format!(
                "published {}, rejected {}",
                report.published,
                report.rejected.len()
            ));
        }
    }
    publish_chunk(&mut chunk, publisher, &mut report).await;
    report.rejected.sort_by_key(|rejection| rejection.line);
    Ok(report)
}

async fn publish_chunk(
    chunk: &mut Vec<(usize, Event)>,
    publisher: &Publisher,
    report: &mut PublishReport,
) {
    let events: Vec<Event> = chunk.iter().map(|(_, event)| event.clone()).collect();
    for ((line, event), result) in chunk.drain(..).zip(publisher.publish_all(&events).await) {
        match result {
            Ok(()) => report.published += 1,
            Err(error) => {
                tracing::warn!(event_id = %event.id, line, %error, "event not published");
                report.rejected.push(Rejection {
                    line,
                    reason: error.to_string(),
                });
            }
        }
    }
}
