//! The composition root: every process is built here from its
//! configuration, and nowhere else. [`Application`] is the API (binding the
//! port, 0 in tests; serving until the shutdown signal, then waiting for
//! its background loops); [`relay`], [`project`] and [`dev`] are the other
//! processes, each started alone in production or all together by
//! `accountable dev`; one shutdown signal stops them all.

use std::sync::Arc;
use std::time::Duration;

use accountable_domain::values::Password;
use accountable_projections::worker::Worker;
use accountable_vault::Vault;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::challenges::Challenges;
use crate::auth::clients::TrustedProxies;
use crate::auth::cutoffs::Cutoffs;
use crate::auth::keys::{self, KeyRing};
use crate::auth::passkeys::Passkeys;
use crate::auth::ratelimit::ClientLimiter;
use crate::auth::sessions::{SessionConfig, Sessions};
use crate::auth::tokens::{TokenConfig, Tokens};
use crate::auth::{Auth, Clock};
use crate::background::Background;
use crate::commands::password::PasswordHasher;
use crate::commands::Users;
use crate::config::{Config, Environment};
use crate::graphql::feed::EventFeed;
use crate::graphql::freshness::ProjectionWatch;
use crate::graphql::loader::{self, LookupCount};
use crate::graphql::socket::{SocketCount, SocketLimits};
use crate::graphql::{self, ApiState};
use crate::http::{router, HttpState, Origins, BODY_LIMIT, CONNECTION_INIT_TIMEOUT};
use crate::mail::Mailer;
use crate::relay::{Relay, RelayConfig};
use crate::state::{StateConfig, StatePublisher};
use crate::store::StoreHistory;
use crate::{audit, kafka, observe, shredding};

/// The command service as configured, for the API and the operators' tools.
pub fn users(config: &Config, pool: PgPool, hasher: PasswordHasher, vault: Arc<Vault>) -> Users {
    Users::new(
        pool,
        hasher,
        config.auth.password_min_length,
        Duration::from_secs(config.auth.email_claim_ttl_secs),
        vault,
    )
}

/// The API process: its listener, its router, and its background loops.
pub struct Application {
    listener: TcpListener,
    router: Router,
    user_lookups: LookupCount,
    background: Background,
}

impl Application {
    /// Binds `config.http.addr` and assembles the API; `shutdown` also stops
    /// its background loops.
    pub async fn build(
        config: &Config,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(config, pool, shutdown, Clock::default()).await
    }

    /// As [`Application::build`], deciding every auth question at the time
    /// `clock` tells (tests move it forward).
    pub async fn build_with_clock(
        config: &Config,
        pool: PgPool,
        shutdown: CancellationToken,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let background = Background::new(shutdown.child_token());
        match Self::assemble(config, pool, clock, &background).await {
            Ok((listener, router, user_lookups)) => Ok(Self {
                listener,
                router,
                user_lookups,
                background,
            }),
            Err(error) => {
                // Nothing half-built keeps running.
                background.stop().await;
                Err(error)
            }
        }
    }

