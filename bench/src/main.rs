//! `accountable-bench`: loads a running Accountable over HTTP as frontends
//! would and measures, in the same run, the limits of the parts it stands
//! on; writes `bench/results/latest.json` and `latest.md`.
//!
//! Measured: commands (`updateProfile`) at concurrency 1, 8, 32 and 128
//! against PostgreSQL appending the same rows directly (to a bare table,
//! and to our `events`) and against the cqrs-es demo's shape (a peer);
//! reads (`user(id)`, `users(first: 50)`) against a minimal axum + sqlx
//! endpoint and PostGraphile 4 (a peer); freshness at a steady 200 and
//! 1,000 commands/s; resident memory once warm against the end of the load,
//! and with 2,000 subscriptions open while events flow; logins against
//! what the cores can hash with the production argon2 cost, and `user(id)`
//! meanwhile; relay, projection and rebuild rates through a backlog against
//! the broker's produce rate (with normal batching, and with the relay's
//! record batches) and consume rate and a direct batched upsert. The chart
//! is `latest.svg`.

mod chart;
mod cpu;
mod limits;
mod load;
mod memory;
mod peers;
mod pipeline;
mod stack;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

use accountable::commands::password::{HashCost, PasswordHasher};
use accountable_domain::values::Password;
use load::{closed_loop, steady_rate, Measurement, Versus};
use stack::Stack;

#[derive(Parser)]
#[command(about = "Measures Accountable against the limits of the parts it stands on")]
struct Args {
    /// The release binary of the service.
    #[arg(long, default_value = "target/release/accountable")]
    binary: String,
    /// PostgreSQL server URL, without a database name.
    #[arg(
        long,
        env = "BENCH_DATABASE_SERVER",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    database_server: String,
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events in the backlog the relay, the projection and the rebuild
    /// are timed through.
    #[arg(long, default_value_t = 200_000)]
    backlog: usize,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

const PASSWORD: &str = "correct horse battery staple";
const CONCURRENCIES: [usize; 4] = [1, 8, 32, 128];
/// The service's own pool size (`ACCOUNTABLE_DB_MAX_CONNECTIONS`), given
/// to the limits too.
const POOL_SIZE: u32 = 16;
const READERS: usize = 32;
/// Commands per second while freshness is measured, and the p99 aimed at
/// for each, in milliseconds.
const FRESHNESS: [(u32, f64); 2] = [(200, 100.0), (1000, 250.0)];
/// Subscriptions held open at once: sockets, and operations on each (the
/// service's default most per socket).
const SOCKETS: usize = 125;
const SUBSCRIPTIONS_PER_SOCKET: usize = 16;
const UPDATE_PROFILE: &str =
    "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }";
/// Logins at once: more than the cores, so that hashing is never idle.
const LOGINS: usize = 8;

/// A measurement of ours beside its limit.
type Compared = Versus<Measurement>;

/// A signed-in user of the benchmark.
#[derive(Clone)]
struct User {
    id: String,
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let mut stack =
        Stack::start(&args.binary, &args.database_server, &args.bootstrap_servers).await?;
    let client = reqwest::Client::new();
    let graphql = format!("{}/graphql", stack.base_url);
    eprintln!("registering {} users", CONCURRENCIES[3]);
    let users = Arc::new(register(&client, &graphql, CONCURRENCIES[3]).await?);
    stack
        .run(&[
            "admin",
            "grant",
            "--email",
            "bench0@example.com",
            "--role",
            "ADMIN",
        ])
        .await?;
    let admin = login(&client, &graphql, "bench0@example.com").await?;

