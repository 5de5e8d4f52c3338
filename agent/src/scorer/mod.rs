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
