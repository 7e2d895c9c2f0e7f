//! Image input (in progress).
