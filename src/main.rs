use accountable::auth::keys;
use accountable::config::{Config, Environment};
use accountable::{db, graphql, processes, telemetry};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Accountable: event-sourced accounts with a GraphQL API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP.
    Serve,
    /// Publish committed events to Kafka.
    Relay,
    /// Run the projection workers.
    Project,
    /// serve, relay and project in one process, for development.
    Dev,
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new signing key: published in the JWKS at once, used for
    /// signing after --publish-for-secs. Older keys keep verifying until
    /// retired.
    Rotate {
        #[arg(long, default_value_t = 60)]
        publish_for_secs: i64,
    },
    /// Stop publishing and accepting a key; tokens it signed are refused.
    Retire { kid: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { config, command } = Cli::parse();
    if let Command::Schema = command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    telemetry::init(config.env);
    let pool = db::connect_and_migrate(&config.database_url, config.db_max_connections).await?;
    let shutdown = CancellationToken::new();
    processes::cancel_on_signal(shutdown.clone());
    match command {
        Command::Serve => processes::serve(&config, pool, shutdown).await,
        Command::Relay => processes::relay(&config, pool, shutdown).await,
        Command::Project => processes::project(&config, pool, shutdown).await,
        Command::Dev => processes::dev(&config, pool, shutdown).await,
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Schema => Ok(()),
        Command::Keys(KeysCommand::Rotate { publish_for_secs }) => {
            let development = config.env == Environment::Development;
            let kid = keys::rotate(
                &pool,
                development,
                chrono::Duration::seconds(publish_for_secs),
            )
            .await?;
            println!("{kid}");
            Ok(())
        }
        Command::Keys(KeysCommand::Retire { kid }) => {
            if !keys::retire(&pool, &kid).await? {
                anyhow::bail!("no live key {kid}");
            }
            println!("retired {kid}");
            Ok(())
        }
    }
}
