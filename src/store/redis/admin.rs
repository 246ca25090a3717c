//! Administration of a Redis store: `RedisStore::diagnose` (what `teloxide-retention
//! check` reports) and `RedisStore::reshard` (moving a namespace to another shard count).

use super::decode::erased_entry;
use super::scripts::LAYOUT;
use super::*;

impl RedisStore {
    /// Reads what matters to the crate about the server and `namespace`: version, eviction
    /// policy, persistence, Redis's clock against this machine's, and the namespace's
    /// metadata. The CLI's `check` prints it; a bot may call it at start.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace; [`Error::Redis`] if Redis does not
    /// answer.
    pub async fn diagnose(&self, namespace: &str) -> Result<Diagnosis> {
        crate::store::validate_namespace(namespace)?;
        let mut conn = self.conn.clone();
        // On a cluster, every node's: the oldest version, the riskiest policy, persistence
        // only if every node has it.
        let infos = infos(&mut conn, &["server", "memory", "persistence"]).await?;
        let policies = node_policies(&mut conn, &infos).await;
        let snapshots = config_values(&mut conn, "save")
            .await
            .map(|saves| saves.iter().all(|save| !save.trim().is_empty()));
        let append_only =
            infos.iter().all(|i| info_field(i, "aof_enabled").as_deref() == Some("1"));
        let before = Utc::now();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let after = Utc::now();
        let local_time = before + (after - before) / 2;
        let server_time = DateTime::from_timestamp(secs, u32::try_from(micros * 1000).unwrap_or(0))
            .unwrap_or_default();
        let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{{{namespace}}}:meta"))
            .query_async(&mut conn)
            .await?;
        let namespace = (!meta.is_empty()).then(|| NamespaceMeta {
            shards: meta.get("shards").and_then(|n| n.parse().ok()).unwrap_or(1),
            created: meta
                .get("created")
                .and_then(|c| c.parse().ok())
                .and_then(DateTime::from_timestamp_millis),
            resharding: meta.get("resharding").and_then(|r| {
                let (from, to) = r.split_once(' ')?;
                Some((from.parse().ok()?, to.parse().ok()?))
            }),
        });
        Ok(Diagnosis {
            version: oldest_version(&infos),
            eviction_policy: riskiest_policy(policies),
            append_only,
            snapshots,
            server_time,
            local_time,
            namespace,
        })
    }

    /// Moves every user of `namespace` to a layout of `count` shards and records the new
    /// count: the operation to run when the shard count changes (also to shard a namespace
    /// written by a version that did not shard, whose count is 1).
    ///
    /// Stop every bot of the namespace first (a bot removes its heartbeat when it shuts
    /// down cleanly; a heartbeat younger than an hour, such as a crashed bot's, makes this
    /// refuse); open them again with [`RedisStore::with_shards`]`(count)` afterwards.
    /// While the move runs, bots that start refuse to write to the namespace. It is
    /// resumable: if it is interrupted, run it again with the same count. Confirmation
    /// nonces and rate-limit counters are not moved (they expire within minutes).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), teloxide_retention::Error> {
    /// use teloxide_retention::RedisStore;
    ///
    /// let store = RedisStore::open_cluster(["redis://10.0.0.1:7000"]).await?;
    /// let moved = store.reshard("retention", 48).await?;
    /// println!("{} users moved from {} to {} shards", moved.users, moved.from, moved.to);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace or count, or if an unfinished resharding
    /// of this namespace goes to another count; [`Error::Unsafe`] if a bot still sends
    /// heartbeats or a prune batch is unfinished; [`Error::Redis`] if Redis fails (run it
    /// again).
    pub async fn reshard(&self, namespace: &str, count: usize) -> Result<Resharded> {
        crate::store::validate_namespace(namespace)?;
        check_shard_count(count)?;
        let home = RedisNamespace::new(self.conn.clone(), namespace);
        let layout = |n: usize| -> Vec<RedisNamespace> {
            (0..n)
                .map(|i| RedisNamespace::new(self.conn.clone(), &shard_tag(namespace, i, n)))
                .collect()
        };
        let (from, unfinished) = home.stored_layout().await?;
        if let Some(to) = unfinished
            && to != count
        {
            return Err(Error::config(format!(
                "namespace {namespace:?} is being resharded from {from} to {to} shards; finish \
                 that first with RedisStore::reshard({namespace:?}, {to})"
            )));
        }
        let mut moved = Resharded { from, to: count, users: 0, scheduled: 0 };
        if from == count {
            return Ok(moved);
        }
        let old = layout(from);
        let new = layout(count);
        if unfinished.is_none() {
            // 1. Fence the old layout first: from now on no process writes there, even one
            //    that has not sent a heartbeat yet (README guarantee 15).
            for shard in &old {
                shard.set_moved(count).await?;
            }
            // 2. Then make sure nothing is in flight there; give the fence up if it is.
            for shard in &old {
                if let Err(e) = shard.check_quiet().await {
                    for shard in &old {
                        shard.clear_moved().await?;
                    }
                    return Err(e);
                }
            }
            home.set_resharding(from, count).await?;
        }
        let now = home.server_time().await?.unwrap_or_default();
        for shard in &new {
            // 3. The target layout takes writes once the move is recorded as finished (a
            //    process opened with its count is refused by the home until then), and
            //    gets the marker that tells a lost `seen` from a new one.
            shard.clear_moved().await?;
            shard.write_marker(now).await?;
        }
        for (index, shard) in old.iter().enumerate() {
            shard.move_receipts(&new[index % count]).await?;
            let (users, scheduled) = shard.move_users(&new).await?;
            moved.users += users;
            moved.scheduled += scheduled;
            tracing::info!(shard = index, of = from, users, scheduled, "shard moved");
        }
        home.finish_resharding(count).await?;
        Ok(moved)
    }
}

