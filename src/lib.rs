#![doc = include_str!("../README.md")]

mod adaptor;
pub mod clock;
pub mod commands;
pub mod config;
pub mod erase;
pub mod error;
pub mod gone;
mod hooks;
pub mod layer;
pub mod pruner;
mod retention;
mod stats;
pub mod store;
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
