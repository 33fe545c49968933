//! Frame post-processing: captured frame (BGR/BGRA/RGB/RGBA, any size) -> resized grayscale or RGB, and a ring of
//! the last K processed frames whose oldest -> newest view is one contiguous slice.
//!
//! Resizing follows OpenCV's `cv2.resize` geometry: INTER_AREA's pixel-area weights when shrinking (the same
//! table as OpenCV's `computeResizeAreaTab`, and its "area mode" linear weights when any axis grows), INTER_LINEAR's
//! half-pixel-centre bilinear weights quantised to 1/2048 like OpenCV's 8-bit path. Gray uses OpenCV's
//! `cvtColor` weights (0.299 R + 0.587 G + 0.114 B as 4899, 9617, 1868 / 16384). The colour conversion and both
//! resampling axes are fused in f32 and rounded once, so the result lies within one level of either
//! `cvtColor(resize(x))` or `resize(cvtColor(x))`.

use crate::error::{CoreError, CoreResult};

/// Channel layout of a captured frame (H x W x C, uint8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Bgr,
    Bgra,
    Rgb,
    Rgba,
}

impl ChannelOrder {
    /// Parse the name used by the Python API: `"bgr"`, `"bgra"`, `"rgb"` or `"rgba"`.
    pub fn from_name(name: &str) -> CoreResult<Self> {
        match name {
            "bgr" => Ok(ChannelOrder::Bgr),
            "bgra" => Ok(ChannelOrder::Bgra),
            "rgb" => Ok(ChannelOrder::Rgb),
            "rgba" => Ok(ChannelOrder::Rgba),
            other => Err(CoreError::Value(format!(
                "channel_order must be one of 'bgr', 'bgra', 'rgb', 'rgba', got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChannelOrder::Bgr => "bgr",
            ChannelOrder::Bgra => "bgra",
            ChannelOrder::Rgb => "rgb",
            ChannelOrder::Rgba => "rgba",
        }
    }

    /// Bytes per pixel: 3 or 4.
    pub fn channels(self) -> usize {
        match self {
            ChannelOrder::Bgr | ChannelOrder::Rgb => 3,
            ChannelOrder::Bgra | ChannelOrder::Rgba => 4,
        }
    }

    /// Positions of red, green and blue within a pixel.
    pub fn rgb_index(self) -> [usize; 3] {
        match self {
            ChannelOrder::Bgr | ChannelOrder::Bgra => [2, 1, 0],
            ChannelOrder::Rgb | ChannelOrder::Rgba => [0, 1, 2],
        }
    }
}

/// Resampling filter, named after OpenCV's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `INTER_AREA`: pixel-area averaging when shrinking.
    Area,
    /// `INTER_LINEAR`: bilinear with half-pixel centres.
    Bilinear,
}

impl Interpolation {
    pub fn from_name(name: &str) -> CoreResult<Self> {
        match name {
            "area" => Ok(Interpolation::Area),
            "bilinear" => Ok(Interpolation::Bilinear),
            other => Err(CoreError::Value(format!(
                "interpolation must be 'area' or 'bilinear', got {other:?}"
            ))),
        }
    }
}

/// What a processed frame looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub height: usize,
    pub width: usize,
    pub channel_order: ChannelOrder,
    pub grayscale: bool,
    pub interpolation: Interpolation,
}

impl FrameSpec {
    /// Bytes of one processed frame: height * width (gray) or height * width * 3 (RGB).
    pub fn out_len(&self) -> usize {
        self.height * self.width * if self.grayscale { 1 } else { 3 }
    }

    fn check(&self) -> CoreResult<()> {
        if self.height == 0 || self.width == 0 {
            return Err(CoreError::Value(format!(
                "target size must be positive, got {}x{}",
                self.height, self.width
            )));
        }
        Ok(())
    }
}

/// Taps of one resampling axis: output `i` reads `idx[start[i]..start[i + 1]]` with `weight[...]`.
#[derive(Debug, Clone, Default)]
struct Taps {
    start: Vec<usize>,
    idx: Vec<usize>,
    weight: Vec<f32>,
}

impl Taps {
    fn push_output(&mut self) {
        self.start.push(self.idx.len());
    }
    fn tap(&mut self, i: usize, w: f32) {
        self.idx.push(i);
        self.weight.push(w);
    }
    fn finish(mut self) -> Self {
        self.start.push(self.idx.len());
        self
    }
    fn of(&self, i: usize) -> (&[usize], &[f32]) {
        let (a, b) = (self.start[i], self.start[i + 1]);
        (&self.idx[a..b], &self.weight[a..b])
    }

