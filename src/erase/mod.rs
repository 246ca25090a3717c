//! Erasing the bot's own data: the [`Eraser`] trait and built-in erasers.
mod closure;
mod dialogue;
mod redis_keys;

use std::fmt;
use std::future::Future;

use futures_util::{StreamExt, future::BoxFuture, stream};
use teloxide::types::UserId;

pub use closure::{FnEraser, erase_fn};
pub use dialogue::DialogueEraser;
pub use redis_keys::RedisKeysEraser;

use crate::error::BoxError;

/// How many users the default [`Eraser::erase_batch`] erases concurrently.
pub(crate) const DEFAULT_ERASE_CONCURRENCY: usize = 32;

/// Why a user's data is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErasureReason {
    /// The user asked for it (`/removemydata` or [`Retention::erase_user`](crate::Retention::erase_user)).
    OptOut,
    /// The user has not interacted for longer than the inactivity threshold.
    Inactive,
    /// The user blocked the bot (a private `my_chat_member` update, or a send that failed
    /// with "bot was blocked by the user").
    Blocked,
    /// The user's Telegram account was deleted ("user is deactivated").
    Deactivated,
    /// Telegram no longer lets the bot reach the user ("chat not found", or another
    /// `Forbidden` answer for a private chat).
    Unreachable,
}

impl ErasureReason {
    /// Every reason, in a stable order (used for counters).
    pub const ALL: [Self; 5] =
        [Self::OptOut, Self::Inactive, Self::Blocked, Self::Deactivated, Self::Unreachable];

    /// A stable `snake_case` name, as used in logs and the `/mydata` export.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::Inactive => "inactive",
            Self::Blocked => "blocked",
            Self::Deactivated => "deactivated",
            Self::Unreachable => "unreachable",
        }
    }

    /// Returns `true` for the reasons that mean Telegram told us the user is gone.
    #[must_use]
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Blocked | Self::Deactivated | Self::Unreachable)
    }

    /// The one-letter code stored in Redis.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::OptOut => "o",
            Self::Inactive => "i",
            Self::Blocked => "b",
            Self::Deactivated => "d",
            Self::Unreachable => "u",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "o" => Self::OptOut,
            "i" => Self::Inactive,
            "b" => Self::Blocked,
            "d" => Self::Deactivated,
            "u" => Self::Unreachable,
            _ => return None,
        })
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErasureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user to erase, handed to every [`Eraser`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Erasure {
    /// The user whose data must go.
    pub user: UserId,
    /// Why the user is erased.
    pub reason: ErasureReason,
}

impl Erasure {
    /// Describes the erasure of `user` for `reason`.
    #[must_use]
    pub fn new(user: UserId, reason: ErasureReason) -> Self {
        Self { user, reason }
    }
}

/// What an eraser holds about one user, for the `/mydata` export.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Export {
    /// The data, as JSON. Use `Value::Null` when nothing is held for this user.
    Data(serde_json::Value),
    /// This eraser holds data but does not export it; `/mydata` lists it as
    /// "held, no export".
    Unsupported,
}

/// One page of the users an eraser's storage holds, for the audit (see [`Eraser::list`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listing {
    /// The users on this page, each with the last activity the storage knows, if it knows
    /// one (an `updated_at` column, the newest order, ...).
    pub users: Vec<(UserId, Option<chrono::DateTime<chrono::Utc>>)>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

impl Listing {
    /// A page of `users` (without activity times), followed by the page at `next`.
    ///
    /// Without times the audit cannot tell new data from leftovers: with receipts on, a
    /// listed user whose erasure completed counts as residue and is erased again, even if
    /// the data is new (an order that bypassed the layer). Prefer
    /// [`Listing::page_with_activity`] wherever the storage knows when it last wrote a
    /// user's data.
    #[must_use]
    pub fn page(users: impl IntoIterator<Item = UserId>, next: Option<String>) -> Self {
        Self { users: users.into_iter().map(|u| (u, None)).collect(), next }
    }

    /// A page of users with the time of their last activity the storage knows.
    #[must_use]
    pub fn page_with_activity(
        users: impl IntoIterator<Item = (UserId, Option<chrono::DateTime<chrono::Utc>>)>,
        next: Option<String>,
    ) -> Self {
        Self { users: users.into_iter().collect(), next }
    }
}

