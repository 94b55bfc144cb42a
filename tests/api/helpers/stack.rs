//! A stack of its own per test: a fresh database and topic names, the real
//! service on port 0, relay and projection workers in process or as child
//! processes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use accountable::auth::Clock;
use accountable::config::{Config, Secret};
use accountable::graphql::loader::LookupCount;
use accountable::startup::Application;
use accountable::{db, kafka, startup};
use accountable_vault::{EventFields, MasterKey, Vault};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;

/// A stack of its own for one test: database, topic, consumer group.
pub struct TestStack {
    pub config: Config,
    pub pool: PgPool,
    shutdown: CancellationToken,
}

impl TestStack {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    /// A stack whose test configuration `adjust` changes first.
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::from_env();
        let (server, _) = config
            .database
            .url
            .expose()
            .rsplit_once('/')
            .expect("DATABASE_URL has no database name");
        let id = Uuid::new_v4().simple().to_string();
        config.database.url = Secret::new(format!("{server}/accountable_test_{id}"));
        config.kafka.events_topic = format!("accountable.test.{id}.user.events");
        config.kafka.state_topic = format!("accountable.test.{id}.user.state");
        config.kafka.projection_group = format!("accountable.test.{id}.projection.users");
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        config.kafka.topic_partitions = 3;
        config.kafka.relay_poll_ms = 100;
        config.database.max_connections = 5;
        config.auth.argon2_memory_kib = 1024;
        config.auth.argon2_iterations = 1;
        config.http.read_your_writes_timeout_ms = 10_000;
        config.http.rate_limit = 0;
        // Tests send bursts on purpose (fifty registrations at once); the
        // shedding test sets its own queue.
        config.auth.hash_queue = 1_000;
        config.vault.master_key = Some(Secret::new(MasterKey::generate().to_base64().to_string()));
        config.mail.poll_ms = 100;
        config.mail.retry_ms = 200;
        config.mail.mail_dir = std::env::temp_dir().join(format!("accountable-test-mail-{id}"));
        adjust(&mut config);
        let pool = db::connect_and_migrate(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must be running (start it with scripts/test.sh): {e}")
        });
        Self {
            config,
            pool,
            shutdown: CancellationToken::new(),
        }
    }

    /// The HTTP API, relay and projection worker, all in this process.
    pub async fn full() -> (Self, TestApi) {
        let stack = Self::new().await;
        let api = stack.api().await;
        stack.relay();
        stack.projection();
        (stack, api)
    }

    pub async fn api(&self) -> TestApi {
        self.api_with_clock(Clock::default()).await
    }

    /// The API deciding auth questions at the time of `clock`.
    pub async fn api_with_clock(&self, clock: Clock) -> TestApi {
        Self::start_api(self, &self.config, clock).await
    }

    /// A second API on this stack's database, configured otherwise.
    pub async fn api_for(&self, config: Config) -> TestApi {
        Self::start_api(self, &config, Clock::default()).await
    }

    async fn start_api(&self, config: &Config, clock: Clock) -> TestApi {
        let app =
            Application::build_with_clock(config, self.pool.clone(), self.shutdown.clone(), clock)
                .await
                .expect("the API starts");
        let addr = app.local_addr().unwrap();
        let user_lookups = app.user_lookups();
        tokio::spawn(app.run_until_stopped(self.shutdown.child_token()));
        TestApi {
            addr,
            client: reqwest::Client::new(),
            user_lookups,
        }
    }

    /// Starts a relay in this process; it runs until the stack is dropped.
    pub fn relay(&self) {
        self.spawn(
            |config, pool, shutdown| async move { startup::relay(&config, pool, shutdown).await },
        )
    }

    /// Starts a mailer in this process, until the stack is dropped.
    pub fn mailer(&self) {
        self.spawn(|config, pool, shutdown| async move {
            startup::mailer(&config, pool, shutdown).await
        })
    }

    /// Starts a projection worker in this process, until the stack is dropped.
    pub fn projection(&self) {
        self.spawn(|config, pool, shutdown| async move {
            startup::project(&config, pool, shutdown).await
        })
    }

    fn spawn<F, Fut>(&self, run: F)
    where
        F: FnOnce(Config, PgPool, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let task = run(
            self.config.clone(),
            self.pool.clone(),
            self.shutdown.child_token(),
        );
        tokio::spawn(async move {
            if let Err(error) = task.await {
                panic!("a background part of the test stack failed: {error:#}");
            }
        });
    }

    /// `accountable SUBCOMMAND` as a child process on this stack; killed
    /// (SIGKILL) when dropped.
    pub fn process(&self, subcommand: &str) -> tokio::process::Child {
        self.process_command(subcommand)
            .spawn()
            .expect("the accountable binary starts")
    }

    /// `accountable serve` as a child process on a free loopback port, and
    /// its API once it answers.
    pub async fn serve_process(&self) -> (tokio::process::Child, TestApi) {
        self.serve_process_with(&[]).await
    }

    /// As [`TestStack::serve_process`], with extra environment.
    pub async fn serve_process_with(
        &self,
        env: &[(&str, String)],
    ) -> (tokio::process::Child, TestApi) {
        let port = crate::servers::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut env = env.to_vec();
        env.push(("ACCOUNTABLE_HTTP_ADDR", addr.to_string()));
        let child = self.process_command_with("serve", &env);
        Self::answering(child, addr).await
    }

    /// As [`TestStack::serve_process`], logging everything at `debug` to
    /// the file `log`.
    pub async fn serve_process_logging(
        &self,
        log: &std::path::Path,
    ) -> (tokio::process::Child, TestApi) {
        let port = crate::servers::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let file = std::fs::File::create(log).expect("a log file");
        let child = self
            .process_command("serve")
            .env("ACCOUNTABLE_HTTP_ADDR", addr.to_string())
            .env("RUST_LOG", "debug")
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file)
            .spawn()
            .expect("the accountable binary starts");
        Self::answering(child, addr).await
    }

    async fn answering(
        child: tokio::process::Child,
        addr: SocketAddr,
    ) -> (tokio::process::Child, TestApi) {
        let api = TestApi {
            addr,
            client: reqwest::Client::new(),
            user_lookups: LookupCount::default(),
        };
        eventually("the server answers", Duration::from_secs(30), || async {
            api.client.get(api.url("/healthz")).send().await.ok()
        })
        .await;
        (child, api)
    }

    /// `accountable SUBCOMMAND` as a child process with extra environment.
    pub fn process_command_with(
        &self,
        subcommand: &str,
        env: &[(&str, String)],
    ) -> tokio::process::Child {
        let mut command = self.process_command(subcommand);
        for (key, value) in env {
            command.env(key, value);
        }
        command.spawn().expect("the accountable binary starts")
    }

    /// As [`TestStack::process`], its database sessions named `name`
    /// (`application_name`), so that a test can tell them apart.
    pub fn process_named(&self, subcommand: &str, name: &str) -> tokio::process::Child {
        self.process_command(subcommand)
            .env("PGAPPNAME", name)
            .spawn()
            .expect("the accountable binary starts")
    }

    /// `accountable SUBCOMMAND` as a child process started again whenever
    /// it exits, as systemd or Kubernetes would; killed when dropped.
    pub fn supervised(&self, subcommand: &str) -> Supervised {
        let restarts = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (config, subcommand, restarts) =
                (self.config.clone(), subcommand.to_owned(), restarts.clone());
            async move {
                loop {
                    let mut child = command(&config, &subcommand)
                        .spawn()
                        .expect("the accountable binary starts");
                    let status = child.wait().await;
                    eprintln!("{subcommand} exited ({status:?}); starting it again");
                    restarts.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Supervised { task, restarts }
    }

    fn process_command(&self, subcommand: &str) -> tokio::process::Command {
        command(&self.config, subcommand)
    }

    /// Runs `accountable ARGS…` on this stack to its end.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        self.process_command(args[0])
            .args(&args[1..])
            .output()
            .await
            .expect("the accountable binary runs")
    }

    /// Runs `accountable admin grant --email EMAIL --role ROLE` on this stack.
    pub async fn grant(&self, email: &str, role: &str) {
        let output = self
            .process_command("admin")
            .args(["grant", "--email", email, "--role", role])
            .output()
            .await
            .expect("the accountable binary runs");
        assert!(
            output.status.success(),
            "admin grant failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A plain consumer of every partition of the events topic from the
    /// beginning. The topic is created first if the relay has not yet, so
    /// that the consumer reads from the moment it exists.
    pub async fn consumer(&self) -> StreamConsumer {
        self.consumer_of(&self.config.kafka.events_topic).await
    }

    /// A plain consumer of every partition of `topic` from the beginning,
    /// the topic created first if need be.
    pub async fn consumer_of(&self, topic: &str) -> StreamConsumer {
        kafka::ensure_topic(
            &self.config.kafka.bootstrap_servers,
            topic,
            self.config.kafka.topic_partitions,
            self.config.kafka.topic_replication,
        )
        .await
        .unwrap_or_else(|e| {
            panic!("the Kafka broker must be running (scripts/test.sh starts it): {e}")
        });
        let consumer = self.reader();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.config.kafka.topic_partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("a valid partition");
        }
        consumer.assign(&assignment).expect("assigned");
        consumer
    }

    fn reader(&self) -> StreamConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.config.kafka.bootstrap_servers)
            .set("group.id", format!("test-reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("a Kafka consumer")
    }

    /// A plain consumer of one partition of the events topic from `offset`.
    pub fn consumer_at(&self, partition: i32, offset: i64) -> StreamConsumer {
        let consumer = self.reader();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &self.config.kafka.events_topic,
                partition,
                Offset::Offset(offset),
            )
            .expect("a valid offset");
        consumer.assign(&assignment).expect("assigned");
        consumer
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// How many events of `event_type` the stream of `aggregate_id` holds.
    pub async fn events_of(&self, aggregate_id: &str, event_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2",
        )
        .bind(aggregate_id)
        .bind(event_type)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Moves every event of each user to the given transaction id, as if
    /// committed by it: what orders commits across a power of ten.
    pub async fn move_to_transactions(&self, moves: &[(&str, &str)]) {
        for (user_id, xid) in moves {
            sqlx::query("UPDATE events SET transaction_id = $2::xid8 WHERE aggregate_id = $1")
                .bind(user_id)
                .bind(xid)
                .execute(&self.pool)
                .await
                .unwrap();
        }
    }

    /// The vault of this stack's database, with its master key.
    pub async fn vault(&self) -> Vault {
        let key = MasterKey::from_base64(self.config.vault.master_key.as_ref().unwrap().expose())
            .unwrap();
        Vault::open(self.pool.clone(), key).await.unwrap()
    }

    /// What stands for `address` in the email index.
    pub async fn email_key(&self, address: &str) -> String {
        self.vault().await.email_index(address)
    }

    /// `data` of an event of `user_id` at `sequence`, its sealed fields
    /// opened with this stack's keys.
    pub async fn opened(&self, user_id: &str, sequence: i64, mut data: Value) -> Value {
        let fields = data.as_object_mut().expect("an object");
        self.vault()
            .await
            .unseal(&mut [EventFields {
                user_id: Uuid::parse_str(user_id).unwrap(),
                sequence,
                fields,
            }])
            .await
            .unwrap();
        data
    }
}

/// A child process kept running by [`TestStack::supervised`].
pub struct Supervised {
    task: tokio::task::JoinHandle<()>,
    restarts: Arc<AtomicUsize>,
}

impl Supervised {
    /// How often the process exited and was started again.
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::SeqCst)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // The child, owned by the task, is killed as the task is dropped.
        self.task.abort();
    }
}

