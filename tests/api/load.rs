//! Load: a steady command rate for minutes, and a login storm beyond what
//! the hashing threads can do.
//!
//! The steady run is the soak: it lasts `ACCOUNTABLE_LOAD_SECONDS` (600
//! unless set), so the default test run leaves it out and `scripts/soak.sh`
//! runs it, before a release. Timings are never asserted: the benchmark
//! measures speed. What is asserted is that nothing fails, that memory does
//! not keep growing, and that the pipeline's lag stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use accountable::commands::password::HashCost;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::helpers::{caught_up, eventually, login, register_many, Session, TestStack};

const REFRESH: &str = "mutation($token: String!) {
  refreshToken(refreshToken: $token) { accessToken refreshToken user { id } }
}";

const UPDATE_PROFILE: &str = "mutation($input: UpdateProfileInput!) {
  updateProfile(input: $input) { version }
}";

/// Resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no resident memory for process {pid}"))
}

/// Seconds since the oldest event the relay has not published, and since
/// the oldest event the read table has not applied (0 when none).
async fn lags(stack: &TestStack) -> (f64, f64) {
    sqlx::query_as(
        "SELECT
           coalesce((SELECT extract(epoch FROM now() - min(e.recorded_at))::float8
                       FROM events e, relay_cursors c
                      WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)), 0),
           coalesce((SELECT extract(epoch FROM now() - min(e.recorded_at))::float8
                       FROM events e JOIN users u ON u.id::text = e.aggregate_id
                      WHERE e.sequence > u.version), 0)",
    )
    .fetch_one(&stack.pool)
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "the ten-minute soak: scripts/soak.sh runs it"]
async fn steady_commands_for_ten_minutes_fail_none_grow_no_memory_and_keep_lag_bounded() {
    const USERS: usize = 50;
    const PER_SECOND: u64 = 20;
    let seconds: u64 = std::env::var("ACCOUNTABLE_LOAD_SECONDS")
        .ok()
        .map(|s| s.parse().expect("ACCOUNTABLE_LOAD_SECONDS is a number"))
        .unwrap_or(600);
    let stack = TestStack::new().await;
    let (server, api) = stack.serve_process().await;
    let relay = stack.process("relay");
    let projection = stack.process("project");
    let processes = [
        ("serve", &server),
        ("relay", &relay),
        ("project", &projection),
    ]
    .map(|(name, child)| (name, child.id().expect("running")));
    let mut users = Vec::with_capacity(USERS);
    for (n, (id, _)) in register_many(&api, "load", USERS)
        .await
        .into_iter()
        .enumerate()
    {
        let session = login(&api, &format!("load{n}@example.com")).await;
        assert_eq!(session.id, id);
        users.push(session);
    }
    let failures = Arc::new(AtomicU64::new(0));
    let users: Arc<RwLock<Vec<Session>>> = Arc::new(RwLock::new(users));
    // As a frontend does: each session trades its refresh token for a new
    // pair before the access token (five minutes) expires.
    let refresher = tokio::spawn({
        let (api, users, failures) = (api.clone(), users.clone(), failures.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(120)).await;
                for slot in 0..USERS {
                    let refresh = users.read().await[slot].refresh.clone();
                    let body = api.graphql(REFRESH, json!({"token": refresh})).await;
                    if body["errors"].is_null() {
                        users.write().await[slot] = Session::from(&body["data"]["refreshToken"]);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("refresh failed: {body}");
                    }
                }
            }
        }
    });

    let sent = Arc::new(AtomicU64::new(0));
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / PER_SECOND));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let mut next_sample = started;
    // (elapsed seconds, resident KiB per process)
    let mut memory: Vec<(f64, [u64; 3])> = Vec::new();
    let mut worst_lag = (0.0f64, 0.0f64);
    let mut commands = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        let n = sent.fetch_add(1, Ordering::Relaxed);
        let (api, users, failures) = (api.clone(), users.clone(), failures.clone());
        commands.push(tokio::spawn(async move {
            let user = users.read().await[(n % USERS as u64) as usize].clone();
            let body: Value = api
                .graphql_as(
                    Some(&user.access),
                    UPDATE_PROFILE,
                    json!({"input": {"id": user.id, "displayName": format!("Name {n}")}}),
                )
                .await;
            if !body["errors"].is_null() {
                failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("command {n} failed: {body}");
            }
        }));
        if tokio::time::Instant::now() >= next_sample {
            next_sample += Duration::from_secs(5);
            memory.push((
                started.elapsed().as_secs_f64(),
                processes.map(|(_, pid)| resident_kib(pid)),
            ));
            let (relay_lag, projection_lag) = lags(&stack).await;
            worst_lag = (worst_lag.0.max(relay_lag), worst_lag.1.max(projection_lag));
        }
        commands.retain(|command| !command.is_finished());
    }
    for command in commands {
        command.await.unwrap();
    }
    refresher.abort();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "load: {sent} commands in {seconds} s; worst lag: relay {:.1} s, projection {:.1} s; memory (KiB) {:?}",
        worst_lag.0, worst_lag.1, memory
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "commands failed");
    assert!(
        sent >= seconds * PER_SECOND * 9 / 10,
        "the rate was held: {sent} sent"
    );
    // Bounded lag: below the threshold at which /readyz reports degraded.
    assert!(worst_lag.0 < 10.0, "relay lag reached {:.1} s", worst_lag.0);
    assert!(
        worst_lag.1 < 10.0,
        "projection lag reached {:.1} s",
        worst_lag.1
    );
    // Flat memory: after the first fifth (warm-up: pools, caches, buffers),
    // the last third of the run holds no more than the second third, give
    // or take a quarter and 16 MiB of allocator noise.
    let warm = memory
        .iter()
        .filter(|(at, _)| *at >= seconds as f64 / 5.0)
        .collect::<Vec<_>>();
    let third = warm.len() / 3;
    assert!(third > 0, "too short a run to judge memory: {memory:?}");
    for (index, (name, _)) in processes.iter().enumerate() {
        let peak = |samples: &[&(f64, [u64; 3])]| {
            samples.iter().map(|(_, kib)| kib[index]).max().unwrap_or(0)
        };
        let middle = peak(&warm[third..2 * third]);
        let last = peak(&warm[2 * third..]);
        assert!(
            last <= middle + middle / 4 + 16 * 1024,
            "{name} kept growing: {middle} KiB, then {last} KiB"
        );
    }
    let users = USERS as i64;
    eventually("the read side caught up", Duration::from_secs(60), || {
        caught_up(&stack, users)
    })
    .await;
}

