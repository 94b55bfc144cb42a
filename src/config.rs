//! Typed configuration, read from the environment (or flags), with
//! defaults that work on a developer's machine, in one group per part
//! (database, Kafka, HTTP, auth, vault, audit). Secrets (the database URL,
//! which may carry a password, and the master key) are [`Secret`]s, which
//! never print. Each part builds its own settings from its group; this
//! module depends on none of them.

use std::net::SocketAddr;
use std::time::Duration;

use accountable_projections::worker::WorkerConfig;
use accountable_vault::MasterKey;
use clap::{Args, Parser, ValueEnum};

use crate::commands::password::HashCost;
use crate::mail::messages::Letterhead;
use crate::mail::{MailerConfig, Transport};
use accountable_domain::values::Password;
use accountable_domain::LockoutPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Every setting, in groups; read from the environment (or flags).
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// `production` turns off GraphiQL.
    #[arg(
        long = "env",
        env = "ACCOUNTABLE_ENV",
        value_enum,
        default_value = "development",
        global = true
    )]
    pub env: Environment,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub vault: VaultConfig,

    #[command(flatten)]
    pub audit: AuditConfig,

    #[command(flatten)]
    pub mail: MailConfig,
}

/// PostgreSQL: the event store and the read tables.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL: event store and read tables.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/accountable",
        hide_env_values = true,
        global = true
    )]
    pub url: Secret,

    /// Most connections in the PostgreSQL pool of each process.
    #[arg(
        long = "db-max-connections",
        env = "ACCOUNTABLE_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub max_connections: u32,
}

/// Kafka: the broker, the topics, and how the relay feeds them.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_servers: String,

    /// The topic of account events.
    #[arg(
        long = "events-topic",
        env = "ACCOUNTABLE_EVENTS_TOPIC",
        default_value = "accountable.user.events",
        global = true
    )]
    pub events_topic: String,

    /// The compacted topic of every user's latest state (personal data
    /// included: restrict who may read it), created if missing.
    #[arg(
        long = "state-topic",
        env = "ACCOUNTABLE_STATE_TOPIC",
        default_value = "accountable.user.state",
        global = true
    )]
    pub state_topic: String,

    /// The longest a value may stay in the state topic after a newer one
    /// (such as a tombstone) supersedes it: the topic's
    /// `max.compaction.lag.ms` and `segment.ms`.
    #[arg(
        long = "state-max-compaction-lag-ms",
        env = "ACCOUNTABLE_STATE_MAX_COMPACTION_LAG_MS",
        default_value_t = 3_600_000,
        global = true
    )]
    pub state_max_compaction_lag_ms: u64,

    /// Partitions of the events topic when the relay creates it.
    #[arg(
        long = "topic-partitions",
        env = "ACCOUNTABLE_TOPIC_PARTITIONS",
        default_value_t = 6,
        global = true
    )]
    pub topic_partitions: i32,

    /// Replication factor of the events topic when the relay creates it
    /// (3 on a production cluster).
    #[arg(
        long = "topic-replication",
        env = "ACCOUNTABLE_TOPIC_REPLICATION",
        default_value_t = 1,
        global = true
    )]
    pub topic_replication: i32,

    /// The consumer group of the `users` projection.
    #[arg(
        long = "projection-group",
        env = "ACCOUNTABLE_PROJECTION_GROUP",
        default_value = "accountable.projection.users",
        global = true
    )]
    pub projection_group: String,

    /// How often the relay looks for events without being notified.
    #[arg(
        long = "relay-poll-ms",
        env = "ACCOUNTABLE_RELAY_POLL_MS",
        default_value_t = 500,
        global = true
    )]
    pub relay_poll_ms: u64,

    /// Most events the relay publishes per cursor update (one database
    /// round trip and one wait for the broker's acknowledgements each).
    #[arg(
        long = "relay-batch-size",
        env = "ACCOUNTABLE_RELAY_BATCH_SIZE",
        default_value_t = 500,
        value_parser = clap::value_parser!(i64).range(1..=100_000),
        global = true
    )]
    pub relay_batch_size: i64,

    /// Most messages per Kafka record batch from the relay. 1 suits tansu,
    /// which skips the rest of a batch when a consumer resumes inside it;
    /// raise it (e.g. to 10000) on a real Kafka cluster.
    #[arg(
        long = "relay-batch-messages",
        env = "ACCOUNTABLE_RELAY_BATCH_MESSAGES",
        default_value_t = 1,
        global = true
    )]
    pub relay_batch_messages: u32,
}

