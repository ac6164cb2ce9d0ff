//! `producers keys create|list|revoke`: the gateway's API keys.

use shared::printable::for_terminal;
use shared::settings::Settings;

use crate::cli::KeysCommand;
use crate::gateway::api_keys::{self, NewApiKey};
use crate::gateway::grants::Grants;

pub async fn run(command: KeysCommand, settings: &Settings) -> anyhow::Result<()> {
    let pool = shared::startup::prepare_database(settings, 2).await?;
    match command {
        KeysCommand::Create {
            producer,
            types,
            sources,
            rate,
            burst,
        } => {
            let grants = Grants::new(types, sources)?;
            let (key, secret) = api_keys::create(
                &pool,
                NewApiKey {
                    producer,
                    grants,
                    rate_per_second: rate,
                    burst: burst.unwrap_or(rate.saturating_mul(2)),
                },
            )
            .await?;
            eprintln!(
                "created key {} for {:?}; it is shown once, store it now:",
                key.key_id, key.producer
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            println!(
                "{:<36}  {:<16}  {:>7}  {:>7}  {:<8}  types / sources",
                "key id", "producer", "rate/s", "burst", "state"
            );
            for key in api_keys::list(&pool).await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<36}  {:<16}  {:>7}  {:>7}  {:<8}  {} / {}",
                    key.key_id,
                    for_terminal(&key.producer),
                    key.rate_per_second,
                    key.burst,
                    state,
                    for_terminal(&key.grants.types().join(",")),
                    for_terminal(&key.grants.sources().join(","))
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            anyhow::ensure!(
                api_keys::revoke(&pool, key_id).await?,
                "no live key {key_id}"
            );
            println!("revoked {key_id}; gateways stop accepting it within their key cache time");
        }
    }
    shared::database::close(&pool).await;
    Ok(())
}