/// `accountable SUBCOMMAND` on the stack configured by `config`.
fn command(config: &Config, subcommand: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_accountable"));
    command
        .arg(subcommand)
        .env("DATABASE_URL", config.database.url.expose())
        .env("KAFKA_BOOTSTRAP_SERVERS", &config.kafka.bootstrap_servers)
        .env("ACCOUNTABLE_EVENTS_TOPIC", &config.kafka.events_topic)
        .env("ACCOUNTABLE_STATE_TOPIC", &config.kafka.state_topic)
        .env(
            "ACCOUNTABLE_PROJECTION_GROUP",
            &config.kafka.projection_group,
        )
        .env(
            "ACCOUNTABLE_TOPIC_PARTITIONS",
            config.kafka.topic_partitions.to_string(),
        )
        .env(
            "ACCOUNTABLE_RELAY_POLL_MS",
            config.kafka.relay_poll_ms.to_string(),
        )
        .env("ACCOUNTABLE_DB_MAX_CONNECTIONS", "4")
        .env("ACCOUNTABLE_MAIL_POLL_MS", config.mail.poll_ms.to_string())
        .env(
            "ACCOUNTABLE_MAIL_RETRY_MS",
            config.mail.retry_ms.to_string(),
        )
        .env("ACCOUNTABLE_MAIL_DIR", &config.mail.mail_dir)
        .env(
            "ACCOUNTABLE_SMTP_URL",
            config
                .mail
                .smtp_url
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default(),
        )
        .env("ACCOUNTABLE_RATE_LIMIT", config.http.rate_limit.to_string())
        .env("ACCOUNTABLE_HASH_QUEUE", config.auth.hash_queue.to_string())
        .env(
            "ACCOUNTABLE_ARGON2_MEMORY_KIB",
            config.auth.argon2_memory_kib.to_string(),
        )
        .env(
            "ACCOUNTABLE_ARGON2_ITERATIONS",
            config.auth.argon2_iterations.to_string(),
        )
        .env(
            "ACCOUNTABLE_MASTER_KEY",
            config
                .vault
                .master_key
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default(),
        )
        .env(
            "RUST_LOG",
            std::env::var("TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true);
    command
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