/// The HTTP API: where it listens and what one client may do.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    #[arg(
        long = "http-addr",
        env = "ACCOUNTABLE_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub addr: SocketAddr,

    /// `login`, `register` and `refreshToken` requests per minute per client
    /// address; 0 turns the limit off.
    #[arg(
        long = "rate-limit",
        env = "ACCOUNTABLE_RATE_LIMIT",
        default_value_t = 60,
        global = true
    )]
    pub rate_limit: u32,

    /// Operations (subscriptions, and queries or mutations under way) one
    /// WebSocket may run at once; one more is refused with `RATE_LIMITED`.
    #[arg(
        long = "ws-operations",
        env = "ACCOUNTABLE_WS_OPERATIONS",
        default_value_t = 16,
        global = true
    )]
    pub ws_operations: usize,

    /// WebSockets one client address may hold open at once; one more is
    /// refused (429).
    #[arg(
        long = "ws-per-client",
        env = "ACCOUNTABLE_WS_PER_CLIENT",
        default_value_t = 32,
        global = true
    )]
    pub ws_per_client: usize,

    /// Browser origins allowed to call the API and open subscriptions
    /// (comma-separated, e.g. `https://app.example.com`); `*` allows any
    /// origin (never with credentials: tokens travel in headers, not
    /// cookies). Empty: same origin only.
    #[arg(
        long = "cors-origins",
        env = "ACCOUNTABLE_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,

    /// Where clients reach the API (`https://accounts.example.com`): the
    /// OAuth metadata names its endpoints there. Unset, they are named at
    /// the host each request names.
    #[arg(long = "api-url", env = "ACCOUNTABLE_API_URL", global = true)]
    pub api_url: Option<String>,

    /// Reverse proxies (addresses or networks, e.g. `10.0.0.0/8,::1`) whose
    /// `X-Forwarded-For` names the client. A request from any other peer
    /// is the peer's own; empty: every request is the peer's own.
    #[arg(
        long = "trusted-proxies",
        env = "ACCOUNTABLE_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<String>,

    /// How long `user(id, minVersion)` waits for the read side to catch up.
    #[arg(
        long = "read-your-writes-timeout-ms",
        env = "ACCOUNTABLE_READ_YOUR_WRITES_TIMEOUT_MS",
        default_value_t = 3_000,
        global = true
    )]
    pub read_your_writes_timeout_ms: u64,
}

