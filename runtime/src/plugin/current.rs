//! The plugin in use: the pool new batches are handed to, which a hot reload swaps while the
//! batches in flight finish on the one they took.

use std::sync::{Arc, PoisonError, RwLock};

use super::PluginPool;

/// Holds the pool in use; readers take an `Arc` of it, so a swap never waits for a batch.
#[derive(Debug)]
pub(crate) struct Current(RwLock<Arc<PluginPool>>);

impl Current {
    pub(crate) fn new(pool: PluginPool) -> Self {
        Self(RwLock::new(Arc::new(pool)))
    }

    /// The pool new batches use.
    pub(crate) fn get(&self) -> Arc<PluginPool> {
        // A poisoned lock still holds a valid Arc: the swap cannot panic half-way.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `pool` the one new batches use; returns the one it replaces.
    pub(crate) fn swap(&self, pool: PluginPool) -> Arc<PluginPool> {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(pool))
    }

    /// The pool in use, once nothing else holds the slot (at shutdown).
    pub(crate) fn into_inner(self) -> Arc<PluginPool> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}