/// What [`RedisStore::diagnose`] found: the server's settings that matter to the crate, and
/// the namespace's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// `redis_version` (on a cluster: the oldest node's).
    pub version: Option<String>,
    /// `maxmemory-policy` (on a cluster: an `allkeys-*` one if any node has it).
    pub eviction_policy: Option<String>,
    /// Whether the append-only file is on (on a cluster: on every node).
    pub append_only: bool,
    /// Whether RDB snapshots are configured (`save` is not empty; on a cluster, of the node
    /// that answered `CONFIG GET`); `None` if `CONFIG` is disabled (managed Redis).
    pub snapshots: Option<bool>,
    /// Redis's clock (`TIME`).
    pub server_time: DateTime<Utc>,
    /// This machine's clock when `TIME` was asked (the middle of the round trip).
    pub local_time: DateTime<Utc>,
    /// The namespace's metadata; `None` if no bot has used the namespace.
    pub namespace: Option<NamespaceMeta>,
}

/// A namespace's metadata (its `{ns}:meta` hash).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceMeta {
    /// The recorded shard count (1 for a namespace of an earlier version).
    pub shards: usize,
    /// When the namespace's `seen` marker was written (the first prune pass or health check).
    pub created: Option<DateTime<Utc>>,
    /// `(from, to)` while [`RedisStore::reshard`] is moving users, or after it was
    /// interrupted.
    pub resharding: Option<(usize, usize)>,
}

/// What [`RedisStore::reshard`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resharded {
    /// The shard count before.
    pub from: usize,
    /// The shard count now.
    pub to: usize,
    /// Tracked users moved.
    pub users: u64,
    /// Scheduled erasures moved.
    pub scheduled: u64,
}

/// A shard count must be between 1 and [`MAX_SHARDS`].
pub(super) fn check_shard_count(count: usize) -> Result<()> {
    if (1..=MAX_SHARDS).contains(&count) {
        Ok(())
    } else {
        Err(Error::config(format!("shard count must be between 1 and {MAX_SHARDS}, not {count}")))
    }
}

/// Members per `ZSCAN`/`HSCAN` step and per write while resharding.
const MOVE_CHUNK: usize = 500;

/// A heartbeat younger than this means a bot may still run: resharding refuses. A bot may
/// send heartbeats as rarely as a third of its writer timeout (default 1 hour), so anything
/// shorter could miss a running bot, whose interactions would then go to the old layout after
/// the move and leave the new one with stale times (an active user erased for inactivity).
/// A bot that shut down cleanly left no heartbeat; one that crashed blocks resharding for
/// this long.
const QUIET_MS: i64 = 60 * 60 * 1000;

