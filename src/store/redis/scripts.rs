//! The Lua scripts of the Redis store, each with its Redis 7 flags and the shared helpers it
//! needs. Kept apart from the store so that `examples/bench.rs` can name the scripts it
//! finds in Redis' slow log (by their SHA1) without a copy of this list.

use std::sync::LazyLock;

use redis::Script;

/// Loads a script with its Redis 7 flags (`#!lua ...`) and the shared helpers it needs.
///
/// Flags make Redis judge a script before it runs: a write script is refused up front under
/// memory pressure (`maxmemory` with `noeviction` reached) instead of failing halfway, a
/// read-only one (`no-writes`) runs anyway.
macro_rules! script {
    ($flags:literal, $($file:literal),+) => {
        LazyLock::new(|| {
            Script::new(concat!($flags, "\n", $(include_str!($file)),+))
        })
    };
}

pub(crate) static CLAIM: LazyLock<Script> = script!(
    "#!lua",
    "lua/fence.lua",
    "lua/ids.lua",
    "lua/writers.lua",
    "lua/batches.lua",
    "lua/notices.lua",
    "lua/claim.lua"
);
pub(crate) static CLAIM_USER: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/writers.lua", "lua/batches.lua", "lua/claim_user.lua");
pub(crate) static SCHEDULE: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/batches.lua", "lua/schedule.lua");
pub(crate) static STATUS: LazyLock<Script> =
    script!("#!lua flags=no-writes", "lua/batches.lua", "lua/status.lua");
pub(crate) static FINISH: LazyLock<Script> = script!("#!lua", "lua/fence.lua", "lua/finish.lua");
pub(crate) static UNSCHEDULE_GONE: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/unschedule_gone.lua");
pub(crate) static PREVIEW: LazyLock<Script> = script!(
    "#!lua flags=no-writes",
    "lua/ids.lua",
    "lua/writers.lua",
    "lua/notices.lua",
    "lua/preview.lua"
);
pub(crate) static NOTICE: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/writers.lua", "lua/notices.lua", "lua/notice.lua");
pub(crate) static COUNT_USE: LazyLock<Script> = script!("#!lua", "lua/count_use.lua");
pub(crate) static HEARTBEAT: LazyLock<Script> =
    script!("#!lua flags=allow-oom", "lua/writers.lua", "lua/heartbeat.lua");
pub(crate) static MARKER: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/writers.lua", "lua/marker.lua");
pub(crate) static INTERACTIONS: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/interactions.lua");
pub(crate) static ADOPT: LazyLock<Script> = script!("#!lua", "lua/fence.lua", "lua/adopt.lua");
pub(crate) static HOLDING: LazyLock<Script> =
    script!("#!lua flags=no-writes", "lua/writers.lua", "lua/holding.lua");
pub(crate) static LAYOUT: LazyLock<Script> = script!("#!lua flags=allow-oom", "lua/layout.lua");
pub(crate) static CENSUS_WALK: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/ids.lua", "lua/census_walk.lua");
pub(crate) static CENSUS_RECORD: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/census_record.lua");
pub(crate) static CENSUS_LEASE: LazyLock<Script> = script!("#!lua", "lua/census_lease.lua");
pub(crate) static CENSUS_SWEEP: LazyLock<Script> =
    script!("#!lua", "lua/fence.lua", "lua/census_sweep.lua");

/// The source of a script sent with its source (`EVAL`), with its flags and helpers as in
/// `script!`.
macro_rules! source {
    ($flags:literal, $($file:literal),+) => {
        concat!($flags, "\n", $(include_str!($file)),+)
    };
}

/// The guard of a fenced plain write and its undoing (guard.lua), sent with their source:
/// inside a transaction, a script Redis no longer knows (`NOSCRIPT`, after a restart or a
/// failover) would fail alone and let the write through unguarded.
pub(crate) const GUARD: &str =
    source!("#!lua flags=allow-oom", "lua/fence.lua", "lua/aside.lua", "lua/guard.lua");
pub(crate) const UNGUARD: &str =
    source!("#!lua flags=allow-oom", "lua/aside.lua", "lua/unguard.lua");

/// Every script with its name, for tools that report per script.
#[allow(dead_code)] // used by examples/bench.rs, which includes this file
pub(crate) static ALL: [(&str, &LazyLock<Script>); 19] = [
    ("claim", &CLAIM),
    ("claim_user", &CLAIM_USER),
    ("schedule", &SCHEDULE),
    ("status", &STATUS),
    ("finish", &FINISH),
    ("unschedule_gone", &UNSCHEDULE_GONE),
    ("preview", &PREVIEW),
    ("count_use", &COUNT_USE),
    ("heartbeat", &HEARTBEAT),
    ("marker", &MARKER),
    ("holding", &HOLDING),
    ("layout", &LAYOUT),
    ("interactions", &INTERACTIONS),
    ("adopt", &ADOPT),
    ("census_walk", &CENSUS_WALK),
    ("census_record", &CENSUS_RECORD),
    ("census_lease", &CENSUS_LEASE),
    ("census_sweep", &CENSUS_SWEEP),
    ("notice", &NOTICE),
];