    /// OpenCV's `computeResizeAreaTab` for a shrinking axis (`scale = src / dst >= 1`).
    fn area(src: usize, dst: usize, scale: f64) -> Self {
        let mut t = Taps::default();
        for dx in 0..dst {
            t.push_output();
            let fsx1 = dx as f64 * scale;
            let fsx2 = fsx1 + scale;
            let cell = scale.min(src as f64 - fsx1);
            let mut sx2 = fsx2.floor() as i64;
            sx2 = sx2.min(src as i64 - 1);
            let sx1 = (fsx1.ceil() as i64).min(sx2);
            if sx1 as f64 - fsx1 > 1e-3 {
                t.tap((sx1 - 1) as usize, ((sx1 as f64 - fsx1) / cell) as f32);
            }
            for sx in sx1..sx2 {
                t.tap(sx as usize, (1.0 / cell) as f32);
            }
            if fsx2 - sx2 as f64 > 1e-3 {
                t.tap(
                    sx2 as usize,
                    ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
                );
            }
        }
        t.finish()
    }

    /// OpenCV's two-tap linear weights: half-pixel centres (`INTER_LINEAR`) or its "area mode" (`INTER_AREA`
    /// on a growing axis), clamped at the edges, quantised to 1/2048 like its 8-bit fixed-point path.
    fn linear(src: usize, dst: usize, area_mode: bool) -> Self {
        let inv_scale = dst as f64 / src as f64;
        let scale = 1.0 / inv_scale;
        let last = src as i64 - 1;
        let mut t = Taps::default();
        for dx in 0..dst {
            t.push_output();
            let (mut sx, mut fx);
            if area_mode {
                sx = (dx as f64 * scale).floor() as i64;
                fx = ((dx + 1) as f64 - (sx + 1) as f64 * inv_scale) as f32;
                fx = if fx <= 0.0 { 0.0 } else { fx - fx.floor() };
            } else {
                fx = ((dx as f64 + 0.5) * scale - 0.5) as f32;
                sx = fx.floor() as i64;
                fx -= sx as f32;
            }
            if sx < 0 {
                sx = 0;
                fx = 0.0;
            }
            if sx >= last {
                sx = last;
                fx = 0.0;
            }
            let w1 = (fx * 2048.0).round_ties_even() / 2048.0;
            let w0 = ((1.0 - fx) * 2048.0).round_ties_even() / 2048.0;
            t.tap(sx as usize, w0);
            if w1 != 0.0 {
                t.tap((sx + 1).min(last) as usize, w1);
            }
        }
        t.finish()
    }

