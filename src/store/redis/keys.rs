//! The keys of one namespace (or shard) of a Redis store: built here and nowhere else.

use crate::store::Hashed;

/// Every key of one shard of a namespace (of the namespace itself when it has one shard).
/// Keys are built here and nowhere else.
pub(super) struct Keys {
    /// The hash tag: the namespace, or a shard's tag.
    pub(super) tag: String,
    pub(super) prefix: String,
    pub(super) seen: String,
    pub(super) lease: String,
    pub(super) queue: String,
    pub(super) job: String,
    pub(super) feed: String,
    pub(super) batches: String,
    pub(super) writers: String,
    pub(super) meta: String,
    /// Where a write refused by the layout fence sets `seen` aside for a moment, inside its
    /// transaction (see `lua/guard.lua`): never seen outside it.
    pub(super) aside: String,
    /// The stand-ins for `seen`, `meta` and `aside` of the probe that checks, once per
    /// process, that the guard holds on this server (see `guarded.rs`): they live only
    /// inside the probe's transaction.
    pub(super) probe: [String; 3],
    pub(super) failing: String,
    pub(super) receipts: String,
    /// The latest erasure each receipt tag records (a sorted set scored by
    /// [`erased_score`]): the audit's lookup by tag, which the stream cannot answer
    /// without reading every receipt.
    pub(super) erased: String,
    pub(super) audit: String,
    /// The census's state per user: user -> "<last probed>,<last reachable>" (ms).
    pub(super) probes: String,
    /// The census's lease.
    pub(super) census: String,
}

impl Keys {
    pub(super) fn new(tag: &str) -> Self {
        // The braces make `tag` the Redis Cluster hash tag of every key.
        let prefix = format!("{{{tag}}}:");
        Self {
            seen: format!("{prefix}seen"),
            lease: format!("{prefix}lease"),
            queue: format!("{prefix}queue"),
            job: format!("{prefix}job"),
            feed: format!("{prefix}feed"),
            batches: format!("{prefix}batches"),
            writers: format!("{prefix}writers"),
            meta: format!("{prefix}meta"),
            aside: format!("{prefix}seen:aside"),
            probe: ["seen", "meta", "seen:aside"].map(|key| format!("{prefix}probe:{key}")),
            failing: format!("{prefix}failing"),
            receipts: format!("{prefix}receipts"),
            erased: format!("{prefix}erased"),
            audit: format!("{prefix}audit"),
            probes: format!("{prefix}probes"),
            census: format!("{prefix}census"),
            tag: tag.to_owned(),
            prefix,
        }
    }

    /// The keys every script is given, in the order the scripts' headers name them
    /// (KEYS[1] to KEYS[13]).
    pub(super) fn scripts(&self) -> [&String; 13] {
        [
            &self.seen,
            &self.lease,
            &self.queue,
            &self.job,
            &self.feed,
            &self.batches,
            &self.writers,
            &self.meta,
            &self.failing,
            &self.receipts,
            &self.erased,
            &self.probes,
            &self.census,
        ]
    }

    pub(super) fn nonce(&self, who: &Hashed) -> String {
        format!("{}confirm:{}", self.prefix, who.tag)
    }

    pub(super) fn counter(&self, action: &str, who: &Hashed, window: i64) -> String {
        format!("{}{}", self.prefix, crate::store::rate_key(action, &who.tag, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_namespace_hash_tag() {
        let keys = Keys::new("mybot");
        for key in keys.scripts().into_iter().chain([&keys.aside, &keys.audit]).chain(&keys.probe) {
            assert!(key.starts_with("{mybot}:"), "{key}");
        }
        let who = Hashed { user: 42, tag: "ab12".to_owned() };
        assert_eq!(keys.nonce(&who), "{mybot}:confirm:ab12");
        assert_eq!(keys.counter("export", &who, 7), "{mybot}:rate:export:ab12:7");
    }
}