    let pool = sqlx::PgPool::connect(&stack.database_url).await?;
    let demo = peers::cqrs_demo(&stack.database_url, POOL_SIZE).await?;
    let mut commands = Vec::new();
    // The same commands beside the framework's own demo (a peer).
    let mut versus_demo = Vec::new();
    // Resident memory once warm, against the same at the end.
    let mut warm = Vec::new();
    // The same commands beside an append to our own table: what our
    // triggers leave of PostgreSQL's rate.
    let mut appends = Vec::new();
    let mut cpu_use = Vec::new();
    for concurrency in CONCURRENCIES {
        let before = cpu::Usage::now(&stack.parts());
        let rename = as_each_user(
            &client,
            &graphql,
            &users,
            UPDATE_PROFILE,
            |user, n| json!({"input": {"id": user.id, "displayName": format!("Name {n}")}}),
        );
        let ours = closed_loop("updateProfile", concurrency, duration, rename).await;
        cpu_use.push(cpu::Usage::now(&stack.parts()).since(
            &before,
            &format!("updateProfile ×{concurrency}"),
            ours.operations,
        ));
        let event = limits::sample_event(&pool).await?;
        let bare = limits::append(
            &stack.database_url,
            POOL_SIZE,
            event.clone(),
            limits::AppendTo::Bare,
            concurrency,
            duration,
        )
        .await?;
        let ours_table = limits::append(
            &stack.database_url,
            POOL_SIZE,
            event,
            limits::AppendTo::Events,
            concurrency,
            duration,
        )
        .await?;
        let before = cpu::Usage::now(&stack.parts());
        let deposits = closed_loop(
            "cqrs-es demo, DepositMoney (peer)",
            concurrency,
            duration,
            deposit(&client, &demo, concurrency),
        )
        .await;
        cpu_use.push(cpu::Usage::now(&stack.parts()).since(
            &before,
            &format!("cqrs-es demo ×{concurrency} (in the bench process)"),
            deposits.operations,
        ));
        let twice = matches!(concurrency, 8 | 32).then_some(2.0);
        versus_demo.push(Compared::new(ours.clone(), deposits, twice));
        appends.push(Compared::new(ours.clone(), ours_table, None));
        commands.push(Compared::new(ours, bare, Some(0.5)));
        if warm.is_empty() {
            warm = resident(&stack.parts());
        }
    }

