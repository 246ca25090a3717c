//! Fields of a namespace's (or shard's) `meta` hash beside the layout: the adoption notices
//! and the count of finished erasures.

use super::scripts::NOTICE;
use super::*;

impl RedisNamespace {
    /// See `Backend::add_notice` (`notice.lua`).
    pub(super) async fn write_notice(&self, notice: Notice, now: Option<i64>) -> Result<()> {
        let mut inv = self.invocation(&NOTICE);
        inv.arg(notice.seen_by).arg(notice.until);
        inv.arg(now.map_or(String::new(), |ms| ms.to_string())).arg(MAX_NOTICES);
        let added: i64 = self.run(&inv).await?;
        if added == 1 { Ok(()) } else { Err(too_many_notices()) }
    }

    /// See `Backend::notices`.
    pub(super) async fn read_notices(&self) -> Result<Vec<Notice>> {
        let text: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.meta)
            .arg("notices")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(Notice::parse_all(text.as_deref().unwrap_or_default()))
    }

    /// See `Backend::end_notices`.
    pub(super) async fn drop_notices(&self) -> Result<()> {
        self.drop_meta("notices").await
    }

    /// Removes one field of `meta`.
    pub(super) async fn drop_meta(&self, field: &str) -> Result<()> {
        redis::cmd("HDEL")
            .arg(&self.keys.meta)
            .arg(field)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Whether the layout fence refuses writes here now (as `fence.lua` decides; `home`: the
    /// namespace's own tag, one shard).
    pub(super) async fn layout_fenced(&self, home: bool) -> Result<bool> {
        let (moved, resharding, shards): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&self.keys.meta)
                .arg("moved")
                .arg("resharding")
                .arg("shards")
                .query_async(&mut self.conn.clone())
                .await?;
        Ok(moved.is_some() || (home && (resharding.is_some() || shards.is_some_and(|s| s != "1"))))
    }

    /// See `Backend::erasures_finished` (`finish.lua` counts).
    pub(super) async fn finished_count(&self) -> Result<u64> {
        let finished: Option<u64> = redis::cmd("HGET")
            .arg(&self.keys.meta)
            .arg("erasures_finished")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(finished.unwrap_or(0))
    }
}