    fn build(src: usize, dst: usize, interp: Interpolation, shrinking_both: bool) -> Self {
        match interp {
            Interpolation::Area if shrinking_both => {
                Taps::area(src, dst, 1.0 / (dst as f64 / src as f64))
            }
            Interpolation::Area => Taps::linear(src, dst, true),
            Interpolation::Bilinear => Taps::linear(src, dst, false),
        }
    }
}

/// OpenCV's fixed-point gray weights (R, G, B) / 16384.
const GRAY_R: f32 = 4899.0 / 16384.0;
const GRAY_G: f32 = 9617.0 / 16384.0;
const GRAY_B: f32 = 1868.0 / 16384.0;

/// Resamples frames of one source size to a [`FrameSpec`]; holds its weight tables and a scratch row.
#[derive(Debug, Clone)]
pub struct Resizer {
    spec: FrameSpec,
    src_h: usize,
    src_w: usize,
    yt: Taps,
    /// Horizontal kernels: output column `ox`, plane `p` is the dot product of
    /// `acc[hstart[ox]..hstart[ox] + hlen]` with `hw[(ox * planes + p) * hlen..][..hlen]`; the weights fold the
    /// horizontal taps with the gray (or channel-selection) weights of every byte of the span.
    hstart: Vec<usize>,
    hw: Vec<f32>,
    hlen: usize,
    /// Byte offsets of the source rows feeding the current output row (scratch).
    rows: Vec<usize>,
    /// The current output row's tap rows combined vertically (`src_w * C` values, then `hlen` zeros).
    acc: Vec<f32>,
    /// The CPU has AVX2: run the same code compiled for it.
    avx2: bool,
}

impl Resizer {
    pub fn new(spec: FrameSpec, src_h: usize, src_w: usize) -> CoreResult<Self> {
        spec.check()?;
        if src_h == 0 || src_w == 0 {
            return Err(CoreError::Shape(format!(
                "the frame is empty ({src_h}x{src_w})"
            )));
        }
        let shrinking_both = src_w >= spec.width && src_h >= spec.height;
        let xt = Taps::build(src_w, spec.width, spec.interpolation, shrinking_both);
        let yt = Taps::build(src_h, spec.height, spec.interpolation, shrinking_both);
        let c = spec.channel_order.channels();
        let [ri, gi, bi] = spec.channel_order.rgb_index();
        // Per-byte weights of each output plane: gray weights, or one-hot R, G, B.
        let planes: Vec<Vec<f32>> = if spec.grayscale {
            let mut k = vec![0.0; c];
            (k[ri], k[gi], k[bi]) = (GRAY_R, GRAY_G, GRAY_B);
            vec![k]
        } else {
            [ri, gi, bi]
                .iter()
                .map(|&i| (0..c).map(|j| if j == i { 1.0 } else { 0.0 }).collect())
                .collect()
        };
        let max_taps = (0..spec.width)
            .map(|ox| xt.of(ox).0.len())
            .max()
            .unwrap_or(1);
        let hlen = (max_taps * c).div_ceil(LANES) * LANES;
        let mut hstart = Vec::with_capacity(spec.width);
        let mut hw = vec![0.0f32; spec.width * planes.len() * hlen];
        for ox in 0..spec.width {
            let (xs, xw) = xt.of(ox);
            // Taps of one output are consecutive source columns (area and linear alike).
            let first = xs[0];
            hstart.push(first * c);
            for (p, k) in planes.iter().enumerate() {
                let kernel = &mut hw[(ox * planes.len() + p) * hlen..][..hlen];
                for (&sx, &wx) in xs.iter().zip(xw) {
                    for j in 0..c {
                        kernel[(sx - first) * c + j] += wx * k[j];
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Ok(Resizer {
            spec,
            src_h,
            src_w,
            yt,
            hstart,
            hw,
            hlen,
            rows: Vec::new(),
            acc: vec![0.0; src_w * c + hlen],
            avx2,
        })
    }

    pub fn spec(&self) -> &FrameSpec {
        &self.spec
    }

    /// Source (height, width) this resizer was built for.
    pub fn source_size(&self) -> (usize, usize) {
        (self.src_h, self.src_w)
    }

    /// Bytes of one source frame.
    pub fn src_len(&self) -> usize {
        self.src_h * self.src_w * self.spec.channel_order.channels()
    }

    /// Resize `src` (src_h x src_w x C bytes) into `dst` (`spec.out_len()` bytes).
    pub fn resize_into(&mut self, src: &[u8], dst: &mut [u8]) -> CoreResult<()> {
        if src.len() != self.src_len() {
            return Err(CoreError::Shape(format!(
                "frame has {} bytes, expected {}x{}x{} = {}",
                src.len(),
                self.src_h,
                self.src_w,
                self.spec.channel_order.channels(),
                self.src_len()
            )));
        }
        if dst.len() != self.spec.out_len() {
            return Err(CoreError::Shape(format!(
                "output has {} bytes, expected {}",
                dst.len(),
                self.spec.out_len()
            )));
        }
        let row_len = self.src_w * self.spec.channel_order.channels();
        let planes = spec_planes(&self.spec);
        let out_row = self.spec.width * planes;
        for (oy, out) in dst.chunks_exact_mut(out_row).enumerate() {
            let (ys, wy) = self.yt.of(oy);
            self.rows.clear();
            self.rows.extend(ys.iter().map(|&sy| sy * row_len));
            let row = OutputRow {
                src,
                rows: &self.rows,
                wy,
                hstart: &self.hstart,
                hw: &self.hw,
                hlen: self.hlen,
                planes,
                row_len,
            };
            #[cfg(target_arch = "x86_64")]
            if self.avx2 {
                // SAFETY: `avx2` is true only when the running CPU reported AVX2 support.
                unsafe { row.run_avx2(&mut self.acc, out) };
                continue;
            }
            row.run_portable(&mut self.acc, out);
        }
        Ok(())
    }
}

/// One output row: the tap rows are combined vertically over the whole row (contiguous, 8 bytes at a time), then
/// each output value is the dot product of its kernel (horizontal taps with the gray weights folded in) with a
/// span of that row. Both implementations use the same operation order, so they give identical results.
struct OutputRow<'a> {
    src: &'a [u8],
    /// Byte offsets of the tap rows and their weights.
    rows: &'a [usize],
    wy: &'a [f32],
    hstart: &'a [usize],
    hw: &'a [f32],
    hlen: usize,
    planes: usize,
    row_len: usize,
}

impl OutputRow<'_> {
    fn run_portable(&self, acc: &mut [f32], out: &mut [u8]) {
        let (hlen, planes, row_len) = (self.hlen, self.planes, self.row_len);
        let acc_row = &mut acc[..row_len];
        acc_row.fill(0.0);
        for (&r, &w) in self.rows.iter().zip(self.wy) {
            for (a, &b) in acc_row.iter_mut().zip(&self.src[r..r + row_len]) {
                *a += w * b as f32;
            }
        }
        for (ox, &start) in self.hstart.iter().enumerate() {
            for p in 0..planes {
                let mut l = [0.0f32; LANES];
                let kernel = &self.hw[(ox * planes + p) * hlen..][..hlen];
                for (a, k) in acc[start..start + hlen]
                    .chunks_exact(LANES)
                    .zip(kernel.chunks_exact(LANES))
                {
                    for i in 0..LANES {
                        l[i] += a[i] * k[i];
                    }
                }
                let s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
                // Every weight is >= 0: + 0.5 then the saturating `as u8` rounds to nearest.
                out[ox * planes + p] = (s + 0.5) as u8;
            }
        }
    }

    /// [`Self::run_portable`] with AVX2 registers; the lane sums of 8 output values are reduced together.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, acc: &mut [f32], out: &mut [u8]) {
        use std::arch::x86_64::*;
        let (hlen, planes, row_len) = (self.hlen, self.planes, self.row_len);
        assert!(self.rows.len() == self.wy.len() && acc.len() == row_len + hlen);
        assert!(self.rows.iter().all(|&r| r + row_len <= self.src.len()));
        assert!(
            self.hw.len() == self.hstart.len() * planes * hlen
                && out.len() == self.hstart.len() * planes
        );
        assert!(hlen % LANES == 0 && self.hstart.iter().all(|&s| s + hlen <= acc.len()));
        // Vertical: acc[i] = 0 + w0 * row0[i] + w1 * row1[i] + ..., one streaming pass per tap row.
        let src = self.src.as_ptr();
        let accp = acc.as_mut_ptr();
        let full = row_len / LANES * LANES;
        for (t, (&r, &w)) in self.rows.iter().zip(self.wy).enumerate() {
            let wv = _mm256_set1_ps(w);
            let mut i = 0;
            while i < full {
                // SAFETY: r + i + LANES <= r + row_len <= src.len() and i + LANES <= acc.len() (asserted above).
                unsafe {
                    let b = _mm_loadl_epi64(src.add(r + i).cast::<__m128i>());
                    let x = _mm256_mul_ps(wv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
                    let prev = if t == 0 {
                        _mm256_setzero_ps()
                    } else {
                        _mm256_loadu_ps(accp.add(i))
                    };
                    _mm256_storeu_ps(accp.add(i), _mm256_add_ps(prev, x));
                }
                i += LANES;
            }
            for (k, a) in acc[full..row_len].iter_mut().enumerate() {
                let prev = if t == 0 { 0.0 } else { *a };
                *a = prev + w * self.src[r + full + k] as f32;
            }
        }
        // SAFETY: same contract.
        unsafe {
            match planes {
                1 => self.horizontal_avx2::<1>(acc, out),
                _ => self.horizontal_avx2::<3>(acc, out),
            }
        }
    }

    /// One lane vector per output value, reduced 8 at a time with a hadd tree:
    /// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), as in `run_portable`.
    ///
    /// # Safety
    /// The CPU must support AVX2; the bounds asserted by `run_avx2` hold.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn horizontal_avx2<const P: usize>(&self, acc: &[f32], out: &mut [u8]) {
        use std::arch::x86_64::*;
        let hlen = self.hlen;
        let accp = acc.as_ptr();
        let hw = self.hw.as_ptr();
        let mut pending = [_mm256_setzero_ps(); 8];
        let n_out = out.len();
        let mut o = 0;
        while o < n_out {
            let n = (n_out - o).min(8);
            for (q, slot) in pending.iter_mut().enumerate() {
                if q >= n {
                    *slot = _mm256_setzero_ps();
                    continue;
                }
                let start = self.hstart[(o + q) / P];
                let mut l = _mm256_setzero_ps();
                let mut j = 0;
                while j < hlen {
                    // SAFETY: start + hlen <= acc.len() and the kernel of output value o + q spans
                    // hw[(o + q) * hlen..][..hlen] (asserted by `run_avx2`); j + LANES <= hlen.
                    let (a, k) = unsafe {
                        (
                            _mm256_loadu_ps(accp.add(start + j)),
                            _mm256_loadu_ps(hw.add((o + q) * hlen + j)),
                        )
                    };
                    l = _mm256_add_ps(l, _mm256_mul_ps(a, k));
                    j += LANES;
                }
                *slot = l;
            }
            let h01 = _mm256_hadd_ps(pending[0], pending[1]);
            let h23 = _mm256_hadd_ps(pending[2], pending[3]);
            let h45 = _mm256_hadd_ps(pending[4], pending[5]);
            let h67 = _mm256_hadd_ps(pending[6], pending[7]);
            let q03 = _mm256_hadd_ps(h01, h23);
            let q47 = _mm256_hadd_ps(h45, h67);
            let lo = _mm256_permute2f128_ps::<0x20>(q03, q47);
            let hi = _mm256_permute2f128_ps::<0x31>(q03, q47);
            let mut sums = [0.0f32; 8];
            // SAFETY: `sums` holds 8 f32.
            unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), _mm256_add_ps(lo, hi)) };
            for (d, s) in out[o..o + n].iter_mut().zip(sums) {
                *d = (s + 0.5) as u8;
            }
            o += n;
        }
    }
}

