//! Artifacts: deterministic archives, safe extraction, ignore rules, storage and the HTTP server.
