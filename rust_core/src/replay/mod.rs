//! The replay ring: fixed-capacity columnar replay memory for off-policy RL.
//!
//! A *row* is one step of one *stream* (a worker's sequence of episodes): the observation components at time t,
//! the action taken at t, the reward / `terminated` / `truncated` that followed it, and `first` (t starts an
//! episode). Rows get absolute, monotonically increasing 64-bit numbers; row `r` lives in slot `r % capacity` and
//! is stored while `r >= total - capacity`. Each row links to its predecessor and successor *in its stream*
//! (absolute row numbers), so batches of several streams may interleave freely and a link to an overwritten row
//! is recognised by its number alone.
//!
//! History components (LIDAR scans, frames) are stored once per step; the K-step histories of the observation
//! and of the next observation are rebuilt at sampling time by following predecessor links, never across an
//! episode start: at the episode's first row, or when the predecessor was overwritten, the oldest available
//! frame is repeated. A row is a valid transition start when its successor is stored and is not the first row of
//! an episode (successor links are only made inside an episode, so "has a successor" is the whole test).
//!
//! Multi-step returns (`sample_n`): from a sampled row t the sampler follows successor links for up to n steps,
//! summing the discounted rewards, and stops early at a terminated or truncated step or at a row whose successor
//! is not stored yet (the newest row of a running episode). The next observation is the one m <= n steps later
//! and the sampler reports gamma^m with it, so the target is `reward + discount * (1 - terminated) * V(next)`.
//!
//! Concurrency: the storage sits behind a `parking_lot::RwLock`. An append holds the write lock only for the
//! copy of its batch; samplers hold the read lock while they gather one minibatch, so any number of samplers run
//! together and no reader ever sees a half-written row. The RNG sits behind its own mutex, held only to split off
//! a child generator per `sample` call.

mod copy;
mod persist;
mod rng;

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

use crate::error::{CoreError, CoreResult};
use copy::{copy_out, Plain, STREAM_MIN};
pub use rng::Xoshiro256;

/// "No row": the link value of a row without predecessor / successor.
pub const NONE: u64 = u64::MAX;

/// Longest history a component may ask for (a sanity bound, far above any real use).
pub const MAX_HISTORY: usize = 1024;

/// Element type of an observation component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U8,
    F32,
}

impl Dtype {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "uint8" => Ok(Dtype::U8),
            "float32" => Ok(Dtype::F32),
            other => Err(CoreError::Value(format!(
                "component dtype must be \"uint8\" or \"float32\", not {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::F32 => "float32",
        }
    }
}

/// One named observation component: `shape` per step, stored once per step, seen with `history` steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub history: usize,
}

impl ComponentSpec {
    pub fn new(name: &str, shape: &[usize], dtype: Dtype, history: usize) -> Self {
        Self {
            name: name.to_owned(),
            shape: shape.to_vec(),
            dtype,
            history,
        }
    }

    /// Elements in one step's slice.
    pub fn row_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Shape of the sampled array: (B, K, *shape) when K > 1, else (B, *shape).
    pub fn sample_shape(&self, batch: usize) -> Vec<usize> {
        let mut s = vec![batch];
        if self.history > 1 {
            s.push(self.history);
        }
        s.extend_from_slice(&self.shape);
        s
    }
}

/// The immutable layout of a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSpec {
    pub capacity: usize,
    pub components: Vec<ComponentSpec>,
    pub action_dim: usize,
}