/// Erases (and optionally exports) one kind of the bot's own data about a user.
///
///
/// The crate knows when a user must be erased; only the bot knows where it keeps their data.
/// A bot registers one eraser per place (a database table, Redis keys, a dialogue storage)
/// with [`RetentionBuilder::erase_with`](crate::RetentionBuilder::erase_with), and every
/// erasure, whatever its [`ErasureReason`], calls every registered eraser.
///
/// # Contract
///
/// - **Idempotent.** An eraser may be called again for a user it already erased (a retry
///   after another eraser failed, or a pruner that crashed before confirming). Deleting
///   something that is already gone must succeed.
/// - **Fail loudly.** Return an error if the data may still be there; the erasure is then
///   retried durably (with backoff) until every eraser succeeds.
/// - **Bounded.** Each call runs under the configured eraser timeout and counts as failed when
///   it takes longer.
///
/// ```
/// use teloxide_retention::{BoxError, Erasure, Eraser, Export, erase_fn};
/// use teloxide::types::UserId;
///
/// /// The bot's own table of user profiles.
/// struct Profiles;
///
/// impl Eraser for Profiles {
///     fn name(&self) -> &str {
///         "profiles"
///     }
///
///     async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
///         // DELETE FROM profiles WHERE user_id = $1  (deleting nothing is fine)
///         let _ = erasure.user;
///         Ok(())
///     }
///
///     async fn export(&self, user: UserId) -> Result<Export, BoxError> {
///         Ok(Export::Data(serde_json::json!({ "user_id": user.0, "nickname": "ada" })))
///     }
/// }
///
/// // Or, for erase-only data, a closure:
/// let carts = erase_fn("carts", |erasure: Erasure| async move {
///     let _ = erasure.user; // DELETE FROM carts WHERE user_id = $1
///     Ok::<_, BoxError>(())
/// });
/// # let _ = (Profiles, carts);
/// ```
pub trait Eraser: Send + Sync + 'static {
    /// A short, stable name for logs and the `/mydata` export, such as `"profiles"`.
    fn name(&self) -> &str;

    /// Erases everything this eraser holds about `erasure.user`.
    ///
    /// Must succeed when there is nothing to erase.
    ///
    /// # Errors
    ///
    /// Any error means the data may still be there; the erasure is retried later.
    fn erase(&self, erasure: Erasure) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Erases many users at once; returns one result per input, in order.
    ///
    /// The pruner calls this with a whole batch. The default calls [`Eraser::erase`] for up
    /// to 32 users at a time; override it when the backend can
    /// delete many users in one round trip.
    fn erase_batch(
        &self,
        batch: &[Erasure],
    ) -> impl Future<Output = Vec<Result<(), BoxError>>> + Send {
        async move {
            stream::iter(batch.iter().copied())
                .map(|erasure| self.erase(erasure))
                .buffered(DEFAULT_ERASE_CONCURRENCY)
                .collect()
                .await
        }
    }

    /// Returns what this eraser holds about `user`, for `/mydata`.
    ///
    /// The default returns [`Export::Unsupported`].
    ///
    /// # Errors
    ///
    /// An error is shown in the export as the eraser's entry failing, not as missing data.
    fn export(&self, user: UserId) -> impl Future<Output = Result<Export, BoxError>> + Send {
        let _ = user;
        async { Ok(Export::Unsupported) }
    }

    /// Lists the users this eraser's storage holds, one page at a time, for the audit
    /// ([`Retention::audit`](crate::Retention::audit)): the page starting at `cursor`
    /// (`None`: the first), which names where the next one starts. Pages of a few hundred
    /// to a few thousand users keep the audit's memory bounded; a user listed twice is
    /// harmless.
    ///
    /// The default returns `Ok(None)`: this eraser cannot list, and the audit says so.
    ///
    /// Each call is bounded by the eraser timeout
    /// ([`RetentionBuilder::eraser_timeout`](crate::RetentionBuilder::eraser_timeout)), and a
    /// listing must move forward: a cursor handed back twice stops it.
    ///
    /// # Errors
    ///
    /// Any error stops the audit of this eraser, which reports it; so do a call that does
    /// not answer in time and a repeated cursor.
    fn list(
        &self,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<Option<Listing>, BoxError>> + Send {
        let _ = cursor;
        async { Ok(None) }
    }
}

/// The object-safe twin of [`Eraser`], used to keep erasers of different types in one list.
pub(crate) trait DynEraser: Send + Sync {
    fn name(&self) -> &str;
    fn erase_batch<'a>(&'a self, batch: &'a [Erasure]) -> BoxFuture<'a, Vec<Result<(), BoxError>>>;
    fn export(&self, user: UserId) -> BoxFuture<'_, Result<Export, BoxError>>;
    fn list(&self, cursor: Option<String>) -> BoxFuture<'_, Result<Option<Listing>, BoxError>>;
}

impl<T: Eraser> DynEraser for T {
    fn name(&self) -> &str {
        Eraser::name(self)
    }

    fn erase_batch<'a>(&'a self, batch: &'a [Erasure]) -> BoxFuture<'a, Vec<Result<(), BoxError>>> {
        Box::pin(Eraser::erase_batch(self, batch))
    }

    fn export(&self, user: UserId) -> BoxFuture<'_, Result<Export, BoxError>> {
        Box::pin(Eraser::export(self, user))
    }

    fn list(&self, cursor: Option<String>) -> BoxFuture<'_, Result<Option<Listing>, BoxError>> {
        Box::pin(Eraser::list(self, cursor))
    }
}
