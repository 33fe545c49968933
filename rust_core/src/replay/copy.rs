//! Copies into the sampled minibatch: ordinary stores for small pieces, non-temporal (streaming) stores for
//! large ones. A minibatch of image histories (megabytes) is written once and read later by the trainer, so
//! streaming it past the caches saves the read-for-ownership of every destination line (about a third of the
//! memory traffic of a plain copy).

/// Element types that are plain bytes: no padding, every bit pattern valid.
pub trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for f32 {}

/// Copies of at least this many bytes use streaming stores.
pub const STREAM_MIN: usize = 4096;

fn as_bytes<T: Plain>(s: &[T]) -> &[u8] {
    // SAFETY: T is plain (u8 or f32): its bytes are initialised and u8 has no alignment requirement.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

fn as_bytes_mut<T: Plain>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and any byte pattern written is a valid T (u8 or f32).
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// `dst.copy_from_slice(src)`, with streaming stores when the copy is large. Call [`fence`] once after a
/// sequence of such copies, before the data is handed to another thread.
#[inline]
pub fn copy_out<T: Plain>(dst: &mut [T], src: &[T]) {
    if std::mem::size_of_val(dst) >= STREAM_MIN {
        stream_copy(as_bytes_mut(dst), as_bytes(src));
    } else {
        dst.copy_from_slice(src);
    }
}

#[cfg(target_arch = "x86_64")]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    assert_eq!(dst.len(), src.len(), "stream_copy: lengths differ");
    let n = dst.len();
    let head = dst.as_ptr().align_offset(16).min(n);
    dst[..head].copy_from_slice(&src[..head]);
    let body = (n - head) / 64 * 64;
    // SAFETY: every access stays inside dst[head..head + body] and src[head..head + body] (checked lengths
    // above); the destination pointer is 16-byte aligned (align_offset) as _mm_stream_si128 requires; loads are
    // unaligned; SSE2 is part of the x86_64 baseline.
    unsafe {
        let s = src.as_ptr().add(head);
        let d = dst.as_mut_ptr().add(head);
        for off in (0..body).step_by(64) {
            let (s, d) = (s.add(off).cast::<__m128i>(), d.add(off).cast::<__m128i>());
            let (a, b, c, e) = (
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            );
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
    }
    dst[head + body..].copy_from_slice(&src[head + body..]);
}

#[cfg(not(target_arch = "x86_64"))]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(src);
}

/// Orders earlier streaming stores before any later store (their data is then visible like ordinary stores).
#[inline]
pub fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence only orders stores; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_size_and_alignment() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (off, len) in [
            (0, 0),
            (1, 5),
            (3, 4096),
            (0, 4096),
            (5, 10_000),
            (17, 19_000),
        ] {
            let mut dst = vec![0u8; len + 32];
            copy_out(&mut dst[off..off + len], &src[..len]);
            fence();
            assert_eq!(&dst[off..off + len], &src[..len]);
            assert!(
                dst[..off].iter().chain(&dst[off + len..]).all(|&b| b == 0),
                "no write outside"
            );
        }
        let fs: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5).collect();
        let mut fd = vec![0f32; 3000];
        copy_out(&mut fd, &fs);
        fence();
        assert_eq!(fd, fs);
    }
}
