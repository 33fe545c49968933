//! Stress test: one writer thread appends batches of several interleaved streams into a small ring (so it wraps
//! constantly) while reader threads sample. Every stored value encodes (stream, episode, step), so a torn row, a
//! row mixed from two writes, a history crossing an episode or a stale link is detected in every sampled
//! transition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tmrl_core::replay::{
    BatchIn, ColumnIn, ColumnOut, CompOut, ComponentSpec, Dtype, ReplayRing, RingSpec, SampleOut,
    Xoshiro256,
};

const STREAMS: u64 = 3;
const IMG: usize = 256;
const K: usize = 4;
const ROWS: u64 = 60_000;
const BATCH: usize = 64;
const MIN_SAMPLES: u64 = 3_000;

fn spec() -> RingSpec {
    RingSpec::new(
        997, // prime: batches straddle the wrap at every offset
        vec![
            ComponentSpec::new("x", &[3], Dtype::F32, K),
            ComponentSpec::new("img", &[IMG], Dtype::U8, 2),
        ],
        3,
    )
    .unwrap()
}

fn img_byte(stream: u64, episode: u64, step: u64, j: usize) -> u8 {
    (stream * 31 + episode * 7 + step * 13 + j as u64 * 3) as u8
}

fn reward_of(stream: u64, episode: u64, step: u64) -> f32 {
    (stream * 1_000_000 + episode * 1000 + step) as f32
}

/// Appends ROWS rows, batches of 1..40 steps of a random stream, episodes of 1..30 steps.
fn writer(ring: &ReplayRing, samples: &AtomicU64) {
    let mut rng = Xoshiro256::from_seed(99);
    // per stream: (episode, step in episode, episode length)
    let mut state: Vec<(u64, u64, u64)> = (0..STREAMS).map(|_| (0, 0, 1 + rng.below(30))).collect();
    let mut appended = 0;
    // Keep writing until the readers have sampled a good number of times *during* the writes (bounded).
    while appended < ROWS
        || (samples.load(Ordering::Relaxed) < MIN_SAMPLES && appended < 100 * ROWS)
    {
        let s = rng.below(STREAMS);
        let n = 1 + rng.below(40) as usize;
        let (mut x, mut img, mut action, mut reward) = (vec![], vec![], vec![], vec![]);
        let (mut terminated, mut truncated, mut first) = (vec![], vec![], vec![]);
        for _ in 0..n {
            let (e, t, len) = state[s as usize];
            x.extend([s as f32, e as f32, t as f32]);
            img.extend((0..IMG).map(|j| img_byte(s, e, t, j)));
            action.extend([s as f32, e as f32, t as f32]);
            reward.push(reward_of(s, e, t));
            terminated.push(t + 2 == len);
            truncated.push(t % 4 == 1);
            first.push(t == 0);
            state[s as usize] = if t + 1 == len {
                (e + 1, 0, 1 + rng.below(30))
            } else {
                (e, t + 1, len)
            };
        }
        let batch = BatchIn {
            obs: vec![ColumnIn::F32(&x), ColumnIn::U8(&img)],
            action: &action,
            reward: &reward,
            terminated: &terminated,
            truncated: &truncated,
            first: &first,
        };
        ring.append_batch(s, &batch).unwrap();
        appended += n as u64;
    }
}

/// One minibatch's output buffers.
struct Out {
    x: Vec<f32>,
    nx: Vec<f32>,
    img: Vec<u8>,
    action: Vec<f32>,
    reward: Vec<f32>,
    term: Vec<bool>,
    trunc: Vec<bool>,
}

impl Out {
    fn new() -> Self {
        Self {
            x: vec![0.0; BATCH * K * 3],
            nx: vec![0.0; BATCH * K * 3],
            img: vec![0; BATCH * 3 * IMG],
            action: vec![0.0; BATCH * 3],
            reward: vec![0.0; BATCH],
            term: vec![false; BATCH],
            trunc: vec![false; BATCH],
        }
    }

