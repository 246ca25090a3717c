use std::future::Future;

use futures_util::future::BoxFuture;

use crate::erase::{Eraser, Erasure, Listing};
use crate::error::BoxError;

/// A listing closure, type-erased (also used by `DialogueEraser::list_with`).
pub(crate) type ListFn =
    Box<dyn Fn(Option<String>) -> BoxFuture<'static, Result<Listing, BoxError>> + Send + Sync>;

/// Erases a listing closure's type.
pub(crate) fn list_fn<L, Fut, E>(list: L) -> ListFn
where
    L: Fn(Option<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Listing, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Box::new(move |cursor| {
        let page = list(cursor);
        Box::pin(async move { page.await.map_err(Into::into) })
    })
}

/// An [`Eraser`] made from a name and an async closure; see [`erase_fn`].
pub struct FnEraser<F> {
    name: String,
    f: F,
    list: Option<ListFn>,
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
    FnEraser { name: name.into(), f, list: None }
}

impl<F> FnEraser<F> {
    /// Gives the eraser a listing for the audit ([`Eraser::list`]): `list(cursor)` returns
    /// the page of users the storage holds starting at `cursor` (`None`: the first).
    ///
    /// ```
    /// use teloxide::types::UserId;
    /// use teloxide_retention::{BoxError, Erasure, Listing, erase_fn};
    ///
    /// let orders = erase_fn("orders", |erasure: Erasure| async move {
    ///     let _ = erasure.user; // DELETE FROM orders WHERE user_id = $1
    ///     Ok::<_, BoxError>(())
    /// })
    /// .list_with(|cursor: Option<String>| async move {
    ///     // SELECT DISTINCT user_id FROM orders WHERE user_id > $1 ORDER BY user_id LIMIT 1000
    ///     let after: u64 = cursor.map_or(Ok(0), |c| c.parse())?;
    ///     let page: Vec<u64> = [7, 42].into_iter().filter(|&u| u > after).collect();
    ///     let next = (!page.is_empty()).then(|| page[page.len() - 1].to_string());
    ///     Ok::<_, BoxError>(Listing::page(page.into_iter().map(UserId), next))
    /// });
    /// # let _ = orders;
    /// ```
    #[must_use]
    pub fn list_with<L, Fut, E>(mut self, list: L) -> Self
    where
        L: Fn(Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Listing, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.list = Some(list_fn(list));
        self
    }
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

    async fn list(&self, cursor: Option<String>) -> Result<Option<Listing>, BoxError> {
        match &self.list {
            Some(list) => list(cursor).await.map(Some),
            None => Ok(None),
        }
    }
}
