//! LIDAR raycasting over captured frames, with TMRL 0.7.1's beam geometry.
//!
//! Beams are precomputed at construction as pixel paths (byte offsets into an H x W x C frame), so a scan is a
//! gather and a compare per pixel, stopping at the first border pixel of each beam. The path of a beam at angle
//! `a` (degrees; 90 = right, 180 = up, 270 = left on screen) visits `(int(r0 + d*cos a), int(c0 + d*sin a))` for
//! `d = start, start + 1, ...` until the pixel leaves the image interior, with the same f64 arithmetic as
//! TMRL's Python (`math.radians`, `math.cos`, truncation toward zero), so distances agree exactly.

use crate::error::{CoreError, CoreResult};
use crate::frames::ChannelOrder;

/// What stops a beam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// TMRL's test: every colour channel is below `threshold` (the black track border of TrackMania).
    Dark { threshold: u8 },
    /// Built-in game: the pixel is not road, road being gray: `max - min <= tolerance` over the colour channels
    /// and every colour channel within `[road_min, road_max]`.
    NotRoad {
        road_min: u8,
        road_max: u8,
        tolerance: u8,
    },
}

fn to_u8(name: &str, value: i64) -> CoreResult<u8> {
    u8::try_from(value)
        .map_err(|_| CoreError::Value(format!("{name} must be in 0..=255, got {value}")))
}

impl Border {
    /// The "dark" test with a threshold in 0..=255 (a pixel is a border when every colour channel is below it).
    pub fn dark(threshold: i64) -> CoreResult<Self> {
        Ok(Border::Dark {
            threshold: to_u8("threshold", threshold)?,
        })
    }

    /// The "not road" test; `road_min <= road_max` and all values in 0..=255.
    pub fn not_road(road_min: i64, road_max: i64, tolerance: i64) -> CoreResult<Self> {
        let (lo, hi, tol) = (
            to_u8("road_min", road_min)?,
            to_u8("road_max", road_max)?,
            to_u8("road_tolerance", tolerance)?,
        );
        if lo > hi {
            return Err(CoreError::Value(format!(
                "road_min ({lo}) must not exceed road_max ({hi})"
            )));
        }
        Ok(Border::NotRoad {
            road_min: lo,
            road_max: hi,
            tolerance: tol,
        })
    }

    /// Parse the border name used by the Python API (`"dark"` or `"not_road"`).
    pub fn from_name(
        name: &str,
        threshold: i64,
        road_min: i64,
        road_max: i64,
        tolerance: i64,
    ) -> CoreResult<Self> {
        match name {
            "dark" => Border::dark(threshold),
            "not_road" => Border::not_road(road_min, road_max, tolerance),
            other => Err(CoreError::Value(format!(
                "border must be 'dark' or 'not_road', got {other:?}"
            ))),
        }
    }
}

/// TMRL's default beam angles: 90 to 270 degrees in 10 degree steps (19 beams).
pub fn default_angles() -> Vec<f64> {
    (0..19).map(|i| 90.0 + 10.0 * i as f64).collect()
}

/// TMRL's default origin for an image of `height` x `width`: row `44 * height / 49`, column `width / 2`.
pub fn default_origin(height: usize, width: usize) -> (i64, i64) {
    ((44 * height / 49) as i64, (width / 2) as i64)
}

/// Construction parameters of a [`Lidar`].
#[derive(Debug, Clone)]
pub struct LidarConfig {
    pub height: usize,
    pub width: usize,
    pub angles_deg: Vec<f64>,
    /// (row, column); `None` means [`default_origin`].
    pub origin: Option<(i64, i64)>,
    /// Distance in pixels of a beam's first pixel from the origin.
    pub start: usize,
    pub channel_order: ChannelOrder,
    pub border: Border,
}

