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
//! Concurrency: the storage sits behind a `parking_lot::RwLock`. An append holds the write lock only for the
//! copy of its batch; samplers hold the read lock while they gather one minibatch, so any number of samplers run
//! together and no reader ever sees a half-written row. The RNG sits behind its own mutex, held only to split off
//! a child generator per `sample` call.

mod persist;
mod rng;

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

use crate::error::{CoreError, CoreResult};
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
            Dtype::U8 => Column::U8(vec![0; len]),
            Dtype::F32 => Column::F32(vec![0.0; len]),
        }
    }
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

/// Destination of one sampled minibatch of B transitions (B = `reward.len()`), columnar, in spec order.
#[derive(Debug)]
pub struct SampleOut<'a> {
    pub obs: Vec<ColumnOut<'a>>,
    pub next_obs: Vec<ColumnOut<'a>>,
    pub action: &'a mut [f32],
    pub reward: &'a mut [f32],
    pub terminated: &'a mut [bool],
    pub truncated: &'a mut [bool],
}

/// Everything behind the lock.
#[derive(Debug)]
struct Storage {
    columns: Vec<Column>,
    action: Vec<f32>,
    reward: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    first: Vec<bool>,
    /// Absolute row number of the predecessor in the same episode, or NONE.
    prev: Vec<u64>,
    /// Absolute row number of the successor in the same episode, or NONE.
    next: Vec<u64>,
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
            reward: vec![0.0; cap],
            terminated: vec![false; cap],
            truncated: vec![false; cap],
            first: vec![false; cap],
            prev: vec![NONE; cap],
            next: vec![NONE; cap],
            total: 0,
            valid: 0,
            streams: HashMap::new(),
        }
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
            put(&mut st.reward, b.reward, 1, run_slot, run_start, run_len);
            put(
                &mut st.terminated,
                b.terminated,
                1,
                run_slot,
                run_start,
                run_len,
            );
            put(
                &mut st.truncated,
                b.truncated,
                1,
                run_slot,
                run_start,
                run_len,
            );
        }
        // Metadata, row by row: evict the old occupant, then link the new row into its stream.
        let mut last = st.streams.get(&stream).copied();
        for i in 0..n {
            let r = st.total;
            let s = (r % cap as u64) as usize;
            if st.next[s] != NONE {
                st.valid -= 1; // the evicted row was a valid start
            }
            let is_first = b.first[start + i];
            st.first[s] = is_first;
            st.next[s] = NONE;
            st.prev[s] = NONE;
            if let Some(l) = last {
                // The stream's previous row is linked only inside an episode and only while it is stored.
                if !is_first && l + cap as u64 > r {
                    st.prev[s] = l;
                    st.next[(l % cap as u64) as usize] = r;
                    st.valid += 1;
                }
            }
            last = Some(r);
            st.total = r + 1;
        }
        if let Some(l) = last {
            st.streams.insert(stream, l);
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
        if out.obs.len() != nc || out.next_obs.len() != nc {
            return Err(CoreError::Value(format!(
                "sample: out must hold {nc} obs and {nc} next_obs components"
            )));
        }
        for (prefix, cols) in [("obs", &out.obs), ("next_obs", &out.next_obs)] {
            for (c, col) in self.spec.components.iter().zip(cols.iter()) {
                if col.dtype() != c.dtype {
                    return Err(CoreError::Dtype(format!(
                        "sample: out[\"{prefix}.{}\"] must be {}, not {}",
                        c.name,
                        c.dtype.name(),
                        col.dtype().name()
                    )));
                }
                let want = b * c.history * c.row_len();
                if col.len() != want {
                    return shape(&format!("{prefix}.{}", c.name), col.len(), want);
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

    /// Picks `b` valid transition starts uniformly (with replacement).
    fn pick(&self, st: &Storage, rng: &mut Xoshiro256, b: usize) -> Vec<u64> {
        let cap = self.spec.capacity as u64;
        let len = st.total.min(cap);
        let oldest = st.total - len;
        if st.valid * 8 >= len {
            // Dense: rejection sampling over stored rows (expected <= 8 draws per pick).
            (0..b)
                .map(|_| loop {
                    let r = oldest + rng.below(len);
                    if st.next[(r % cap) as usize] != NONE {
                        break r;
                    }
                })
                .collect()
        } else {
            // Sparse (e.g. many one-step episodes): list the valid starts once.
            let starts: Vec<u64> = (oldest..st.total)
                .filter(|&r| st.next[(r % cap) as usize] != NONE)
                .collect();
            (0..b)
                .map(|_| starts[rng.below(starts.len() as u64) as usize])
                .collect()
        }
    }

    /// Samples `out.reward.len()` valid transitions uniformly into `out`.
    pub fn sample(&self, out: &mut SampleOut<'_>) -> CoreResult<()> {
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
        let rows = self.pick(&st, &mut rng, b);
        let cap = self.spec.capacity as u64;
        let oldest = st.total - st.total.min(cap);
        let kmax = self.spec.max_history();
        let a = self.spec.action_dim;
        let slot = |r: u64| (r % cap) as usize;
        // chain[kmax] = successor, chain[kmax-1] = the sampled row, then its predecessors (oldest first).
        let mut chain = vec![0u64; kmax + 1];
        for (i, &t) in rows.iter().enumerate() {
            chain[kmax] = st.next[slot(t)];
            chain[kmax - 1] = t;
            for k in (0..kmax - 1).rev() {
                let cur = chain[k + 1];
                let p = st.prev[slot(cur)];
                chain[k] = if p != NONE && p >= oldest { p } else { cur };
            }
            for (ci, c) in self.spec.components.iter().enumerate() {
                let k = c.history;
                let row = c.row_len();
                let hist = &chain[kmax - k..];
                match (&st.columns[ci], &mut out.obs[ci], &mut out.next_obs[ci]) {
                    (Column::U8(src), ColumnOut::U8(o), ColumnOut::U8(no)) => {
                        gather(src, o, no, hist, i, row, slot)
                    }
                    (Column::F32(src), ColumnOut::F32(o), ColumnOut::F32(no)) => {
                        gather(src, o, no, hist, i, row, slot)
                    }
                    _ => unreachable!("dtypes checked in check_out"),
                }
            }
            let s = slot(t);
            out.action[i * a..(i + 1) * a].copy_from_slice(&st.action[s * a..(s + 1) * a]);
            out.reward[i] = st.reward[s];
            out.terminated[i] = st.terminated[s];
            out.truncated[i] = st.truncated[s];
        }
        Ok(())
    }
}

/// Writes transition `i`'s history of one component: obs = rows hist[0..k], next_obs = rows hist[1..=k].
/// next_obs shares k-1 steps with obs, copied from the (cache-hot) obs output rather than the ring.
#[inline]
fn gather<T: Copy>(
    src: &[T],
    obs: &mut [T],
    next_obs: &mut [T],
    hist: &[u64],
    i: usize,
    row: usize,
    slot: impl Fn(u64) -> usize,
) {
    let k = hist.len() - 1;
    let o = &mut obs[i * k * row..(i + 1) * k * row];
    for (j, &r) in hist[..k].iter().enumerate() {
        let s = slot(r);
        o[j * row..(j + 1) * row].copy_from_slice(&src[s * row..(s + 1) * row]);
    }
    let no = &mut next_obs[i * k * row..(i + 1) * k * row];
    no[..(k - 1) * row].copy_from_slice(&o[row..]);
    let s = slot(hist[k]);
    no[(k - 1) * row..].copy_from_slice(&src[s * row..(s + 1) * row]);
}

#[cfg(test)]
mod tests;
