//! argon2id hashing on a bounded pool of blocking threads, so that a burst of
//! registrations or logins cannot occupy the async workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use accountable_domain::values::Password;

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
/// at most `queue` more hashes are admitted to wait for one, and the rest
/// are refused at once.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// One permit per hash admitted: running, waiting for a thread, or
    /// reserved by a request that will hash shortly.
    admitted: Arc<Semaphore>,
    /// One permit per hash allowed to run at once.
    running: Arc<Semaphore>,
    /// Hashes waiting for a thread.
    waiting: Arc<AtomicUsize>,
}

/// One hash waiting for a thread; leaves the queue when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn join(waiting: &Arc<AtomicUsize>) -> Self {
        queue_depth(waiting.fetch_add(1, Ordering::AcqRel) + 1);
        Self(waiting.clone())
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
        let concurrency = concurrency.max(1);
        Ok(Self {
            params,
            admitted: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
            running: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A hash admitted: refused at once when as many hashes as threads and
    /// queue hold are admitted already. Taken before the work that leads to
    /// a hash (a login records its attempt first), so that a refusal leaves
    /// nothing behind; the thread itself is taken only when the hash runs,
    /// so that no thread idles while the request does that work.
    pub fn reserve(&self) -> Result<HashSlot, HashError> {
        let admission = match self.admitted.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(HashError::PoolClosed),
            Err(TryAcquireError::NoPermits) => return Err(HashError::Busy),
        };
        Ok(HashSlot {
            _admission: admission,
            running: self.running.clone(),
            waiting: self.waiting.clone(),
            params: self.params.clone(),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.reserve()?.hash(password).await
    }

    /// Whether `password` matches the PHC string `stored`, and whether that
    /// hash was made with other parameters than the current ones.
    pub async fn verify(&self, password: Password, stored: String) -> Result<Verified, HashError> {
        self.reserve()?.verify(password, stored).await
    }
}

/// An admitted hash, good for one hash or check.
pub struct HashSlot {
    _admission: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
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

    /// Waits for a thread, then runs `work` on it.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let thread = {
            let _waiting = Waiting::join(&self.waiting);
            self.running
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| HashError::PoolClosed)?
        };
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| HashError::PoolClosed)?;
        drop(thread);
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
        let first = hasher.reserve().unwrap();
        let second = hasher.reserve().unwrap();
        assert!(matches!(hasher.reserve(), Err(HashError::Busy)));
        drop(first);
        let password = Password::parse("correct horse battery staple", 15).unwrap();
        let hashed = second.hash(password).await.unwrap();
        assert!(hashed.starts_with("$argon2id$"), "{hashed}");
        assert_eq!(hasher.waiting.load(Ordering::Acquire), 0);
        assert!(hasher.reserve().is_ok(), "room again");
    }

    #[tokio::test]
    async fn an_admitted_hash_holds_no_thread_until_it_runs() {
        let hasher = PasswordHasher::new(CHEAP, 1, 1).unwrap();
        let _reserved = hasher.reserve().unwrap();
        let password = Password::parse("correct horse battery staple", 15).unwrap();
        let hashed = tokio::time::timeout(std::time::Duration::from_secs(10), {
            let hasher = hasher.clone();
            async move { hasher.hash(password).await }
        })
        .await
        .expect("the thread was free while the other hash was only reserved");
        assert!(hashed.is_ok());
    }
}