    let minimal = limits::minimal_endpoint(&stack.database_url, POOL_SIZE).await?;
    let before = cpu::Usage::now(&stack.parts());
    let read = as_each_user(
        &client,
        &graphql,
        &users,
        "query($id: ID!) { user(id: $id) { id email displayName status roles version createdAt updatedAt } }",
        |user, _| json!({"id": user.id}),
    );
    let user_by_id = closed_loop("user(id)", READERS, duration, read).await;
    cpu_use.push(cpu::Usage::now(&stack.parts()).since(
        &before,
        "user(id) ×32",
        user_by_id.operations,
    ));
    let before = cpu::Usage::now(&stack.parts());
    let minimal_by_id = closed_loop("minimal axum + sqlx (limit)", READERS, duration, {
        let (client, users) = (client.clone(), users.clone());
        move |worker, _| {
            let (client, url) = (
                client.clone(),
                format!("{minimal}/users/{}", users[worker].id),
            );
            async move {
                match client.get(url).send().await {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
        }
    })
    .await;
    cpu_use.push(cpu::Usage::now(&stack.parts()).since(
        &before,
        "minimal endpoint ×32 (in the bench process)",
        minimal_by_id.operations,
    ));
    let postgraphile = peers::PostGraphile::start(&stack.database_url).await?;
    let with_peer = |parts: Vec<(&'static str, u32)>| {
        parts
            .into_iter()
            .chain(postgraphile.pid().map(|pid| ("peer", pid)))
            .collect::<Vec<_>>()
    };
    let before = cpu::Usage::now(&with_peer(stack.parts()));
    let peer_by_id = closed_loop("PostGraphile 4 userById (peer)", READERS, duration, {
        let (client, url, users) = (client.clone(), postgraphile.url.clone(), users.clone());
        move |worker, _| {
            let (client, url, id) = (client.clone(), url.clone(), users[worker].id.clone());
            async move {
                post(&client, &url, None,
                    "query($id: UUID!) { userById(id: $id) { id email displayName status roles version createdAt updatedAt } }",
                    json!({"id": id})).await
                    .is_ok_and(|body| body["errors"].is_null() && body["data"]["userById"]["id"].is_string())
            }
        }
    })
    .await;
    cpu_use.push(cpu::Usage::now(&with_peer(stack.parts())).since(
        &before,
        "PostGraphile userById ×32 (peer: node)",
        peer_by_id.operations,
    ));
    drop(postgraphile);
    let page = closed_loop("users(first: 50)", READERS, duration, {
        let (client, graphql, token) = (client.clone(), graphql.clone(), admin.token.clone());
        move |_, _| {
            let (client, graphql, token) = (client.clone(), graphql.clone(), token.clone());
            async move {
                ok(post(&client, &graphql, Some(&token),
                    "{ users(first: 50) { edges { node { id email displayName } } pageInfo { hasNextPage } } }",
                    json!({})).await)
            }
        }
    })
    .await;
    let reads_vs_peer = Compared::new(user_by_id.clone(), peer_by_id, Some(3.0));
    let reads = Compared::new(user_by_id, minimal_by_id, Some(0.7));

    // Freshness: from a mutation's answer to the change being readable;
    // `user(id, minVersion)` answers as soon as the read side has it.
    let mut freshness = Vec::new();
    for (rate, p99_target) in FRESHNESS {
        let before = cpu::Usage::now(&stack.parts());
        let name = format!("freshness at {rate}/s (answer → readable)");
        let fresh =
            steady_rate(&name, rate, duration, {
                let (client, graphql, users) = (client.clone(), graphql.clone(), users.clone());
                move |n| {
                    let (client, graphql) = (client.clone(), graphql.clone());
                    let user = users[(n % users.len() as u64) as usize].clone();
                    async move {
                        let body = update_profile(&client, &graphql, &user, &format!("Fresh {n}"))
                            .await
                            .ok()?;
                        let version = body["data"]["updateProfile"]["version"].as_i64()?;
                        let answered = std::time::Instant::now();
                        let read = post(&client, &graphql, Some(&user.token),
                        "query($id: ID!, $v: Int) { user(id: $id, minVersion: $v) { version } }",
                        json!({"id": user.id, "v": version})).await.ok()?;
                        (read["data"]["user"]["version"].as_i64()? >= version)
                            .then(|| answered.elapsed())
                    }
                }
            })
            .await;
        cpu_use.push(cpu::Usage::now(&stack.parts()).since(
            &before,
            &format!("freshness at {rate}/s: updateProfile + user(id, minVersion)"),
            fresh.operations,
        ));
        freshness.push((fresh, p99_target));
    }

    // Subscriptions held open while their users' events flow to them.
    let serve_pid = pid_of(&stack.parts(), "serve");
    let before_sockets = memory::resident_mib(serve_pid);
    let tokens: Vec<String> = users
        .iter()
        .take(SOCKETS)
        .map(|u| u.token.clone())
        .collect();
    let ws_url = format!("{}/graphql/ws", stack.base_url.replacen("http", "ws", 1));
    let subscriptions =
        memory::Subscriptions::open(&ws_url, &tokens, SUBSCRIPTIONS_PER_SOCKET).await?;
    // One command per socket's user: every subscription sees one event.
    for user in users.iter().take(SOCKETS) {
        update_profile(&client, &graphql, user, "Subscribed").await?;
    }
    let open = (SOCKETS * SUBSCRIPTIONS_PER_SOCKET) as u64;
    subscriptions.reached(open, Duration::from_secs(60)).await?;
    let opened = memory::resident_mib(serve_pid);
    let held_commands = steady_rate(
        &format!("updateProfile with {open} subscriptions open"),
        FRESHNESS[0].0,
        duration,
        {
            let (client, graphql, users) = (client.clone(), graphql.clone(), users.clone());
            move |n| {
                let (client, graphql) = (client.clone(), graphql.clone());
                let user = users[(n % SOCKETS as u64) as usize].clone();
                async move {
                    let sent = std::time::Instant::now();
                    let body = update_profile(&client, &graphql, &user, &format!("Held {n}"))
                        .await
                        .ok()?;
                    body["errors"].is_null().then(|| sent.elapsed())
                }
            }
        },
    )
    .await;
    let delivered = subscriptions
        .received
        .load(std::sync::atomic::Ordering::Relaxed);
    let held = memory::resident_mib(serve_pid);
    subscriptions.close();
    let subscribed = json!({
        "subscriptions": open,
        "serve_mib": {"before": before_sockets, "opened": opened, "held": held},
        "events_delivered": delivered,
        "commands": held_commands,
    });
    let subscriptions_memory = memory::Held::new(
        format!(
            "serve under {open} subscriptions, then {}s of commands",
            args.seconds
        ),
        opened,
        held,
    );

    // Logins with the production argon2 cost, beside what the cores can
    // hash with it, and `user(id)` latency idle and during the logins.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let hasher = PasswordHasher::new(HashCost::OWASP, cores, 10_000)?;
    let password = Password::parse(PASSWORD, 15)?;
    let stored = hasher.hash(password.clone()).await?;
    let hashing = closed_loop(
        "argon2id check alone (limit)",
        LOGINS,
        duration,
        move |_, _| {
            let (hasher, password, stored) = (hasher.clone(), password.clone(), stored.clone());
            async move {
                hasher
                    .verify(password, stored)
                    .await
                    .is_ok_and(|v| v.matches)
            }
        },
    )
    .await;
    let read_one = {
        let (client, graphql, user) = (client.clone(), graphql.clone(), users[0].clone());
        move |_: usize, _: u64| {
            let (client, graphql, user) = (client.clone(), graphql.clone(), user.clone());
            async move {
                ok(post(
                    &client,
                    &graphql,
                    Some(&user.token),
                    "query($id: ID!) { user(id: $id) { id version } }",
                    json!({"id": user.id}),
                )
                .await)
            }
        }
    };
    let idle_read = closed_loop("user(id) idle", 1, duration, read_one.clone()).await;
    let storm = closed_loop("login", LOGINS, duration, {
        let (client, graphql) = (client.clone(), graphql.clone());
        move |worker, _| {
            let (client, graphql) = (client.clone(), graphql.clone());
            // Workers sign in as users the other measurements leave alone.
            let email = format!("bench{}@example.com", CONCURRENCIES[3] - 1 - worker);
            async move { login(&client, &graphql, &email).await.is_ok() }
        }
    });
    let during = closed_loop("user(id) during logins", 1, duration, read_one);
    let before = cpu::Usage::now(&stack.parts());
    let (storm, storm_read) = tokio::join!(storm, during);
    cpu_use.push(cpu::Usage::now(&stack.parts()).since(
        &before,
        "login (reads beside it included)",
        storm.operations,
    ));
    let logins = Compared::new(storm, hashing, Some(0.85));

    let over_run: Vec<memory::Held> = warm
        .into_iter()
        .zip(resident(&stack.parts()))
        .map(|((part, first), (_, last))| {
            memory::Held::new(format!("{part}, warm → end of the load"), first, last)
        })
        .chain([subscriptions_memory])
        .collect();

    let pipeline = pipeline::measure(&mut stack, args.backlog).await?;
    cpu_use.extend(pipeline.cpu.iter().cloned());

    let report = json!({
        "machine": {"cpus": cores},
        "seconds_per_measurement": args.seconds,
        "commands": commands,
        "commands_vs_cqrs_demo": versus_demo,
        "commands_vs_events_append": appends,
        "reads": {"user_by_id": reads, "user_by_id_vs_postgraphile": reads_vs_peer, "users_page": page},
        "freshness": freshness.iter().map(|(m, p99)| json!({"measured": m, "p99_target_ms": p99})).collect::<Vec<_>>(),
        "logins": logins,
        "reads_during_logins": {"idle": idle_read, "during": storm_read},
        "memory": {"flat": over_run, "subscriptions": subscribed},
        "pipeline": pipeline,
        "cpu_ms_per_operation": cpu_use,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let compared: Vec<&Compared> = commands
        .iter()
        .chain(&versus_demo)
        .chain(&appends)
        .chain([&reads, &reads_vs_peer, &logins])
        .collect();
    let markdown = markdown(&compared, &[&page, &idle_read, &storm_read])
        + "\n"
        + &freshness_markdown(&freshness)
        + "\n"
        + &memory_markdown(&over_run)
        + "\n"
        + &pipeline_markdown(&pipeline)
        + "\n"
        + &cpu_markdown(&cpu_use);
    std::fs::write(args.out.join("latest.md"), &markdown)?;
    let mut bars: Vec<chart::Bar> = commands
        .iter()
        .map(|c| bar(format!("cmd ×{} / bare", c.ours.concurrency), c))
        .chain(
            versus_demo
                .iter()
                .filter(|c| c.target.is_some())
                .map(|c| bar(format!("cmd ×{} / demo", c.ours.concurrency), c)),
        )
        .collect();
    bars.extend([
        bar("user(id) / minimal".into(), &reads),
        bar("user(id) / PostGraphile".into(), &reads_vs_peer),
        bar("login".into(), &logins),
    ]);
    // Freshness: the p99 aimed at over the p99, met at 1 or more; storm
    // reads: twice the idle p50 over the p50 during logins, likewise.
    bars.extend(freshness.iter().map(|(fresh, p99_target)| chart::Bar {
        label: format!("fresh {}/s", fresh.concurrency),
        ratio: p99_target / fresh.p99_ms.max(f64::MIN_POSITIVE),
        target: 1.0,
    }));
    bars.push(chart::Bar {
        label: "storm reads".into(),
        ratio: 2.0 * idle_read.p50_ms / storm_read.p50_ms.max(f64::MIN_POSITIVE),
        target: 1.0,
    });
    bars.extend(over_run.iter().map(|held| chart::Bar {
        label: format!("memory {}", held.name.split(',').next().unwrap_or_default()),
        ratio: held.ratio,
        target: memory::Held::TARGET,
    }));
    bars.extend([
        bar("relay".into(), &pipeline.relay_batched),
        bar("projection".into(), &pipeline.projection),
    ]);
    chart::draw(&args.out.join("latest.svg"), &bars)?;
    println!("{markdown}");
    stack.stop().await
}

fn markdown(compared: &[&Compared], alone: &[&Measurement]) -> String {
    let mut text = String::from(
        "| measure | concurrency | ours /s | p50 ms | p99 ms | failed | limit or peer | its /s | ratio | target |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for compared in compared {
        let (ours, limit) = (&compared.ours, &compared.limit);
        text += &format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0} | {:.2} | {} |\n",
            ours.name,
            ours.concurrency,
            ours.per_second,
            ours.p50_ms,
            ours.p99_ms,
            ours.failures,
            limit.name,
            limit.per_second,
            compared.ratio,
            compared.verdict()
        );
    }
    for measurement in alone {
        text += &format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | | | | |\n",
            measurement.name,
            measurement.concurrency,
            measurement.per_second,
            measurement.p50_ms,
            measurement.p99_ms,
            measurement.failures
        );
    }
    text
}

fn freshness_markdown(freshness: &[(Measurement, f64)]) -> String {
    let mut text = String::from(
        "Freshness, from a mutation's answer until `user(id, minVersion)` answers with it:\n\n| commands /s | p50 ms | p99 ms | failed | target p99 ms |\n|---|---|---|---|---|\n",
    );
    for (fresh, p99_target) in freshness {
        let verdict = if fresh.p99_ms <= *p99_target && fresh.failures == 0 {
            "met"
        } else {
            "missed"
        };
        text += &format!(
            "| {} | {:.1} | {:.1} | {} | ≤ {:.0} ({verdict}) |\n",
            fresh.concurrency, fresh.p50_ms, fresh.p99_ms, fresh.failures, p99_target
        );
    }
    text
}

fn memory_markdown(held: &[memory::Held]) -> String {
    let mut text = String::from(
        "Resident memory:\n\n| process, between | first MiB | last MiB | first / last | target |\n|---|---|---|---|---|\n",
    );
    for held in held {
        text += &format!(
            "| {} | {:.1} | {:.1} | {:.2} | {} |\n",
            held.name,
            held.first_mib,
            held.last_mib,
            held.ratio,
            held.verdict()
        );
    }
    text
}

/// Resident memory of each of the stack's processes now.
fn resident(parts: &[(&'static str, u32)]) -> Vec<(&'static str, f64)> {
    parts
        .iter()
        .map(|(part, pid)| (*part, memory::resident_mib(*pid)))
        .collect()
}

fn pid_of(parts: &[(&'static str, u32)], name: &str) -> u32 {
    parts
        .iter()
        .find_map(|(part, pid)| (*part == name).then_some(*pid))
        .unwrap_or_default()
}

/// The demo's `DepositMoney` from worker `w` to an account of its own.
fn deposit(
    client: &reqwest::Client,
    demo: &str,
    concurrency: usize,
) -> impl Fn(usize, u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static {
    let (client, demo) = (client.clone(), demo.to_owned());
    move |worker, _| {
        let request = client
            .post(format!("{demo}/account/bench-{concurrency}-{worker}"))
            .json(&json!({"DepositMoney": {"amount": 1.0}}));
        Box::pin(async move {
            request
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
    }
}

fn bar<T>(label: String, versus: &Versus<T>) -> chart::Bar {
    chart::Bar {
        label,
        ratio: versus.ratio,
        target: versus.target.unwrap_or_default(),
    }
}

fn pipeline_markdown(pipeline: &pipeline::Pipeline) -> String {
    let mut text = format!(
        "Pipeline through a backlog of {} events:\n\n| measure | events | seconds | events/s | limit | limit events/s | ratio | target |\n|---|---|---|---|---|---|---|---|\n",
        pipeline.backlog
    );
    for versus in [
        &pipeline.relay_batched,
        &pipeline.relay,
        &pipeline.projection,
        &pipeline.projection_consume,
    ] {
        let (ours, limit) = (&versus.ours, &versus.limit);
        text += &format!(
            "| {} | {} | {:.1} | {:.0} | {} | {:.0} | {:.2} | {} |\n",
            ours.name,
            ours.events,
            ours.seconds,
            ours.per_second,
            limit.name,
            limit.per_second,
            versus.ratio,
            versus.verdict()
        );
    }
    let rebuild = &pipeline.rebuild;
    text += &format!(
        "| {} | {} | {:.1} | {:.0} | | | | |\n",
        rebuild.name, rebuild.events, rebuild.seconds, rebuild.per_second
    );
    text
}

fn cpu_markdown(rows: &[cpu::PerOperation]) -> String {
    const PARTS: [&str; 8] = [
        "serve",
        "relay",
        "project",
        "postgres",
        "autovacuum",
        "tansu",
        "bench",
        "peer",
    ];
    let mut text = format!(
        "CPU milliseconds per operation, by process:\n\n| measure | operations | {} |\n|---|---|{}\n",
        PARTS.join(" | "),
        "---|".repeat(PARTS.len())
    );
    for row in rows {
        let cells: Vec<String> = PARTS
            .iter()
            .map(|part| format!("{:.2}", row.cpu_ms.get(*part).copied().unwrap_or_default()))
            .collect();
        text += &format!(
            "| {} | {} | {} |\n",
            row.name,
            row.operations,
            cells.join(" | ")
        );
    }
    text
}

/// An operation that worker `w` sends as user `w`, with `variables` made
/// from that user and the operation's number.
fn as_each_user(
    client: &reqwest::Client,
    graphql: &str,
    users: &Arc<Vec<User>>,
    query: &'static str,
    variables: fn(&User, u64) -> Value,
) -> impl Fn(usize, u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static {
    let (client, graphql, users) = (client.clone(), graphql.to_owned(), users.clone());
    move |worker, n| {
        let (client, graphql, user) = (client.clone(), graphql.clone(), users[worker].clone());
        Box::pin(async move {
            let variables = variables(&user, n);
            ok(post(&client, &graphql, Some(&user.token), query, variables).await)
        })
    }
}

/// `updateProfile` of `user`'s display name, as that user.
async fn update_profile(
    client: &reqwest::Client,
    graphql: &str,
    user: &User,
    display_name: &str,
) -> anyhow::Result<Value> {
    post(
        client,
        graphql,
        Some(&user.token),
        UPDATE_PROFILE,
        json!({"input": {"id": user.id, "displayName": display_name}}),
    )
    .await
}

fn ok(body: anyhow::Result<Value>) -> bool {
    body.is_ok_and(|body| body["errors"].is_null())
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let mut request = client
        .post(url)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?.json().await?)
}

async fn register(client: &reqwest::Client, url: &str, count: usize) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(count);
    for n in 0..count {
        let body = post(client, url, None,
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
            json!({"input": {"email": format!("bench{n}@example.com"), "password": PASSWORD, "displayName": "Bench"}})).await?;
        users.push(
            signed_in(&body["data"]["register"])
                .ok_or_else(|| anyhow::anyhow!("register failed: {body}"))?,
        );
    }
    Ok(users)
}

async fn login(client: &reqwest::Client, url: &str, email: &str) -> anyhow::Result<User> {
    let body = post(client, url, None,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken user { id } } }",
        json!({"e": email, "p": PASSWORD})).await?;
    signed_in(&body["data"]["login"]).ok_or_else(|| anyhow::anyhow!("login failed: {body}"))
}

fn signed_in(payload: &Value) -> Option<User> {
    Some(User {
        id: payload["user"]["id"].as_str()?.to_owned(),
        token: payload["accessToken"].as_str()?.to_owned(),
    })
}
