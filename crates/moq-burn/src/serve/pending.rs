//! The hand-over from the loader to the weights: packed weights waiting, on this thread, for the
//! [`super::MoqWeight`] whose float parameter has their id.
//!
//! [`super::load_codes`] fills it while it maps the model and empties it when the map is done
//! (also on a panic), so nothing outlives one load and other threads never see it.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;

use burn::module::ParamId;
use burn::tensor::backend::Backend;

use crate::backend::{Matmul, PackedWeight};

thread_local! {
    static PENDING: RefCell<HashMap<ParamId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// A packed weight and the matmul it multiplies with.
type Packed<B> = (PackedWeight<B>, Matmul<B>);

/// Leaves `weight` for the [`super::MoqWeight`] of parameter `id`.
pub(super) fn put<B: Backend>(id: ParamId, weight: PackedWeight<B>, matmul: Matmul<B>) {
    let packed: Packed<B> = (weight, matmul);
    PENDING.with(|p| p.borrow_mut().insert(id, Box::new(packed)));
}

/// The packed weight left for parameter `id`, if any (of backend `B`).
pub(super) fn take<B: Backend>(id: ParamId) -> Option<Packed<B>> {
    PENDING.with(|p| {
        let mut pending = p.borrow_mut();
        if pending.is_empty() {
            return None;
        }
        let layer = pending.remove(&id)?;
        layer.downcast::<Packed<B>>().ok().map(|b| *b)
    })
}

/// Empties the hand-over when dropped and tells which ids nobody took.
pub(super) struct Scope;

impl Scope {
    /// The ids still waiting: their weights are not `MoqWeight`s.
    pub(super) fn left(&self) -> Vec<ParamId> {
        PENDING.with(|p| p.borrow().keys().copied().collect())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().clear());
    }
}
