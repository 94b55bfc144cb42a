//! Logging: human-readable in development, JSON lines in production;
//! `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;

use crate::config::Environment;

pub fn init(env: Environment) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests start several apps) keeps the first subscriber.
    let _ = match env {
        Environment::Development => builder.try_init(),
        Environment::Production => builder.json().try_init(),
    };
}
