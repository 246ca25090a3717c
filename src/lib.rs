#![doc = include_str!("../README.md")]

mod adaptor;
mod adopt;
mod audit;
mod builder;
mod clock;
mod commands;
mod config;
mod engine;
mod erase;
mod error;
mod gone;
mod hooks;
mod humans;
mod layer;
mod pruner;
mod receipts;
mod retention;
mod stats;
mod store;
mod survey;
mod tracker;

pub use adaptor::{NoteGone, Retained, RetainedExt, RetainedRequest, RetainedSend};
pub use adopt::{Adopted, Adoption};
pub use audit::{AuditReport, AuditSummary, EraserAudit, UntrackedUsers};
pub use builder::RetentionBuilder;
pub use clock::{Clock, ManualClock, SystemClock};
pub use commands::{Commands, Texts};
pub use config::GonePolicy;
pub use engine::{OptOutOutcome, OptOutScheduled, PendingErasure, UserStatus};
pub use erase::{
    DialogueEraser, Eraser, Erasure, ErasureReason, Export, FnEraser, Listing, RedisKeysEraser,
    erase_fn,
};
pub use error::{BoxError, Error, Result};
pub use gone::{GoneReason, gone_reason};
pub use hooks::{ErasedUser, StuckErasure};
pub use pruner::{PassReport, PreviewEntry, PrunePreview, PrunerHandle};
pub use receipts::{Receipt, ReceiptKey};
pub use retention::{Retention, RetentionExt};
pub use stats::Stats;
#[cfg(feature = "tls")]
pub use store::RedisTls;
pub use store::{
    Diagnosis, MemoryStore, NamespaceMeta, RedisSentinel, RedisStore, Resharded, Store,
};
pub use survey::{InactivityBucket, Survey, WriterHeartbeat};
pub use tracker::Noted;