impl RingSpec {
    pub fn new(
        capacity: usize,
        components: Vec<ComponentSpec>,
        action_dim: usize,
    ) -> CoreResult<Self> {
        let bad = |m: String| Err(CoreError::Value(m));
        if capacity == 0 {
            return bad("ReplayRing capacity must be >= 1".into());
        }
        if action_dim == 0 {
            return bad("ReplayRing action_dim must be >= 1".into());
        }
        for (i, c) in components.iter().enumerate() {
            if c.name.is_empty() {
                return bad(format!("component #{i} has an empty name"));
            }
            if components[..i].iter().any(|o| o.name == c.name) {
                return bad(format!("component name {:?} appears twice", c.name));
            }
            if c.shape.contains(&0) {
                return bad(format!(
                    "component {:?}: every dimension of shape {:?} must be >= 1",
                    c.name, c.shape
                ));
            }
            if c.history == 0 || c.history > MAX_HISTORY {
                return bad(format!(
                    "component {:?}: history must be in 1..={MAX_HISTORY}, not {}",
                    c.name, c.history
                ));
            }
            if c.row_len()
                .checked_mul(capacity)
                .is_none_or(|n| n > isize::MAX as usize / 4)
            {
                return bad(format!(
                    "component {:?}: capacity x shape is too large to allocate",
                    c.name
                ));
            }
        }
        Ok(Self {
            capacity,
            components,
            action_dim,
        })
    }

    /// The history length of the longest component (>= 1).
    pub fn max_history(&self) -> usize {
        self.components.iter().map(|c| c.history).max().unwrap_or(1)
    }

    /// Bytes of storage per row (data + metadata), to size rings before creating them.
    pub fn bytes_per_row(&self) -> usize {
        let data: usize = self
            .components
            .iter()
            .map(|c| {
                c.row_len()
                    * match c.dtype {
                        Dtype::U8 => 1,
                        Dtype::F32 => 4,
                    }
            })
            .sum();
        data + 4 * self.action_dim + 4 + 3 + 16
    }
}

/// One component's storage (one contiguous buffer of `capacity * row_len` elements).
#[derive(Debug)]
pub enum Column {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Column {
    fn zeros(dtype: Dtype, len: usize) -> Self {
        // vec![0; n] comes from calloc: pages are only made resident when written.
        match dtype {
            Dtype::U8 => Column::U8(huge_pages(vec![0; len])),
            Dtype::F32 => Column::F32(huge_pages(vec![0.0; len])),
        }
    }
}

/// Asks Linux to back a large buffer with transparent huge pages (2 MiB): sampling reads rows at random over
/// gigabytes, and 4 KiB pages would cost a TLB miss per row. Only a hint; without it (or elsewhere) nothing
/// changes but speed.
fn huge_pages<T>(v: Vec<T>) -> Vec<T> {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (start, bytes) = (v.as_ptr() as usize, std::mem::size_of_val(v.as_slice()));
        let aligned = start.next_multiple_of(HUGE);
        let end = (start + bytes) / HUGE * HUGE;
        if end > aligned {
            // SAFETY: the range lies inside the buffer `v` owns; MADV_HUGEPAGE changes no contents or
            // permissions, and a failure (e.g. THP disabled) is harmless.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    v
}

/// A read-only input slice of one component: `n * row_len` elements, row-major.
#[derive(Clone, Copy, Debug)]
pub enum ColumnIn<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl ColumnIn<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnIn::U8(s) => s.len(),
            ColumnIn::F32(s) => s.len(),
        }
    }
    fn dtype(&self) -> Dtype {
        match self {
            ColumnIn::U8(_) => Dtype::U8,
            ColumnIn::F32(_) => Dtype::F32,
        }
    }
}

/// A writable output slice of one component: `batch * K * row_len` elements, row-major.
#[derive(Debug)]
pub enum ColumnOut<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

impl ColumnOut<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnOut::U8(s) => s.len(),
            ColumnOut::F32(s) => s.len(),
        }
    }
    fn dtype(&self) -> Dtype {
        match self {
            ColumnOut::U8(_) => Dtype::U8,
            ColumnOut::F32(_) => Dtype::F32,
        }
    }
}

/// n consecutive steps of one stream, columnar. `obs` is in the order of the spec's components.
#[derive(Clone, Debug)]
pub struct BatchIn<'a> {
    pub obs: Vec<ColumnIn<'a>>,
    pub action: &'a [f32],
    pub reward: &'a [f32],
    pub terminated: &'a [bool],
    pub truncated: &'a [bool],
    pub first: &'a [bool],
}

