//! The long-running processes, each started alone in production or all
//! together by `accountable dev`; one shutdown signal stops them all.

use accountable_projections::worker::Worker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::Application;
use crate::kafka;
use crate::relay::Relay;
use crate::shredding;
use crate::state::StatePublisher;
use crate::store::StoreHistory;

pub async fn serve(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Application::build(config, pool, shutdown.clone()).await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, "serving GraphQL at http://{addr}/graphql");
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

pub async fn relay(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Relay::new(pool, config.relay())?.run(shutdown).await
}

pub async fn project(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The relay creates the topic too; creating it here spares the worker
    // a wait, and a broker that is away now is waited for by the consumer.
    let relay = config.relay();
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
    let states = StatePublisher::new(pool, config.state())?;
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
pub async fn dev(config: &Config, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
    let stop_all = shutdown.clone();
    let guarded = |result: anyhow::Result<()>| {
        stop_all.cancel();
        result
    };
    let (served, relayed, projected) = tokio::join!(
        async { guarded(serve(config, pool.clone(), shutdown.clone()).await) },
        async { guarded(relay(config, pool.clone(), shutdown.clone()).await) },
        async { guarded(project(config, pool.clone(), shutdown.clone()).await) },
    );
    served.and(relayed).and(projected)
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