fn spec_planes(spec: &FrameSpec) -> usize {
    if spec.grayscale {
        1
    } else {
        3
    }
}

/// Width of the independent accumulators of the horizontal dot products (one AVX register of f32).
const LANES: usize = 8;

/// Resize one frame (src_h x src_w x C bytes) to `spec` as a new buffer.
pub fn resize_frame(
    src: &[u8],
    src_h: usize,
    src_w: usize,
    spec: FrameSpec,
) -> CoreResult<Vec<u8>> {
    let mut r = Resizer::new(spec, src_h, src_w)?;
    let mut out = vec![0; spec.out_len()];
    r.resize_into(src, &mut out)?;
    Ok(out)
}

/// The last `history` processed frames in a ring of `2 * history` slots: each frame is written at slot `i` and
/// `i + history`, so the oldest -> newest view is always the contiguous slots `[i + 1, i + 1 + history)`.
#[derive(Debug, Clone)]
pub struct FrameHistory {
    spec: FrameSpec,
    history: usize,
    buf: Vec<u8>,
    /// Slot (in `0..history`) of the newest frame.
    newest: usize,
    resizer: Option<Resizer>,
}

impl FrameHistory {
    pub fn new(spec: FrameSpec, history: usize) -> CoreResult<Self> {
        spec.check()?;
        if history == 0 {
            return Err(CoreError::Value("history must be at least 1".into()));
        }
        Ok(FrameHistory {
            spec,
            history,
            buf: vec![0; 2 * history * spec.out_len()],
            newest: history - 1,
            resizer: None,
        })
    }

