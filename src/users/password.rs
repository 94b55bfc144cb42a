//! argon2id hashing on a bounded pool of blocking threads, so that a burst of
//! registrations or logins cannot occupy the async workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::values::Password;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashCost {
    /// OWASP's current minimum for argon2id (m = 19 MiB, t = 2, p = 1).
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing pool is shut down")]
    PoolClosed,
    /// Every hashing thread is busy and the queue is full: shed, so that a
    /// storm of logins cannot make every request wait.
    #[error("too many passwords are being checked at once")]
    Busy,
}

/// Hashes passwords with argon2id on at most `concurrency` blocking threads;
/// at most `queue` more wait for one, and the rest are refused at once.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// One permit per hash allowed to run at once.
    permits: Arc<Semaphore>,
    /// Hashes waiting for a permit.
    waiting: Arc<AtomicUsize>,
    queue: usize,
}

/// One hash in the queue; leaves it when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// Joins the queue unless it holds `limit` already.
    fn join(waiting: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        let before = waiting
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |depth| {
                (depth < limit).then_some(depth + 1)
            })
            .ok()?;
        queue_depth(before + 1);
        Some(Self(waiting.clone()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        queue_depth(before - 1);
    }
}

fn queue_depth(depth: usize) {
    metrics::gauge!("accountable_hash_queue_depth").set(depth as f64);
}

impl PasswordHasher {
    pub fn new(cost: HashCost, concurrency: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(HashError::Params)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
        })
    }

    /// A place on a hashing thread: waits in the queue for one, or is
    /// refused at once when the queue is full. Taken before the work that
    /// leads to a hash (a login records its attempt first), so that a
    /// refusal leaves nothing behind.
    pub async fn reserve(&self) -> Result<HashSlot, HashError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(HashError::PoolClosed),
            Err(TryAcquireError::NoPermits) => {
                let _waiting = Waiting::join(&self.waiting, self.queue).ok_or(HashError::Busy)?;
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| HashError::PoolClosed)?
            }
        };
        Ok(HashSlot {
            _permit: permit,
            params: self.params.clone(),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.reserve().await?.hash(password).await
    }

    /// Whether `password` matches the PHC string `stored`, and whether that
    /// hash was made with other parameters than the current ones.
    pub async fn verify(&self, password: Password, stored: String) -> Result<Verified, HashError> {
        self.reserve().await?.verify(password, stored).await
    }
}

/// A reserved place on a hashing thread, good for one hash or check.
pub struct HashSlot {
    _permit: OwnedSemaphorePermit,
    params: Params,
}

impl HashSlot {
    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    pub async fn hash(self, password: Password) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(HashError::Hash)
        })
        .await
    }

    /// Whether `password` matches the PHC string `stored`, and whether that
    /// hash was made with other parameters than the current ones.
    pub async fn verify(self, password: Password, stored: String) -> Result<Verified, HashError> {
        let current = self.params.clone();
        self.run(move || {
            let parsed = PasswordHash::new(&stored).map_err(HashError::Hash)?;
            let matches = Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            let outdated = parsed.algorithm != argon2::ARGON2ID_IDENT
                || Params::try_from(&parsed).map_or(true, |p| {
                    (p.m_cost(), p.t_cost(), p.p_cost())
                        != (current.m_cost(), current.t_cost(), current.p_cost())
                });
            Ok(Verified { matches, outdated })
        })
        .await
    }

    /// Runs `work` on a blocking thread, holding the place until it ends.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| HashError::PoolClosed)?;
        drop(self);
        result
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// Hashed with other parameters than the current ones: rehash it.
    pub outdated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn hashes_are_argon2id_with_unique_salts() {
        let hasher = PasswordHasher::new(CHEAP, 2, 8).unwrap();
        let password = Password::parse("correct horse battery staple", 15).unwrap();
        let first = hasher.hash(password.clone()).await.unwrap();
        let second = hasher.hash(password).await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn verification_matches_only_the_password_and_flags_old_parameters() {
        let old = PasswordHasher::new(CHEAP, 1, 8).unwrap();
        let current = PasswordHasher::new(
            HashCost {
                memory_kib: 128,
                ..CHEAP
            },
            1,
            8,
        )
        .unwrap();
        let password = Password::parse("correct horse battery staple", 15).unwrap();
        let stored = old.hash(password.clone()).await.unwrap();

        let same = old.verify(password.clone(), stored.clone()).await.unwrap();
        assert_eq!(
            same,
            Verified {
                matches: true,
                outdated: false
            }
        );
        let newer = current.verify(password, stored.clone()).await.unwrap();
        assert_eq!(
            newer,
            Verified {
                matches: true,
                outdated: true
            }
        );
        let longer = Password::parse("correct horse battery staple!", 15).unwrap();
        assert!(!old.verify(longer, stored).await.unwrap().matches);
    }
    #[tokio::test]
    async fn beyond_the_running_hashes_and_the_queue_a_hash_is_refused_at_once() {
        let hasher = PasswordHasher::new(CHEAP, 1, 1).unwrap();
        let running = hasher.reserve().await.unwrap();
        let queued = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.reserve().await.map(drop) }
        });
        while hasher.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hasher.reserve().await, Err(HashError::Busy)));
        drop(running);
        assert!(
            queued.await.unwrap().is_ok(),
            "the queued one got its place"
        );
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        assert!(hasher.reserve().await.is_ok(), "room again");
    }
}
