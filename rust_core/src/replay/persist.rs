//! Saving and loading a ring: a directory of raw little-endian arrays plus `header.json`.
//!
//! Layout (format version 1): `header.json` (format, version, layout, counters, stream heads, RNG state, and a
//! checksum of every array file) and one file per array holding the stored slots `0..len` in slot order:
//! `obs_<i>.bin` (component i, uint8 or float32), `action.bin`, `reward.bin` (float32), `terminated.bin`,
//! `truncated.bin`, `first.bin` (one byte 0/1 per row), `prev.bin`, `next.bin` (uint64 row numbers,
//! `u64::MAX` = none). A save writes `<dir>.tmp-<pid>` completely (fsynced), then moves it into place: an
//! existing `<dir>` is first renamed to `<dir>.old-<pid>` and removed only after the new one is in place, so a
//! complete copy exists at every moment. Loading checks the version, every size, every checksum and the
//! consistency of the links, and names the offending path in its error.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{Column, ComponentSpec, Dtype, Meta, ReplayRing, RingSpec, Storage, Xoshiro256, NONE};
use crate::error::{CoreError, CoreResult};

pub const FORMAT: &str = "tmrl.replay_ring";
pub const VERSION: u32 = 1;
const CHUNK: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct ComponentHeader {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    history: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    capacity: usize,
    action_dim: usize,
    components: Vec<ComponentHeader>,
    total_appended: u64,
    len: usize,
    /// (stream id, last row appended by it)
    streams: Vec<(u64, u64)>,
    rng_state: [u64; 4],
    /// file name -> checksum (hex) of its bytes
    checksums: HashMap<String, String>,
}

/// A 64-bit checksum over bytes, eight at a time (fast enough for GiB-sized arrays; catches truncation, bit
/// flips and swapped blocks, not adversaries).
#[derive(Clone, Copy)]
struct Checksum(u64, u64);

impl Checksum {
    fn new() -> Self {
        Checksum(0x243F_6A88_85A3_08D3, 0)
    }
    fn update(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            self.0 = (self.0 ^ v)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
        for &byte in words.remainder() {
            self.0 = (self.0 ^ byte as u64)
                .wrapping_mul(0xFF51_AFD7_ED55_8CCD)
                .rotate_left(31);
        }
        self.1 += bytes.len() as u64;
    }
    fn hex(self) -> String {
        let mut z = self.0 ^ self.1.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        format!("{:016x}", z ^ (z >> 33))
    }
}

/// Little-endian byte encoding of the element types stored on disk.
trait Raw: Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Option<Self>;
}

impl Raw for u8 {
    const SIZE: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self);
    }
    fn get(b: &[u8]) -> Option<Self> {
        Some(b[0])
    }
}

impl Raw for bool {
    const SIZE: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get(b: &[u8]) -> Option<Self> {
        match b[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Raw for f32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Option<Self> {
        Some(f32::from_le_bytes(b.try_into().ok()?))
    }
}

impl Raw for u64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Option<Self> {
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Io(format!("{}: {what}: {e}", path.display()))
}

fn write_array<T: Raw>(
    dir: &Path,
    name: &str,
    data: &[T],
    sums: &mut HashMap<String, String>,
) -> CoreResult<()> {
    let path = dir.join(name);
    let file = File::create(&path).map_err(|e| io_err(&path, "cannot create", e))?;
    let mut w = BufWriter::with_capacity(CHUNK, file);
    let mut sum = Checksum::new();
    let mut buf = Vec::with_capacity(CHUNK);
    for chunk in data.chunks(CHUNK / T::SIZE) {
        buf.clear();
        for &v in chunk {
            v.put(&mut buf);
        }
        sum.update(&buf);
        w.write_all(&buf)
            .map_err(|e| io_err(&path, "cannot write", e))?;
    }
    let file = w
        .into_inner()
        .map_err(|e| io_err(&path, "cannot write", e.error()))?;
    file.sync_all()
        .map_err(|e| io_err(&path, "cannot sync", e))?;
    sums.insert(name.to_owned(), sum.hex());
    Ok(())
}

/// Reads `name` into `dst` (exactly `dst.len()` elements), checking its size, checksum and values.
fn read_array<T: Raw>(
    dir: &Path,
    name: &str,
    dst: &mut [T],
    sums: &HashMap<String, String>,
) -> CoreResult<()> {
    let path = dir.join(name);
    let file = File::open(&path)
        .map_err(|e| io_err(&path, "cannot open (the saved ring is incomplete)", e))?;
    let size = file
        .metadata()
        .map_err(|e| io_err(&path, "cannot stat", e))?
        .len();
    let want = (dst.len() * T::SIZE) as u64;
    if size != want {
        return Err(io_err(
            &path,
            "corrupt",
            format!("{size} bytes, header.json implies {want}"),
        ));
    }
    let mut r = BufReader::with_capacity(CHUNK, file);
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK - CHUNK % T::SIZE];
    for chunk in dst.chunks_mut(CHUNK / T::SIZE) {
        let bytes = &mut buf[..chunk.len() * T::SIZE];
        r.read_exact(bytes)
            .map_err(|e| io_err(&path, "cannot read", e))?;
        sum.update(bytes);
        for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
            *v = T::get(b).ok_or_else(|| io_err(&path, "corrupt", "a value is not 0 or 1"))?;
        }
    }
    match sums.get(name) {
        Some(s) if *s == sum.hex() => Ok(()),
        Some(_) => Err(io_err(&path, "corrupt", "checksum mismatch")),
        None => Err(io_err(
            &path,
            "corrupt",
            "header.json lists no checksum for it",
        )),
    }
}

