//! The master key: it never touches data itself; keys derived from it wrap
//! the data keys, index email addresses and identify it to the database.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{VaultError, NONCE_LEN};

const WRAP: &str = "accountable/v1/wrap-data-keys";
const WRAP_SECRETS: &str = "accountable/v1/wrap-secrets";
const EMAIL_INDEX: &str = "accountable/v1/email-index";
const CHECK: &str = "accountable/v1/master-key-check";

/// 32 random bytes from configuration; wiped from memory when dropped and
/// never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// From its base64 text (standard or URL-safe, padding optional,
    /// surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let text = text.trim().trim_end_matches('=');
        let bytes = Zeroizing::new(
            STANDARD_NO_PAD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| VaultError::MalformedMasterKey)?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::MalformedMasterKey)?;
        Ok(Self(Zeroizing::new(key)))
    }

    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        Self(key)
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(&self.0[..]))
    }

    fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA-256's limit of 8160.
        if Hkdf::<Sha256>::new(None, &self.0[..])
            .expand(purpose.as_bytes(), &mut out[..])
            .is_err()
        {
            unreachable!("HKDF-SHA-256 gives 32 bytes");
        }
        out
    }

    /// What the database keeps to recognise this key; it tells nothing of
    /// the key itself.
    pub(crate) fn check_value(&self) -> Zeroizing<[u8; 32]> {
        self.derive(CHECK)
    }

    pub(crate) fn email_index(&self, normalised: &str) -> String {
        let key = self.derive(EMAIL_INDEX);
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key[..]) else {
            unreachable!("HMAC takes keys of any length");
        };
        mac.update(normalised.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn wrapping_cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.derive(WRAP)).into())
    }

    /// `nonce ‖ ciphertext ‖ tag` of a data key, bound to its id and user.
    pub(crate) fn wrap(&self, key_id: Uuid, user_id: Uuid, key: &[u8; 32]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = wrap_aad(key_id, user_id);
        let Ok(sealed) = self.wrapping_cipher().encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key,
                aad: aad.as_bytes(),
            },
        ) else {
            unreachable!("AES-GCM seals 32 bytes");
        };
        [&nonce[..], &sealed].concat()
    }

    pub(crate) fn unwrap(
        &self,
        key_id: Uuid,
        user_id: Uuid,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let wrong = || VaultError::Tampered {
            user_id,
            sequence: 0,
            field: format!("data key {key_id}"),
        };
        if wrapped.len() <= NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let aad = wrap_aad(key_id, user_id);
        let clear = Zeroizing::new(
            self.wrapping_cipher()
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| wrong())?,
        );
        let key: [u8; 32] = clear.as_slice().try_into().map_err(|_| wrong())?;
        Ok(Zeroizing::new(key))
    }
}

impl MasterKey {
    /// `nonce ‖ ciphertext ‖ tag` of a secret of the service, bound to
    /// `context` (what it is and which one).
    pub(crate) fn seal_secret(&self, context: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new((&*self.derive(WRAP_SECRETS)).into());
        let aad = format!("accountable/v1/secret/{context}");
        let Ok(sealed) = cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: aad.as_bytes(),
            },
        ) else {
            unreachable!("AES-GCM seals any secret of a sane size");
        };
        [&nonce[..], &sealed].concat()
    }

    pub(crate) fn open_secret(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let wrong = || VaultError::SecretDoesNotOpen(context.to_owned());
        if sealed.len() <= NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = sealed.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new((&*self.derive(WRAP_SECRETS)).into());
        let aad = format!("accountable/v1/secret/{context}");
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| wrong())
    }
}

fn wrap_aad(key_id: Uuid, user_id: Uuid) -> String {
    format!("accountable/v1/data-key/{key_id}/{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_base64_in_either_alphabet() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let again = MasterKey::from_base64(&format!(" {}\n", *text)).unwrap();
        assert_eq!(*again.0, *key.0);
        let url_safe = URL_SAFE_NO_PAD.encode(&key.0[..]);
        assert_eq!(*MasterKey::from_base64(&url_safe).unwrap().0, *key.0);
    }

    #[test]
    fn only_32_bytes_of_base64_make_a_key() {
        for text in [
            "",
            "not base64!",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
        ] {
            assert!(matches!(
                MasterKey::from_base64(text),
                Err(VaultError::MalformedMasterKey)
            ));
        }
    }

    #[test]
    fn a_wrapped_key_unwraps_only_with_its_master_id_and_user() {
        let master = MasterKey::generate();
        let (key_id, user) = (Uuid::now_v7(), Uuid::now_v7());
        let wrapped = master.wrap(key_id, user, &[9; 32]);
        assert_eq!(*master.unwrap(key_id, user, &wrapped).unwrap(), [9; 32]);
        assert!(master.unwrap(key_id, Uuid::now_v7(), &wrapped).is_err());
        assert!(master.unwrap(Uuid::now_v7(), user, &wrapped).is_err());
        assert!(MasterKey::generate()
            .unwrap(key_id, user, &wrapped)
            .is_err());
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_master_and_context() {
        let master = MasterKey::generate();
        let sealed = master.seal_secret("signing-key/a", b"private");
        assert_eq!(
            &**master.open_secret("signing-key/a", &sealed).unwrap(),
            b"private"
        );
        assert!(master.open_secret("signing-key/b", &sealed).is_err());
        assert!(MasterKey::generate()
            .open_secret("signing-key/a", &sealed)
            .is_err());
    }

    #[test]
    fn the_email_index_is_keyed() {
        let master = MasterKey::generate();
        let index = master.email_index("ada@example.com");
        assert_eq!(index.len(), 64);
        assert_eq!(index, master.email_index("ada@example.com"));
        assert_ne!(index, master.email_index("grace@example.com"));
        assert_ne!(index, MasterKey::generate().email_index("ada@example.com"));
    }

    proptest::proptest! {
        #[test]
        fn any_configured_text_is_a_key_or_refused(text in "\\PC{0,100}|[A-Za-z0-9+/=_-]{40,48}") {
            if let Ok(key) = MasterKey::from_base64(&text) {
                proptest::prop_assert_eq!(key.0.len(), 32);
            }
        }
    }
}
