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
/// feature; commented out here, as the library's own doc tests build without teloxide's
/// storages):
///
/// ```no_run
/// use teloxide_retention::DialogueEraser;
/// # use teloxide::dispatching::dialogue::{InMemStorage, Storage};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// // use teloxide::dispatching::dialogue::{SqliteStorage, serializer::Json};
/// // let storage = SqliteStorage::open("dialogues.sqlite", Json).await?;
/// # let storage = InMemStorage::<serde_json::Value>::new();
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
    /// `list(cursor)` returns the page of users with a dialogue starting at `cursor`
    /// (`None`: the first). teloxide's storages keep their connection to themselves, so a
    /// listing reads the storage through a connection of the bot's own. For teloxide's
    /// storages it is built in: [`list_redis`](Self::list_redis),
    #[cfg_attr(feature = "sqlite", doc = "[`list_sqlite`](Self::list_sqlite)")]
    #[cfg_attr(not(feature = "sqlite"), doc = "`list_sqlite`")]
    /// (`sqlite` feature) and
    #[cfg_attr(feature = "postgres", doc = "[`list_postgres`](Self::list_postgres)")]
    #[cfg_attr(not(feature = "postgres"), doc = "`list_postgres`")]
    /// (`postgres` feature); this is for any other.
    #[must_use]
    pub fn list_with<L, Fut, E>(self, list: L) -> Self
    where
        L: Fn(Option<String>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::Listing, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self { list: Some(crate::erase::closure::list_fn(list)), ..self }
    }

    /// Lists the users with a dialogue in teloxide's `RedisStorage`, whose keys are bare
    /// chat ids, through `conn`, a connection of this crate's `redis` (1.x; re-exported as
    /// [`teloxide_retention::redis`](crate::redis)) to the same server and database: `SCAN`
    /// of the keys that are user ids (private chats; group chats are negative), 1,000 keys
    /// a step. Keep the dialogues in a database of their own (as the example's `/2`): there
    /// every key that is a user id counts as a dialogue, as it does for `RedisStorage`
    /// itself.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use teloxide_retention::{DialogueEraser, redis};
    /// # use teloxide::dispatching::dialogue::{InMemStorage, Storage};
    ///
    /// let url = "redis://127.0.0.1/2";
    /// // use teloxide::dispatching::dialogue::{RedisStorage, serializer::Json};
    /// // let storage = RedisStorage::open(url, Json).await?;
    /// # let storage = InMemStorage::<serde_json::Value>::new();
    /// let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
    /// let eraser = DialogueEraser::for_any_state(storage).list_redis(conn);
    /// # let _ = eraser;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn list_redis<C>(self, conn: C) -> Self
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        let patterns = vec!["{user}".to_owned()];
        self.list_with(move |cursor| {
            let (conn, patterns) = (conn.clone(), patterns.clone());
            async move { crate::erase::redis_keys::scan_users(&conn, &patterns, cursor).await }
        })
    }

    /// Lists the users with a dialogue in teloxide's `SqliteStorage` through `pool`, a pool
    /// of the bot's own on the same database file: the private chats (positive ids) of its
    /// `teloxide_dialogues` table, in pages of 1,000 ordered by id. Needs the `sqlite`
    /// feature.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use teloxide_retention::DialogueEraser;
    /// # use teloxide::dispatching::dialogue::{InMemStorage, Storage};
    ///
    /// // use teloxide::dispatching::dialogue::{SqliteStorage, serializer::Json};
    /// // let storage = SqliteStorage::open("dialogues.sqlite", Json).await?;
    /// # let storage = InMemStorage::<serde_json::Value>::new();
    /// let pool = sqlx::SqlitePool::connect("sqlite://dialogues.sqlite").await?;
    /// let eraser = DialogueEraser::for_any_state(storage).list_sqlite(pool);
    /// # let _ = eraser;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sqlite")]
    #[must_use]
    pub fn list_sqlite(self, pool: sqlx::SqlitePool) -> Self {
        self.list_with(move |cursor| {
            let pool = pool.clone();
            async move {
                let after = sql_cursor(cursor.as_deref())?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT chat_id FROM teloxide_dialogues \
                     WHERE chat_id > ? AND chat_id <= ? ORDER BY chat_id LIMIT ?",
                )
                .bind(after)
                .bind(MAX_CHAT)
                .bind(SQL_PAGE)
                .fetch_all(&pool)
                .await?;
                Ok::<_, BoxError>(sql_page(ids))
            }
        })
    }

    /// Lists the users with a dialogue in teloxide's `PostgresStorage` through `pool`, a
    /// pool of the bot's own on the same database: the private chats (positive ids) of its
    /// `teloxide_dialogues` table, in pages of 1,000 ordered by id. Needs the `postgres`
    /// feature.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use teloxide_retention::DialogueEraser;
    /// # use teloxide::dispatching::dialogue::{InMemStorage, Storage};
    /// # let storage = InMemStorage::<serde_json::Value>::new();
    ///
    /// // `storage`: teloxide's `PostgresStorage` (teloxide 0.17 exports it only with its
    /// // `postgres-storage-nativetls` feature).
    /// let pool = sqlx::PgPool::connect("postgres://bot@localhost/bot").await?;
    /// let eraser = DialogueEraser::for_any_state(storage).list_postgres(pool);
    /// # let _ = eraser;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn list_postgres(self, pool: sqlx::PgPool) -> Self {
        self.list_with(move |cursor| {
            let pool = pool.clone();
            async move {
                let after = sql_cursor(cursor.as_deref())?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT chat_id FROM teloxide_dialogues \
                     WHERE chat_id > $1 AND chat_id <= $2 ORDER BY chat_id LIMIT $3",
                )
                .bind(after)
                .bind(MAX_CHAT)
                .bind(SQL_PAGE)
                .fetch_all(&pool)
                .await?;
                Ok::<_, BoxError>(sql_page(ids))
            }
        })
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

/// Rows a SQL listing reads per page.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const SQL_PAGE: i64 = 1_000;

/// The highest chat id that can be a user's private chat.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const MAX_CHAT: i64 = crate::humans::MAX_USER_ID as i64;

/// The chat id a SQL listing's page starts after.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql_cursor(cursor: Option<&str>) -> Result<i64, BoxError> {
    cursor.map_or(Ok(0), |c| c.parse().map_err(|_| format!("bad listing cursor {c:?}").into()))
}

/// A page of private chat ids, read in ascending order; full pages are followed by the next.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql_page(ids: Vec<i64>) -> crate::Listing {
    let next = (ids.len() as i64 == SQL_PAGE).then(|| ids[ids.len() - 1].to_string());
    crate::Listing::page(ids.into_iter().map(|id| UserId(id as u64)), next)
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
