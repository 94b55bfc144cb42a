//! The service under test: `serve`, `relay` and `project` processes of the
//! release binary, on a database and topics of their own.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::process::{Child, Command};

/// Messages per Kafka record batch from the relay (the service's default),
/// given to the broker's own produce measurement too.
pub const BATCH_MESSAGES: u32 = 1;

pub struct Stack {
    /// The database URL the processes use.
    pub database_url: String,
    database_server: String,
    database_name: String,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The benchmark database's master key (base64).
    pub master_key: String,
    /// The topic the relay publishes to.
    pub events_topic: String,
    pub bootstrap_servers: String,
    env: Vec<(String, String)>,
    binary: String,
    children: Vec<(&'static str, Child)>,
}

impl Stack {
    /// Starts the three processes and waits until the API answers.
    pub async fn start(
        binary: &str,
        database_server: &str,
        bootstrap: &str,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(binary).is_file(),
            "{binary} is missing: build it first (cargo build --release)"
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let database_url = format!("{database_server}/accountable_bench_{id}");
        let master_key = {
            use base64::Engine as _;
            let bytes = [
                *uuid::Uuid::new_v4().as_bytes(),
                *uuid::Uuid::new_v4().as_bytes(),
            ]
            .concat();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let events_topic = format!("accountable.bench.{id}.user.events");
        let env = [
            ("DATABASE_URL", database_url.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.to_owned()),
            ("ACCOUNTABLE_EVENTS_TOPIC", events_topic.clone()),
            (
                "ACCOUNTABLE_STATE_TOPIC",
                format!("accountable.bench.{id}.user.state"),
            ),
            (
                "ACCOUNTABLE_PROJECTION_GROUP",
                format!("accountable.bench.{id}.projection.users"),
            ),
            ("ACCOUNTABLE_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("ACCOUNTABLE_RATE_LIMIT", "0".to_owned()),
            ("ACCOUNTABLE_HASH_QUEUE", "10000".to_owned()),
            // The generator is one client address standing for many: room
            // for the subscriptions measurement's sockets.
            ("ACCOUNTABLE_WS_PER_CLIENT", "1000".to_owned()),
            ("ACCOUNTABLE_MASTER_KEY", master_key.clone()),
            (
                "ACCOUNTABLE_RELAY_BATCH_MESSAGES",
                BATCH_MESSAGES.to_string(),
            ),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .map(|(key, value)| (key.to_owned(), value))
        .to_vec();
        let mut stack = Self {
            database_url,
            database_server: database_server.to_owned(),
            database_name: format!("accountable_bench_{id}"),
            base_url: format!("http://127.0.0.1:{port}"),
            master_key,
            events_topic,
            bootstrap_servers: bootstrap.to_owned(),
            env,
            binary: binary.to_owned(),
            children: Vec::new(),
        };
        // `migrate` first, so that the three do not race to create the database.
        let migrated = stack.command("migrate").status().await?;
        anyhow::ensure!(migrated.success(), "accountable migrate failed");
        for part in ["serve", "relay", "project"] {
            stack.start_part(part)?;
        }
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{}/healthz", stack.base_url))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < until, "the API did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(stack)
    }

    /// `accountable ARGS…` on this stack, run to its end.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self.command(args[0]).args(&args[1..]).status().await?;
        anyhow::ensure!(status.success(), "accountable {args:?} failed");
        Ok(())
    }

    /// Starts one of the stack's processes (`serve`, `relay`, `project`).
    pub fn start_part(&mut self, part: &'static str) -> anyhow::Result<()> {
        let child = self.command(part).spawn()?;
        self.children.push((part, child));
        Ok(())
    }

    /// The running processes of the stack, by role, with their pids.
    pub fn parts(&self) -> Vec<(&'static str, u32)> {
        self.children
            .iter()
            .filter_map(|(name, child)| Some((*name, child.id()?)))
            .collect()
    }

    /// Kills one of the stack's processes; what it had in hand converges
    /// when it starts again, as after any crash.
    pub async fn stop_part(&mut self, part: &str) -> anyhow::Result<()> {
        for (_, child) in self.children.iter_mut().filter(|(name, _)| *name == part) {
            child.kill().await?;
        }
        self.children.retain(|(name, _)| *name != part);
        Ok(())
    }

    /// Stops the processes and drops the benchmark's database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (_, child) in &mut self.children {
            child.kill().await?;
        }
        let mut admin =
            sqlx::PgConnection::connect(&format!("{}/postgres", self.database_server)).await?;
        sqlx::query(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            self.database_name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }

    fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg(subcommand)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}
