//! `producers migrate`: create the database if missing, apply migrations.

use shared::settings::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let pool = shared::startup::prepare_database(settings, 1).await?;
    let applied = shared::database::MIGRATOR.iter().count();
    shared::database::close(&pool).await;
    println!("database ready: {applied} migrations applied");
    Ok(())
}