    pub fn spec(&self) -> &FrameSpec {
        &self.spec
    }

    pub fn history(&self) -> usize {
        self.history
    }

    fn resizer(&mut self, src_h: usize, src_w: usize) -> CoreResult<&mut Resizer> {
        let stale = self
            .resizer
            .as_ref()
            .is_none_or(|r| r.source_size() != (src_h, src_w));
        if stale {
            self.resizer = Some(Resizer::new(self.spec, src_h, src_w)?);
        }
        Ok(self.resizer.as_mut().expect("just built"))
    }

    fn write_slot(
        &mut self,
        slot: usize,
        src: &[u8],
        src_h: usize,
        src_w: usize,
    ) -> CoreResult<()> {
        let n = self.spec.out_len();
        let k = self.history;
        let mut tmp = std::mem::take(&mut self.buf);
        let res = self
            .resizer(src_h, src_w)
            .and_then(|r| r.resize_into(src, &mut tmp[slot * n..(slot + 1) * n]));
        if res.is_ok() {
            tmp.copy_within(slot * n..(slot + 1) * n, (slot + k) * n);
        }
        self.buf = tmp;
        res
    }

    /// Process `src` into the newest slot; the view then ends with it.
    pub fn push(&mut self, src: &[u8], src_h: usize, src_w: usize) -> CoreResult<()> {
        let slot = (self.newest + 1) % self.history;
        self.write_slot(slot, src, src_h, src_w)?;
        self.newest = slot;
        Ok(())
    }

