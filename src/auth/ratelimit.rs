//! A per-client-address limit on the operations that check a secret or
//! create sessions or accounts (`login`, `register`, `refreshToken`,
//! `changePassword`, `changeEmail`). Each API process keeps its own
//! buckets: behind a balancer over N processes a client gets at most N
//! times the limit; the account lockout, kept in the event store, is one
//! for all of them.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Addresses tracked before idle ones are forgotten.
const TRACKED: usize = 10_000;

pub struct ClientLimiter {
    /// `None` when the limit is off.
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl ClientLimiter {
    /// `per_minute` requests per minute per address; 0 turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Whether `client` (counted with its group: an IPv6 /64) may go on now.
    pub fn allow(&self, client: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.len() > TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&super::clients::group(client)).is_ok()
    }
}
