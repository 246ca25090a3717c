use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};
use serde_json::{Map, Value as Json};
use teloxide::types::UserId;

use crate::erase::{Eraser, Erasure, Export, Listing};
use crate::error::{BoxError, Error, Result};

/// The placeholder in key patterns that is replaced by the user id.
const PLACEHOLDER: &str = "{user}";

/// An [`Eraser`] for the bot's own Redis keys, named by patterns such as `"profile:{user}"`.
///
/// `{user}` is replaced by the decimal user id; write `{{user}}` to make the id a Redis
/// Cluster hash tag (`{42}`). Keys are removed with `UNLINK`, so a large key never stalls
/// Redis, and a whole pruner batch is removed in one pipeline. The export reads strings,
/// hashes, lists, sets and sorted sets.
///
/// Works with any async connection: a `ConnectionManager`, a `MultiplexedConnection` or a
/// cluster connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use teloxide_retention::RedisKeysEraser;
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let conn = redis::aio::ConnectionManager::new(client).await?;
/// let eraser = RedisKeysEraser::new(conn, ["profile:{user}", "cart:{{user}}"])?;
/// # let _ = eraser;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisKeysEraser<C> {
    conn: C,
    patterns: Vec<String>,
    name: String,
}

impl<C> std::fmt::Debug for RedisKeysEraser<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeysEraser")
            .field("name", &self.name)
            .field("patterns", &self.patterns)
            .finish_non_exhaustive()
    }
}

impl RedisKeysEraser<redis::aio::ConnectionManager> {
    /// Erases the keys named by `patterns` in the Redis at `url` (`redis://`, `rediss://`,
    /// `redis+unix://`), through a connection of its own that connects on first use and
    /// reconnects by itself: for a bot whose own Redis client is another `redis` version
    /// than this crate's (teloxide's `redis-storage` brings 0.29), or that has none.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), teloxide_retention::Error> {
    /// use teloxide_retention::RedisKeysEraser;
    ///
    /// let eraser = RedisKeysEraser::open("redis://127.0.0.1/1", ["profile:{user}"])?;
    /// # let _ = eraser;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL is invalid, or as [`RedisKeysEraser::new`].
    pub fn open<I, P>(url: &str, patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        crate::conn::ensure_crypto_provider();
        let invalid = |e: redis::RedisError| {
            Error::config(format!("RedisKeysEraser: the Redis URL is invalid: {e}"))
        };
        let client = redis::Client::open(url).map_err(invalid)?;
        // The store's own settings: bounded connects and replies, reconnects with backoff.
        let config = crate::conn::manager_config();
        let conn =
            redis::aio::ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
        Self::new(conn, patterns)
    }
}

impl<C> RedisKeysEraser<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Erases the keys named by `patterns`; named `"redis-keys"`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if there are no patterns or a pattern lacks the `{user}` placeholder
    /// (it would name the same key for every user).
    pub fn new<I, P>(conn: C, patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        if patterns.is_empty() {
            return Err(Error::config("RedisKeysEraser needs at least one key pattern"));
        }
        if let Some(bad) = patterns.iter().find(|p| !p.contains(PLACEHOLDER)) {
            return Err(Error::config(format!(
                "RedisKeysEraser pattern {bad:?} has no {PLACEHOLDER} placeholder; \
                 it would erase the same key for every user"
            )));
        }
        Ok(Self { conn, patterns, name: "redis-keys".to_owned() })
    }

    /// Renames the eraser.
    #[must_use]
    pub fn named(self, name: impl Into<String>) -> Self {
        Self { name: name.into(), ..self }
    }

    /// The keys this eraser owns for `user`.
    #[must_use]
    pub fn keys_for(&self, user: UserId) -> Vec<String> {
        let id = user.0.to_string();
        self.patterns.iter().map(|p| p.replace(PLACEHOLDER, &id)).collect()
    }

    async fn unlink(&self, users: &[Erasure]) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for erasure in users {
            for key in self.keys_for(erasure.user) {
                // One key per command keeps the pipeline valid on Redis Cluster.
                pipe.cmd("UNLINK").arg(key).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }
}

