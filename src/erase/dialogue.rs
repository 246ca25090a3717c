use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use teloxide::dispatching::dialogue::Storage;
use teloxide::types::{ChatId, UserId};

use crate::erase::{Eraser, Erasure, Export};
use crate::error::BoxError;

/// An [`Eraser`] for any teloxide dialogue [`Storage`] (in-memory, Redis, SQLite, Postgres or
/// your own).
///
/// Dialogues are keyed by chat; in a private chat the chat id is the user id, so this removes
/// the user's private dialogue. Dialogues of group chats belong to the group and are left
/// alone. A dialogue that does not exist counts as erased, whatever error the storage uses to
/// say so.
///
/// - [`DialogueEraser::new`] takes a storage whose type names the dialogue state:
///   `Arc<InMemStorage<State>>`, or `Arc<ErasedStorage<State>>` (what
///   [`Storage::erase`] returns, as many bots keep their storage).
/// - [`DialogueEraser::for_any_state`] takes a storage that serializes dialogues
///   (`RedisStorage`, `SqliteStorage`, `PostgresStorage`), whose type does not name the
///   state: it erases whatever state is stored, and its export reads the stored state as
///   JSON (with the `Json` and `Cbor` serializers; `Bincode` exports fail).
///
/// ```
/// use std::sync::Arc;
/// use teloxide::dispatching::dialogue::{ErasedStorage, InMemStorage, Storage};
/// use teloxide_retention::DialogueEraser;
///
/// #[derive(Clone, Default, serde::Serialize)]
/// enum State {
///     #[default]
///     Start,
/// }
///
/// let storage = InMemStorage::<State>::new();
/// let eraser = DialogueEraser::new(Arc::clone(&storage)).with_export();
///
/// // A storage kept type-erased, as `Dialogue<State, ErasedStorage<State>>` needs:
/// let erased: Arc<ErasedStorage<State>> = InMemStorage::<State>::new().erase();
/// let eraser = DialogueEraser::new(erased).named("wizard");
/// # let _ = eraser;
/// ```
///
/// With a serializing storage (here SQLite, with teloxide's `sqlite-storage-rustls`
/// feature):
///
/// ```no_run
/// use teloxide::dispatching::dialogue::{SqliteStorage, serializer::Json};
/// use teloxide_retention::DialogueEraser;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let storage = SqliteStorage::open("dialogues.sqlite", Json).await?;
/// let eraser = DialogueEraser::for_any_state(storage).with_export();
/// # let _ = eraser;
/// # Ok(())
/// # }
/// ```
pub struct DialogueEraser<S: ?Sized, D = serde_json::Value> {
    storage: Arc<S>,
    name: String,
    export: Option<fn(&D) -> serde_json::Value>,
    list: Option<crate::erase::closure::ListFn>,
    _dialogue: PhantomData<fn() -> D>,
}

impl<S: ?Sized, D> std::fmt::Debug for DialogueEraser<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogueEraser")
            .field("name", &self.name)
            .field("exports", &self.export.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, D> DialogueEraser<S, D>
where
    S: Storage<D> + Send + Sync + ?Sized + 'static,
    S::Error: Into<BoxError>,
    D: Send + 'static,
{
    /// Erases dialogues of `storage`; named `"dialogue"` and without export. The state type
    /// comes from the storage's type (see the [type's documentation](DialogueEraser)).
    #[must_use]
    pub fn new(storage: Arc<S>) -> Self {
        Self {
            storage,
            name: "dialogue".to_owned(),
            export: None,
            list: None,
            _dialogue: PhantomData,
        }
    }

    /// Renames the eraser (when a bot has several dialogue storages).
    #[must_use]
    pub fn named(self, name: impl Into<String>) -> Self {
        Self { name: name.into(), ..self }
    }

    /// Gives the eraser a listing for the audit ([`Eraser::list`](crate::Eraser::list)):
    /// `list(cursor)` returns the page of users with a dialogue starting at `cursor`.
    /// teloxide's storages keep their connection to themselves, so the bot lists with its
    /// own: for `SqliteStorage` and `PostgresStorage`, the private chats (positive ids) of
    /// `teloxide_dialogues`:
    ///
    /// ```sql
    /// SELECT chat_id FROM teloxide_dialogues WHERE chat_id > $1 ORDER BY chat_id LIMIT 1000
    /// ```
    ///
    /// for `RedisStorage`, its keys (bare chat ids). `tests/integration/adoption.rs` lists
    /// a `SqliteStorage` this way through sqlx.
    #[must_use]
    pub fn list_with<L, Fut, E>(self, list: L) -> Self
    where
        L: Fn(Option<String>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::Listing, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self { list: Some(crate::erase::closure::list_fn(list)), ..self }
    }

    /// Includes the user's current dialogue state, serialized as JSON, in `/mydata`.
    #[must_use]
    pub fn with_export(self) -> Self
    where
        D: Serialize,
    {
        Self { export: Some(|d| serde_json::to_value(d).unwrap_or_default()), ..self }
    }
}

impl<S> DialogueEraser<S, serde_json::Value>
where
    S: Storage<serde_json::Value> + Send + Sync + ?Sized + 'static,
    S::Error: Into<BoxError>,
{
    /// Erases dialogues of a storage that serializes them (`RedisStorage`,
    /// `SqliteStorage`, `PostgresStorage`), whatever the state type; named `"dialogue"` and
    /// without export. [`with_export`](Self::with_export) reads the stored state as JSON.
    #[must_use]
    pub fn for_any_state(storage: Arc<S>) -> Self {
        Self::new(storage)
    }
}

fn private_chat(user: UserId) -> ChatId {
    // Telegram user ids fit in 52 bits, so this never wraps.
    ChatId(user.0 as i64)
}

impl<S, D> Eraser for DialogueEraser<S, D>
where
    S: Storage<D> + Send + Sync + ?Sized + 'static,
    S::Error: Into<BoxError>,
    D: Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        let chat = private_chat(erasure.user);
        let removal: BoxError = match Arc::clone(&self.storage).remove_dialogue(chat).await {
            Ok(()) => return Ok(()),
            Err(e) => e.into(),
        };
        // Storages report a missing dialogue as an error of their own type. Whatever the
        // error was, the dialogue is erased if it is not there now.
        match Arc::clone(&self.storage).get_dialogue(chat).await {
            Ok(None) => Ok(()),
            _ => Err(removal),
        }
    }

    async fn export(&self, user: UserId) -> Result<Export, BoxError> {
        let Some(to_json) = self.export else {
            return Ok(Export::Unsupported);
        };
        let dialogue = Arc::clone(&self.storage)
            .get_dialogue(private_chat(user))
            .await
            .map_err(Into::<BoxError>::into)?;
        Ok(Export::Data(dialogue.as_ref().map_or(serde_json::Value::Null, to_json)))
    }

    async fn list(&self, cursor: Option<String>) -> Result<Option<crate::Listing>, BoxError> {
        match &self.list {
            Some(list) => list(cursor).await.map(Some),
            None => Ok(None),
        }
    }
}