/// Where one component's sampled histories go.
#[derive(Debug)]
pub enum CompOut<'a> {
    /// Two arrays of `batch * K * row_len` elements: obs (B, K, *shape) and next_obs (B, K, *shape).
    Split {
        obs: ColumnOut<'a>,
        next_obs: ColumnOut<'a>,
    },
    /// One array of `batch * (K + 1) * row_len` elements, (B, K+1, *shape): obs = window[:, :K] and
    /// next_obs = window[:, 1:] share their K-1 common steps, so each step is copied once.
    Window(ColumnOut<'a>),
}

/// Destination of one sampled minibatch of B transitions (B = `reward.len()`), columnar, in spec order.
#[derive(Debug)]
pub struct SampleOut<'a> {
    pub comps: Vec<CompOut<'a>>,
    pub action: &'a mut [f32],
    pub reward: &'a mut [f32],
    pub terminated: &'a mut [bool],
    pub truncated: &'a mut [bool],
}

/// Multi-step returns: sum up to `n` rewards discounted by `gamma` per step (`n` = 1: one-step transitions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NStep {
    pub n: usize,
    pub gamma: f32,
}

impl NStep {
    /// Longest n accepted (a sanity bound: far beyond any useful multi-step return).
    pub const MAX: usize = 256;

    pub fn new(n: usize, gamma: f32) -> CoreResult<Self> {
        if n == 0 || n > Self::MAX {
            return Err(CoreError::Value(format!(
                "n_step must be in 1..={}, not {n}",
                Self::MAX
            )));
        }
        if !(gamma > 0.0 && gamma <= 1.0) {
            return Err(CoreError::Value(format!(
                "gamma must be in (0, 1], not {gamma}"
            )));
        }
        Ok(Self { n, gamma })
    }
}

/// Per-row metadata in one record, so a row's links and scalars share a cache line (and its neighbours').
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Meta {
    /// Absolute row number of the predecessor in the same episode, or NONE.
    prev: u64,
    /// Absolute row number of the successor in the same episode, or NONE.
    next: u64,
    reward: f32,
    terminated: bool,
    truncated: bool,
    first: bool,
}

const EMPTY: Meta = Meta {
    prev: NONE,
    next: NONE,
    reward: 0.0,
    terminated: false,
    truncated: false,
    first: false,
};

/// Everything behind the lock.
#[derive(Debug)]
struct Storage {
    columns: Vec<Column>,
    action: Vec<f32>,
    meta: Vec<Meta>,
    /// Rows appended since creation.
    total: u64,
    /// Stored rows that have a successor (= valid transition starts).
    valid: u64,
    /// Last row appended by each stream.
    streams: HashMap<u64, u64>,
}

impl Storage {
    fn new(spec: &RingSpec) -> Self {
        let cap = spec.capacity;
        Self {
            columns: spec
                .components
                .iter()
                .map(|c| Column::zeros(c.dtype, cap * c.row_len()))
                .collect(),
            action: vec![0.0; cap * spec.action_dim],
            meta: vec![EMPTY; cap],
            total: 0,
            valid: 0,
            streams: HashMap::new(),
        }
    }
}

/// Above this many known streams, appends forget the streams whose last row was overwritten.
const STREAMS_KEPT: usize = 1024;

/// How many transitions ahead the sampler prefetches.
const PREFETCH: usize = 8;

/// A cache hint: start loading the line holding `p`. Never faults, whatever the address.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint without architectural effect; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the first lines of `len` elements starting at `src[start]` (at most 16 lines).
#[inline(always)]
fn prefetch_span<T>(src: &[T], start: usize, len: usize) {
    let bytes = (len * std::mem::size_of::<T>()).min(16 * 64);
    let base = src.as_ptr().wrapping_add(start) as *const u8;
    for off in (0..bytes).step_by(64) {
        prefetch(base.wrapping_add(off));
    }
}

/// Copies the rows at `slots` of `src` (`row` elements each) into `dst`, in one memcpy when consecutive.
#[inline(always)]
fn copy_rows<T: Plain>(src: &[T], dst: &mut [T], slots: &[usize], row: usize) {
    let first = slots[0];
    let consecutive = slots.iter().enumerate().all(|(j, &s)| s == first + j);
    if consecutive {
        copy_out(dst, &src[first * row..(first + slots.len()) * row]);
    } else {
        for (d, &s) in dst.chunks_exact_mut(row).zip(slots) {
            copy_out(d, &src[s * row..(s + 1) * row]);
        }
    }
}