/// The value of `field` in an `INFO` reply (`field:value` lines).
/// The replies of every node: a cluster sends some commands (`INFO`, `CONFIG GET`) to every
/// node and answers with a map of node to reply; a single server answers once.
pub(super) fn per_node(reply: Value) -> Vec<Value> {
    match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, reply)| reply).collect(),
        other => vec![other],
    }
}

/// `INFO <sections>` of every node (one text per node).
pub(super) async fn infos<C: ConnectionLike>(
    conn: &mut C,
    sections: &[&str],
) -> Result<Vec<String>> {
    let reply: Value = redis::cmd("INFO").arg(sections).query_async(conn).await?;
    per_node(reply)
        .into_iter()
        .map(|v| redis::from_redis_value(v).map_err(|e| Error::Redis(redis::RedisError::from(e))))
        .collect()
}

/// `CONFIG GET <name>` of every node that answers; `None` if `CONFIG` is disabled.
pub(super) async fn config_values<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
) -> Option<Vec<String>> {
    let reply: Value = redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await.ok()?;
    let values: Vec<String> = per_node(reply)
        .into_iter()
        .filter_map(|v| {
            let pair: Vec<String> = redis::from_redis_value(v).ok()?;
            pair.into_iter().nth(1)
        })
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Every node's eviction policy: from `INFO memory`, which every node of a cluster answers
/// (a cluster client sends `CONFIG GET` to one node only), else from `CONFIG GET`.
pub(super) async fn node_policies<C: ConnectionLike>(
    conn: &mut C,
    infos: &[String],
) -> Vec<String> {
    let policies: Vec<String> =
        infos.iter().filter_map(|i| info_field(i, "maxmemory_policy")).collect();
    if !policies.is_empty() {
        return policies;
    }
    config_values(conn, "maxmemory-policy").await.unwrap_or_default()
}

/// The oldest version among the nodes' (the one the crate must work with).
pub(super) fn oldest_version(infos: &[String]) -> Option<String> {
    infos
        .iter()
        .filter_map(|i| info_field(i, "redis_version"))
        .min_by_key(|v| parse_version(v).unwrap_or((0, 0)))
}

/// The riskiest eviction policy among the nodes' (an `allkeys-*` one if any node has it).
pub(super) fn riskiest_policy(policies: Vec<String>) -> Option<String> {
    policies
        .iter()
        .find(|p| p.starts_with("allkeys-"))
        .cloned()
        .or_else(|| policies.into_iter().next())
}

pub(super) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim().to_owned())
    })
}