impl LidarConfig {
    /// TMRL 0.7.1's geometry for a frame of `height` x `width` with the "dark" border test at 55.
    pub fn tmrl(height: usize, width: usize) -> Self {
        LidarConfig {
            height,
            width,
            angles_deg: default_angles(),
            origin: None,
            start: 20,
            channel_order: ChannelOrder::Bgr,
            border: Border::Dark { threshold: 55 },
        }
    }
}

/// A LIDAR with precomputed beams for one frame size and layout.
#[derive(Debug, Clone)]
pub struct Lidar {
    height: usize,
    width: usize,
    channels: usize,
    origin: (i64, i64),
    angles_deg: Vec<f64>,
    border: Border,
    /// Byte offset of the first channel of each path pixel, all beams concatenated.
    offsets: Vec<u32>,
    /// (row, column) of each path pixel, parallel to `offsets`.
    pixels: Vec<(i64, i64)>,
    /// Beam `b` owns `offsets[bounds[b]..bounds[b + 1]]`.
    bounds: Vec<usize>,
}

/// The pixel path of one beam, exactly as TMRL 0.7.1 computes it (extended with the bottom edge test).
fn beam_path(
    height: usize,
    width: usize,
    origin: (i64, i64),
    start: usize,
    angle_deg: f64,
) -> Vec<(i64, i64)> {
    let (h, w) = (height as i64, width as i64);
    let (r0, c0) = (origin.0 as f64, origin.1 as f64);
    let rad = angle_deg.to_radians(); // x * (pi / 180), as Python's math.radians
    let (dr, dc) = (rad.cos(), rad.sin());
    let mut path = Vec::new();
    let mut d = start as f64;
    loop {
        // `as i64` truncates toward zero like Python's int().
        let r = (r0 + d * dr) as i64;
        let c = (c0 + d * dc) as i64;
        if r <= 0 || c <= 0 || r >= h - 1 || c >= w - 1 {
            return path;
        }
        path.push((r, c));
        d += 1.0;
    }
}

impl Lidar {
    /// Precompute the beams. Errors on an empty frame size, an origin outside the frame, a non-finite angle, or
    /// a beam with no pixel inside the image (its start lies outside).
    pub fn new(cfg: LidarConfig) -> CoreResult<Self> {
        let LidarConfig {
            height,
            width,
            angles_deg,
            origin,
            start,
            channel_order,
            border,
        } = cfg;
        if height < 3 || width < 3 {
            return Err(CoreError::Value(format!(
                "the frame must be at least 3x3 pixels, got {height}x{width}"
            )));
        }
        let channels = channel_order.channels();
        if height.saturating_mul(width).saturating_mul(channels) > u32::MAX as usize {
            return Err(CoreError::Value(format!(
                "frame {height}x{width}x{channels} is too large for the LIDAR"
            )));
        }
        if angles_deg.is_empty() {
            return Err(CoreError::Value(
                "angles_deg must hold at least one angle".into(),
            ));
        }
        if let Some(a) = angles_deg.iter().find(|a| !a.is_finite()) {
            return Err(CoreError::Value(format!(
                "angles_deg must be finite, got {a}"
            )));
        }
        let origin = origin.unwrap_or_else(|| default_origin(height, width));
        if origin.0 < 0 || origin.1 < 0 || origin.0 >= height as i64 || origin.1 >= width as i64 {
            return Err(CoreError::Value(format!(
                "origin {origin:?} (row, column) lies outside the {height}x{width} frame"
            )));
        }
        let mut offsets = Vec::new();
        let mut pixels = Vec::new();
        let mut bounds = vec![0];
        for &angle in &angles_deg {
            let path = beam_path(height, width, origin, start, angle);
            if path.is_empty() {
                return Err(CoreError::Value(format!(
                    "the beam at {angle} degrees has no pixel inside the {height}x{width} frame \
                     (origin {origin:?}, start {start}): lower start or move the origin inward"
                )));
            }
            for &(r, c) in &path {
                offsets.push(((r as usize * width + c as usize) * channels) as u32);
            }
            pixels.extend_from_slice(&path);
            bounds.push(offsets.len());
        }
        Ok(Lidar {
            height,
            width,
            channels,
            origin,
            angles_deg,
            border,
            offsets,
            pixels,
            bounds,
        })
    }

