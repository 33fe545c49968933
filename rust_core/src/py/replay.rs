//! Python bindings for [`crate::replay`]: `tmrl._core.ReplayRing`.
//!
//! Thin: check and borrow the numpy arrays (wrong dtype -> TypeError, wrong shape / non-contiguous -> ValueError),
//! hand plain slices to the core with the GIL released, map core errors through `errors::to_py`.

use std::path::PathBuf;

use numpy::prelude::*;
use numpy::{Element, PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::errors::to_py;
use crate::replay::{
    BatchIn, ColumnIn, ColumnOut, ComponentSpec, Dtype, ReplayRing, RingSpec, SampleOut,
};

/// Python-side names of the sampled arrays, interned once per ring.
struct Keys {
    obs: Vec<Py<PyString>>,
    next_obs: Vec<Py<PyString>>,
    names: Vec<Py<PyString>>,
    action: Py<PyString>,
    reward: Py<PyString>,
    terminated: Py<PyString>,
    truncated: Py<PyString>,
}

impl Keys {
    fn new(py: Python<'_>, spec: &RingSpec) -> Self {
        let s = |t: &str| PyString::new(py, t).unbind();
        Self {
            obs: spec
                .components
                .iter()
                .map(|c| s(&format!("obs.{}", c.name)))
                .collect(),
            next_obs: spec
                .components
                .iter()
                .map(|c| s(&format!("next_obs.{}", c.name)))
                .collect(),
            names: spec.components.iter().map(|c| s(&c.name)).collect(),
            action: s("action"),
            reward: s("reward"),
            terminated: s("terminated"),
            truncated: s("truncated"),
        }
    }
}

/// Fixed-capacity columnar replay memory (see `tmrl/_core.pyi`).
#[pyclass(name = "ReplayRing", module = "tmrl._core", frozen)]
pub struct PyReplayRing {
    ring: ReplayRing,
    keys: Keys,
}

fn value_err(m: String) -> PyErr {
    PyValueError::new_err(m)
}

fn to_usize(what: &str, v: i64, min: i64) -> PyResult<usize> {
    if v < min {
        return Err(value_err(format!(
            "ReplayRing: {what} must be >= {min}, not {v}"
        )));
    }
    usize::try_from(v).map_err(|_| value_err(format!("ReplayRing: {what} is too large: {v}")))
}

/// `obj` as a numpy array of element `T`, C-contiguous, of shape `lead + tail` (`lead` = None accepts any first
/// dimension). Returns the array and its first dimension.
fn typed<'py, T: Element>(
    what: &str,
    obj: &Bound<'py, PyAny>,
    dtype: &str,
    lead: Option<usize>,
    tail: &[usize],
) -> PyResult<(Bound<'py, PyArrayDyn<T>>, usize)> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        let ty = obj
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(PyTypeError::new_err(format!(
            "{what} must be a numpy array of {dtype}, not {ty}"
        )));
    };
    let Ok(arr) = untyped.cast::<PyArrayDyn<T>>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must have dtype {dtype}, not {}",
            untyped.dtype()
        )));
    };
    let shape = untyped.shape();
    let ok =
        shape.len() == tail.len() + 1 && shape[1..] == *tail && lead.is_none_or(|n| shape[0] == n);
    if !ok {
        let lead_s = lead.map_or_else(|| "n".to_owned(), |n| n.to_string());
        let want: Vec<String> = std::iter::once(lead_s)
            .chain(tail.iter().map(|d| d.to_string()))
            .collect();
        let got: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        return Err(value_err(format!(
            "{what} must have shape {}, not {}",
            py_shape(&want),
            py_shape(&got)
        )));
    }
    if !untyped.is_c_contiguous() {
        return Err(value_err(format!(
            "{what} is not C-contiguous (pass np.ascontiguousarray(...))"
        )));
    }
    let n = shape[0];
    Ok((arr.clone(), n))
}

/// A shape written the way Python prints tuples: (3,) or (2, 3).
fn py_shape(dims: &[String]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    }
}

fn ro<'py, T: Element>(
    what: &str,
    arr: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    arr.try_readonly()
        .map_err(|e| value_err(format!("{what} cannot be read: {e}")))
}

