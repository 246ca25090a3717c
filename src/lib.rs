#![doc = include_str!("../README.md")]

mod adaptor;
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
mod retention;
mod stats;
mod store;
mod tracker;

pub use adaptor::{Retained, RetainedExt, RetainedRequest, RetainedSend};
pub use clock::{Clock, ManualClock, SystemClock};
pub use commands::{Commands, Texts};
pub use config::{GonePolicy, RetentionBuilder};
pub use erase::{
    DialogueEraser, Eraser, Erasure, ErasureReason, Export, FnEraser, RedisKeysEraser, erase_fn,
};
pub use error::{BoxError, Error, Result};
pub use gone::{GoneReason, NoteGone, gone_reason};
pub use hooks::ErasedUser;
pub use layer::RetentionExt;
pub use pruner::{PassReport, PreviewEntry, PrunePreview, PrunerHandle};
pub use retention::{OptOutOutcome, PendingErasure, Retention, UserStatus};
pub use stats::Stats;
pub use store::{MemoryStore, RedisStore, Store};
pub use tracker::Noted;
