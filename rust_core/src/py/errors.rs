//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::PyErr;

use crate::error::CoreError;

#[allow(dead_code)] // used by every binding module once they land
pub fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::Dtype(m) => PyTypeError::new_err(m),
        CoreError::Shape(m) | CoreError::Value(m) | CoreError::Io(m) => PyValueError::new_err(m),
    }
}
