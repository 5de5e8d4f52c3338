//! Where a model's due fit runs. The decision path asks a [`Fitter`] and does not care
//! which: the agent fits on the trainer thread so that a slow fit never delays a tick;
//! `replay` and the tests fit inline, so that a run gives the same result on every
//! machine.

use super::model::{FitWorkspace, Model};
use super::trainer::{ModelKey, Trainer};

pub trait Fitter {
    /// `model.ingest` said a fit is due: start it now, or leave it pending for the next
    /// tick. Returns whether the fit finished now (its centres already score this tick).
    fn fit(&mut self, key: ModelKey, model: &mut Model) -> bool;
}

/// Fits at once on the caller's thread, in one workspace reused for every model.
#[derive(Debug)]
pub struct Inline {
    ws: FitWorkspace,
}

impl Inline {
    /// A workspace for models up to `max_rows` training vectors of `max_width` values and
    /// `max_k` centres (it grows if a larger model comes).
    pub fn new(max_rows: usize, max_width: usize, max_k: usize) -> Self {
        Self {
            ws: FitWorkspace::new(max_rows, max_width, max_k),
        }
    }

    /// A workspace sized for `model`.
    pub fn for_model(model: &Model) -> Self {
        Self {
            ws: model.workspace(),
        }
    }
}

impl Fitter for Inline {
    fn fit(&mut self, _key: ModelKey, model: &mut Model) -> bool {
        model.fit_now(&mut self.ws);
        true
    }
}

impl Fitter for Trainer {
    fn fit(&mut self, key: ModelKey, model: &mut Model) -> bool {
        // No staging buffer free (every one is queued or fitting), or other models wait
        // before this one. The model stays pending and asks again at its next tick.
        let Some(buffer) = self.staging_for(key, !model.is_trained()) else {
            return false;
        };
        let back = match model.take_training_set(buffer) {
            // The queue has a slot per staging buffer, so only a stopped trainer hands
            // the job back: keep the old centres.
            Ok(job) => self.submit(key, job).err().map(|job| model.install(job)),
            Err(buffer) => Some(buffer),
        };
        if let Some(buffer) = back {
            self.recycle(buffer);
        }
        false
    }
}
