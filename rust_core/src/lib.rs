//! tmrl's hot path in plain Rust: LIDAR raycasting, frame post-processing and the replay ring.
//!
//! The modules below know nothing of Python. The PyO3 binding layer lives in [`py`] and is compiled only with
//! the `python` feature (maturin turns it on), so `cargo test` and benches link the pure core.

pub mod error;
pub mod frames;
pub mod lidar;
pub mod replay;

#[cfg(feature = "python")]
mod py;
