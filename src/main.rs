use accountable::audit;
use accountable::audit::history::StreamFilter;
use accountable::auth::keys::{self, KeyRing};
use accountable::auth::Clock;
use accountable::commands::password::PasswordHasher;
use accountable::commands::CommandContext;
use accountable::config::{Config, Environment};
use accountable::{db, graphql, mail, rebuild, relay, shredding, startup, telemetry};
use accountable_domain::values::Email;
use accountable_domain::Role;
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
    Relay {
        #[command(subcommand)]
        command: Option<RelayCommand>,
    },
    /// Run the projection workers.
    Project,
    /// Send the mail that events call for (over SMTP; as `.eml` files in
    /// development without `ACCOUNTABLE_SMTP_URL`).
    Mailer {
        #[command(subcommand)]
        command: Option<MailerCommand>,
    },
    /// serve, relay, project and mailer in one process, for development.
    Dev,
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Operators' account tools.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Auditors' tools: verify the history, seal checkpoints, export.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Operators' tools for the read side.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

#[derive(Subcommand)]
enum RelayCommand {
    /// Ask the leading relay to try the events it parked again (after a
    /// fix that makes them readable); those it can read are published and
    /// leave `relay_parked_events`.
    Republish,
}

#[derive(Subcommand)]
enum MailerCommand {
    /// Make every parked message due again (after the mail server or its
    /// configuration was fixed); the leading mailer sends them.
    Retry,
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Rebuild a read table from the event store beside the live one and
    /// swap it in atomically; queries go on meanwhile, and the worker
    /// resumes from its offsets without applying anything twice.
    Rebuild {
        /// The projection: `users`.
        name: String,
    },
    /// Apply the messages parked in `projection_dead_letters` again; those
    /// that apply (or were applied meanwhile) leave the table.
    Retry {
        /// The projection: `users`.
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every event's hash and link, and check the signed
    /// checkpoints against the store; prints the first break and exits
    /// non-zero if there is one.
    Verify {
        /// Only this user's stream.
        #[arg(long)]
        user: Option<uuid::Uuid>,
    },
    /// Seal the heads of all streams in a signed checkpoint now.
    Checkpoint,
    /// Write events as JSON Lines in commit order, with their hashes, to
    /// check the chain offline. With --output, an export that was cut off
    /// resumes after its last complete line.
    Export {
        /// The file to write (appended to when it holds an earlier,
        /// interrupted export); standard output if left out.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Only this user's events.
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// Only events of these stored types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only events recorded at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this instant (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only positions from this one on.
        #[arg(long)]
        from_position: Option<i64>,
        /// Only positions up to this one.
        #[arg(long)]
        to_position: Option<i64>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Give a role to the user with this email, as actor `system` (makes
    /// the first admin).
    Grant {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

/// Refuses a projection name this build does not have.
fn known_projection(name: &str) -> anyhow::Result<()> {
    if !rebuild::PROJECTIONS.contains(&name) {
        anyhow::bail!(
            "no projection {name}; known: {}",
            rebuild::PROJECTIONS.join(", ")
        );
    }
    Ok(())
}

fn parse_role(input: &str) -> Result<Role, String> {
    match input.to_ascii_uppercase().as_str() {
        "USER" => Ok(Role::User),
        "AUDITOR" => Ok(Role::Auditor),
        "ADMIN" => Ok(Role::Admin),
        _ => Err("one of USER, AUDITOR, ADMIN".into()),
    }
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
    let process = match &command {
        Command::Serve => "serve",
        Command::Relay { .. } => "relay",
        Command::Project => "project",
        Command::Mailer { .. } => "mailer",
        Command::Dev => "dev",
        _ => "cli",
    };
    let traces = telemetry::init(config.env, process);
    let outcome = run(config, command).await;
    traces.shutdown();
    outcome
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    let pool = db::connect_and_migrate(
        config.database.url.expose(),
        config.database.max_connections,
    )
    .await?;
    let shutdown = CancellationToken::new();
    startup::cancel_on_signal(shutdown.clone());
    match command {
        Command::Serve => startup::serve(&config, pool, shutdown).await,
        Command::Relay { command: None } => startup::relay(&config, pool, shutdown).await,
        Command::Relay {
            command: Some(RelayCommand::Republish),
        } => {
            let requested = sqlx::query(relay::REQUEST_REPUBLISH)
                .bind(&config.kafka.events_topic)
                .execute(&pool)
                .await?
                .rows_affected();
            println!("{requested} parked events to publish again");
            Ok(())
        }
        Command::Project => startup::project(&config, pool, shutdown).await,
        Command::Mailer { command: None } => startup::mailer(&config, pool, shutdown).await,
        Command::Mailer {
            command: Some(MailerCommand::Retry),
        } => {
            let retried = mail::deliveries::retry_parked(&pool).await?;
            println!("{retried} parked messages to send again");
            Ok(())
        }
        Command::Dev => startup::dev(&config, pool, shutdown).await,
        Command::Migrate => {
            shredding::open_vault(&config, &pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Schema => Ok(()),
        Command::Keys(KeysCommand::Rotate { publish_for_secs }) => {
            let development = config.env == Environment::Development;
            let vault = shredding::open_vault(&config, &pool).await?;
            let kid = keys::rotate(
                &pool,
                &vault,
                development,
                chrono::Duration::seconds(publish_for_secs),
            )
            .await?;
            println!("{kid}");
            Ok(())
        }
        Command::Admin(AdminCommand::Grant { email, role }) => {
            let vault = shredding::open_vault(&config, &pool).await?;
            let hasher = PasswordHasher::new(config.auth.hash_cost(), 1, config.auth.hash_queue)?;
            let users = startup::users(&config, pool, hasher, vault);
            let user_id = users
                .find_by_email(&Email::parse(&email)?)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            let executed = users
                .assign_role(user_id, role, None, &CommandContext::system())
                .await?;
            println!(
                "{user_id} has {} (version {})",
                role.as_str(),
                executed.version
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { user }) => {
            let user = user.map(|id| id.to_string());
            let report = audit::verify(&pool, user.as_deref()).await?;
            match report.broken {
                Some(broken) => {
                    eprintln!("BROKEN {broken}");
                    std::process::exit(1);
                }
                None => {
                    println!(
                        "ok: {} events in {} streams, {} checkpoints",
                        report.events, report.streams, report.checkpoints
                    );
                    Ok(())
                }
            }
        }
        Command::Audit(AuditCommand::Export {
            output,
            user,
            types,
            since,
            until,
            from_position,
            to_position,
        }) => {
            let filter = StreamFilter {
                types: (!types.is_empty()).then_some(types),
                user_id: user,
                from: since,
                until,
                from_position,
                to_position,
                ..StreamFilter::default()
            };
            let written = match output {
                Some(path) => {
                    let after = audit::export::resume_point(&path)?;
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    let mut out = std::io::BufWriter::new(file);
                    audit::export::export(&pool, &filter, after.as_ref(), &mut out).await?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    audit::export::export(&pool, &filter, None, &mut out).await?
                }
            };
            eprintln!("exported {written} events");
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            known_projection(&name)?;
            let vault = shredding::open_vault(&config, &pool).await?;
            let rebuilt = rebuild::users(&pool, &vault).await?;
            println!(
                "rebuilt {name}: {} users from {} events",
                rebuilt.users, rebuilt.events
            );
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Retry { name }) => {
            known_projection(&name)?;
            let vault = shredding::open_vault(&config, &pool).await?;
            let applier = accountable_projections::worker::Applier::new(
                pool.clone(),
                accountable::store::StoreHistory::new(pool.clone()),
                vault,
            );
            let retried = applier.retry_dead_letters().await?;
            println!(
                "{name}: {} applied, {} still parked",
                retried.applied, retried.still_parked
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let vault = shredding::open_vault(&config, &pool).await?;
            let keys = KeyRing::configured(pool.clone(), vault, &config).await?;
            match audit::checkpoint::make(&pool, &keys, &Clock::default()).await? {
                Some(id) => println!("checkpoint {id}"),
                None => println!("nothing moved since the last checkpoint"),
            }
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