fn sibling(dir: &Path, suffix: &str) -> CoreResult<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        CoreError::Io(format!(
            "{}: not a directory name to save into",
            dir.display()
        ))
    })?;
    let mut n = name.to_os_string();
    n.push(format!(".{suffix}-{}", std::process::id()));
    Ok(dir.with_file_name(n))
}

impl ReplayRing {
    /// Writes the ring into `dir` atomically (see the module docs). Appends wait while it runs; samples don't.
    pub fn save(&self, dir: &Path) -> CoreResult<()> {
        let tmp = sibling(dir, "tmp")?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| io_err(&tmp, "cannot remove a stale temporary directory", e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        let result = self.write_into(&tmp).and_then(|()| replace_dir(&tmp, dir));
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_into(&self, tmp: &Path) -> CoreResult<()> {
        let spec = &self.spec;
        let rng_state = self.rng.lock().state();
        let st = self.storage.read();
        let len = st.total.min(spec.capacity as u64) as usize;
        let mut sums = HashMap::new();
        for (i, (c, col)) in spec.components.iter().zip(&st.columns).enumerate() {
            let name = format!("obs_{i}.bin");
            let n = len * c.row_len();
            match col {
                Column::U8(v) => write_array(tmp, &name, &v[..n], &mut sums)?,
                Column::F32(v) => write_array(tmp, &name, &v[..n], &mut sums)?,
            }
        }
        write_array(
            tmp,
            "action.bin",
            &st.action[..len * spec.action_dim],
            &mut sums,
        )?;
        let meta = &st.meta[..len];
        let field = |f: fn(&Meta) -> bool| meta.iter().map(f).collect::<Vec<bool>>();
        let reward: Vec<f32> = meta.iter().map(|m| m.reward).collect();
        write_array(tmp, "reward.bin", &reward, &mut sums)?;
        write_array(tmp, "terminated.bin", &field(|m| m.terminated), &mut sums)?;
        write_array(tmp, "truncated.bin", &field(|m| m.truncated), &mut sums)?;
        write_array(tmp, "first.bin", &field(|m| m.first), &mut sums)?;
        let prev: Vec<u64> = meta.iter().map(|m| m.prev).collect();
        write_array(tmp, "prev.bin", &prev, &mut sums)?;
        let next: Vec<u64> = meta.iter().map(|m| m.next).collect();
        write_array(tmp, "next.bin", &next, &mut sums)?;
        let mut streams: Vec<(u64, u64)> = st.streams.iter().map(|(&s, &l)| (s, l)).collect();
        streams.sort_unstable();
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            capacity: spec.capacity,
            action_dim: spec.action_dim,
            components: spec
                .components
                .iter()
                .map(|c| ComponentHeader {
                    name: c.name.clone(),
                    shape: c.shape.clone(),
                    dtype: c.dtype.name().into(),
                    history: c.history,
                })
                .collect(),
            total_appended: st.total,
            len,
            streams,
            rng_state,
            checksums: sums,
        };
        drop(st);
        let path = tmp.join("header.json");
        let text =
            serde_json::to_string_pretty(&header).map_err(|e| io_err(&path, "cannot encode", e))?;
        let mut f = File::create(&path).map_err(|e| io_err(&path, "cannot create", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io_err(&path, "cannot write", e))?;
        f.sync_all().map_err(|e| io_err(&path, "cannot sync", e))?;
        Ok(())
    }

    /// Loads a ring written by [`ReplayRing::save`]. `seed` replaces the saved RNG state when given.
    pub fn load(dir: &Path, seed: Option<u64>) -> CoreResult<Self> {
        if !dir.is_dir() {
            return Err(CoreError::Io(format!(
                "{}: no saved replay ring here (not a directory)",
                dir.display()
            )));
        }
        let path = dir.join("header.json");
        let text = fs::read_to_string(&path)
            .map_err(|e| io_err(&path, "cannot read the ring header", e))?;
        let h: Header = serde_json::from_str(&text)
            .map_err(|e| io_err(&path, "corrupt ring header (not the expected JSON)", e))?;
        if h.format != FORMAT {
            return Err(io_err(
                &path,
                "not a replay ring header",
                format!("format {:?}", h.format),
            ));
        }
        if h.version != VERSION {
            return Err(io_err(
                &path,
                "incompatible replay ring",
                format!(
                    "format version {}, this tmrl reads version {VERSION}",
                    h.version
                ),
            ));
        }
        let components = h
            .components
            .iter()
            .map(|c| {
                Ok(ComponentSpec::new(
                    &c.name,
                    &c.shape,
                    Dtype::parse(&c.dtype)?,
                    c.history,
                ))
            })
            .collect::<CoreResult<Vec<_>>>()
            .and_then(|cs| RingSpec::new(h.capacity, cs, h.action_dim))
            .map_err(|e| io_err(&path, "invalid ring layout", e))?;
        let spec = components;
        let cap = spec.capacity as u64;
        if h.len as u64 != h.total_appended.min(cap) {
            return Err(io_err(
                &path,
                "corrupt",
                "len does not match total_appended and capacity",
            ));
        }
        let len = h.len;
        let mut st = Storage::new(&spec);
        for (i, (c, col)) in spec
            .components
            .iter()
            .zip(st.columns.iter_mut())
            .enumerate()
        {
            let n = len * c.row_len();
            let name = format!("obs_{i}.bin");
            match col {
                Column::U8(v) => read_array(dir, &name, &mut v[..n], &h.checksums)?,
                Column::F32(v) => read_array(dir, &name, &mut v[..n], &h.checksums)?,
            }
        }
        read_array(
            dir,
            "action.bin",
            &mut st.action[..len * spec.action_dim],
            &h.checksums,
        )?;
        let (mut reward, mut prev, mut next) = (vec![0f32; len], vec![0u64; len], vec![0u64; len]);
        let (mut terminated, mut truncated, mut first) =
            (vec![false; len], vec![false; len], vec![false; len]);
        read_array(dir, "reward.bin", &mut reward, &h.checksums)?;
        read_array(dir, "terminated.bin", &mut terminated, &h.checksums)?;
        read_array(dir, "truncated.bin", &mut truncated, &h.checksums)?;
        read_array(dir, "first.bin", &mut first, &h.checksums)?;
        read_array(dir, "prev.bin", &mut prev, &h.checksums)?;
        read_array(dir, "next.bin", &mut next, &h.checksums)?;
        for (i, m) in st.meta[..len].iter_mut().enumerate() {
            *m = Meta {
                prev: prev[i],
                next: next[i],
                reward: reward[i],
                terminated: terminated[i],
                truncated: truncated[i],
                first: first[i],
            };
        }
        st.total = h.total_appended;
        st.valid =
            check_links(&st, cap).map_err(|m| io_err(&dir.join("next.bin"), "corrupt links", m))?;
        for &(s, last) in &h.streams {
            if last >= st.total {
                return Err(io_err(
                    &path,
                    "corrupt",
                    format!("stream {s} ends at row {last} >= total_appended"),
                ));
            }
            st.streams.insert(s, last);
        }
        let rng = match seed {
            Some(s) => Xoshiro256::from_seed(s),
            None => Xoshiro256::from_state(h.rng_state)
                .ok_or_else(|| io_err(&path, "corrupt", "rng_state is all zero"))?,
        };
        Ok(Self {
            spec,
            storage: RwLock::new(st),
            rng: Mutex::new(rng),
        })
    }
}

/// Checks that every stored link is consistent; returns the number of valid transition starts.
fn check_links(st: &Storage, cap: u64) -> Result<u64, String> {
    let len = st.total.min(cap);
    let oldest = st.total - len;
    let slot = |r: u64| (r % cap) as usize;
    let mut valid = 0;
    for r in oldest..st.total {
        let m = &st.meta[slot(r)];
        let (p, n) = (m.prev, m.next);
        if p != NONE && (p >= r || m.first || (p >= oldest && st.meta[slot(p)].next != r)) {
            return Err(format!("row {r} has an impossible predecessor {p}"));
        }
        if n != NONE {
            let nm = &st.meta[slot(n)];
            if n <= r || n >= st.total || nm.prev != r || nm.first {
                return Err(format!("row {r} has an impossible successor {n}"));
            }
            valid += 1;
        }
    }
    Ok(valid)
}

/// Moves the complete directory `tmp` to `dir`, keeping a complete copy on disk at every moment.
fn replace_dir(tmp: &Path, dir: &Path) -> CoreResult<()> {
    if dir.exists() {
        if !dir.join("header.json").is_file()
            && fs::read_dir(dir).map_or(true, |mut d| d.next().is_some())
        {
            return Err(CoreError::Io(format!(
                "{}: exists and is not a saved replay ring; refusing to replace it (choose another directory)",
                dir.display()
            )));
        }
        let old = sibling(dir, "old")?;
        if old.exists() {
            fs::remove_dir_all(&old)
                .map_err(|e| io_err(&old, "cannot remove a stale directory", e))?;
        }
        fs::rename(dir, &old).map_err(|e| io_err(dir, "cannot move the previous save aside", e))?;
        fs::rename(tmp, dir).map_err(|e| io_err(dir, "cannot move the new save into place", e))?;
        fs::remove_dir_all(&old).map_err(|e| io_err(&old, "cannot remove the previous save", e))?;
    } else {
        fs::rename(tmp, dir).map_err(|e| io_err(dir, "cannot move the new save into place", e))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all(); // make the renames durable where the platform allows it
        }
    }
    Ok(())
}
