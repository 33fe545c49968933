//! Python bindings for [`crate::lidar`].

use numpy::ndarray::Array2;
use numpy::{
    dtype, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::errors::to_py;
use crate::frames::ChannelOrder;
use crate::lidar::{default_angles, Border, Lidar, LidarConfig};

/// Check that `obj` is a C-contiguous numpy array of `T` with one of the accepted dimensionalities.
fn checked_array<'a, 'py, T: numpy::Element>(
    obj: &'a Bound<'py, PyAny>,
    name: &str,
    type_name: &str,
    ndims: &[usize],
) -> PyResult<&'a Bound<'py, PyArrayDyn<T>>> {
    let py = obj.py();
    let untyped = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a numpy array of {type_name}, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    if !untyped.dtype().is_equiv_to(&dtype::<T>(py)) {
        return Err(PyTypeError::new_err(format!(
            "{name} must have dtype {type_name}, got {}; convert it with .astype(np.{type_name})",
            untyped.dtype()
        )));
    }
    if !ndims.contains(&untyped.ndim()) {
        return Err(PyValueError::new_err(format!(
            "{name} must have {} dimensions, got shape {:?}",
            ndims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            untyped.shape()
        )));
    }
    if !untyped.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous (shape {:?} is a strided view); pass np.ascontiguousarray({name})",
            untyped.shape()
        )));
    }
    Ok(obj.cast::<PyArrayDyn<T>>().expect("dtype checked above"))
}

/// Borrow `obj` read-only as a C-contiguous uint8 array with one of the accepted dimensionalities.
pub(super) fn readonly_u8<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndims: &[usize],
) -> PyResult<PyReadonlyArrayDyn<'py, u8>> {
    checked_array::<u8>(obj, name, "uint8", ndims)?
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{name} cannot be borrowed: {e}")))
}

/// Borrow `obj` read-write as a C-contiguous float32 array with one of the accepted dimensionalities.
pub(super) fn readwrite_f32<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndims: &[usize],
) -> PyResult<PyReadwriteArrayDyn<'py, f32>> {
    checked_array::<f32>(obj, name, "float32", ndims)?
        .try_readwrite()
        .map_err(|e| PyValueError::new_err(format!("{name} cannot be borrowed for writing: {e}")))
}

/// Raycasting LIDAR over captured frames (see `tmrl/_core.pyi`).
#[pyclass(name = "Lidar", module = "tmrl._core", frozen)]
pub struct PyLidar {
    inner: Lidar,
}

impl PyLidar {
    fn check_frame_shape(&self, shape: &[usize], name: &str) -> PyResult<()> {
        let l = &self.inner;
        let want = [l.height(), l.width(), l.channels()];
        if shape[shape.len() - 3..] != want {
            return Err(PyValueError::new_err(format!(
                "{name} has shape {shape:?}, but this Lidar was built for {}x{}x{} frames (height, width, \
                 channels of its channel_order); build a Lidar for this frame size",
                want[0], want[1], want[2]
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl PyLidar {
    #[new]
    #[pyo3(signature = (
        height, width, *, angles_deg=None, origin=None, start=20, channel_order="bgr", border="dark",
        threshold=55, road_min=90, road_max=120, road_tolerance=12
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        height: usize,
        width: usize,
        angles_deg: Option<Vec<f64>>,
        origin: Option<(i64, i64)>,
        start: usize,
        channel_order: &str,
        border: &str,
        threshold: i64,
        road_min: i64,
        road_max: i64,
        road_tolerance: i64,
    ) -> PyResult<Self> {
        let cfg = LidarConfig {
            height,
            width,
            angles_deg: angles_deg.unwrap_or_else(default_angles),
            origin,
            start,
            channel_order: ChannelOrder::from_name(channel_order).map_err(to_py)?,
            border: Border::from_name(border, threshold, road_min, road_max, road_tolerance)
                .map_err(to_py)?,
        };
        Ok(PyLidar {
            inner: Lidar::new(cfg).map_err(to_py)?,
        })
    }

    #[getter]
    fn n_beams(&self) -> usize {
        self.inner.n_beams()
    }

    #[getter]
    fn height(&self) -> usize {
        self.inner.height()
    }

    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    #[getter]
    fn origin(&self) -> (i64, i64) {
        self.inner.origin()
    }

    #[getter]
    fn angles_deg(&self) -> Vec<f64> {
        self.inner.angles_deg().to_vec()
    }

    fn beam_lengths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let v: Vec<i64> = self
            .inner
            .beam_lengths()
            .into_iter()
            .map(|n| n as i64)
            .collect();
        PyArray1::from_vec(py, v)
    }

    fn beam_paths<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyArray2<i64>>> {
        (0..self.inner.n_beams())
            .map(|b| {
                let p = self.inner.beam_path(b);
                let flat: Vec<i64> = p.iter().flat_map(|&(r, c)| [r, c]).collect();
                let arr = Array2::from_shape_vec((p.len(), 2), flat).expect("n x 2");
                PyArray2::from_owned_array(py, arr)
            })
            .collect()
    }

    #[pyo3(signature = (frame, out=None))]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let frame_ro = readonly_u8(frame, "frame", &[3])?;
        self.check_frame_shape(frame_ro.shape(), "frame")?;
        let src = frame_ro
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let lidar = &self.inner;
        match out {
            Some(out_obj) => {
                let mut rw = readwrite_f32(out_obj, "out", &[1])?;
                let dst = rw
                    .as_slice_mut()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                py.detach(|| lidar.scan_into(src, dst)).map_err(to_py)?;
                Ok(out_obj.clone())
            }
            None => {
                let v = py.detach(|| lidar.scan(src)).map_err(to_py)?;
                Ok(PyArray1::from_vec(py, v).into_any())
            }
        }
    }

    fn scan_batch<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ro = readonly_u8(frames, "frames", &[4])?;
        self.check_frame_shape(ro.shape(), "frames")?;
        let n = ro.shape()[0];
        let src = ro
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let lidar = &self.inner;
        let mut out = vec![0.0f32; n * lidar.n_beams()];
        py.detach(|| lidar.scan_batch_into(src, &mut out))
            .map_err(to_py)?;
        let arr = Array2::from_shape_vec((n, lidar.n_beams()), out).expect("n x beams");
        Ok(PyArray2::from_owned_array(py, arr))
    }

    fn __repr__(&self) -> String {
        let l = &self.inner;
        format!(
            "Lidar(height={}, width={}, n_beams={}, origin={:?}, border={:?})",
            l.height(),
            l.width(),
            l.n_beams(),
            l.origin(),
            l.border()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLidar>()
}
