//! Erasure receipts: a record of each completed erasure that names the user only by a
//! keyed hash, so that it can show what was erased, when and why without keeping who.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use teloxide::types::UserId;

use crate::erase::ErasureReason;
use crate::error::{Error, Result};

/// The shortest key accepted: 32 bytes, the output size of SHA-256.
const MIN_KEY_BYTES: usize = 32;

/// The secret key that names users in erasure receipts (see
/// [`RetentionBuilder::receipts`](crate::RetentionBuilder::receipts)).
///
/// A receipt holds `HMAC-SHA256(key, user id)`, never the id. Whoever holds the key can
/// find a user's receipts; without the key they are anonymous records. Keep the key out of
/// Redis (a file, a secret manager): destroying it leaves only anonymous receipts.
#[derive(Clone)]
pub struct ReceiptKey(Vec<u8>);

impl fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReceiptKey(<redacted>)")
    }
}

impl ReceiptKey {
    /// A key of at least 32 bytes (such as `openssl rand 32 > receipt.key`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the key is shorter than 32 bytes.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self> {
        let key = key.into();
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::config(format!(
                "a receipt key needs at least {MIN_KEY_BYTES} bytes (got {}); make one with \
                 `openssl rand 32 > receipt.key`",
                key.len()
            )));
        }
        Ok(Self(key))
    }

    /// Reads the key from a file (its bytes as they are; a trailing newline is kept).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the file cannot be read or holds fewer than 32 bytes.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let key = std::fs::read(path).map_err(|e| {
            Error::config(format!("cannot read the receipt key {}: {e}", path.display()))
        })?;
        Self::new(key)
    }

    /// The name of `user` in receipts: the hex HMAC-SHA256 of the decimal id.
    pub(crate) fn tag(&self, user: UserId) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(user.0.to_string().as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Receipts kept by a bot: the key and how long each receipt lives.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptConfig {
    pub(crate) key: ReceiptKey,
    pub(crate) keep: Duration,
}

/// One completed erasure of a user, as its receipt records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// Why the user was erased.
    pub reason: ErasureReason,
    /// When the erasure was confirmed (the pruner's clock).
    pub erased_at: DateTime<Utc>,
    /// The erasers that ran and succeeded, by [`Eraser::name`](crate::Eraser::name).
    pub erasers: Vec<String>,
    /// The attempt that succeeded (1 for the first).
    pub attempts: u32,
}

/// A receipt as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawReceipt {
    pub(crate) at: i64,
    pub(crate) reason: ErasureReason,
    pub(crate) erasers: String,
    pub(crate) attempts: u32,
}

impl From<RawReceipt> for Receipt {
    fn from(raw: RawReceipt) -> Self {
        Self {
            reason: raw.reason,
            erased_at: DateTime::from_timestamp_millis(raw.at).unwrap_or_default(),
            erasers: serde_json::from_str(&raw.erasers).unwrap_or_else(|_| vec![raw.erasers]),
            attempts: raw.attempts,
        }
    }
}

/// What the finish of a batch writes as receipts: one per confirmed user, in order.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptBatch {
    /// How long a receipt lives (ms).
    pub(crate) keep_ms: i64,
    /// The erasers' names, as a JSON array (a name may hold any character).
    pub(crate) erasers: String,
    /// Each confirmed user's tag.
    pub(crate) tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(ReceiptKey::new(vec![7; 31]), Err(Error::Config(_))));
        assert!(ReceiptKey::new(vec![7; 32]).is_ok());
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_the_decimal_id() {
        // Computed independently with OpenSSL:
        // printf 42 | openssl dgst -sha256 -hmac "$(printf 'k%.0s' {1..32})"
        let key = ReceiptKey::new(vec![b'k'; 32]).unwrap();
        assert_eq!(
            key.tag(UserId(42)),
            "09b9733fee8d8c0058bb9267ee6883b71d107741f7dce72efc707782121c7a49"
        );
        let other = ReceiptKey::new(vec![b'j'; 32]).unwrap();
        assert_ne!(key.tag(UserId(42)), other.tag(UserId(42)));
        assert_eq!(format!("{key:?}"), "ReceiptKey(<redacted>)");
    }
}
