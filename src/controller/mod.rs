//! What every reconciler shares: the reconcile frame, conditions, events, requeue timing and metrics.

pub mod apiserver;
pub mod args;
pub mod conditions;
pub mod events;
pub mod flags;
pub mod frame;
pub mod gates;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod outcome;
pub mod panics;
pub mod pass;
pub mod patch;
pub mod probes;
pub mod queue;
pub mod requeue;
pub mod spiffe;
pub mod tmp;
pub mod watch;
