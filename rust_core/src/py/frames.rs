//! Python bindings for [`crate::frames`].

use numpy::ndarray::{ArrayView, IxDyn};
use numpy::npyffi::{_PyArray_GET_ITEM_DATA, flags::NPY_ARRAY_WRITEABLE};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::errors::to_py;
use super::lidar::readonly_u8;
use crate::frames::{ChannelOrder, FrameHistory, FrameSpec, Interpolation, Resizer};

fn frame_spec(
    height: usize,
    width: usize,
    channel_order: &str,
    grayscale: bool,
    interpolation: &str,
) -> PyResult<FrameSpec> {
    let spec = FrameSpec {
        height,
        width,
        channel_order: ChannelOrder::from_name(channel_order).map_err(to_py)?,
        grayscale,
        interpolation: Interpolation::from_name(interpolation).map_err(to_py)?,
    };
    if height == 0 || width == 0 {
        return Err(PyValueError::new_err(format!(
            "target size must be positive, got {height}x{width}"
        )));
    }
    Ok(spec)
}

/// (height, width) of a captured frame after checking its channel count against the order.
fn frame_size(shape: &[usize], order: ChannelOrder, name: &str) -> PyResult<(usize, usize)> {
    if shape[2] != order.channels() {
        return Err(PyValueError::new_err(format!(
            "{name} has shape {shape:?}: channel_order '{}' needs {} channels in the last axis",
            order.name(),
            order.channels()
        )));
    }
    Ok((shape[0], shape[1]))
}

/// Shape of one processed frame.
fn out_shape(spec: &FrameSpec) -> Vec<usize> {
    if spec.grayscale {
        vec![spec.height, spec.width]
    } else {
        vec![spec.height, spec.width, 3]
    }
}

#[pyfunction]
#[pyo3(signature = (frame, height, width, *, channel_order="bgra", grayscale=true, interpolation="area"))]
fn resize_frame<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
    height: usize,
    width: usize,
    channel_order: &str,
    grayscale: bool,
    interpolation: &str,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let spec = frame_spec(height, width, channel_order, grayscale, interpolation)?;
    let ro = readonly_u8(frame, "frame", &[3])?;
    let (h, w) = frame_size(ro.shape(), spec.channel_order, "frame")?;
    let src = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let out = PyArrayDyn::<u8>::zeros(py, IxDyn(&out_shape(&spec)), false);
    {
        let mut rw = out.readwrite();
        let dst = rw.as_slice_mut().expect("fresh C-contiguous array");
        py.detach(|| Resizer::new(spec, h, w).and_then(|mut r| r.resize_into(src, dst)))
            .map_err(to_py)?;
    }
    Ok(out)
}

fn in_use() -> PyErr {
    PyValueError::new_err("this FrameHistory is in use by another thread; give each thread its own")
}

/// The last K post-processed frames (see `tmrl/_core.pyi`).
#[pyclass(name = "FrameHistory", module = "tmrl._core")]
pub struct PyFrameHistory {
    inner: FrameHistory,
}

impl PyFrameHistory {
    /// A read-only numpy view of the history whose base object is this `FrameHistory`.
    fn view_of<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let this = slf.try_borrow().map_err(|_| in_use())?;
        let spec = *this.inner.spec();
        let mut shape = vec![this.inner.history()];
        shape.extend(out_shape(&spec));
        let view =
            ArrayView::from_shape(IxDyn(&shape), this.inner.view()).expect("history view shape");
        // SAFETY: the view borrows `inner.buf`, allocated once in `FrameHistory::new` and never reallocated; the
        // numpy array's base is this object, which therefore outlives the array.
        let arr = unsafe { PyArrayDyn::borrow_from_array(&view, slf.clone().into_any()) };
        drop(this);
        // Read-only: the memory belongs to the ring. SAFETY: `arr` is a live ndarray and we hold the GIL.
        unsafe {
            (*_PyArray_GET_ITEM_DATA(arr.as_array_ptr())).flags &= !NPY_ARRAY_WRITEABLE;
        }
        Ok(arr)
    }

    fn process(slf: &Bound<'_, Self>, frame: &Bound<'_, PyAny>, reset: bool) -> PyResult<()> {
        let py = slf.py();
        let ro = readonly_u8(frame, "frame", &[3])?;
        let mut this = slf.try_borrow_mut().map_err(|_| in_use())?;
        let (h, w) = frame_size(ro.shape(), this.inner.spec().channel_order, "frame")?;
        let src = ro
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let inner = &mut this.inner;
        py.detach(|| {
            if reset {
                inner.reset(src, h, w)
            } else {
                inner.push(src, h, w)
            }
        })
        .map_err(to_py)
    }
}

#[pymethods]
impl PyFrameHistory {
    #[new]
    #[pyo3(signature = (
        height=64, width=64, *, history=4, channel_order="bgra", grayscale=true, interpolation="area"
    ))]
    fn new(
        height: usize,
        width: usize,
        history: usize,
        channel_order: &str,
        grayscale: bool,
        interpolation: &str,
    ) -> PyResult<Self> {
        let spec = frame_spec(height, width, channel_order, grayscale, interpolation)?;
        Ok(PyFrameHistory {
            inner: FrameHistory::new(spec, history).map_err(to_py)?,
        })
    }

    #[getter]
    fn history(&self) -> usize {
        self.inner.history()
    }

    fn push<'py>(
        slf: &Bound<'py, Self>,
        frame: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        Self::process(slf, frame, false)?;
        Self::view_of(slf)
    }

    fn reset<'py>(
        slf: &Bound<'py, Self>,
        frame: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        Self::process(slf, frame, true)?;
        Self::view_of(slf)
    }

    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        Self::view_of(slf)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.spec();
        format!(
            "FrameHistory(height={}, width={}, history={}, channel_order='{}', grayscale={}, interpolation={:?})",
            s.height,
            s.width,
            self.inner.history(),
            s.channel_order.name(),
            s.grayscale,
            s.interpolation
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resize_frame, m)?)?;
    m.add_class::<PyFrameHistory>()
}