/// Prefetches the stored rows of one transition's window of slots.
#[inline(always)]
fn prefetch_window<T>(src: &[T], slots: &[usize], row: usize) {
    let (first, last) = (slots[0], slots[slots.len() - 1]);
    if last >= first && last - first < slots.len() {
        prefetch_span(src, first * row, (last - first + 1) * row);
    } else {
        for &s in slots {
            prefetch_span(src, s * row, row);
        }
    }
}

/// Writes one component's histories as separate obs / next_obs arrays. `chains` holds, per transition,
/// `w` slots oldest first ending with the sampled row and its successor; the component uses the last k+1.
fn gather_split<T: Plain>(
    src: &[T],
    obs: &mut [T],
    next: &mut [T],
    chains: &[usize],
    w: usize,
    k: usize,
    row: usize,
) {
    let b = chains.len() / w;
    for i in 0..b {
        if i + PREFETCH < b {
            prefetch_window(
                src,
                &chains[(i + PREFETCH) * w + w - 1 - k..(i + PREFETCH + 1) * w],
                row,
            );
        }
        let c = &chains[i * w + w - 1 - k..(i + 1) * w];
        if k == 1 {
            obs[i * row..(i + 1) * row].copy_from_slice(&src[c[0] * row..(c[0] + 1) * row]);
            next[i * row..(i + 1) * row].copy_from_slice(&src[c[1] * row..(c[1] + 1) * row]);
            continue;
        }
        let o = &mut obs[i * k * row..(i + 1) * k * row];
        copy_rows(src, o, &c[..k], row);
        let n = &mut next[i * k * row..(i + 1) * k * row];
        if std::mem::size_of_val(n) >= STREAM_MIN {
            // Large histories were streamed past the cache: copy again from the ring, not from `o`.
            copy_rows(src, n, &c[1..], row);
        } else {
            n[..(k - 1) * row].copy_from_slice(&o[row..]);
            n[(k - 1) * row..].copy_from_slice(&src[c[k] * row..(c[k] + 1) * row]);
        }
    }
}

/// Writes one component's k-step histories from `chains` (`w` slots per transition): for each transition the k
/// slots ending just before index `end` of its chain. A (B, K+1, row) window is k = K+1 with end = w.
fn gather_hist<T: Plain>(
    src: &[T],
    dst: &mut [T],
    chains: &[usize],
    w: usize,
    end: usize,
    k: usize,
    row: usize,
) {
    let b = chains.len() / w;
    for i in 0..b {
        if i + PREFETCH < b {
            let j = i + PREFETCH;
            prefetch_window(src, &chains[j * w + end - k..j * w + end], row);
        }
        let c = &chains[i * w + end - k..i * w + end];
        copy_rows(src, &mut dst[i * k * row..(i + 1) * k * row], c, row);
    }
}

/// Copy `n` rows of `row` elements from `src` (rows 0..n) into ring slots `slot0..slot0+n` (no wrap inside).
#[inline]
fn put<T: Copy>(dst: &mut [T], src: &[T], row: usize, slot0: usize, first_row: usize, n: usize) {
    dst[slot0 * row..(slot0 + n) * row]
        .copy_from_slice(&src[first_row * row..(first_row + n) * row]);
}

/// The replay ring. `Sync`: share it (e.g. in an `Arc`) between one appending and several sampling threads.
#[derive(Debug)]
pub struct ReplayRing {
    spec: RingSpec,
    storage: RwLock<Storage>,
    rng: Mutex<Xoshiro256>,
}

impl ReplayRing {
    /// An empty ring. `seed` makes sampling reproducible; `None` seeds from the OS.
    pub fn new(spec: RingSpec, seed: Option<u64>) -> Self {
        let storage = Storage::new(&spec);
        let rng = seed.map_or_else(Xoshiro256::from_entropy, Xoshiro256::from_seed);
        Self {
            spec,
            storage: RwLock::new(storage),
            rng: Mutex::new(rng),
        }
    }

