//! Video output (in progress).
