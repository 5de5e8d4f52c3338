//! The lagged k-means scorer of the Netdata notebook (seed `001`).
//!
//! - [`config`]: the scorer's keys of `[detector]`, checked into [`ModelParams`].
//! - [`preprocess`]: per dimension, rolling mean, optional differences, lag window.
//! - [`context`]: context novelty (CAD OSE's idea, bounded), beside the k-means score.
//! - [`kmeans`]: k-means with k-means++ seeding, restarts and Hamerly's bounds.
//! - [`model`]: one model = a set of dimensions, its bounded training ring, its score.
//! - [`fit`]: where a due fit runs (inline, or on the trainer thread).
//! - [`profile`]: what is normal at this time of day (daily seasonality).
//! - [`trainer`]: the thread that fits models off the sampling path.

pub mod config;
pub mod context;
pub mod fit;
pub mod kmeans;
pub mod model;
pub mod preprocess;
pub mod profile;
pub mod trainer;

pub use config::{ContextConfig, ScaleKind, Scaling, ScorerConfig, TrainConfig};
pub use context::ContextParams;
pub use model::{Distance, Model, ModelParams, Scale};

/// Helpers that tests of this crate and of the crates using it share.
#[doc(hidden)]
pub mod testing {
    /// Deterministic noise in [-1, 1]: a hash of the tick and the stream.
    pub fn noise(i: u64, stream: u64) -> f64 {
        let mut x =
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
        (x % 20_001) as f64 / 10_000.0 - 1.0
    }
}