    pub fn spec(&self) -> &RingSpec {
        &self.spec
    }

    pub fn capacity(&self) -> usize {
        self.spec.capacity
    }

    /// Rows currently stored (<= capacity).
    pub fn len(&self) -> usize {
        let total = self.storage.read().total;
        total.min(self.spec.capacity as u64) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.storage.read().total == 0
    }

    /// Rows appended since creation (monotonic, survives save/load).
    pub fn total_appended(&self) -> u64 {
        self.storage.read().total
    }

    /// Rows that are currently valid transition starts.
    pub fn num_transitions(&self) -> u64 {
        self.storage.read().valid
    }

    fn check_batch(&self, b: &BatchIn<'_>) -> CoreResult<usize> {
        let n = b.reward.len();
        let shape = |what: &str, got: usize, want: usize| {
            Err(CoreError::Shape(format!(
                "append_batch: {what} holds {got} elements, expected {want} for {n} steps"
            )))
        };
        if b.obs.len() != self.spec.components.len() {
            return Err(CoreError::Value(format!(
                "append_batch: got {} observation components, the ring has {}",
                b.obs.len(),
                self.spec.components.len()
            )));
        }
        for (c, col) in self.spec.components.iter().zip(&b.obs) {
            if col.dtype() != c.dtype {
                return Err(CoreError::Dtype(format!(
                    "append_batch: obs[{:?}] must be {}, not {}",
                    c.name,
                    c.dtype.name(),
                    col.dtype().name()
                )));
            }
            if col.len() != n * c.row_len() {
                return shape(&format!("obs[{:?}]", c.name), col.len(), n * c.row_len());
            }
        }
        if b.action.len() != n * self.spec.action_dim {
            return shape("action", b.action.len(), n * self.spec.action_dim);
        }
        for (what, len) in [
            ("terminated", b.terminated.len()),
            ("truncated", b.truncated.len()),
            ("first", b.first.len()),
        ] {
            if len != n {
                return shape(what, len, n);
            }
        }
        Ok(n)
    }

    /// Appends n consecutive steps of `stream`. O(n): one or two memcpys per column, O(1) metadata per row.
    pub fn append_batch(&self, stream: u64, batch: &BatchIn<'_>) -> CoreResult<()> {
        let n = self.check_batch(batch)?;
        let cap = self.spec.capacity;
        let mut st = self.storage.write();
        let mut done = 0;
        while done < n {
            // Chunks never exceed the capacity, so the slots written by one chunk are distinct.
            let chunk = (n - done).min(cap);
            self.write_chunk(&mut st, stream, batch, done, chunk);
            done += chunk;
        }
        Ok(())
    }

    fn write_chunk(&self, st: &mut Storage, stream: u64, b: &BatchIn<'_>, start: usize, n: usize) {
        let cap = self.spec.capacity;
        let a = self.spec.action_dim;
        let slot0 = (st.total % cap as u64) as usize;
        // The chunk lands in at most two runs of slots: [slot0, slot0+n1) and [0, n - n1).
        let n1 = n.min(cap - slot0);
        for (run_slot, run_start, run_len) in [(slot0, start, n1), (0, start + n1, n - n1)] {
            if run_len == 0 {
                continue;
            }
            for ((c, col), src) in self
                .spec
                .components
                .iter()
                .zip(st.columns.iter_mut())
                .zip(&b.obs)
            {
                let row = c.row_len();
                match (col, src) {
                    (Column::U8(d), ColumnIn::U8(s)) => {
                        put(d, s, row, run_slot, run_start, run_len)
                    }
                    (Column::F32(d), ColumnIn::F32(s)) => {
                        put(d, s, row, run_slot, run_start, run_len)
                    }
                    _ => unreachable!("dtypes checked in check_batch"),
                }
            }
            put(&mut st.action, b.action, a, run_slot, run_start, run_len);
        }
        // Metadata, row by row: evict the old occupant, then link the new row into its stream.
        let mut last = st.streams.get(&stream).copied();
        for i in 0..n {
            let r = st.total;
            let s = (r % cap as u64) as usize;
            if st.meta[s].next != NONE {
                st.valid -= 1; // the evicted row was a valid start
            }
            let j = start + i;
            let mut m = Meta {
                prev: NONE,
                next: NONE,
                reward: b.reward[j],
                terminated: b.terminated[j],
                truncated: b.truncated[j],
                first: b.first[j],
            };
            if let Some(l) = last {
                // The stream's previous row is linked only inside an episode and only while it is stored.
                if !m.first && l + cap as u64 > r {
                    m.prev = l;
                    st.meta[(l % cap as u64) as usize].next = r;
                    st.valid += 1;
                }
            }
            st.meta[s] = m;
            last = Some(r);
            st.total = r + 1;
        }
        if let Some(l) = last {
            st.streams.insert(stream, l);
        }
        if st.streams.len() > STREAMS_KEPT {
            // Forget streams whose last row was overwritten (e.g. workers that reconnected under new ids).
            let total = st.total;
            st.streams.retain(|_, &mut l| l + cap as u64 > total - 1);
        }
    }

