//! Python bindings for [`crate::replay`]: `tmrl._core.ReplayRing`.
//!
//! Thin: check and borrow the numpy arrays (wrong dtype -> TypeError, wrong shape / non-contiguous -> ValueError),
//! hand plain slices to the core with the GIL released, map core errors through `errors::to_py`. Error texts are
//! formatted only when an error is raised (`Name`), so the per-call overhead stays a few microseconds.

use std::fmt;
use std::path::PathBuf;

use numpy::prelude::*;
use numpy::{Element, PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySlice, PyString};

use super::errors::to_py;
use crate::replay::{
    BatchIn, ColumnIn, ColumnOut, CompOut, ComponentSpec, Dtype, NStep, ReplayRing, RingSpec,
    SampleOut,
};

/// How an argument is named in error messages; formatted only on error.
#[derive(Clone, Copy)]
enum Name<'a> {
    Arg(&'a str),
    Obs(&'a str),
    Out(&'a str),
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Arg(s) => f.write_str(s),
            Name::Obs(s) => write!(f, "obs[{s:?}]"),
            Name::Out(s) => write!(f, "out[{s:?}]"),
        }
    }
}

/// Keys of the sampled arrays (interned Python strings and their text), made once per ring.
struct Keys {
    obs: Vec<Py<PyString>>,
    next_obs: Vec<Py<PyString>>,
    obs_s: Vec<String>,
    next_obs_s: Vec<String>,
    names: Vec<Py<PyString>>,
    scalars: [Py<PyString>; 4],
    discount: Py<PyString>,
}

const SCALARS: [&str; 4] = ["action", "reward", "terminated", "truncated"];

/// The key of the n-step discounts (gamma^m per transition), written when `sample` is given `gamma`.
const DISCOUNT: &str = "discount";

impl Keys {
    fn new(py: Python<'_>, spec: &RingSpec) -> Self {
        let s = |t: &str| PyString::new(py, t).unbind();
        let obs_s: Vec<String> = spec
            .components
            .iter()
            .map(|c| format!("obs.{}", c.name))
            .collect();
        let next_obs_s: Vec<String> = spec
            .components
            .iter()
            .map(|c| format!("next_obs.{}", c.name))
            .collect();
        Self {
            obs: obs_s.iter().map(|k| s(k)).collect(),
            next_obs: next_obs_s.iter().map(|k| s(k)).collect(),
            obs_s,
            next_obs_s,
            names: spec.components.iter().map(|c| s(&c.name)).collect(),
            scalars: SCALARS.map(s),
            discount: s(DISCOUNT),
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

/// A shape written the way Python prints tuples: (3,) or (2, 3).
fn py_shape(dims: &[String]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    }
}

/// `obj` as a numpy array of element `T`, C-contiguous, of shape `lead + tail` (`lead` = None accepts any first
/// dimension). Returns the array and its first dimension.
fn typed<'py, T: Element>(
    what: Name<'_>,
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
    Ok((arr.clone(), shape[0]))
}

fn ro<'py, T: Element>(
    what: Name<'_>,
    arr: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    arr.try_readonly()
        .map_err(|e| value_err(format!("{what} cannot be read: {e}")))
}

fn rw<'py, T: Element>(
    what: Name<'_>,
    arr: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    arr.try_readwrite().map_err(|e| {
        value_err(format!(
            "{what} cannot be written ({e}): pass each array once, and not to two samples at once"
        ))
    })
}

fn slice<'a, T: Element>(what: Name<'_>, a: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|e| value_err(format!("{what}: {e}")))
}

fn slice_mut<'a, T: Element>(
    what: Name<'_>,
    a: &'a mut PyReadwriteArrayDyn<'_, T>,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|e| value_err(format!("{what}: {e}")))
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

/// One component's borrowed output: two arrays, or the window both obs and next_obs view.
enum OutComp<'py> {
    Split(RwCol<'py>, RwCol<'py>),
    Window(RwCol<'py>),
}

fn col_slice<'a>(col: &'a mut RwCol<'_>) -> PyResult<ColumnOut<'a>> {
    Ok(match col {
        RwCol::U8(a) => ColumnOut::U8(slice_mut(Name::Arg("out"), a)?),
        RwCol::F32(a) => ColumnOut::F32(slice_mut(Name::Arg("out"), a)?),
    })
}