    fn sample(&mut self, ring: &ReplayRing) {
        let mut out = SampleOut {
            comps: vec![
                CompOut::Split {
                    obs: ColumnOut::F32(&mut self.x),
                    next_obs: ColumnOut::F32(&mut self.nx),
                },
                // img as one (B, 3, IMG) window: obs = steps 0..2, next_obs = steps 1..3
                CompOut::Window(ColumnOut::U8(&mut self.img)),
            ],
            action: &mut self.action,
            reward: &mut self.reward,
            terminated: &mut self.term,
            truncated: &mut self.trunc,
        };
        ring.sample(&mut out).unwrap();
    }

    /// Checks every transition of the minibatch; panics on any inconsistency.
    fn check(&self) {
        let Out {
            x,
            nx,
            img,
            action,
            reward,
            term,
            trunc,
        } = self;
        for i in 0..BATCH {
            let h: Vec<[f32; 3]> = (0..K)
                .map(|k| x[(i * K + k) * 3..(i * K + k + 1) * 3].try_into().unwrap())
                .collect();
            let nh: Vec<[f32; 3]> = (0..K)
                .map(|k| nx[(i * K + k) * 3..(i * K + k + 1) * 3].try_into().unwrap())
                .collect();
            let [s, e, t] = h[K - 1];
            assert_eq!(
                &action[i * 3..i * 3 + 3],
                &[s, e, t],
                "action belongs to the sampled row"
            );
            assert_eq!(
                reward[i],
                reward_of(s as u64, e as u64, t as u64),
                "reward belongs to the sampled row"
            );
            assert_eq!(trunc[i], (t as u64) % 4 == 1);
            // terminated is set on an episode's second-to-last row: its successor is the last one.
            let _ = term[i];
            assert_eq!(
                nh[K - 1],
                [s, e, t + 1.0],
                "next_obs is the successor in the same episode"
            );
            assert_eq!(
                &nh[..K - 1],
                &h[1..],
                "next_obs history is the obs history shifted"
            );
            for w in h.windows(2) {
                assert_eq!(
                    (w[0][0], w[0][1]),
                    (s, e),
                    "history stays in one stream and episode: {h:?}"
                );
                assert!(
                    w[1][2] == w[0][2] + 1.0 || (w[1] == w[0] && w[0] == h[0]),
                    "history {h:?}"
                );
            }
            // img history 2: the newest two steps of x's chain, every byte consistent (no torn rows).
            for (k, hk) in [(0, h[K - 2]), (1, h[K - 1])] {
                let row = &img[(i * 3 + k) * IMG..(i * 3 + k + 1) * IMG];
                for (j, &b) in row.iter().enumerate() {
                    assert_eq!(
                        b,
                        img_byte(s as u64, e as u64, hk[2] as u64, j),
                        "torn or mixed img row"
                    );
                }
            }
            let row = &img[(i * 3 + 2) * IMG..(i * 3 + 3) * IMG];
            for (j, &b) in row.iter().enumerate() {
                assert_eq!(
                    b,
                    img_byte(s as u64, e as u64, t as u64 + 1, j),
                    "torn or mixed next img row"
                );
            }
        }
    }
}

/// Samples and checks until the writer is done (then one last round); bounded by a round limit.
fn reader(ring: &ReplayRing, done: &AtomicBool, samples: &AtomicU64) {
    let mut out = Out::new();
    for _ in 0..10_000_000u64 {
        let finished = done.load(Ordering::Acquire);
        if ring.num_transitions() > 0 {
            out.sample(ring);
            out.check();
            samples.fetch_add(1, Ordering::Relaxed);
        }
        if finished {
            return;
        }
    }
    panic!("the writer never finished");
}

#[test]
fn sampling_while_appending_never_sees_torn_or_mixed_rows() {
    let ring = ReplayRing::new(spec(), Some(5));
    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    let during = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| reader(&ring, &done, &samples)))
            .collect();
        writer(&ring, &samples);
        let during = samples.load(Ordering::Relaxed);
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("a reader found an inconsistent transition");
        }
        during
    });
    assert!(ring.total_appended() >= ROWS);
    assert_eq!(ring.len(), ring.capacity());
    assert!(
        during >= MIN_SAMPLES,
        "only {during} minibatches were sampled while the writer ran"
    );
}