fn rw<'py, T: Element>(
    what: &str,
    arr: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    arr.try_readwrite().map_err(|e| {
        value_err(format!("out[{what:?}] cannot be written ({e}): pass each array once, and not to two samples at once"))
    })
}

fn slice<'a, T: Element>(what: &str, a: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|e| value_err(format!("{what}: {e}")))
}

fn slice_mut<'a, T: Element>(
    what: &str,
    a: &'a mut PyReadwriteArrayDyn<'_, T>,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|e| value_err(format!("out[{what:?}]: {e}")))
}

/// A borrowed input column of either dtype.
enum RoCol<'py> {
    U8(PyReadonlyArrayDyn<'py, u8>),
    F32(PyReadonlyArrayDyn<'py, f32>),
}

/// A borrowed output column of either dtype.
enum RwCol<'py> {
    U8(PyReadwriteArrayDyn<'py, u8>),
    F32(PyReadwriteArrayDyn<'py, f32>),
}

fn out_slices<'a>(cols: &'a mut [RwCol<'_>]) -> PyResult<Vec<ColumnOut<'a>>> {
    cols.iter_mut()
        .map(|col| {
            Ok(match col {
                RwCol::U8(a) => ColumnOut::U8(slice_mut("obs", a)?),
                RwCol::F32(a) => ColumnOut::F32(slice_mut("obs", a)?),
            })
        })
        .collect()
}

fn get_key<'py>(
    map: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
    what: &str,
) -> PyResult<Bound<'py, PyAny>> {
    match map.cast::<PyDict>() {
        Ok(d) => d
            .get_item(key)?
            .ok_or_else(|| value_err(format!("{what} has no key {key:?}"))),
        Err(_) => map
            .get_item(key)
            .map_err(|_| value_err(format!("{what} has no key {key:?}"))),
    }
}

impl PyReplayRing {
    fn wrap(py: Python<'_>, ring: ReplayRing) -> Self {
        let keys = Keys::new(py, ring.spec());
        Self { ring, keys }
    }

    fn out_col<'py>(
        &self,
        out: &Bound<'py, PyAny>,
        key: &Py<PyString>,
        c: &ComponentSpec,
        batch: usize,
    ) -> PyResult<RwCol<'py>> {
        let py = out.py();
        let key = key.bind(py);
        let what = key.to_string();
        let item = get_key(out, key, "out")?;
        let mut tail = c.sample_shape(batch);
        tail.remove(0);
        Ok(match c.dtype {
            Dtype::U8 => RwCol::U8(rw(
                &what,
                &typed::<u8>(
                    &format!("out[{what:?}]"),
                    &item,
                    "uint8",
                    Some(batch),
                    &tail,
                )?
                .0,
            )?),
            Dtype::F32 => RwCol::F32(rw(
                &what,
                &typed::<f32>(
                    &format!("out[{what:?}]"),
                    &item,
                    "float32",
                    Some(batch),
                    &tail,
                )?
                .0,
            )?),
        })
    }
}

