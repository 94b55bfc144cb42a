//! A per-client-address limit on the operations that create sessions or
//! accounts (`login`, `register`, `refreshToken`).

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

    /// Whether `client` may go on now.
    pub fn allow(&self, client: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.len() > TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&client).is_ok()
    }
}