/// Passwords, tokens and sessions.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// argon2id memory cost in KiB.
    #[arg(long = "argon2-memory-kib", env = "ACCOUNTABLE_ARGON2_MEMORY_KIB", default_value_t = HashCost::OWASP.memory_kib, global = true)]
    pub argon2_memory_kib: u32,

    /// argon2id passes.
    #[arg(long = "argon2-iterations", env = "ACCOUNTABLE_ARGON2_ITERATIONS", default_value_t = HashCost::OWASP.iterations, global = true)]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long = "argon2-parallelism", env = "ACCOUNTABLE_ARGON2_PARALLELISM", default_value_t = HashCost::OWASP.parallelism, global = true)]
    pub argon2_parallelism: u32,

    /// Hashes computed at once; 0 means one per CPU.
    #[arg(
        long = "hash-concurrency",
        env = "ACCOUNTABLE_HASH_CONCURRENCY",
        default_value_t = 0,
        global = true
    )]
    pub hash_concurrency: usize,

    /// Hashes (sign-ins, registrations, password changes) that may wait for
    /// a busy hashing thread; beyond them, requests are refused at once with
    /// `UNAVAILABLE`, so that a login storm cannot slow every other request.
    #[arg(
        long = "hash-queue",
        env = "ACCOUNTABLE_HASH_QUEUE",
        default_value_t = 32,
        global = true
    )]
    pub hash_queue: usize,

    /// Shortest password accepted, in code points.
    #[arg(long = "password-min-length", env = "ACCOUNTABLE_PASSWORD_MIN_LENGTH", default_value_t = Password::DEFAULT_MIN_LEN, global = true)]
    pub password_min_length: usize,

    /// A file holding an Ed25519 private key (PKCS#8 PEM) to sign access
    /// tokens with; added to the published keys at start. Production needs
    /// this or a key made with `accountable keys rotate`.
    #[arg(long = "jwt-key-file", env = "ACCOUNTABLE_JWT_KEY_FILE", global = true)]
    pub jwt_key_file: Option<std::path::PathBuf>,

    /// The `iss` of access tokens.
    #[arg(
        long = "jwt-issuer",
        env = "ACCOUNTABLE_JWT_ISSUER",
        default_value = "accountable",
        global = true
    )]
    pub jwt_issuer: String,

    /// The `aud` of access tokens.
    #[arg(
        long = "jwt-audience",
        env = "ACCOUNTABLE_JWT_AUDIENCE",
        default_value = "accountable",
        global = true
    )]
    pub jwt_audience: String,

    /// Lifetime of an access token.
    #[arg(
        long = "access-token-ttl-secs",
        env = "ACCOUNTABLE_ACCESS_TOKEN_TTL_SECS",
        default_value_t = 300,
        global = true
    )]
    pub access_token_ttl_secs: i64,

    /// A refresh token unused this long expires.
    #[arg(
        long = "refresh-idle-secs",
        env = "ACCOUNTABLE_REFRESH_IDLE_SECS",
        default_value_t = 86_400,
        global = true
    )]
    pub refresh_idle_secs: i64,

    /// A session lasts at most this long from login.
    #[arg(long = "refresh-max-secs", env = "ACCOUNTABLE_REFRESH_MAX_SECS", default_value_t = 30 * 86_400, global = true)]
    pub refresh_max_secs: i64,

    /// How recent a sign-in (or `reauthenticate`) the dangerous changes
    /// need: `changeEmail`, `changePassword`, `deleteUser`, `eraseUser`,
    /// `disableTotp`.
    #[arg(
        long = "step-up-max-age-secs",
        env = "ACCOUNTABLE_STEP_UP_MAX_AGE_SECS",
        default_value_t = 300,
        global = true
    )]
    pub step_up_max_age_secs: i64,

    /// The WebAuthn relying party id passkeys are bound to: the site's
    /// registrable domain (`example.com`), or `localhost` in development.
    /// An IP address is none. Changing it orphans every passkey.
    #[arg(
        long = "webauthn-rp-id",
        env = "ACCOUNTABLE_WEBAUTHN_RP_ID",
        default_value = "localhost",
        global = true
    )]
    pub webauthn_rp_id: String,

    /// The origins of the pages that use passkeys, comma-separated: each
    /// `https://` on the relying party id or below it, or
    /// `http://localhost:…`.
    #[arg(
        long = "webauthn-origins",
        env = "ACCOUNTABLE_WEBAUTHN_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:8080",
        global = true
    )]
    pub webauthn_origins: Vec<String>,

    /// Failed logins in a row before the account locks.
    #[arg(
        long = "login-max-failures",
        env = "ACCOUNTABLE_LOGIN_MAX_FAILURES",
        default_value_t = 10,
        global = true
    )]
    pub login_max_failures: u32,

    /// An email claim a registration has not confirmed in this time was
    /// abandoned by a crash and may be taken over.
    #[arg(
        long = "email-claim-ttl-secs",
        env = "ACCOUNTABLE_EMAIL_CLAIM_TTL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub email_claim_ttl_secs: u64,
}

/// The master key that wraps every user's data key.
#[derive(Debug, Clone, Args)]
pub struct VaultConfig {
    /// The master key (32 random bytes in base64, e.g. from `openssl rand
    /// -base64 32`) that wraps every user's data key. A database refuses
    /// any key other than the first it was used with. Production needs
    /// this or `ACCOUNTABLE_MASTER_KEY_FILE`.
    #[arg(
        long = "master-key",
        env = "ACCOUNTABLE_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<Secret>,

    /// A file holding the master key in base64. In development, when no key
    /// is given, `.data/master.key` is used, and made on first start.
    #[arg(
        long = "master-key-file",
        env = "ACCOUNTABLE_MASTER_KEY_FILE",
        global = true
    )]
    pub master_key_file: Option<std::path::PathBuf>,
}

/// Signed checkpoints of the event store.
#[derive(Debug, Clone, Args)]
pub struct AuditConfig {
    /// How often `serve` seals the heads of all streams in a signed
    /// checkpoint (seconds; 0 = never, make them with `accountable audit
    /// checkpoint`).
    #[arg(
        long = "checkpoint-secs",
        env = "ACCOUNTABLE_CHECKPOINT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub checkpoint_secs: u64,
}