    fn check_out(&self, out: &SampleOut<'_>) -> CoreResult<usize> {
        let b = out.reward.len();
        let shape = |what: &str, got: usize, want: usize| {
            Err(CoreError::Shape(format!(
                "sample: out[{what}] holds {got} elements, expected {want} for batch {b}"
            )))
        };
        let nc = self.spec.components.len();
        if out.comps.len() != nc {
            return Err(CoreError::Value(format!(
                "sample: out must hold {nc} components, not {}",
                out.comps.len()
            )));
        }
        for (c, comp) in self.spec.components.iter().zip(&out.comps) {
            let k = c.history;
            let cols: Vec<(String, &ColumnOut<'_>, usize)> = match comp {
                CompOut::Split { obs, next_obs } => vec![
                    (format!("obs.{}", c.name), obs, k),
                    (format!("next_obs.{}", c.name), next_obs, k),
                ],
                CompOut::Window(win) => {
                    if k < 2 {
                        return Err(CoreError::Value(format!(
                            "sample: component {:?} has history 1: it cannot be sampled into a window",
                            c.name
                        )));
                    }
                    vec![(format!("window of {}", c.name), win, k + 1)]
                }
            };
            for (what, col, steps) in cols {
                if col.dtype() != c.dtype {
                    return Err(CoreError::Dtype(format!(
                        "sample: out[{what:?}] must be {}, not {}",
                        c.dtype.name(),
                        col.dtype().name()
                    )));
                }
                let want = b * steps * c.row_len();
                if col.len() != want {
                    return shape(&format!("{what:?}"), col.len(), want);
                }
            }
        }
        if out.action.len() != b * self.spec.action_dim {
            return shape("action", out.action.len(), b * self.spec.action_dim);
        }
        for (what, len) in [
            ("terminated", out.terminated.len()),
            ("truncated", out.truncated.len()),
        ] {
            if len != b {
                return shape(what, len, b);
            }
        }
        Ok(b)
    }

    /// Picks the slots of `b` valid transition starts, uniformly with replacement. Stored rows and slots
    /// correspond one to one, so a uniform stored slot is a uniform stored row.
    fn pick(&self, st: &Storage, rng: &mut Xoshiro256, b: usize) -> Vec<usize> {
        let len = st.total.min(self.spec.capacity as u64);
        if st.valid * 8 >= len {
            // Dense: rejection sampling (expected <= 8 draws per pick). The candidates are drawn first so
            // their metadata can be prefetched; an invalid one is replaced by fresh draws until valid.
            let mut slots: Vec<usize> = (0..b).map(|_| rng.below(len) as usize).collect();
            for i in 0..b {
                if let Some(&ahead) = slots.get(i + PREFETCH) {
                    prefetch(&st.meta[ahead]);
                }
                while st.meta[slots[i]].next == NONE {
                    slots[i] = rng.below(len) as usize;
                }
            }
            slots
        } else {
            // Sparse (e.g. many one-step episodes): list the valid starts once.
            let starts: Vec<usize> = (0..len as usize)
                .filter(|&s| st.meta[s].next != NONE)
                .collect();
            (0..b)
                .map(|_| starts[rng.below(starts.len() as u64) as usize])
                .collect()
        }
    }