#[pymethods]
impl PyReplayRing {
    #[new]
    #[pyo3(signature = (capacity, components, action_dim, *, seed = None))]
    fn new(
        py: Python<'_>,
        capacity: i64,
        components: Vec<(String, Vec<i64>, String, i64)>,
        action_dim: i64,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let comps = components
            .iter()
            .map(|(name, shape, dtype, history)| {
                let shape = shape
                    .iter()
                    .map(|&d| to_usize(&format!("component {name:?} shape dimension"), d, 1))
                    .collect::<PyResult<Vec<_>>>()?;
                let dtype = Dtype::parse(dtype)
                    .map_err(|e| value_err(format!("component {name:?}: {e}")))?;
                Ok(ComponentSpec::new(
                    name,
                    &shape,
                    dtype,
                    to_usize(&format!("component {name:?} history"), *history, 1)?,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let spec = RingSpec::new(
            to_usize("capacity", capacity, 1)?,
            comps,
            to_usize("action_dim", action_dim, 1)?,
        )
        .map_err(to_py)?;
        let ring = py.detach(move || ReplayRing::new(spec, seed));
        Ok(Self::wrap(py, ring))
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    #[getter]
    fn action_dim(&self) -> usize {
        self.ring.spec().action_dim
    }

    fn __len__(&self) -> usize {
        self.ring.len()
    }

    #[getter]
    fn total_appended(&self) -> u64 {
        self.ring.total_appended()
    }

    fn num_transitions(&self) -> u64 {
        self.ring.num_transitions()
    }

    #[allow(clippy::too_many_arguments)]
    fn append_batch(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyAny>,
        obs: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        reward: &Bound<'_, PyAny>,
        terminated: &Bound<'_, PyAny>,
        truncated: &Bound<'_, PyAny>,
        first: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let stream: u64 = stream.extract().map_err(|_| {
            value_err(format!(
                "append_batch: stream must be an integer in [0, 2**64), not {stream}"
            ))
        })?;
        let spec = self.ring.spec();
        let (reward, n) = typed::<f32>("reward", reward, "float32", None, &[])?;
        let (action, _) = typed::<f32>("action", action, "float32", Some(n), &[spec.action_dim])?;
        let (terminated, _) = typed::<bool>("terminated", terminated, "bool", Some(n), &[])?;
        let (truncated, _) = typed::<bool>("truncated", truncated, "bool", Some(n), &[])?;
        let (first, _) = typed::<bool>("first", first, "bool", Some(n), &[])?;
        let n_obs = obs.len().map_err(|_| {
            PyTypeError::new_err("append_batch: obs must be a mapping name -> array")
        })?;
        if n_obs != spec.components.len() {
            let names: Vec<&str> = spec.components.iter().map(|c| c.name.as_str()).collect();
            return Err(value_err(format!(
                "append_batch: obs has {n_obs} keys, the ring's components are {names:?}"
            )));
        }
        let mut cols = Vec::with_capacity(spec.components.len());
        for (c, key) in spec.components.iter().zip(&self.keys.names) {
            let item = get_key(obs, key.bind(py), "obs")?;
            let what = format!("obs[{:?}]", c.name);
            cols.push(match c.dtype {
                Dtype::U8 => RoCol::U8(ro(
                    &what,
                    &typed::<u8>(&what, &item, "uint8", Some(n), &c.shape)?.0,
                )?),
                Dtype::F32 => RoCol::F32(ro(
                    &what,
                    &typed::<f32>(&what, &item, "float32", Some(n), &c.shape)?.0,
                )?),
            });
        }
        let (reward, action) = (ro("reward", &reward)?, ro("action", &action)?);
        let (terminated, truncated, first) = (
            ro("terminated", &terminated)?,
            ro("truncated", &truncated)?,
            ro("first", &first)?,
        );
        let obs_in = cols
            .iter()
            .map(|col| {
                Ok(match col {
                    RoCol::U8(a) => ColumnIn::U8(slice("obs", a)?),
                    RoCol::F32(a) => ColumnIn::F32(slice("obs", a)?),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let batch = BatchIn {
            obs: obs_in,
            action: slice("action", &action)?,
            reward: slice("reward", &reward)?,
            terminated: slice("terminated", &terminated)?,
            truncated: slice("truncated", &truncated)?,
            first: slice("first", &first)?,
        };
        py.detach(|| self.ring.append_batch(stream, &batch))
            .map_err(to_py)
    }

    #[pyo3(signature = (batch_size, out = None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        batch_size: i64,
        out: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = to_usize("batch_size", batch_size, 0)?;
        let out = match out {
            Some(o) => o,
            None => self.alloc_batch(py, batch_size)?.into_any(),
        };
        let spec = self.ring.spec();
        let mut obs = Vec::with_capacity(spec.components.len());
        let mut next_obs = Vec::with_capacity(spec.components.len());
        for (i, c) in spec.components.iter().enumerate() {
            obs.push(self.out_col(&out, &self.keys.obs[i], c, b)?);
            next_obs.push(self.out_col(&out, &self.keys.next_obs[i], c, b)?);
        }
        let get = |k: &Py<PyString>| get_key(&out, k.bind(py), "out");
        let k = &self.keys;
        let mut action = rw(
            "action",
            &typed::<f32>(
                "out[\"action\"]",
                &get(&k.action)?,
                "float32",
                Some(b),
                &[spec.action_dim],
            )?
            .0,
        )?;
        let mut reward = rw(
            "reward",
            &typed::<f32>("out[\"reward\"]", &get(&k.reward)?, "float32", Some(b), &[])?.0,
        )?;
        let mut terminated = rw(
            "terminated",
            &typed::<bool>(
                "out[\"terminated\"]",
                &get(&k.terminated)?,
                "bool",
                Some(b),
                &[],
            )?
            .0,
        )?;
        let mut truncated = rw(
            "truncated",
            &typed::<bool>(
                "out[\"truncated\"]",
                &get(&k.truncated)?,
                "bool",
                Some(b),
                &[],
            )?
            .0,
        )?;
        let mut dst = SampleOut {
            obs: out_slices(&mut obs)?,
            next_obs: out_slices(&mut next_obs)?,
            action: slice_mut("action", &mut action)?,
            reward: slice_mut("reward", &mut reward)?,
            terminated: slice_mut("terminated", &mut terminated)?,
            truncated: slice_mut("truncated", &mut truncated)?,
        };
        py.detach(|| self.ring.sample(&mut dst)).map_err(to_py)?;
        drop(dst);
        if out.is_instance_of::<PyDict>() {
            return Ok(out);
        }
        // A non-dict mapping was filled: hand back a dict of the same arrays.
        let d = PyDict::new(py);
        for key in k.obs.iter().chain(&k.next_obs).chain([
            &k.action,
            &k.reward,
            &k.terminated,
            &k.truncated,
        ]) {
            d.set_item(key.bind(py), get(key)?)?;
        }
        Ok(d.into_any())
    }

    fn alloc_batch<'py>(&self, py: Python<'py>, batch_size: i64) -> PyResult<Bound<'py, PyDict>> {
        let b = to_usize("batch_size", batch_size, 0)?;
        let spec = self.ring.spec();
        let d = PyDict::new(py);
        for (i, c) in spec.components.iter().enumerate() {
            let shape = c.sample_shape(b);
            for key in [&self.keys.obs[i], &self.keys.next_obs[i]] {
                match c.dtype {
                    Dtype::U8 => d.set_item(
                        key.bind(py),
                        PyArrayDyn::<u8>::zeros(py, shape.as_slice(), false),
                    )?,
                    Dtype::F32 => d.set_item(
                        key.bind(py),
                        PyArrayDyn::<f32>::zeros(py, shape.as_slice(), false),
                    )?,
                }
            }
        }
        let k = &self.keys;
        d.set_item(
            k.action.bind(py),
            PyArrayDyn::<f32>::zeros(py, [b, spec.action_dim].as_slice(), false),
        )?;
        d.set_item(
            k.reward.bind(py),
            PyArrayDyn::<f32>::zeros(py, [b].as_slice(), false),
        )?;
        d.set_item(
            k.terminated.bind(py),
            PyArrayDyn::<bool>::zeros(py, [b].as_slice(), false),
        )?;
        d.set_item(
            k.truncated.bind(py),
            PyArrayDyn::<bool>::zeros(py, [b].as_slice(), false),
        )?;
        Ok(d)
    }

    fn save(&self, py: Python<'_>, directory: PathBuf) -> PyResult<()> {
        py.detach(|| self.ring.save(&directory)).map_err(to_py)
    }

    #[staticmethod]
    #[pyo3(signature = (directory, *, seed = None))]
    fn load(py: Python<'_>, directory: PathBuf, seed: Option<u64>) -> PyResult<Self> {
        let ring = py
            .detach(|| ReplayRing::load(&directory, seed))
            .map_err(to_py)?;
        Ok(Self::wrap(py, ring))
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self
            .ring
            .spec()
            .components
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        format!(
            "ReplayRing(capacity={}, len={}, components={names:?}, action_dim={})",
            self.ring.capacity(),
            self.ring.len(),
            self.ring.spec().action_dim
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReplayRing>()
}
