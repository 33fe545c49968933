//! The thin PyO3 binding layer: argument checks, GIL release, error mapping. No algorithm lives here.

use pyo3::prelude::*;

mod errors;
mod frames;
mod lidar;
mod replay;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    lidar::register(m)?;
    frames::register(m)?;
    replay::register(m)?;
    Ok(())
}