impl RedisNamespace {
    /// Checks the namespace's recorded shard count against `count`, recording it if the
    /// namespace is new (on the home only): [`Error::ShardCount`] or
    /// [`Error::Resharding`] if they differ.
    pub(crate) async fn check_layout(&self, count: usize) -> Result<()> {
        let mut inv = self.invocation(&LAYOUT);
        inv.arg(count);
        let verdict: String = self.run(&inv).await?;
        let namespace = self.keys.tag.clone();
        let number = |word: Option<&str>| word.and_then(|w| w.parse::<usize>().ok());
        let mut words = verdict.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some(""), None, None) => Ok(()),
            (Some("stored"), stored, None) if number(stored).is_some() => Err(Error::ShardCount {
                namespace,
                recorded: number(stored).unwrap_or(1),
                opened: count,
            }),
            (Some("moving"), from, to) if number(from).is_some() && number(to).is_some() => {
                Err(Error::Resharding {
                    namespace,
                    from: number(from).unwrap_or(1),
                    to: number(to).unwrap_or(1),
                })
            }
            // Users in the one-shard layout of versions that did not record a count.
            (Some("unsharded"), None, None) => {
                Err(Error::ShardCount { namespace, recorded: 1, opened: count })
            }
            _ => Err(Error::Corrupt(format!("layout check answered {verdict:?}"))),
        }
    }

    /// Fences this layout: writes into its keys are refused from now on (see `fence.lua`).
    async fn set_moved(&self, to: usize) -> Result<()> {
        redis::cmd("HSET")
            .arg(&self.keys.meta)
            .arg("moved")
            .arg(to)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Lifts the fence of this layout (it is the target of a resharding, or one was given
    /// up).
    async fn clear_moved(&self) -> Result<()> {
        self.drop_meta("moved").await
    }

    /// Writes the marker of a new shard's `seen` (as `marker.lua` does), without the fence:
    /// the target of a resharding is written while the namespace is still fenced.
    async fn write_marker(&self, now: i64) -> Result<()> {
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&self.keys.meta)
            .arg("created")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(&self.keys.seen)
            .arg("NX")
            .arg("+inf")
            .arg("marker")
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The recorded shard count (1 if none: a namespace from before counts were recorded,
    /// or a new one), and the target of an unfinished resharding.
    async fn stored_layout(&self) -> Result<(usize, Option<usize>)> {
        let (stored, moving): (Option<usize>, Option<String>) = redis::cmd("HMGET")
            .arg(&self.keys.meta)
            .arg("shards")
            .arg("resharding")
            .query_async(&mut self.conn.clone())
            .await?;
        match moving {
            None => Ok((stored.unwrap_or(1), None)),
            Some(moving) => {
                let mut parts = moving.split(' ').map(str::parse::<usize>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(from)), Some(Ok(to))) => Ok((from, Some(to))),
                    _ => Err(Error::Corrupt(format!("resharding record {moving:?}"))),
                }
            }
        }
    }

    async fn set_resharding(&self, from: usize, to: usize) -> Result<()> {
        redis::cmd("HSET")
            .arg(&self.keys.meta)
            .arg("resharding")
            .arg(format!("{from} {to}"))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn finish_resharding(&self, count: usize) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&self.keys.meta)
            .arg("shards")
            .arg(count)
            .ignore()
            .cmd("HDEL")
            .arg(&self.keys.meta)
            .arg("resharding")
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Refuses to reshard while a bot may still write to this shard or a batch of it is
    /// being erased.
    async fn check_quiet(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let batches: u64 = redis::cmd("ZCARD").arg(&self.keys.lease).query_async(&mut conn).await?;
        if batches > 0 {
            return Err(Error::Unsafe(format!(
                "{} holds {batches} unfinished prune batches; let a bot with the current shard \
                 count finish them (Retention::prune_once, after the lease) before resharding",
                self.keys.prefix.trim_end_matches(':')
            )));
        }
        let now = self.server_time().await?.unwrap_or_default();
        let writers: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(&self.keys.writers).query_async(&mut conn).await?;
        for (id, beat) in writers {
            let at: i64 = beat.split(',').next().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX);
            if now.saturating_sub(at) < QUIET_MS {
                return Err(Error::Unsafe(format!(
                    "writer {id} sent a heartbeat {} s ago: a bot may still run on this \
                     namespace; stop every bot before resharding (a bot that crashed instead \
                     of shutting down counts as running for an hour after its last heartbeat)",
                    now.saturating_sub(at).max(0) / 1000
                )));
            }
        }
        Ok(())
    }

    /// Copies this shard's users, scheduled erasures and jobs into the shards of `new`
    /// (each to its user's shard), then deletes this shard's keys. Copies are idempotent,
    /// so an interrupted move is finished by running it again. Returns the users and
    /// scheduled erasures moved.
    /// Moves this shard's erasure receipts into `target`'s stream, oldest first. They are
    /// found by a lookup of every shard, so any target will do. An entry keeps its time
    /// unless the target already holds later ones (ids only grow), which only delays its
    /// trimming; each page is deleted here once copied, so a rerun after an interruption
    /// copies at most one page twice.
    async fn move_receipts(&self, target: &RedisNamespace) -> Result<()> {
        let mut conn = self.conn.clone();
        let source_ttl: i64 =
            redis::cmd("PTTL").arg(&self.keys.receipts).query_async(&mut conn).await?;
        let top: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&target.keys.receipts)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let ms_of = |id: &str| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok());
        let mut top_ms = top.ids.first().and_then(|e| ms_of(&e.id)).unwrap_or(0);
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.receipts)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(MOVE_CHUNK)
                .query_async(&mut conn)
                .await?;
            if page.ids.is_empty() {
                break;
            }
            let mut copy = redis::pipe();
            let mut delete = redis::cmd("XDEL");
            delete.arg(&self.keys.receipts);
            for entry in &page.ids {
                top_ms = top_ms.max(ms_of(&entry.id).unwrap_or(0));
                let add = copy.cmd("XADD").arg(&target.keys.receipts).arg(format!("{top_ms}-*"));
                for field in ["h", "r", "t", "e", "a"] {
                    add.arg(field).arg(entry.get::<String>(field).unwrap_or_default());
                }
                copy.ignore();
                // The audit's index follows its receipts.
                if let Some((score, tag)) = erased_entry(entry) {
                    copy.cmd("ZADD").arg(&target.keys.erased).arg("GT").arg(score).arg(tag);
                    copy.ignore();
                }
                delete.arg(&entry.id);
            }
            copy.query_async::<()>(&mut conn).await?;
            delete.query_async::<()>(&mut conn).await?;
        }
        // The receipts (and their index) live at least as long as the moved ones would have.
        for key in [&target.keys.receipts, &target.keys.erased] {
            let target_ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await?;
            if source_ttl > 0 && target_ttl < source_ttl {
                redis::cmd("PEXPIRE").arg(key).arg(source_ttl).query_async::<()>(&mut conn).await?;
            }
        }
        // An emptied stream stays as a key until deleted.
        redis::cmd("DEL")
            .arg(&self.keys.receipts)
            .arg(&self.keys.erased)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn move_users(&self, new: &[RedisNamespace]) -> Result<(u64, u64)> {
        let mut conn = self.conn.clone();
        let count = new.len();
        // A member that is not a user (see `parse_user`) is kept, in the first shard, where
        // claims go on reporting it.
        let to = |member: &str| -> Result<&RedisNamespace> {
            Ok(match crate::humans::parse_user(member) {
                Some(user) => &new[super::sharded::shard_of(user, count)],
                None => &new[0],
            })
        };
        // The notices running here hold users in every target shard too (a union: targets
        // get the notices of every old shard).
        let notices: Option<String> =
            redis::cmd("HGET").arg(&self.keys.meta).arg("notices").query_async(&mut conn).await?;
        let notices = Notice::parse_all(notices.as_deref().unwrap_or_default());
        if !notices.is_empty() {
            for target in new {
                let theirs: Option<String> = redis::cmd("HGET")
                    .arg(&target.keys.meta)
                    .arg("notices")
                    .query_async(&mut conn)
                    .await?;
                let mut all = Notice::parse_all(theirs.as_deref().unwrap_or_default());
                for notice in &notices {
                    if !all.contains(notice) {
                        all.push(*notice);
                    }
                }
                redis::cmd("HSET")
                    .arg(&target.keys.meta)
                    .arg("notices")
                    .arg(Notice::format_all(&all))
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            // Moved, not copied: a later reshard back must not bring notices ended since.
            redis::cmd("HDEL")
                .arg(&self.keys.meta)
                .arg("notices")
                .query_async::<()>(&mut conn)
                .await?;
        }
        let (mut users, mut scheduled) = (0, 0);
        for (key, kind) in [
            (&self.keys.seen, "ZSCAN"),
            (&self.keys.queue, "ZSCAN"),
            (&self.keys.job, "HSCAN"),
            (&self.keys.failing, "HSCAN"),
            (&self.keys.probes, "HSCAN"),
        ] {
            let mut cursor = 0u64;
            loop {
                let (next, flat): (u64, Vec<String>) = redis::cmd(kind)
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(MOVE_CHUNK)
                    .query_async(&mut conn)
                    .await?;
                let mut pipe = redis::pipe();
                let mut writes = 0;
                for pair in flat.chunks_exact(2) {
                    let (member, value) = (&pair[0], &pair[1]);
                    if key == &self.keys.seen && member == "marker" {
                        continue;
                    }
                    let target = to(member)?;
                    writes += 1;
                    if key == &self.keys.seen {
                        users += 1;
                        pipe.cmd("ZADD").arg(&target.keys.seen).arg("GT").arg(value).arg(member);
                    } else if key == &self.keys.queue {
                        scheduled += 1;
                        pipe.cmd("ZADD").arg(&target.keys.queue).arg(value).arg(member);
                    } else if key == &self.keys.job {
                        pipe.cmd("HSET").arg(&target.keys.job).arg(member).arg(value);
                    } else if key == &self.keys.failing {
                        pipe.cmd("HSET").arg(&target.keys.failing).arg(member).arg(value);
                    } else {
                        pipe.cmd("HSET").arg(&target.keys.probes).arg(member).arg(value);
                    }
                    pipe.ignore();
                }
                if writes > 0 {
                    pipe.query_async::<()>(&mut conn).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let k = &self.keys;
        let same: Vec<&str> = new.iter().map(|b| b.keys.tag.as_str()).collect();
        if same.contains(&k.tag.as_str()) {
            // Cannot happen (tags name their count), but never delete a target shard.
            return Err(Error::Corrupt(format!("shard {} is both source and target", k.tag)));
        }
        redis::cmd("DEL")
            .arg(&k.seen)
            .arg(&k.queue)
            .arg(&k.job)
            .arg(&k.lease)
            .arg(&k.batches)
            .arg(&k.feed)
            .arg(&k.writers)
            .arg(&k.failing)
            .arg(&k.probes)
            .arg(&k.census)
            .query_async::<()>(&mut conn)
            .await?;
        // The home keeps its `meta` (the shard count); a shard's goes with it.
        redis::cmd("HDEL").arg(&k.meta).arg("created").query_async::<()>(&mut conn).await?;
        Ok((users, scheduled))
    }
    /// Up to `count` receipts of this shard's stream from `start` (an XRANGE start: an id,
    /// `(id` after it, or a time in ms).
    async fn receipts_from(
        &self,
        conn: &mut Conn,
        start: &str,
        count: usize,
    ) -> Result<redis::streams::StreamRangeReply> {
        Ok(redis::cmd("XRANGE")
            .arg(&self.keys.receipts)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?)
    }

    /// Adds receipts the `erased` index may lack (written before it existed, or by a
    /// process of an older version during a rolling upgrade; finish writes both) to the
    /// index, at most five pages of 1,000 a call, from where the last call stopped (the
    /// stream id kept in `meta`); `true` once it has read to the stream's end. Every audit
    /// reads on from there, so it reads each receipt once. Idempotent (`ZADD GT`).
    pub(super) async fn index_receipts_step(&self, now: i64, keep_ms: i64) -> Result<bool> {
        const PAGE: usize = 1000;
        let mut conn = self.conn.clone();
        let progress: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.meta)
            .arg("erased_index")
            .query_async(&mut conn)
            .await?;
        let oldest = format!("{}", now.saturating_sub(keep_ms).max(0));
        let mut start = match progress.as_deref() {
            Some(id) if id.contains('-') => format!("({id}"),
            _ => oldest,
        };
        for _ in 0..5 {
            let page = self.receipts_from(&mut conn, &start, PAGE).await?;
            let mut add = redis::cmd("ZADD");
            add.arg(&self.keys.erased).arg("GT");
            let mut any = false;
            for (score, tag) in page.ids.iter().filter_map(erased_entry) {
                add.arg(score).arg(tag);
                any = true;
            }
            let mut step = redis::pipe();
            step.atomic();
            if any {
                step.add_command(add).ignore();
                if keep_ms > 0 {
                    step.cmd("PEXPIRE").arg(&self.keys.erased).arg(keep_ms).ignore();
                }
            }
            let finished = page.ids.len() < PAGE;
            if let Some(last) = page.ids.last().map(|e| e.id.clone()) {
                step.cmd("HSET").arg(&self.keys.meta).arg("erased_index").arg(&last).ignore();
                start = format!("({last}");
            }
            step.query_async::<()>(&mut conn).await?;
            if finished {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Calls `f` for each receipt of this shard younger than `keep_ms` at `now`, oldest
    /// first, reading 1,000 at a time.
    pub(super) async fn each_receipt(
        &self,
        now: i64,
        keep_ms: i64,
        mut f: impl FnMut(&redis::streams::StreamId) -> Result<()>,
    ) -> Result<()> {
        const PAGE: usize = 1000;
        let mut conn = self.conn.clone();
        let mut start = format!("{}", now.saturating_sub(keep_ms).max(0));
        loop {
            let page = self.receipts_from(&mut conn, &start, PAGE).await?;
            let Some(last) = page.ids.last() else { return Ok(()) };
            start = format!("({}", last.id);
            for entry in &page.ids {
                f(entry)?;
            }
            if page.ids.len() < PAGE {
                return Ok(());
            }
        }
    }
}