    /// Fill every slot with `src` processed (start of an episode).
    pub fn reset(&mut self, src: &[u8], src_h: usize, src_w: usize) -> CoreResult<()> {
        self.write_slot(0, src, src_h, src_w)?;
        let n = self.spec.out_len();
        for s in 1..2 * self.history {
            self.buf.copy_within(0..n, s * n);
        }
        self.newest = self.history - 1;
        Ok(())
    }

    /// The history, oldest -> newest, as `history * out_len` contiguous bytes.
    pub fn view(&self) -> &[u8] {
        let n = self.spec.out_len();
        let a = (self.newest + 1) * n;
        &self.buf[a..a + self.history * n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        h: usize,
        w: usize,
        order: ChannelOrder,
        gray: bool,
        interp: Interpolation,
    ) -> FrameSpec {
        FrameSpec {
            height: h,
            width: w,
            channel_order: order,
            grayscale: gray,
            interpolation: interp,
        }
    }

    fn gray_ref(r: u8, g: u8, b: u8) -> u8 {
        ((r as u32 * 4899 + g as u32 * 9617 + b as u32 * 1868 + 8192) >> 14) as u8
    }

    #[test]
    fn identity_size_is_exact_gray() {
        let (h, w) = (5, 7);
        let src: Vec<u8> = (0..h * w * 4).map(|i| (i * 37 % 256) as u8).collect();
        for interp in [Interpolation::Area, Interpolation::Bilinear] {
            let out =
                resize_frame(&src, h, w, spec(h, w, ChannelOrder::Bgra, true, interp)).unwrap();
            for (i, px) in src.chunks_exact(4).enumerate() {
                let want = gray_ref(px[2], px[1], px[0]) as i32;
                assert!(
                    (out[i] as i32 - want).abs() <= 1,
                    "{interp:?} pixel {i}: {} vs {want}",
                    out[i]
                );
            }
            let rgb =
                resize_frame(&src, h, w, spec(h, w, ChannelOrder::Bgra, false, interp)).unwrap();
            for (i, px) in src.chunks_exact(4).enumerate() {
                assert_eq!(&rgb[i * 3..i * 3 + 3], &[px[2], px[1], px[0]]);
            }
        }
    }

    #[test]
    fn area_integer_factor_is_block_mean() {
        // 4x8 RGB -> 2x2: each output is the mean of a 2x4 block.
        let (h, w) = (4, 8);
        let src: Vec<u8> = (0..h * w).flat_map(|i| [(i * 7) as u8, 0, 0]).collect();
        let out = resize_frame(
            &src,
            h,
            w,
            spec(2, 2, ChannelOrder::Rgb, false, Interpolation::Area),
        )
        .unwrap();
        for oy in 0..2 {
            for ox in 0..2 {
                let mut s = 0.0;
                for y in 0..2 {
                    for x in 0..4 {
                        s += src[((oy * 2 + y) * w + ox * 4 + x) * 3] as f64;
                    }
                }
                assert_eq!(out[(oy * 2 + ox) * 3], (s / 8.0).round() as u8);
            }
        }
    }

    #[test]
    fn area_weights_sum_to_one() {
        for (src, dst) in [(958, 64), (488, 64), (100, 64), (65, 64), (256, 64)] {
            let t = Taps::area(src, dst, src as f64 / dst as f64);
            for i in 0..dst {
                let s: f32 = t.of(i).1.iter().sum();
                assert!((s - 1.0).abs() < 3e-3, "{src}->{dst} output {i}: {s}");
            }
        }
    }

    #[test]
    fn bilinear_weights_cover_edges() {
        for (src, dst) in [(10, 64), (64, 10), (7, 7), (1, 5)] {
            let t = Taps::linear(src, dst, false);
            for i in 0..dst {
                let (idx, w) = t.of(i);
                assert!(idx.iter().all(|&j| j < src));
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn portable_and_avx2_paths_agree_exactly() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..200 {
            let (sh, sw) = (1 + next() as usize % 90, 1 + next() as usize % 130);
            let (dh, dw) = (1 + next() as usize % 70, 1 + next() as usize % 70);
            let order = [
                ChannelOrder::Bgr,
                ChannelOrder::Bgra,
                ChannelOrder::Rgb,
                ChannelOrder::Rgba,
            ][case % 4];
            let interp = if next() % 2 == 0 {
                Interpolation::Area
            } else {
                Interpolation::Bilinear
            };
            let s = spec(dh, dw, order, next() % 2 == 0, interp);
            let src: Vec<u8> = (0..sh * sw * order.channels())
                .map(|_| next() as u8)
                .collect();
            let mut fast = Resizer::new(s, sh, sw).unwrap();
            let mut portable = fast.clone();
            portable.avx2 = false;
            let (mut a, mut b) = (vec![0; s.out_len()], vec![0; s.out_len()]);
            fast.resize_into(&src, &mut a).unwrap();
            portable.resize_into(&src, &mut b).unwrap();
            assert_eq!(a, b, "{sh}x{sw} -> {dh}x{dw} {order:?} {interp:?}");
        }
    }

    #[test]
    fn history_order_and_reset() {
        let s = spec(1, 1, ChannelOrder::Rgb, false, Interpolation::Area);
        let mut hist = FrameHistory::new(s, 3).unwrap();
        hist.reset(&[1, 1, 1], 1, 1).unwrap();
        assert_eq!(hist.view(), &[1, 1, 1, 1, 1, 1, 1, 1, 1]);
        for v in 2..=6u8 {
            hist.push(&[v, v, v], 1, 1).unwrap();
            let want: Vec<u8> = (v.saturating_sub(2).max(1)..=v).collect();
            let want: Vec<u8> = std::iter::repeat_n(1, 3 - want.len())
                .chain(want)
                .flat_map(|x| [x; 3])
                .collect();
            assert_eq!(hist.view(), &want[..]);
        }
        hist.reset(&[9, 9, 9], 1, 1).unwrap();
        assert_eq!(hist.view(), &[9; 9]);
    }

    #[test]
    fn history_follows_source_size_and_rejects_bad_frames() {
        let s = spec(2, 2, ChannelOrder::Bgr, true, Interpolation::Bilinear);
        let mut hist = FrameHistory::new(s, 2).unwrap();
        hist.push(&[0; 4 * 4 * 3], 4, 4).unwrap();
        hist.push(&[255; 6 * 6 * 3], 6, 6).unwrap();
        assert_eq!(hist.view(), &[0, 0, 0, 0, 255, 255, 255, 255]);
        assert!(hist.push(&[0; 10], 4, 4).is_err());
        assert_eq!(hist.view(), &[0, 0, 0, 0, 255, 255, 255, 255]);
        assert!(FrameHistory::new(s, 0).is_err());
        assert!(
            FrameHistory::new(spec(0, 2, ChannelOrder::Bgr, true, Interpolation::Area), 2).is_err()
        );
        assert!(ChannelOrder::from_name("argb").is_err());
        assert!(Interpolation::from_name("cubic").is_err());
    }
}
