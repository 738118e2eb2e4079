//! What every reconciler shares: conditions, events, requeue and metrics.
