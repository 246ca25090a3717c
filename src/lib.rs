// The README is the crate's front page. Its code blocks are doc tests of the test crate
// (tests/lib.rs), which has the dependencies they show (the Prometheus exporter); this
// crate's own doc tests are those of its items.
#![cfg_attr(not(doctest), doc = include_str!("../README.md"))]

mod adaptor;
mod adopt;
mod audit;
mod builder;
mod clock;
mod commands;
mod config;
mod conn;
mod engine;
mod erase;
mod error;
mod gone;
mod hooks;
mod humans;
mod layer;
mod parts;
mod probe;
mod pruner;
mod receipts;
mod retention;
mod rights;
mod stats;
mod store;
mod survey;
#[cfg(feature = "testing")]
pub mod testing;
mod tracker;

pub use adaptor::{NoteGone, Retained, RetainedExt, RetainedRequest, RetainedSend};
pub use adopt::{Adopted, Adoption};
pub use audit::{AuditReport, AuditSummary, EraserAudit, UntrackedUsers};
pub use builder::RetentionBuilder;
pub use clock::{Clock, ManualClock, SystemClock};
pub use commands::{Commands, Texts};
pub use config::GonePolicy;
pub use erase::{
    DialogueEraser, Eraser, Erasure, ErasureReason, Export, FnEraser, Listing, RedisKeysEraser,
    erase_fn,
};
pub use error::{BoxError, Error, Result};
pub use gone::{GoneReason, gone_reason};
pub use hooks::{ErasedUser, StuckErasure};
pub use probe::{Census, Probes, Reachability};
pub use pruner::{PassReport, PreviewEntry, PrunePreview, PrunerHandle};
pub use receipts::{Receipt, ReceiptKey};
/// The `redis` crate (1.x) this crate is built on: connections for [`RedisKeysEraser`],
/// [`DialogueEraser::list_redis`] and [`RedisStore::from_manager`](crate::RedisStore::from_manager),
/// whatever `redis` version the bot itself depends on (teloxide's `redis-storage` brings
/// an older one).
pub use redis;
pub use retention::{Retention, RetentionExt};
pub use rights::{OptOutOutcome, PendingErasure, UserStatus};
/// The `sqlx` crate (0.8, the version of teloxide's SQL storages), for the pools that the
/// SQL stores' `from_pool`,
#[cfg_attr(feature = "sqlite", doc = "[`DialogueEraser::list_sqlite`]")]
#[cfg_attr(not(feature = "sqlite"), doc = "`DialogueEraser::list_sqlite` (`sqlite` feature)")]
/// and
#[cfg_attr(feature = "postgres", doc = "[`DialogueEraser::list_postgres`]")]
#[cfg_attr(
    not(feature = "postgres"),
    doc = "`DialogueEraser::list_postgres` (`postgres` feature)"
)]
/// take.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;
pub use stats::Stats;
pub use store::Marked;
#[cfg(feature = "tls")]
pub use store::RedisTls;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::TableVersion;
pub use store::{
    Diagnosis, MemoryStore, NamespaceMeta, RedisSentinel, RedisStore, Resharded, Store,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresDiagnosis, PostgresStore};
#[cfg(feature = "sqlite")]
pub use store::{SqliteDiagnosis, SqliteStore};
pub use survey::{CensusProgress, InactivityBucket, NoticeStatus, Survey, WriterHeartbeat};
pub use tracker::Noted;