fn out_slices<'a>(comps: &'a mut [OutComp<'_>]) -> PyResult<Vec<CompOut<'a>>> {
    comps
        .iter_mut()
        .map(|comp| {
            Ok(match comp {
                OutComp::Split(o, n) => CompOut::Split {
                    obs: col_slice(o)?,
                    next_obs: col_slice(n)?,
                },
                OutComp::Window(w) => CompOut::Window(col_slice(w)?),
            })
        })
        .collect()
}

/// The (B, K+1, *shape) array behind `obs` and `next_obs` when they are its views `[:, :K]` and `[:, 1:]`
/// (as `alloc_batch` makes them), so the sample is written once into it.
fn window_of<'py, T: Element>(
    obs: &Bound<'py, PyAny>,
    next: &Bound<'py, PyAny>,
    batch: usize,
    c: &ComponentSpec,
) -> Option<Bound<'py, PyArrayDyn<T>>> {
    let a = obs.cast::<PyArrayDyn<T>>().ok()?;
    let n = next.cast::<PyArrayDyn<T>>().ok()?;
    let base = a.getattr(pyo3::intern!(obs.py(), "base")).ok()?;
    let w = base.cast::<PyArrayDyn<T>>().ok()?;
    let k = c.history;
    let view: Vec<usize> = [batch, k].iter().chain(&c.shape).copied().collect();
    let whole: Vec<usize> = [batch, k + 1].iter().chain(&c.shape).copied().collect();
    let row_bytes = c.row_len() * std::mem::size_of::<T>();
    let ok = w.shape() == whole.as_slice()
        && w.is_c_contiguous()
        && a.shape() == view.as_slice()
        && n.shape() == view.as_slice()
        && a.strides() == w.strides()
        && n.strides() == w.strides()
        && std::ptr::eq(a.data(), w.data())
        && n.data() as usize == w.data() as usize + row_bytes;
    ok.then(|| w.clone())
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

/// Borrows one output array of a component (shape (B, K, *shape) or (B, *shape)).
fn out_col<'py>(
    out: &Bound<'py, PyAny>,
    key: &Py<PyString>,
    key_s: &str,
    c: &ComponentSpec,
    batch: usize,
) -> PyResult<RwCol<'py>> {
    let item = get_key(out, key.bind(out.py()), "out")?;
    let what = Name::Out(key_s);
    let tail = &c.sample_shape(batch)[1..];
    Ok(match c.dtype {
        Dtype::U8 => RwCol::U8(rw(
            what,
            &typed::<u8>(what, &item, "uint8", Some(batch), tail)?.0,
        )?),
        Dtype::F32 => RwCol::F32(rw(
            what,
            &typed::<f32>(what, &item, "float32", Some(batch), tail)?.0,
        )?),
    })
}

impl PyReplayRing {
    fn wrap(py: Python<'_>, ring: ReplayRing) -> Self {
        let keys = Keys::new(py, ring.spec());
        Self { ring, keys }
    }