#[tokio::test]
async fn a_login_storm_at_three_times_the_hashing_capacity_is_shed_while_reads_go_on() {
    let stack = TestStack::with_config(|config| {
        config.auth.argon2_memory_kib = HashCost::OWASP.memory_kib;
        config.auth.argon2_iterations = HashCost::OWASP.iterations;
        config.auth.hash_concurrency = 1;
        config.auth.hash_queue = 4;
    })
    .await;
    let api = stack.api().await;
    stack.relay();
    stack.projection();
    let ada = api.register("ada@example.com", "Ada").await;
    // The storm spreads over a few accounts: at most five logins are in
    // flight at once (one hashing, four queued), below the lockout's ten,
    // while each account sees far more than ten refused ones.
    const ACCOUNTS: usize = 5;
    for n in 0..ACCOUNTS {
        api.register(&format!("storm{n}@example.com"), "Storm")
            .await;
    }
    // What one hashing thread does: one login at a time.
    let one = {
        let started = tokio::time::Instant::now();
        login(&api, "storm0@example.com").await;
        started.elapsed()
    };

    let storm_ends = tokio::time::Instant::now() + Duration::from_secs(3);
    let reads = tokio::spawn({
        let (api, ada) = (api.clone(), ada.clone());
        async move {
            let mut answered = 0;
            while tokio::time::Instant::now() < storm_ends {
                let body = api.user(&ada.access, &ada.id, None).await;
                assert!(
                    body["errors"].is_null(),
                    "a read failed during the storm: {body}"
                );
                answered += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        }
    });
    let mut logins = Vec::new();
    let mut arrivals = tokio::time::interval(one / 3);
    while tokio::time::Instant::now() < storm_ends {
        arrivals.tick().await;
        let api = api.clone();
        let email = format!("storm{}@example.com", logins.len() % ACCOUNTS);
        logins.push(tokio::spawn(async move {
            api.graphql(
                "mutation($e: String!, $p: String!) {
                   login(input: {email: $e, password: $p}) { accessToken }
                 }",
                json!({"e": email, "p": crate::helpers::PASSWORD}),
            )
            .await
        }));
    }
    let (mut signed_in, mut shed) = (0, 0);
    for login in logins {
        let body = login.await.unwrap();
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => signed_in += 1,
            Some("UNAVAILABLE") => {
                assert_eq!(body["errors"][0]["extensions"]["retryAfter"], 1, "{body}");
                shed += 1;
            }
            Some(other) => panic!("a login answered {other}: {body}"),
        }
    }
    assert!(signed_in > 0, "some logins were served");
    assert!(
        shed > 0,
        "the logins beyond the capacity were shed ({signed_in} served)"
    );
    assert!(reads.await.unwrap() > 0);
    // A shed login left nothing behind (had it counted as a failed
    // attempt, these accounts would be locked): every account signs in.
    for n in 0..ACCOUNTS {
        login(&api, &format!("storm{n}@example.com")).await;
    }
}