    /// Samples `out.reward.len()` valid transitions uniformly into `out`.
    ///
    /// Three passes over the minibatch, each prefetching a few transitions ahead: rebuild every history as a
    /// chain of slots (following predecessor links), then copy component by component, then the scalars.
    pub fn sample(&self, out: &mut SampleOut<'_>) -> CoreResult<()> {
        self.sample_impl(out, None)
    }

    /// Samples `out.reward.len()` valid transitions uniformly, with multi-step returns: `out.reward` receives the
    /// sum of up to `nstep.n` rewards discounted by `nstep.gamma`, the next observation is the one after the last
    /// of them, `out.terminated` / `out.truncated` are that last step's flags, and `discount` receives gamma^m
    /// for the m rewards summed. The same row picks as `sample` for the same RNG state. With n > 1 every
    /// component needs separate obs / next_obs outputs (a window shares steps that n-step transitions do not).
    pub fn sample_n(
        &self,
        out: &mut SampleOut<'_>,
        nstep: NStep,
        discount: &mut [f32],
    ) -> CoreResult<()> {
        if discount.len() != out.reward.len() {
            return Err(CoreError::Shape(format!(
                "sample: out[\"discount\"] holds {} elements, expected {} for batch {}",
                discount.len(),
                out.reward.len(),
                out.reward.len()
            )));
        }
        if nstep.n > 1 {
            for (c, comp) in self.spec.components.iter().zip(&out.comps) {
                if matches!(comp, CompOut::Window(_)) {
                    return Err(CoreError::Value(format!(
                        "sample: component {:?} is sampled into a window, which needs n_step = 1 (pass separate \
                         obs / next_obs arrays)",
                        c.name
                    )));
                }
            }
        }
        self.sample_impl(out, Some((nstep, discount)))
    }

