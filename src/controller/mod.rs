//! What every reconciler shares: conditions, events, requeue timing and metrics.

pub mod conditions;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod requeue;
