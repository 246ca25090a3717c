use std::future::Future;

use crate::erase::{Eraser, Erasure};
use crate::error::BoxError;

/// An [`Eraser`] made from a name and an async closure; see [`erase_fn`].
pub struct FnEraser<F> {
    name: String,
    f: F,
}

impl<F> std::fmt::Debug for FnEraser<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnEraser").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Builds an [`Eraser`] from an async closure, for data that needs no export.
///
/// The closure must be idempotent, like every eraser. It has no export, so `/mydata` lists
/// it as "held, no export"; implement [`Eraser`] directly to export.
/// See [`Eraser`](crate::Eraser) for an example.
pub fn erase_fn<F, Fut, E>(name: impl Into<String>, f: F) -> FnEraser<F>
where
    F: Fn(Erasure) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnEraser { name: name.into(), f }
}

impl<F, Fut, E> Eraser for FnEraser<F>
where
    F: Fn(Erasure) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        (self.f)(erasure).await.map_err(Into::into)
    }
}