/// The mail the account flows send, and whether addresses must be verified.
#[derive(Debug, Clone, Args)]
pub struct MailConfig {
    /// The SMTP server: `smtps://user:password@host` (TLS),
    /// `smtp://host:port?tls=required` (STARTTLS), or `smtp://host:port`
    /// (no TLS: loopback and tests only).
    /// Without it, the mailer writes each message as an `.eml` file into
    /// `ACCOUNTABLE_MAIL_DIR` (development only).
    #[arg(
        long = "smtp-url",
        env = "ACCOUNTABLE_SMTP_URL",
        hide_env_values = true,
        global = true
    )]
    pub smtp_url: Option<Secret>,

    /// The sender of every mail.
    #[arg(
        long = "mail-from",
        env = "ACCOUNTABLE_MAIL_FROM",
        default_value = "Accountable <no-reply@accountable.localhost>",
        global = true
    )]
    pub from: String,

    /// The account pages' base URL, that the links in mails point to
    /// (`/verify-email`, `/reset-password`, `/confirm-email`, each with
    /// `?token=`): by default the pages `serve` itself answers under
    /// `/account`.
    #[arg(
        long = "public-url",
        env = "ACCOUNTABLE_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080/account",
        global = true
    )]
    pub public_url: String,

    /// Where the mailer writes messages when no SMTP server is configured.
    #[arg(
        long = "mail-dir",
        env = "ACCOUNTABLE_MAIL_DIR",
        default_value = ".data/mail",
        global = true
    )]
    pub mail_dir: std::path::PathBuf,

    /// Whether only verified addresses may sign in: `true` or `false`;
    /// on in production, off in development unless set.
    #[arg(
        long = "require-verified-email",
        env = "ACCOUNTABLE_REQUIRE_VERIFIED_EMAIL",
        action = clap::ArgAction::Set,
        global = true
    )]
    pub require_verified_email: Option<bool>,

    /// How often the mailer looks for events and due mail without being
    /// told (milliseconds).
    #[arg(
        long = "mail-poll-ms",
        env = "ACCOUNTABLE_MAIL_POLL_MS",
        default_value_t = 1_000,
        global = true
    )]
    pub poll_ms: u64,

    /// The wait before the first retry of a message the server refused or
    /// did not take (milliseconds); it doubles with each, up to 5 minutes.
    #[arg(
        long = "mail-retry-ms",
        env = "ACCOUNTABLE_MAIL_RETRY_MS",
        default_value_t = 2_000,
        global = true
    )]
    pub retry_ms: u64,

    /// Attempts at a message before it is parked (retry with `accountable
    /// mail retry`).
    #[arg(
        long = "mail-max-attempts",
        env = "ACCOUNTABLE_MAIL_MAX_ATTEMPTS",
        default_value_t = 12,
        global = true
    )]
    pub max_attempts: i32,
}

/// Where development keeps the master key it makes for itself.
const DEVELOPMENT_MASTER_KEY: &str = ".data/master.key";

impl Config {
    /// The configuration from the environment alone, as a test or an
    /// embedding program would take it.
    pub fn from_env() -> Self {
        Self::parse_from(["accountable"])
    }

    /// Where the mailer sends, and what its messages are made with. Without
    /// an SMTP server, development writes `.eml` files and production
    /// refuses to start.
    pub fn mailer(&self) -> anyhow::Result<(Transport, MailerConfig)> {
        let from: lettre::message::Mailbox = self
            .mail
            .from
            .parse()
            .map_err(|_| anyhow::anyhow!("ACCOUNTABLE_MAIL_FROM is not a mail address"))?;
        let smtp_url = self
            .mail
            .smtp_url
            .as_ref()
            .filter(|url| !url.expose().is_empty());
        let transport = match (smtp_url, self.env) {
            (Some(url), _) => Transport::smtp(url.expose())?,
            (None, Environment::Development) => Transport::files(self.mail.mail_dir.clone())?,
            (None, Environment::Production) => {
                anyhow::bail!("production sends mail over SMTP: set ACCOUNTABLE_SMTP_URL")
            }
        };
        let letterhead = Letterhead {
            domain: from.email.domain().to_owned(),
            from,
            public_url: self.mail.public_url.trim_end_matches('/').to_owned(),
        };
        Ok((
            transport,
            MailerConfig {
                letterhead,
                poll_interval: std::time::Duration::from_millis(self.mail.poll_ms),
                retry: std::time::Duration::from_millis(self.mail.retry_ms),
                max_attempts: self.mail.max_attempts,
            },
        ))
    }

