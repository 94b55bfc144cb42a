//! The PostgreSQL pool and the embedded migrations.

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};

pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connects to the database, creating it first if the server has none of
/// that name, and applies pending migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating the database");
        if let Err(error) = Postgres::create_database(url).await {
            // Another process may have created it in the meantime.
            if !Postgres::database_exists(url).await? {
                return Err(error.into());
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A LISTEN connection of its own beside `pool`, not taken from it, so that
/// long-lived listeners never starve the queries; it reconnects by itself.
pub async fn listener(pool: &PgPool) -> sqlx::Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    PgListener::connect_with(&own).await
}