    /// Borrows the outputs of component `i`: its window when `out` holds `alloc_batch`'s views, else two arrays.
    fn out_comp<'py>(
        &self,
        out: &Bound<'py, PyAny>,
        i: usize,
        c: &ComponentSpec,
        batch: usize,
        windows: bool,
    ) -> PyResult<OutComp<'py>> {
        let (k, py) = (&self.keys, out.py());
        if c.history > 1 && windows {
            let obs = get_key(out, k.obs[i].bind(py), "out")?;
            let next = get_key(out, k.next_obs[i].bind(py), "out")?;
            let what = Name::Out(&k.obs_s[i]);
            match c.dtype {
                Dtype::U8 => {
                    if let Some(w) = window_of::<u8>(&obs, &next, batch, c) {
                        return Ok(OutComp::Window(RwCol::U8(rw(what, &w)?)));
                    }
                }
                Dtype::F32 => {
                    if let Some(w) = window_of::<f32>(&obs, &next, batch, c) {
                        return Ok(OutComp::Window(RwCol::F32(rw(what, &w)?)));
                    }
                }
            }
        }
        if c.history > 1 {
            for (key, key_s) in [(&k.obs[i], &k.obs_s[i]), (&k.next_obs[i], &k.next_obs_s[i])] {
                let arr = get_key(out, key.bind(py), "out")?;
                let view = c.sample_shape(batch);
                let only_layout = |u: &Bound<'_, PyUntypedArray>| {
                    !u.is_c_contiguous() && u.shape() == view.as_slice()
                };
                if arr.cast::<PyUntypedArray>().is_ok_and(only_layout) {
                    if !windows {
                        return Err(value_err(format!(
                            "{} is not C-contiguous: with n_step > 1, obs and next_obs are separate arrays \
                             (alloc_batch(batch_size, n_step=...) makes them)",
                            Name::Out(key_s)
                        )));
                    }
                    return Err(value_err(format!(
                        "{} is neither C-contiguous nor a view of a window: pass the arrays of alloc_batch \
                         (obs = w[:, :K] and next_obs = w[:, 1:] of one (B, K+1, ...) array w) or C-contiguous ones",
                        Name::Out(key_s)
                    )));
                }
            }
        }
        Ok(OutComp::Split(
            out_col(out, &k.obs[i], &k.obs_s[i], c, batch)?,
            out_col(out, &k.next_obs[i], &k.next_obs_s[i], c, batch)?,
        ))
    }

    fn no_transition_yet(&self) -> PyResult<()> {
        if self.ring.num_transitions() == 0 {
            return Err(value_err(
                "sample: the replay ring holds no valid transition yet (append at least two consecutive steps of \
                 one episode first)"
                    .into(),
            ));
        }
        Ok(())
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
                let history = to_usize(&format!("component {name:?} history"), *history, 1)?;
                Ok(ComponentSpec::new(name, &shape, dtype, history))
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
        let (reward, n) = typed::<f32>(Name::Arg("reward"), reward, "float32", None, &[])?;
        let (action, _) = typed::<f32>(
            Name::Arg("action"),
            action,
            "float32",
            Some(n),
            &[spec.action_dim],
        )?;
        let (terminated, _) =
            typed::<bool>(Name::Arg("terminated"), terminated, "bool", Some(n), &[])?;
        let (truncated, _) =
            typed::<bool>(Name::Arg("truncated"), truncated, "bool", Some(n), &[])?;
        let (first, _) = typed::<bool>(Name::Arg("first"), first, "bool", Some(n), &[])?;
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
            let what = Name::Obs(&c.name);
            cols.push(match c.dtype {
                Dtype::U8 => RoCol::U8(ro(
                    what,
                    &typed::<u8>(what, &item, "uint8", Some(n), &c.shape)?.0,
                )?),
                Dtype::F32 => RoCol::F32(ro(
                    what,
                    &typed::<f32>(what, &item, "float32", Some(n), &c.shape)?.0,
                )?),
            });
        }
        let reward = ro(Name::Arg("reward"), &reward)?;
        let action = ro(Name::Arg("action"), &action)?;
        let terminated = ro(Name::Arg("terminated"), &terminated)?;
        let truncated = ro(Name::Arg("truncated"), &truncated)?;
        let first = ro(Name::Arg("first"), &first)?;
        let obs_in = cols
            .iter()
            .map(|col| {
                Ok(match col {
                    RoCol::U8(a) => ColumnIn::U8(slice(Name::Arg("obs"), a)?),
                    RoCol::F32(a) => ColumnIn::F32(slice(Name::Arg("obs"), a)?),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let batch = BatchIn {
            obs: obs_in,
            action: slice(Name::Arg("action"), &action)?,
            reward: slice(Name::Arg("reward"), &reward)?,
            terminated: slice(Name::Arg("terminated"), &terminated)?,
            truncated: slice(Name::Arg("truncated"), &truncated)?,
            first: slice(Name::Arg("first"), &first)?,
        };
        py.detach(|| self.ring.append_batch(stream, &batch))
            .map_err(to_py)
    }

    #[pyo3(signature = (batch_size, out = None, *, n_step = 1, gamma = None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        batch_size: i64,
        out: Option<Bound<'py, PyAny>>,
        n_step: i64,
        gamma: Option<f32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let b = to_usize("batch_size", batch_size, 0)?;
        let n = to_usize("n_step", n_step, 1)?;
        let nstep = match gamma {
            Some(g) => Some(NStep::new(n, g).map_err(|e| value_err(format!("sample: {e}")))?),
            None if n > 1 => {
                return Err(value_err(format!(
                    "sample: n_step = {n} needs gamma (the discount of the multi-step returns)"
                )))
            }
            None => None,
        };
        let out = match out {
            Some(o) => o,
            None => {
                let d = self.alloc_batch(py, batch_size, n_step)?;
                if nstep.is_some() && n == 1 {
                    d.set_item(
                        self.keys.discount.bind(py),
                        PyArrayDyn::<f32>::zeros(py, [b].as_slice(), false),
                    )?;
                }
                d.into_any()
            }
        };
        if b == 0 {
            self.no_transition_yet()?;
            return Ok(out);
        }
        let spec = self.ring.spec();
        let mut comps = Vec::with_capacity(spec.components.len());
        for (i, c) in spec.components.iter().enumerate() {
            comps.push(self.out_comp(&out, i, c, b, n == 1)?);
        }
        let [ka, kr, kte, ktr] = &self.keys.scalars;
        let get = |k: &Py<PyString>| get_key(&out, k.bind(py), "out");
        let arr_f32 = |k, s, tail: &[usize]| -> PyResult<_> {
            rw(
                Name::Out(s),
                &typed::<f32>(Name::Out(s), &get(k)?, "float32", Some(b), tail)?.0,
            )
        };
        let arr_bool = |k, s| -> PyResult<_> {
            rw(
                Name::Out(s),
                &typed::<bool>(Name::Out(s), &get(k)?, "bool", Some(b), &[])?.0,
            )
        };
        let mut action = arr_f32(ka, SCALARS[0], &[spec.action_dim])?;
        let mut reward = arr_f32(kr, SCALARS[1], &[])?;
        let mut terminated = arr_bool(kte, SCALARS[2])?;
        let mut truncated = arr_bool(ktr, SCALARS[3])?;
        let mut discount = match nstep {
            Some(_) => Some(arr_f32(&self.keys.discount, DISCOUNT, &[])?),
            None => None,
        };
        let mut dst = SampleOut {
            comps: out_slices(&mut comps)?,
            action: slice_mut(Name::Out(SCALARS[0]), &mut action)?,
            reward: slice_mut(Name::Out(SCALARS[1]), &mut reward)?,
            terminated: slice_mut(Name::Out(SCALARS[2]), &mut terminated)?,
            truncated: slice_mut(Name::Out(SCALARS[3]), &mut truncated)?,
        };
        match (nstep, discount.as_mut()) {
            (Some(ns), Some(d)) => {
                let d = slice_mut(Name::Out(DISCOUNT), d)?;
                py.detach(|| self.ring.sample_n(&mut dst, ns, d))
            }
            _ => py.detach(|| self.ring.sample(&mut dst)),
        }
        .map_err(to_py)?;
        drop(dst);
        if out.is_instance_of::<PyDict>() {
            return Ok(out);
        }
        // A non-dict mapping was filled: hand back a dict of the same arrays.
        let k = &self.keys;
        let d = PyDict::new(py);
        for key in k.obs.iter().chain(&k.next_obs).chain(&k.scalars) {
            d.set_item(key.bind(py), get(key)?)?;
        }
        if nstep.is_some() {
            d.set_item(k.discount.bind(py), get(&k.discount)?)?;
        }
        Ok(d.into_any())
    }

    #[pyo3(signature = (batch_size, *, n_step = 1))]
    fn alloc_batch<'py>(
        &self,
        py: Python<'py>,
        batch_size: i64,
        n_step: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let b = to_usize("batch_size", batch_size, 0)?;
        let windows = to_usize("n_step", n_step, 1)? == 1;
        let spec = self.ring.spec();
        let d = PyDict::new(py);
        if !windows {
            d.set_item(
                self.keys.discount.bind(py),
                PyArrayDyn::<f32>::zeros(py, [b].as_slice(), false),
            )?;
        }
        for (i, c) in spec.components.iter().enumerate() {
            let (obs_key, next_key) = (self.keys.obs[i].bind(py), self.keys.next_obs[i].bind(py));
            if c.history > 1 && windows {
                // One (B, K+1, *shape) window; obs and next_obs are its overlapping views.
                let k = c.history as isize;
                let whole: Vec<usize> =
                    [b, c.history + 1].iter().chain(&c.shape).copied().collect();
                let w = match c.dtype {
                    Dtype::U8 => PyArrayDyn::<u8>::zeros(py, whole.as_slice(), false).into_any(),
                    Dtype::F32 => PyArrayDyn::<f32>::zeros(py, whole.as_slice(), false).into_any(),
                };
                d.set_item(
                    obs_key,
                    w.get_item((PySlice::full(py), PySlice::new(py, 0, k, 1)))?,
                )?;
                d.set_item(
                    next_key,
                    w.get_item((PySlice::full(py), PySlice::new(py, 1, k + 1, 1)))?,
                )?;
                continue;
            }
            let shape = c.sample_shape(b);
            for key in [obs_key, next_key] {
                match c.dtype {
                    Dtype::U8 => {
                        d.set_item(key, PyArrayDyn::<u8>::zeros(py, shape.as_slice(), false))?
                    }
                    Dtype::F32 => {
                        d.set_item(key, PyArrayDyn::<f32>::zeros(py, shape.as_slice(), false))?
                    }
                }
            }
        }
        let [ka, kr, kte, ktr] = &self.keys.scalars;
        d.set_item(
            ka.bind(py),
            PyArrayDyn::<f32>::zeros(py, [b, spec.action_dim].as_slice(), false),
        )?;
        d.set_item(
            kr.bind(py),
            PyArrayDyn::<f32>::zeros(py, [b].as_slice(), false),
        )?;
        d.set_item(
            kte.bind(py),
            PyArrayDyn::<bool>::zeros(py, [b].as_slice(), false),
        )?;
        d.set_item(
            ktr.bind(py),
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