    async fn assemble(
        config: &Config,
        pool: PgPool,
        clock: Clock,
        background: &Background,
    ) -> anyhow::Result<(TcpListener, Router, LookupCount)> {
        let hasher = PasswordHasher::new(
            config.auth.hash_cost(),
            config.auth.hash_concurrency(),
            config.auth.hash_queue,
        )?;
        let vault = shredding::open_vault(config, &pool).await?;
        let cutoffs = Cutoffs::new(
            pool.clone(),
            Duration::from_secs(u64::try_from(config.auth.access_token_ttl_secs).unwrap_or(0)),
        );
        let users = Arc::new(
            users(config, pool.clone(), hasher.clone(), vault.clone())
                .forgetting_cutoffs(cutoffs.clone()),
        );
        let keys = Arc::new(KeyRing::configured(pool.clone(), vault.clone(), config).await?);
        keys::follow_changes(keys.clone(), Duration::from_secs(60), background).await?;
        if config.audit.checkpoint_secs > 0 {
            audit::checkpoint::every(
                pool.clone(),
                keys.clone(),
                clock.clone(),
                Duration::from_secs(config.audit.checkpoint_secs),
                background,
            );
        }
        let dummy_hash = hasher
            .hash(Password::parse_existing("no one's password, never stored")?)
            .await?;
        let auth = Arc::new(Auth {
            users,
            tokens: Tokens::new(keys.clone(), TokenConfig::from(&config.auth)),
            sessions: Sessions::new(pool.clone(), SessionConfig::from(&config.auth), cutoffs),
            clock,
            hasher,
            policy: config.auth.lockout(),
            dummy_hash,
            require_verified_email: config.require_verified_email(),
            challenges: Challenges::new(pool.clone()),
            passkeys: Passkeys::new(
                pool.clone(),
                &config.auth.webauthn_rp_id,
                &config.auth.webauthn_origins,
            )?,
            step_up_max_age: chrono::Duration::seconds(config.auth.step_up_max_age_secs),
        });
        auth.sessions.follow_cutoffs(background);
        observe::recorder();
        let freshness = ProjectionWatch::start(&pool, background).await?;
        let (users, user_lookups) = loader::users(pool.clone());
        let feed = EventFeed::start(pool.clone(), vault.clone(), background).await?;
        let limiter = Arc::new(ClientLimiter::per_minute(config.http.rate_limit));
        let schema = graphql::build_schema(
            config.env,
            ApiState {
                pool: pool.clone(),
                auth: auth.clone(),
                limiter: limiter.clone(),
                freshness,
                users,
                vault,
                feed,
                read_your_writes_timeout: config.http.read_your_writes_timeout(),
                events_topic: config.kafka.events_topic.clone(),
            },
        );
        let listener = TcpListener::bind(config.http.addr).await?;
        Ok((
            listener,
            router(
                HttpState {
                    schema,
                    pool,
                    auth,
                    keys,
                    origins: Origins::from_config(&config.http.cors_origins)?,
                    events_topic: config.kafka.events_topic.clone(),
                    sockets: SocketCount::default(),
                    proxies: TrustedProxies::parse(&config.http.trusted_proxies)?,
                    limiter,
                    api_url: config.http.api_url.clone(),
                    secure_cookies: config.env == Environment::Production,
                    socket_limits: SocketLimits {
                        operations: config.http.ws_operations,
                        per_client: config.http.ws_per_client,
                        message_bytes: BODY_LIMIT,
                        init_timeout: CONNECTION_INIT_TIMEOUT,
                    },
                },
                config.env,
            ),
            user_lookups,
        ))
    }

    /// Counts the queries that read user rows for the API.
    pub fn user_lookups(&self) -> LookupCount {
        self.user_lookups.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, lets in-flight requests finish, then stops
    /// the background loops and waits for them.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        self.background.stop().await;
        served
    }
}

pub async fn serve(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Application::build(config, pool, shutdown.clone()).await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, "serving GraphQL at http://{addr}/graphql");
    if crate::pages::built() {
        tracing::info!(%addr, "account pages at http://{addr}/account/, the console at http://{addr}/console/");
    } else {
        tracing::warn!(
            "the pages are not built into this binary: run scripts/web.sh, then build again"
        );
    }
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

pub async fn relay(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Relay::new(pool, RelayConfig::from(&config.kafka))?
        .run(shutdown)
        .await
}

pub async fn project(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The relay creates the topic too; creating it here spares the worker
    // a wait, and a broker that is away now is waited for by the consumer.
    let relay = RelayConfig::from(&config.kafka);
    if let Err(error) = kafka::ensure_topic(
        &relay.bootstrap_servers,
        &relay.topic,
        relay.partitions,
        relay.replication,
    )
    .await
    {
        tracing::warn!(error = %error, "cannot make sure the events topic exists");
    }
    let history = StoreHistory::new(pool.clone());
    let vault = shredding::open_vault(config, &pool).await?;
    let worker = Worker::new(pool.clone(), config.projection(), history, vault)?;
    let states = StatePublisher::new(pool, StateConfig::from(&config.kafka))?;
    let stop_both = shutdown.clone();
    let (projected, published) = tokio::join!(
        async {
            let result = worker.run(shutdown.clone()).await;
            stop_both.cancel();
            result
        },
        async {
            let result = states.run(shutdown.clone()).await;
            stop_both.cancel();
            result
        },
    );
    projected.and(published)
}

/// serve, relay and project in one process; if one fails, all stop.
pub async fn mailer(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (transport, mailer_config) = config.mailer()?;
    let vault = shredding::open_vault(config, &pool).await?;
    Mailer::new(pool, vault, transport, mailer_config)
        .run(shutdown)
        .await
}

pub async fn dev(config: &Config, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let stop_all = shutdown.clone();
    let guarded = |result: anyhow::Result<()>| {
        stop_all.cancel();
        result
    };
    let (served, relayed, projected, mailed) = tokio::join!(
        async { guarded(serve(config, pool.clone(), shutdown.clone()).await) },
        async { guarded(relay(config, pool.clone(), shutdown.clone()).await) },
        async { guarded(project(config, pool.clone(), shutdown.clone()).await) },
        async { guarded(mailer(config, pool.clone(), shutdown.clone()).await) },
    );
    served.and(relayed).and(projected).and(mailed)
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(error) => {
                        tracing::error!(error = %error, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}
