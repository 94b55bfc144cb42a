//! Peers measured in the same run as ours, over the same PostgreSQL:
//!
//! - the cqrs-es demo's shape (serverlesstechnology/cqrs-demo): axum +
//!   cqrs-es + postgres-es, one aggregate (`BankAccount`), one command
//!   (`DepositMoney`) over REST, nothing else; what the framework we build
//!   on does alone;
//! - PostGraphile 4 from npm (`bench/peers/`, installed by
//!   `scripts/bench.sh`), serving our read table, for `userById`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};

/// The demo's tables: postgres-es's own schema (`db/init.sql`), under
/// names of their own beside ours.
const DEMO_TABLES: &str = "
CREATE TABLE IF NOT EXISTS demo_events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL, event_version text NOT NULL,
    payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE IF NOT EXISTS demo_snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    balance: f64,
}

#[derive(Debug, Deserialize)]
pub enum BankAccountCommand {
    DepositMoney { amount: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    CustomerDepositedMoney { amount: f64, balance: f64 },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        "CustomerDepositedMoney".into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug)]
pub struct BankAccountError(&'static str);

impl fmt::Display for BankAccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BankAccountError {}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let BankAccountCommand::DepositMoney { amount } = command;
        if !amount.is_finite() || amount <= 0.0 {
            return Err(BankAccountError("a deposit must be positive"));
        }
        let balance = self.balance + amount;
        sink.write(
            BankAccountEvent::CustomerDepositedMoney { amount, balance },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let BankAccountEvent::CustomerDepositedMoney { balance, .. } = event;
        self.balance = balance;
    }
}

/// The demo's `POST /account/{id}`: a command in JSON, executed with the
/// request's metadata, 204 when it committed.
async fn command(
    State(cqrs): State<Arc<PostgresCqrs<BankAccount>>>,
    UrlPath(id): UrlPath<String>,
    Json(command): Json<BankAccountCommand>,
) -> StatusCode {
    let metadata = HashMap::from([("time".to_owned(), now_micros())]);
    match cqrs.execute_with_metadata(&id, command, metadata).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The demo stamps each command's metadata with the time.
fn now_micros() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros())
        .to_string()
}

/// Starts the demo's command endpoint in this process; answers its URL.
/// Its store keeps a snapshot at every commit, as ours does, so that both
/// load one row and the events after it whatever the account's history.
pub async fn cqrs_demo(database_url: &str, pool_size: u32) -> anyhow::Result<String> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(database_url)
        .await?;
    sqlx::raw_sql(DEMO_TABLES).execute(&pool).await?;
    let repository =
        PostgresEventRepository::new(pool).with_tables("demo_events", "demo_snapshots");
    let store = PersistedEventStore::new_snapshot_store(repository, 1);
    let cqrs: Arc<PostgresCqrs<BankAccount>> = Arc::new(CqrsFramework::new(store, vec![], ()));
    let app = Router::new()
        .route("/account/{id}", post(command))
        .with_state(cqrs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// PostGraphile 4, started from `bench/peers/` over the benchmark's
/// database (its `public` schema, where `users` is); stopped when
/// dropped.
pub struct PostGraphile {
    child: Child,
    pub url: String,
}

impl PostGraphile {
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let cli = Path::new("bench/peers/node_modules/postgraphile/cli.js");
        anyhow::ensure!(
            cli.exists(),
            "{} is missing: scripts/bench.sh installs it (npm ci in bench/peers)",
            cli.display()
        );
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let child = Command::new("node")
            .arg(cli)
            .args(["--connection", database_url])
            .args(["--schema", "public"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--disable-query-log")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}/graphql");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let answered = client
                .post(&url)
                .json(&serde_json::json!({"query": "{ __typename }"}))
                .send()
                .await;
            if answered.is_ok_and(|response| response.status().is_success()) {
                return Ok(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("PostGraphile did not answer on {url}")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
