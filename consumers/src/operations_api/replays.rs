//! Replays over the API: a preview, a start that takes one of
//! [`MAX_RUNNING_REPLAYS`] slots under a lock and runs the replay in the
//! background (a failure or panic ends it `failed` and frees the slot), its
//! status in one shape, and its cancel.

use super::bodies::{JsonBody, replay_options};
use super::*;

/// A replay this process runs.
pub(super) struct RunningReplay {
    pub(super) progress: watch::Receiver<ReplayProgress>,
    pub(super) cancel: CancellationToken,
}

pub(super) async fn preview(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let options = replay_options(body)?;
    let mut sample = Vec::new();
    let report = replay::dry_run(&state.pool, &state.settings, &options, &mut |candidate| {
        if sample.len() < 100 {
            sample.push(candidate);
        }
    })
    .await?;
    Ok(Json(json!({ "report": report, "sample": sample })))
}

pub(super) async fn start_replay(
    caller: Caller,
    State(state): State<ApiState>,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let options = replay_options(body)?;
    options.filter.for_change().map_err(ApiError::from_filter)?;
    let (sender, mut receiver) = watch::channel(ReplayProgress::default());
    let cancel = state.shutdown.child_token();
    // The slot is taken under the same lock that counts the running ones:
    // two requests at once cannot both take the last.
    let slot = {
        let mut running = state.running();
        // A replay that has not started yet ("") holds its slot too.
        running.retain(|_, replay| {
            matches!(replay.progress.borrow().outcome.as_str(), "" | "running")
        });
        if running.len() >= MAX_RUNNING_REPLAYS {
            return Err(ApiError::busy(format!(
                "{MAX_RUNNING_REPLAYS} replays are running; wait for one to end"
            )));
        }
        let slot = state.next_slot();
        running.insert(
            slot,
            RunningReplay {
                progress: receiver.clone(),
                cancel: cancel.clone(),
            },
        );
        slot
    };
    spawn_replay(
        state.clone(),
        caller.actor(),
        options,
        sender,
        cancel.clone(),
    );
    // The operation id exists once the replay recorded its start.
    let started = tokio::time::timeout(
        REPLAY_START_PATIENCE,
        receiver.wait_for(|progress| {
            progress.operation_id != 0 || !matches!(progress.outcome.as_str(), "" | "running")
        }),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|progress| progress.clone());
    let Some(progress) = started.filter(|progress| progress.operation_id != 0) else {
        // Not started in time: it is cancelled, and stays tracked (it holds
        // its slot) until it has ended.
        cancel.cancel();
        let detail = receiver.borrow().detail.clone();
        return Err(ApiError::unavailable(detail.unwrap_or_else(|| {
            "the replay did not start in time and was cancelled; try again".to_owned()
        })));
    };
    {
        let mut running = state.running();
        if let Some(replay) = running.remove(&slot) {
            running.insert(progress.operation_id, replay);
        }
    }
    let location = format!("/api/v1/replays/{}", progress.operation_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(progress),
    ))
}

/// How long a replay may take to record its start before the request
/// gives up on it (and cancels it).
pub(super) const REPLAY_START_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a replay in the background. Whatever ends it (an error, a panic)
/// ends its progress as `failed` and its audit record with it, so that it
/// frees its slot and never reads `running` for good.
pub(super) fn spawn_replay(
    state: ApiState,
    actor: crate::dead_letters::Actor,
    options: ReplayOptions,
    sender: watch::Sender<ReplayProgress>,
    cancel: CancellationToken,
) {
    let sender = Arc::new(sender);
    let task_sender = Arc::clone(&sender);
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        replay::replay(
            &task_state.pool,
            &task_state.settings,
            &actor,
            &options,
            &task_sender,
            &cancel,
        )
        .await
    });
    tokio::spawn(async move {
        let detail = match task.await {
            Ok(Ok(_)) => return,
            // The replay recorded its own failure where it could.
            Ok(Err(error)) => {
                tracing::warn!(%error, "replay over the API failed");
                sender.send_modify(|progress| {
                    progress.outcome = "failed".to_owned();
                    progress.detail = Some(error.to_string());
                });
                return;
            }
            Err(join) => format!("the replay stopped unexpectedly: {join}"),
        };
        tracing::error!(%detail, "replay over the API failed");
        sender.send_modify(|progress| {
            progress.outcome = "failed".to_owned();
            progress.detail = Some(detail.clone());
        });
        let progress = sender.borrow().clone();
        if progress.operation_id != 0 {
            let ended = within(state.patience(), async {
                let mut connection = state.pool.acquire().await?;
                operations::update(
                    &mut connection,
                    progress.operation_id,
                    progress.counts(),
                    Some(("failed", Some(&detail))),
                )
                .await
            })
            .await;
            if let Err(error) = ended {
                tracing::warn!(%error, operation_id = progress.operation_id, "the replay's failure was not recorded");
            }
        }
    });
}

/// A replay as `GET /api/v1/replays/{id}` shows it: one shape whether this
/// process runs it or it is only in the audit trail.
#[derive(Debug, serde::Serialize)]
pub(super) struct ReplayStatus {
    /// Whether this process runs it now.
    live: bool,
    #[serde(flatten)]
    progress: ReplayProgress,
}

pub(super) async fn replay_status(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
) -> Result<Json<ReplayStatus>, ApiError> {
    caller.require(Role::Viewer)?;
    let live = state
        .running()
        .get(&id)
        .map(|replay| replay.progress.borrow().clone())
        .filter(|progress| progress.outcome == "running");
    if let Some(progress) = live {
        return Ok(Json(ReplayStatus {
            live: true,
            progress,
        }));
    }
    // Not running here: the audit trail's record, with the failures of its
    // events counted now (an event fails again after its retries, which
    // may be long after the replay ended).
    let record = within(state.patience(), async {
        let Some(operation) = operations::get(&state.pool, id).await? else {
            return Ok(None);
        };
        let failed_again = replay::failed_again(&state.pool, id).await?;
        Ok::<_, sqlx::Error>(Some((operation, failed_again)))
    })
    .await?;
    match record {
        Some((operation, failed_again)) if operation.action == "replay" => Ok(Json(ReplayStatus {
            live: false,
            progress: ReplayProgress {
                operation_id: operation.id,
                matched: operation.matched,
                replayed: operation.affected,
                skipped: operation.skipped,
                failed_again,
                outcome: operation.outcome,
                detail: operation.detail,
            },
        })),
        _ => Err(ApiError::not_found(format!("no replay {id}"))),
    }
}

pub(super) async fn cancel_replay(
    caller: Caller,
    State(state): State<ApiState>,
    Id(id): Id,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Operator)?;
    let progress = {
        let running = state.running();
        let replay = running
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("no replay {id} runs in this process")))?;
        replay.cancel.cancel();
        replay.progress.clone()
    };
    let mut progress = progress;
    let ended = tokio::time::timeout(
        REQUEST_TIMEOUT - Duration::from_secs(5),
        progress.wait_for(|state| state.outcome != "running"),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    let current = progress.borrow().clone();
    let status = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(current)))
}