    fn sample_impl(
        &self,
        out: &mut SampleOut<'_>,
        nstep: Option<(NStep, &mut [f32])>,
    ) -> CoreResult<()> {
        let b = self.check_out(out)?;
        let mut rng = self.rng.lock().split();
        let st = self.storage.read();
        if st.valid == 0 {
            return Err(CoreError::Value(
                "sample: the replay ring holds no valid transition yet (append at least two consecutive steps of \
                 one episode first)"
                    .into(),
            ));
        }
        if b == 0 {
            return Ok(());
        }
        let slots = self.pick(&st, &mut rng, b);
        let cap = self.spec.capacity as u64;
        let oldest = st.total - st.total.min(cap);
        let kmax = self.spec.max_history();
        let w = kmax + 1;
        // Per transition, w slots: [.., predecessors oldest first, sampled row, successor].
        // Slot of a stored row r without a division: r = total - d with 0 < d <= capacity.
        let (total, top) = (st.total, (st.total % cap) as usize);
        let slot = |r: u64| {
            let d = (total - r) as usize;
            if top >= d {
                top - d
            } else {
                top + self.spec.capacity - d
            }
        };
        // Fills c[..last] with the predecessors of c[last], oldest first, repeating the oldest available row at
        // an episode start or where the predecessor was overwritten.
        let back = |c: &mut [usize], last: usize| {
            for k in (0..last).rev() {
                let p = st.meta[c[k + 1]].prev;
                c[k] = if p != NONE && p >= oldest {
                    slot(p)
                } else {
                    c[k + 1]
                };
            }
        };
        let mut chains = vec![0usize; b * w];
        for (i, c) in chains.chunks_exact_mut(w).enumerate() {
            if let Some(&ahead) = slots.get(i + PREFETCH) {
                prefetch(&st.meta[ahead]);
                prefetch(&st.meta[ahead.saturating_sub(kmax - 1)]);
            }
            let t = slots[i];
            c[kmax] = slot(st.meta[t].next);
            c[kmax - 1] = t;
            back(c, kmax - 1);
        }
        // n-step: walk each transition's successors to the end of its return, then chain that row's history.
        let multi = nstep.as_ref().filter(|(ns, _)| ns.n > 1).map(|(ns, _)| *ns);
        let mut returns: Vec<(f32, bool, bool, f32)> = Vec::new();
        let mut next_chains: Vec<usize> = Vec::new();
        if let Some(ns) = multi {
            returns.reserve(b);
            next_chains = vec![0usize; b * w];
            for (i, c) in next_chains.chunks_exact_mut(w).enumerate() {
                let (mut cur, mut sum, mut g, mut steps) = (slots[i], 0.0f32, 1.0f32, 0);
                c[kmax] = loop {
                    // `cur` is a valid start: its successor is stored (it is newer than `cur`).
                    let m = &st.meta[cur];
                    sum += g * m.reward;
                    g *= ns.gamma;
                    steps += 1;
                    let nxt = slot(m.next);
                    if m.terminated || m.truncated || steps == ns.n || st.meta[nxt].next == NONE {
                        returns.push((sum, m.terminated, m.truncated, g));
                        break nxt;
                    }
                    cur = nxt;
                };
                back(c, kmax);
            }
        }
        for ((c, col), dst) in self
            .spec
            .components
            .iter()
            .zip(&st.columns)
            .zip(out.comps.iter_mut())
        {
            let (k, row) = (c.history, c.row_len());
            if multi.is_some() {
                // Windows were refused by `sample_n`.
                match (col, dst) {
                    (
                        Column::U8(src),
                        CompOut::Split {
                            obs: ColumnOut::U8(o),
                            next_obs: ColumnOut::U8(n),
                        },
                    ) => {
                        gather_hist(src, o, &chains, w, kmax, k, row);
                        gather_hist(src, n, &next_chains, w, w, k, row);
                    }
                    (
                        Column::F32(src),
                        CompOut::Split {
                            obs: ColumnOut::F32(o),
                            next_obs: ColumnOut::F32(n),
                        },
                    ) => {
                        gather_hist(src, o, &chains, w, kmax, k, row);
                        gather_hist(src, n, &next_chains, w, w, k, row);
                    }
                    _ => unreachable!("dtypes checked in check_out, windows in sample_n"),
                }
                continue;
            }
            match (col, dst) {
                (
                    Column::U8(src),
                    CompOut::Split {
                        obs: ColumnOut::U8(o),
                        next_obs: ColumnOut::U8(n),
                    },
                ) => gather_split(src, o, n, &chains, w, k, row),
                (
                    Column::F32(src),
                    CompOut::Split {
                        obs: ColumnOut::F32(o),
                        next_obs: ColumnOut::F32(n),
                    },
                ) => gather_split(src, o, n, &chains, w, k, row),
                (Column::U8(src), CompOut::Window(ColumnOut::U8(win))) => {
                    gather_hist(src, win, &chains, w, w, k + 1, row)
                }
                (Column::F32(src), CompOut::Window(ColumnOut::F32(win))) => {
                    gather_hist(src, win, &chains, w, w, k + 1, row)
                }
                _ => unreachable!("dtypes checked in check_out"),
            }
        }
        copy::fence();
        let a = self.spec.action_dim;
        for (i, &t) in slots.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + PREFETCH) {
                prefetch(&st.action[ahead * a]);
            }
            out.action[i * a..(i + 1) * a].copy_from_slice(&st.action[t * a..(t + 1) * a]);
            if let Some(&(sum, terminated, truncated, _)) = returns.get(i) {
                out.reward[i] = sum;
                out.terminated[i] = terminated;
                out.truncated[i] = truncated;
            } else {
                let m = &st.meta[t];
                out.reward[i] = m.reward;
                out.terminated[i] = m.terminated;
                out.truncated[i] = m.truncated;
            }
        }
        if let Some((ns, discount)) = nstep {
            if returns.is_empty() {
                discount.fill(ns.gamma);
            } else {
                for (d, r) in discount.iter_mut().zip(&returns) {
                    *d = r.3;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