    pub fn n_beams(&self) -> usize {
        self.angles_deg.len()
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn channels(&self) -> usize {
        self.channels
    }
    pub fn origin(&self) -> (i64, i64) {
        self.origin
    }
    pub fn angles_deg(&self) -> &[f64] {
        &self.angles_deg
    }
    pub fn border(&self) -> Border {
        self.border
    }

    /// Bytes in one frame (height * width * channels).
    pub fn frame_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Number of pixels on each beam's path.
    pub fn beam_lengths(&self) -> Vec<usize> {
        self.bounds.windows(2).map(|b| b[1] - b[0]).collect()
    }

    /// The (row, column) path of beam `b`.
    pub fn beam_path(&self, b: usize) -> &[(i64, i64)] {
        &self.pixels[self.bounds[b]..self.bounds[b + 1]]
    }

    fn check_frame(&self, frame: &[u8]) -> CoreResult<()> {
        if frame.len() != self.frame_len() {
            return Err(CoreError::Shape(format!(
                "frame has {} bytes, expected {}x{}x{} = {}",
                frame.len(),
                self.height,
                self.width,
                self.channels,
                self.frame_len()
            )));
        }
        Ok(())
    }

    /// Distances of every beam for one frame (row-major H x W x C bytes) into `out` (`n_beams` long).
    pub fn scan_into(&self, frame: &[u8], out: &mut [f32]) -> CoreResult<()> {
        self.check_frame(frame)?;
        if out.len() != self.n_beams() {
            return Err(CoreError::Shape(format!(
                "out has {} elements, expected {}",
                out.len(),
                self.n_beams()
            )));
        }
        match self.border {
            // SWAR on the pixel's bytes 0..3 (the colour channels in any order): with k = 0x80 - t per byte,
            // bit 7 of `(x & 0x7F) + k` is set iff the low 7 bits of x reach t; no carry crosses a byte.
            Border::Dark { threshold } if threshold <= 128 => {
                let k = (0x80 - threshold as u32) * 0x01_01_01;
                // A channel is >= t when its bit 7 is set (x >= 128 >= t) or its low bits reach t.
                self.scan_with(frame, out, |p| {
                    (p | ((p & 0x7F_7F_7F) + k)) & 0x80_80_80 == 0
                })
            }
            Border::Dark { threshold } => {
                let k = (0x80 - (threshold as u32 - 128)) * 0x01_01_01;
                // t > 128: a channel is >= t when its bit 7 is set and its low bits reach t - 128.
                self.scan_with(frame, out, |p| {
                    (p & ((p & 0x7F_7F_7F) + k)) & 0x80_80_80 == 0
                })
            }
            Border::NotRoad {
                road_min,
                road_max,
                tolerance,
            } => self.scan_with(frame, out, |p| {
                let (a, b, c) = (p as u8, (p >> 8) as u8, (p >> 16) as u8);
                let (lo, hi) = (a.min(b).min(c), a.max(b).max(c));
                !(hi - lo <= tolerance && lo >= road_min && hi <= road_max)
            }),
        }
        Ok(())
    }

    /// Walk every beam until `is_border` holds for a pixel, given as the little-endian u32 of its first four
    /// bytes (the three colour channels in bits 0..24; bits 24..32 are alpha or the next pixel's first byte).
    #[inline(always)]
    fn scan_with(&self, frame: &[u8], out: &mut [f32], is_border: impl Fn(u32) -> bool) {
        assert_eq!(frame.len(), self.frame_len());
        let px = |off: u32| {
            // SAFETY: every offset is the first byte of an interior pixel (not in the last row) of a frame of
            // exactly `frame_len()` bytes (built in `new`, length asserted above), so `off + 4 <= frame.len()`.
            u32::from_le_bytes(unsafe {
                frame
                    .as_ptr()
                    .add(off as usize)
                    .cast::<[u8; 4]>()
                    .read_unaligned()
            })
        };
        for (b, o) in out.iter_mut().enumerate() {
            let offs = &self.offsets[self.bounds[b]..self.bounds[b + 1]];
            let mut hit = None;
            // Four pixels per branch; the first border pixel of the group decides.
            let mut quads = offs.chunks_exact(4);
            for (q, quad) in quads.by_ref().enumerate() {
                let f = [
                    is_border(px(quad[0])),
                    is_border(px(quad[1])),
                    is_border(px(quad[2])),
                    is_border(px(quad[3])),
                ];
                if f[0] | f[1] | f[2] | f[3] {
                    hit = Some(4 * q + f.iter().position(|&x| x).expect("one is set"));
                    break;
                }
            }
            if hit.is_none() {
                let base = offs.len() - quads.remainder().len();
                hit = quads
                    .remainder()
                    .iter()
                    .position(|&off| is_border(px(off)))
                    .map(|i| base + i);
            }
            *o = hit.unwrap_or(offs.len() - 1) as f32;
        }
    }

    /// Distances for one frame as a new vector.
    pub fn scan(&self, frame: &[u8]) -> CoreResult<Vec<f32>> {
        let mut out = vec![0.0; self.n_beams()];
        self.scan_into(frame, &mut out)?;
        Ok(out)
    }

    /// Distances for a stack of frames (N x H x W x C bytes) into `out` (N x n_beams).
    pub fn scan_batch_into(&self, frames: &[u8], out: &mut [f32]) -> CoreResult<()> {
        let fl = self.frame_len();
        if !frames.len().is_multiple_of(fl) {
            return Err(CoreError::Shape(format!(
                "frames hold {} bytes, not a multiple of one frame ({fl})",
                frames.len()
            )));
        }
        let n = frames.len() / fl;
        if out.len() != n * self.n_beams() {
            return Err(CoreError::Shape(format!(
                "out has {} elements, expected {n}x{}",
                out.len(),
                self.n_beams()
            )));
        }
        for (frame, o) in frames
            .chunks_exact(fl)
            .zip(out.chunks_exact_mut(self.n_beams()))
        {
            self.scan_into(frame, o)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: usize, w: usize, c: usize, fill: u8) -> Vec<u8> {
        vec![fill; h * w * c]
    }

    fn set(f: &mut [u8], w: usize, c: usize, r: usize, col: usize, px: &[u8]) {
        let o = (r * w + col) * c;
        f[o..o + px.len()].copy_from_slice(px);
    }

    #[test]
    fn tmrl_geometry_on_958x488() {
        let lidar = Lidar::new(LidarConfig::tmrl(488, 958)).unwrap();
        assert_eq!(lidar.n_beams(), 19);
        assert_eq!(lidar.origin(), (438, 479));
        // Beam at 90 degrees goes right along row 438 from column 499 to 956.
        let p = lidar.beam_path(0);
        assert_eq!(p[0], (438, 499));
        assert_eq!(*p.last().unwrap(), (438, 956));
        // Beam at 180 degrees goes up along column 479 from row 418 to row 1.
        let up = lidar.beam_path(9);
        assert_eq!(up[0], (418, 479));
        assert_eq!(*up.last().unwrap(), (1, 479));
    }

    #[test]
    fn no_hit_gives_length_minus_one() {
        let lidar = Lidar::new(LidarConfig::tmrl(100, 200)).unwrap();
        let out = lidar.scan(&frame(100, 200, 3, 200)).unwrap();
        let lens = lidar.beam_lengths();
        for (o, l) in out.iter().zip(lens) {
            assert_eq!(*o, (l - 1) as f32);
        }
    }

    #[test]
    fn dark_border_at_known_distance() {
        let (h, w) = (100, 200);
        let lidar = Lidar::new(LidarConfig::tmrl(h, w)).unwrap();
        let mut f = frame(h, w, 3, 200);
        // Paint the up beam's 7th pixel dark (54 < 55), and a not-quite-dark one earlier.
        let up = lidar.beam_path(9).to_vec();
        set(
            &mut f,
            w,
            3,
            up[3].0 as usize,
            up[3].1 as usize,
            &[54, 54, 55],
        );
        set(
            &mut f,
            w,
            3,
            up[7].0 as usize,
            up[7].1 as usize,
            &[54, 0, 10],
        );
        let out = lidar.scan(&f).unwrap();
        assert_eq!(out[9], 7.0);
    }

    #[test]
    fn not_road_border() {
        let (h, w) = (60, 80);
        let cfg = LidarConfig {
            channel_order: ChannelOrder::Rgba,
            border: Border::not_road(90, 120, 12).unwrap(),
            ..LidarConfig::tmrl(h, w)
        };
        let lidar = Lidar::new(cfg).unwrap();
        let mut f = frame(h, w, 4, 105);
        let right = lidar.beam_path(0).to_vec();
        // Green grass (not gray) stops the beam; the alpha channel is ignored.
        set(
            &mut f,
            w,
            4,
            right[5].0 as usize,
            right[5].1 as usize,
            &[100, 210, 100, 105],
        );
        set(
            &mut f,
            w,
            4,
            right[2].0 as usize,
            right[2].1 as usize,
            &[100, 110, 100, 0],
        );
        let out = lidar.scan(&f).unwrap();
        assert_eq!(out[0], 5.0);
        assert_eq!(out[1], (lidar.beam_lengths()[1] - 1) as f32);
    }

    #[test]
    fn batch_equals_single_scans() {
        let (h, w) = (50, 70);
        let lidar = Lidar::new(LidarConfig::tmrl(h, w)).unwrap();
        let mut frames = Vec::new();
        for k in 0..3u8 {
            let mut f = frame(h, w, 3, 150);
            let p = lidar.beam_path(k as usize * 5).to_vec();
            set(
                &mut f,
                w,
                3,
                p[k as usize].0 as usize,
                p[k as usize].1 as usize,
                &[0, 0, 0],
            );
            frames.extend(f);
        }
        let mut out = vec![0.0; 3 * lidar.n_beams()];
        lidar.scan_batch_into(&frames, &mut out).unwrap();
        for k in 0..3 {
            let fl = lidar.frame_len();
            let single = lidar.scan(&frames[k * fl..(k + 1) * fl]).unwrap();
            assert_eq!(&out[k * 19..(k + 1) * 19], &single[..]);
        }
    }

    #[test]
    fn errors() {
        assert!(Lidar::new(LidarConfig {
            origin: Some((0, 5)),
            ..LidarConfig::tmrl(50, 50)
        })
        .is_err());
        assert!(Lidar::new(LidarConfig {
            origin: Some((50, 5)),
            ..LidarConfig::tmrl(50, 50)
        })
        .is_err());
        assert!(Lidar::new(LidarConfig {
            start: 100,
            ..LidarConfig::tmrl(50, 50)
        })
        .is_err());
        assert!(Lidar::new(LidarConfig {
            angles_deg: vec![],
            ..LidarConfig::tmrl(50, 50)
        })
        .is_err());
        assert!(Lidar::new(LidarConfig {
            angles_deg: vec![f64::NAN],
            ..LidarConfig::tmrl(50, 50)
        })
        .is_err());
        assert!(Border::dark(256).is_err());
        assert!(Border::not_road(130, 120, 5).is_err());
        assert!(Border::from_name("black", 55, 0, 0, 0).is_err());
        let lidar = Lidar::new(LidarConfig::tmrl(50, 50)).unwrap();
        assert!(matches!(lidar.scan(&[0; 10]), Err(CoreError::Shape(_))));
        let mut short = [0.0; 3];
        assert!(lidar.scan_into(&frame(50, 50, 3, 0), &mut short).is_err());
    }
}
