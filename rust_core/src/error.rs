//! The core's error type. Plain Rust; the binding layer maps each variant to a Python exception in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// An array has the wrong element type (Python: `TypeError`).
    Dtype(String),
    /// An array has the wrong shape or layout (Python: `ValueError`).
    Shape(String),
    /// An argument is out of range or inconsistent (Python: `ValueError`).
    Value(String),
    /// A file could not be read or written, or is corrupt (Python: `ValueError` naming the path).
    Io(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Dtype(m) | CoreError::Shape(m) | CoreError::Value(m) | CoreError::Io(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for CoreError {}

pub type CoreResult<T> = Result<T, CoreError>;