    /// Whether only verified addresses may sign in: as configured, or on
    /// in production and off in development.
    pub fn require_verified_email(&self) -> bool {
        self.mail
            .require_verified_email
            .unwrap_or(self.env == Environment::Production)
    }

    /// The configured master key. Without one, production refuses to start
    /// and development makes one and keeps it in `.data/master.key`.
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        if let Some(text) = &self.vault.master_key {
            return MasterKey::from_base64(text.expose())
                .map_err(|e| anyhow::anyhow!("ACCOUNTABLE_MASTER_KEY: {e}"));
        }
        let path = match (&self.vault.master_key_file, self.env) {
            (Some(path), _) => path.clone(),
            (None, Environment::Development) => {
                let path = std::path::PathBuf::from(DEVELOPMENT_MASTER_KEY);
                create_key_file(&path)?;
                path
            }
            (None, Environment::Production) => anyhow::bail!(
                "production needs a master key: set ACCOUNTABLE_MASTER_KEY or \
                 ACCOUNTABLE_MASTER_KEY_FILE"
            ),
        };
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))?,
        );
        MasterKey::from_base64(&text)
            .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))
    }

    pub fn projection(&self) -> WorkerConfig {
        WorkerConfig {
            bootstrap_servers: self.kafka.bootstrap_servers.clone(),
            topic: self.kafka.events_topic.clone(),
            group_id: self.kafka.projection_group.clone(),
            max_batch: 500,
            batch_window: Duration::from_millis(5),
        }
    }
}

impl AuthConfig {
    pub fn hash_cost(&self) -> HashCost {
        HashCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    /// Hashing threads: as configured, or one per core.
    pub fn hash_concurrency(&self) -> usize {
        match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    pub fn lockout(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: self.login_max_failures,
            ..LockoutPolicy::default()
        }
    }
}

impl HttpConfig {
    pub fn read_your_writes_timeout(&self) -> Duration {
        Duration::from_millis(self.read_your_writes_timeout_ms)
    }
}

/// A secret from the configuration: never printed (its `Debug` shows
/// `***`, and it has no `Display`), wiped from memory when dropped; only
/// [`Secret::expose`] gives it out, to whoever must use it.
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// Writes a new master key to `path` unless a file is there; a concurrent
/// writer's key wins and is kept (the file appears whole or not at all).
fn create_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let draft = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&draft)?;
    file.write_all(MasterKey::generate().to_base64().as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&draft, path);
    std::fs::remove_file(&draft)?;
    match linked {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(error.into()),
        _ => {
            tracing::warn!(path = %path.display(), "made a development master key");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_but_never_printed() {
        let config = Config::parse_from([
            "accountable",
            "--database-url",
            "postgres://app:hunter2@db.internal/accountable",
            "--master-key",
            "c2VjcmV0LW1hc3Rlci1rZXk",
            "--smtp-url",
            "smtps://mailer:s3cr3t-smtp@smtp.example.com",
        ]);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t-smtp"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert_eq!(
            config.database.url.expose(),
            "postgres://app:hunter2@db.internal/accountable"
        );
    }

    /// (In a runtime: lettre's connection pool lives on one.)
    #[tokio::test]
    async fn production_requires_verified_addresses_and_smtp_unless_told_otherwise() {
        let parse = |args: &[&str]| Config::parse_from([&["accountable"], args].concat());
        assert!(!parse(&[]).require_verified_email());
        assert!(parse(&["--env", "production"]).require_verified_email());
        assert!(
            !parse(&["--env", "production", "--require-verified-email", "false"])
                .require_verified_email()
        );
        assert!(parse(&["--require-verified-email", "true"]).require_verified_email());
        let error = parse(&["--env", "production"])
            .mailer()
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("ACCOUNTABLE_SMTP_URL")));
        let (transport, mailer) = parse(&["--smtp-url", "smtp://127.0.0.1:2525"])
            .mailer()
            .unwrap();
        assert!(matches!(transport, Transport::Smtp(_)));
        assert_eq!(mailer.letterhead.domain, "accountable.localhost");
    }
}