impl<C> Eraser for RedisKeysEraser<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        Ok(self.unlink(&[erasure]).await?)
    }

    async fn erase_batch(&self, batch: &[Erasure]) -> Vec<Result<(), BoxError>> {
        match self.unlink(batch).await {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let msg = e.to_string();
                batch.iter().map(|_| Err(msg.clone().into())).collect()
            }
        }
    }

    /// Lists the users whose keys exist, with `SCAN` over each pattern (`{user}` as
    /// `[1-9]*`; keys whose id part is not a user id are skipped), 1,000 keys a step. On a
    /// Redis Cluster, `SCAN` covers the node the connection sends it to.
    async fn list(&self, cursor: Option<String>) -> Result<Option<Listing>, BoxError> {
        scan_users(&self.conn, &self.patterns, cursor).await.map(Some)
    }

    async fn export(&self, user: UserId) -> Result<Export, BoxError> {
        let keys = self.keys_for(user);
        let mut conn = self.conn.clone();
        let mut types = redis::pipe();
        for key in &keys {
            types.cmd("TYPE").arg(key);
        }
        let kinds: Vec<String> = types.query_async(&mut conn).await?;
        let mut out = Map::new();
        for (key, kind) in keys.into_iter().zip(kinds) {
            let mut cmd = match kind.as_str() {
                "none" => continue,
                "string" => redis::cmd("GET"),
                "hash" => redis::cmd("HGETALL"),
                "list" => redis::cmd("LRANGE"),
                "set" => redis::cmd("SMEMBERS"),
                "zset" => redis::cmd("ZRANGE"),
                other => {
                    out.insert(key, Json::String(format!("<{other} value, not exported>")));
                    continue;
                }
            };
            cmd.arg(&key);
            match kind.as_str() {
                "list" => {
                    cmd.arg(0).arg(-1);
                }
                "zset" => {
                    cmd.arg(0).arg(-1).arg("WITHSCORES");
                }
                _ => {}
            }
            let value: Value = cmd.query_async(&mut conn).await?;
            out.insert(key, to_json(&kind, value));
        }
        Ok(Export::Data(Json::Object(out)))
    }
}

/// One page of the users whose keys named by `patterns` exist, from `cursor` (the
/// pattern's index and the `SCAN` cursor within it, `"{index}:{scan}"`); shared with
/// [`DialogueEraser::list_redis`](crate::DialogueEraser::list_redis).
pub(crate) async fn scan_users<C>(
    conn: &C,
    patterns: &[String],
    cursor: Option<String>,
) -> Result<Listing, BoxError>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let (mut index, mut scan) = match cursor.as_deref() {
        None => (0, 0),
        Some(c) => {
            let (i, c) = c.split_once(':').ok_or_else(|| format!("bad listing cursor {c:?}"))?;
            (i.parse::<usize>()?, c.parse::<u64>()?)
        }
    };
    let mut conn = conn.clone();
    let mut users = Vec::new();
    while let Some(pattern) = patterns.get(index) {
        let (prefix, suffix) = pattern.split_once(PLACEHOLDER).unwrap_or((pattern, ""));
        // Every user id starts with a digit from 1 to 9.
        let glob = format!("{}[1-9]*{}", glob_escape(prefix), glob_escape(suffix));
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(scan)
            .arg("MATCH")
            .arg(&glob)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        users.extend(keys.iter().filter_map(|key| {
            let id = key.strip_prefix(prefix)?.strip_suffix(suffix)?;
            crate::humans::parse_user(id).map(UserId)
        }));
        if next != 0 {
            return Ok(Listing::page(users, Some(format!("{index}:{next}"))));
        }
        index += 1;
        scan = 0;
        if !users.is_empty() && index < patterns.len() {
            return Ok(Listing::page(users, Some(format!("{index}:0"))));
        }
    }
    Ok(Listing::page(users, None))
}

/// Converts a Redis reply to JSON; maps become objects, everything else strings and arrays.
fn to_json(kind: &str, value: Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::BulkString(bytes) => Json::String(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(s) => Json::String(s),
        Value::Int(i) => Json::from(i),
        Value::Double(d) => Json::from(d),
        Value::Map(pairs) => Json::Object(
            pairs.into_iter().map(|(k, v)| (json_key(k), to_json("string", v))).collect(),
        ),
        Value::Array(items) | Value::Set(items) if kind == "hash" => Json::Object(
            items
                .chunks(2)
                .map(|kv| {
                    (
                        json_key(kv[0].clone()),
                        kv.get(1).cloned().map_or(Json::Null, |v| to_json("string", v)),
                    )
                })
                .collect(),
        ),
        Value::Array(items) | Value::Set(items) => {
            Json::Array(items.into_iter().map(|v| to_json("string", v)).collect())
        }
        other => Json::String(format!("{other:?}")),
    }
}

fn json_key(value: Value) -> String {
    match to_json("string", value) {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

/// `text` with Redis's glob characters escaped, for a literal part of a `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
