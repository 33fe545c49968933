//! Unit tests of the ring: rows encode (stream, step) so every sampled value can be checked.

use super::*;

const A: usize = 2;

/// Layout: "x" float32 (2,) history 3 holding [stream, step]; "img" uint8 (3,) history 2 holding step % 251
/// three times; "s" float32 (1,) history 1 holding step.
fn spec(capacity: usize) -> RingSpec {
    RingSpec::new(
        capacity,
        vec![
            ComponentSpec::new("x", &[2], Dtype::F32, 3),
            ComponentSpec::new("img", &[3], Dtype::U8, 2),
            ComponentSpec::new("s", &[1], Dtype::F32, 1),
        ],
        A,
    )
    .unwrap()
}

/// Owned columns of n steps of `stream` starting at `step0`; `first` at the given offsets.
struct Steps {
    x: Vec<f32>,
    img: Vec<u8>,
    s: Vec<f32>,
    action: Vec<f32>,
    reward: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    first: Vec<bool>,
}

fn steps(stream: u64, step0: u64, n: usize, firsts: &[usize]) -> Steps {
    let mut t = Steps {
        x: vec![],
        img: vec![],
        s: vec![],
        action: vec![],
        reward: vec![],
        terminated: vec![],
        truncated: vec![],
        first: vec![],
    };
    for i in 0..n {
        let step = step0 + i as u64;
        t.x.extend([stream as f32, step as f32]);
        t.img.extend([(step % 251) as u8; 3]);
        t.s.push(step as f32);
        t.action.extend([stream as f32, -(step as f32)]);
        t.reward.push(step as f32 * 0.5);
        t.terminated.push(step.is_multiple_of(3));
        t.truncated.push(step.is_multiple_of(5));
        t.first.push(firsts.contains(&i));
    }
    t
}

fn append(ring: &ReplayRing, stream: u64, t: &Steps) -> CoreResult<()> {
    ring.append_batch(
        stream,
        &BatchIn {
            obs: vec![
                ColumnIn::F32(&t.x),
                ColumnIn::U8(&t.img),
                ColumnIn::F32(&t.s),
            ],
            action: &t.action,
            reward: &t.reward,
            terminated: &t.terminated,
            truncated: &t.truncated,
            first: &t.first,
        },
    )
}

#[derive(Debug)]
struct Out {
    x: Vec<f32>,
    nx: Vec<f32>,
    img: Vec<u8>,
    nimg: Vec<u8>,
    s: Vec<f32>,
    ns: Vec<f32>,
    action: Vec<f32>,
    reward: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
}

fn sample(ring: &ReplayRing, b: usize) -> CoreResult<Out> {
    sample_with(ring, b, None).map(|(o, _)| o)
}

/// `sample`, or `sample_n` with `nstep` (then also the discounts).
fn sample_with(ring: &ReplayRing, b: usize, nstep: Option<NStep>) -> CoreResult<(Out, Vec<f32>)> {
    let mut discount = vec![0.0; b];
    let mut o = Out {
        x: vec![0.0; b * 6],
        nx: vec![0.0; b * 6],
        img: vec![0; b * 6],
        nimg: vec![0; b * 6],
        s: vec![0.0; b],
        ns: vec![0.0; b],
        action: vec![0.0; b * A],
        reward: vec![0.0; b],
        terminated: vec![false; b],
        truncated: vec![false; b],
    };
    let mut dst = SampleOut {
        comps: vec![
            CompOut::Split {
                obs: ColumnOut::F32(&mut o.x),
                next_obs: ColumnOut::F32(&mut o.nx),
            },
            CompOut::Split {
                obs: ColumnOut::U8(&mut o.img),
                next_obs: ColumnOut::U8(&mut o.nimg),
            },
            CompOut::Split {
                obs: ColumnOut::F32(&mut o.s),
                next_obs: ColumnOut::F32(&mut o.ns),
            },
        ],
        action: &mut o.action,
        reward: &mut o.reward,
        terminated: &mut o.terminated,
        truncated: &mut o.truncated,
    };
    match nstep {
        None => ring.sample(&mut dst)?,
        Some(ns) => ring.sample_n(&mut dst, ns, &mut discount)?,
    }
    Ok((o, discount))
}

/// (stream, step) of the sampled transition i, after checking that every field agrees with it and that the
/// histories are consecutive steps of one stream, with repetition only at the oldest end.
fn check(o: &Out, i: usize) -> (u64, u64) {
    let (stream, step) = (o.action[i * A] as u64, o.s[i] as u64);
    assert_eq!(o.action[i * A + 1], -(step as f32));
    assert_eq!(o.reward[i], step as f32 * 0.5);
    assert_eq!(o.terminated[i], step.is_multiple_of(3));
    assert_eq!(o.truncated[i], step.is_multiple_of(5));
    assert_eq!(o.ns[i], (step + 1) as f32, "next_obs is the successor");
    let xs: Vec<(f32, f32)> = (0..3)
        .map(|k| (o.x[i * 6 + 2 * k], o.x[i * 6 + 2 * k + 1]))
        .collect();
    let nxs: Vec<(f32, f32)> = (0..3)
        .map(|k| (o.nx[i * 6 + 2 * k], o.nx[i * 6 + 2 * k + 1]))
        .collect();
    assert_eq!(xs[2], (stream as f32, step as f32));
    assert_eq!(nxs[2], (stream as f32, (step + 1) as f32));
    assert_eq!(&nxs[..2], &xs[1..]);
    for w in xs.windows(2) {
        assert_eq!(w[0].0, stream as f32);
        assert!(
            w[1].1 - w[0].1 == 1.0 || (w[1] == w[0] && xs[0] == w[0]),
            "history {xs:?}"
        );
    }
    let img: Vec<u8> = (0..2).map(|k| o.img[i * 6 + 3 * k]).collect();
    assert_eq!(img[1], (step % 251) as u8);
    assert_eq!(o.nimg[i * 6 + 3], ((step + 1) % 251) as u8);
    assert_eq!(o.nimg[i * 6], img[1]);
    (stream, step)
}

#[test]
fn one_episode_histories_repeat_the_first_frame() {
    let ring = ReplayRing::new(spec(16), Some(1));
    append(&ring, 7, &steps(7, 0, 5, &[0])).unwrap();
    assert_eq!(
        (ring.len(), ring.total_appended(), ring.num_transitions()),
        (5, 5, 4)
    );
    let o = sample(&ring, 200).unwrap();
    let mut seen = [false; 4];
    for i in 0..200 {
        let (stream, step) = check(&o, i);
        assert_eq!(stream, 7);
        seen[step as usize] = true;
        let hist: Vec<f32> = (0..3).map(|k| o.x[i * 6 + 2 * k + 1]).collect();
        let want: Vec<f32> = (0..3)
            .map(|k| (step as i64 - 2 + k).max(0) as f32)
            .collect();
        assert_eq!(hist, want);
    }
    assert!(seen.iter().all(|&s| s), "every transition start is sampled");
}

#[test]
fn never_crosses_an_episode_boundary() {
    let ring = ReplayRing::new(spec(64), Some(2));
    // Episodes start at steps 0, 4 and 5 (a one-step episode); step 3 -> 4 and 4 -> 5 are not transitions.
    append(&ring, 1, &steps(1, 0, 8, &[0, 4, 5])).unwrap();
    assert_eq!(ring.num_transitions(), 5);
    let o = sample(&ring, 300).unwrap();
    for i in 0..300 {
        let (_, step) = check(&o, i);
        assert!(![3, 4, 7].contains(&step));
        let oldest = o.x[i * 6 + 1] as u64;
        let ep_start = if step >= 5 { 5 } else { 0 };
        assert_eq!(oldest, step.saturating_sub(2).max(ep_start));
    }
}

#[test]
fn interleaved_streams_and_batches_link_per_stream() {
    let ring = ReplayRing::new(spec(64), Some(3));
    append(&ring, 1, &steps(1, 0, 3, &[0])).unwrap();
    append(&ring, 2, &steps(2, 0, 2, &[0])).unwrap();
    append(&ring, 1, &steps(1, 3, 3, &[])).unwrap();
    append(&ring, 2, &steps(2, 2, 1, &[])).unwrap();
    assert_eq!(ring.num_transitions(), 5 + 2);
    let o = sample(&ring, 500).unwrap();
    for i in 0..500 {
        let (stream, step) = check(&o, i);
        assert!((stream == 1 && step < 5) || (stream == 2 && step < 2));
    }
}

#[test]
fn wrap_around_evicts_and_repeats_the_oldest_stored_frame() {
    let ring = ReplayRing::new(spec(10), Some(4));
    for k in 0..5 {
        append(
            &ring,
            3,
            &steps(3, 7 * k, 7, if k == 0 { &[0] } else { &[] }),
        )
        .unwrap();
    }
    assert_eq!(
        (ring.len(), ring.total_appended(), ring.num_transitions()),
        (10, 35, 9)
    );
    let o = sample(&ring, 400).unwrap();
    for i in 0..400 {
        let (_, step) = check(&o, i);
        assert!((25..34).contains(&step));
        assert_eq!(o.x[i * 6 + 1] as u64, step.saturating_sub(2).max(25));
    }
}

#[test]
fn a_batch_longer_than_the_capacity_keeps_its_tail() {
    let ring = ReplayRing::new(spec(4), Some(5));
    append(&ring, 0, &steps(0, 0, 11, &[0])).unwrap();
    assert_eq!(
        (ring.len(), ring.total_appended(), ring.num_transitions()),
        (4, 11, 3)
    );
    let o = sample(&ring, 50).unwrap();
    for i in 0..50 {
        assert!((7..10).contains(&check(&o, i).1));
    }
}

#[test]
fn an_evicted_predecessor_is_not_linked() {
    let ring = ReplayRing::new(spec(4), Some(6));
    append(&ring, 1, &steps(1, 0, 1, &[0])).unwrap();
    append(&ring, 2, &steps(2, 0, 4, &[0])).unwrap(); // evicts stream 1's only row
    append(&ring, 1, &steps(1, 1, 1, &[])).unwrap(); // its predecessor is gone: no transition
    assert_eq!(ring.num_transitions(), 2);
    let o = sample(&ring, 50).unwrap();
    for i in 0..50 {
        assert_eq!(check(&o, i).0, 2);
    }
}

#[test]
fn many_short_lived_streams_are_forgotten_once_overwritten() {
    let ring = ReplayRing::new(spec(8), Some(11));
    for stream in 0..3000u64 {
        append(&ring, stream, &steps(stream, 0, 2, &[0])).unwrap();
    }
    assert!(ring.storage.read().streams.len() <= STREAMS_KEPT + 1);
    assert_eq!(ring.num_transitions(), 4);
    // a stored stream still continues its episode
    append(&ring, 2999, &steps(2999, 2, 1, &[])).unwrap();
    assert_eq!(ring.num_transitions(), 4); // +1 for 2999's step 1 -> 2, -1 for the evicted row
    let o = sample(&ring, 64).unwrap();
    for i in 0..64 {
        assert!(check(&o, i).0 >= 2996);
    }
}

#[test]
fn sparse_rings_sample_from_the_valid_list() {
    let ring = ReplayRing::new(spec(100), Some(7));
    let firsts: Vec<usize> = (0..99).collect();
    append(&ring, 1, &steps(1, 0, 100, &firsts)).unwrap(); // only 98 -> 99 is a transition
    assert_eq!(ring.num_transitions(), 1);
    let o = sample(&ring, 20).unwrap();
    for i in 0..20 {
        assert_eq!(check(&o, i).1, 98);
    }
}

#[test]
fn window_outputs_match_split_outputs() {
    let make = || {
        let ring = ReplayRing::new(spec(12), Some(21));
        append(&ring, 1, &steps(1, 0, 9, &[0, 5])).unwrap();
        append(&ring, 2, &steps(2, 0, 6, &[0])).unwrap();
        ring
    };
    let (a, b) = (make(), make());
    for _ in 0..3 {
        let split = sample(&a, 40).unwrap();
        let (mut xw, mut imgw) = (vec![0f32; 40 * 4 * 2], vec![0u8; 40 * 3 * 3]);
        let (mut s, mut ns) = (vec![0f32; 40], vec![0f32; 40]);
        let (mut action, mut reward) = (vec![0f32; 40 * A], vec![0f32; 40]);
        let (mut term, mut trunc) = (vec![false; 40], vec![false; 40]);
        b.sample(&mut SampleOut {
            comps: vec![
                CompOut::Window(ColumnOut::F32(&mut xw)),
                CompOut::Window(ColumnOut::U8(&mut imgw)),
                CompOut::Split {
                    obs: ColumnOut::F32(&mut s),
                    next_obs: ColumnOut::F32(&mut ns),
                },
            ],
            action: &mut action,
            reward: &mut reward,
            terminated: &mut term,
            truncated: &mut trunc,
        })
        .unwrap();
        assert_eq!((&split.s, &split.ns, &split.action), (&s, &ns, &action));
        for i in 0..40 {
            assert_eq!(&split.x[i * 6..(i + 1) * 6], &xw[i * 8..i * 8 + 6]);
            assert_eq!(&split.nx[i * 6..(i + 1) * 6], &xw[i * 8 + 2..(i + 1) * 8]);
            assert_eq!(&split.img[i * 6..(i + 1) * 6], &imgw[i * 9..i * 9 + 6]);
            assert_eq!(
                &split.nimg[i * 6..(i + 1) * 6],
                &imgw[i * 9 + 3..(i + 1) * 9]
            );
        }
    }
    let mut tiny = vec![0f32; 40 * 2];
    let err = b.sample(&mut SampleOut {
        comps: vec![
            CompOut::Window(ColumnOut::F32(&mut vec![0f32; 40 * 4 * 2])),
            CompOut::Window(ColumnOut::U8(&mut vec![0u8; 40 * 3 * 3])),
            CompOut::Window(ColumnOut::F32(&mut tiny)),
        ],
        action: &mut vec![0f32; 40 * A],
        reward: &mut [0f32; 40],
        terminated: &mut [false; 40],
        truncated: &mut [false; 40],
    });
    assert!(matches!(err, Err(CoreError::Value(m)) if m.contains("history 1")));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let make = || {
        let ring = ReplayRing::new(spec(32), Some(42));
        append(&ring, 1, &steps(1, 0, 30, &[0])).unwrap();
        ring
    };
    let (a, b) = (make(), make());
    for _ in 0..3 {
        assert_eq!(sample(&a, 16).unwrap().s, sample(&b, 16).unwrap().s);
    }
}

#[test]
fn errors_are_typed_and_clear() {
    let ring = ReplayRing::new(spec(8), Some(8));
    let err = sample(&ring, 4).unwrap_err();
    assert!(
        matches!(err, CoreError::Value(ref m) if m.contains("no valid transition")),
        "{err}"
    );
    let t = steps(0, 0, 3, &[0]);
    let bad = BatchIn {
        obs: vec![
            ColumnIn::U8(&t.img),
            ColumnIn::U8(&t.img),
            ColumnIn::F32(&t.s),
        ],
        action: &t.action,
        reward: &t.reward,
        terminated: &t.terminated,
        truncated: &t.truncated,
        first: &t.first,
    };
    assert!(matches!(ring.append_batch(0, &bad), Err(CoreError::Dtype(m)) if m.contains("\"x\"")));
    let short = BatchIn {
        action: &t.action[1..],
        obs: vec![
            ColumnIn::F32(&t.x),
            ColumnIn::U8(&t.img),
            ColumnIn::F32(&t.s),
        ],
        ..bad
    };
    assert!(
        matches!(ring.append_batch(0, &short), Err(CoreError::Shape(m)) if m.contains("action"))
    );
    assert_eq!(ring.total_appended(), 0, "a rejected batch writes nothing");
    assert!(RingSpec::new(0, vec![], 1).is_err());
    assert!(RingSpec::new(4, vec![ComponentSpec::new("a", &[1], Dtype::U8, 1); 2], 1).is_err());
    assert!(RingSpec::new(4, vec![ComponentSpec::new("a", &[0], Dtype::U8, 1)], 1).is_err());
    assert!(RingSpec::new(4, vec![ComponentSpec::new("a", &[1], Dtype::U8, 0)], 1).is_err());
    assert!(Dtype::parse("float64").is_err());
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tmrl-ring-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn save_load_round_trip_and_replace() {
    let base = temp_dir("roundtrip");
    let dir = base.join("ring");
    let ring = ReplayRing::new(spec(20), Some(9));
    append(&ring, 1, &steps(1, 0, 13, &[0, 6])).unwrap();
    append(&ring, 2, &steps(2, 0, 3, &[0])).unwrap();
    ring.save(&dir).unwrap();
    let back = ReplayRing::load(&dir, None).unwrap();
    assert_eq!(back.spec(), ring.spec());
    assert_eq!(
        (back.len(), back.total_appended(), back.num_transitions()),
        (ring.len(), ring.total_appended(), ring.num_transitions())
    );
    // Same RNG state and same data: identical samples.
    for _ in 0..3 {
        let (a, b) = (sample(&ring, 32).unwrap(), sample(&back, 32).unwrap());
        assert_eq!((a.x, a.img, a.action), (b.x, b.img, b.action));
    }
    // Appending continues the saved streams.
    append(&back, 1, &steps(1, 13, 1, &[])).unwrap();
    assert_eq!(back.num_transitions(), ring.num_transitions() + 1);
    // Saving over an existing save replaces it and leaves no temporary directory behind.
    back.save(&dir).unwrap();
    assert_eq!(
        ReplayRing::load(&dir, Some(1)).unwrap().total_appended(),
        17
    );
    let names: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ring")]);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn load_rejects_missing_corrupt_and_incompatible_saves() {
    let base = temp_dir("corrupt");
    let dir = base.join("ring");
    let ring = ReplayRing::new(spec(8), Some(10));
    append(&ring, 1, &steps(1, 0, 6, &[0])).unwrap();
    let expect_io = |path: &std::path::Path, needle: &str| match ReplayRing::load(path, None) {
        Err(CoreError::Io(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected an Io error containing {needle:?}, got {other:?}"),
    };
    expect_io(&base.join("nope"), "not a directory");
    let fresh = |ring: &ReplayRing| {
        ring.save(&dir).unwrap();
        dir.clone()
    };
    // truncated array
    let d = fresh(&ring);
    let f = d.join("reward.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
    expect_io(&d, "reward.bin");
    // flipped data bit
    let d = fresh(&ring);
    let f = d.join("obs_1.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[2] ^= 4;
    std::fs::write(&f, &bytes).unwrap();
    expect_io(&d, "checksum");
    // a bool that is not 0/1
    let d = fresh(&ring);
    let f = d.join("first.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[1] = 7;
    std::fs::write(&f, &bytes).unwrap();
    expect_io(&d, "not 0 or 1");
    // missing file, bad JSON, other version
    let d = fresh(&ring);
    std::fs::remove_file(d.join("next.bin")).unwrap();
    expect_io(&d, "next.bin");
    let d = fresh(&ring);
    std::fs::write(d.join("header.json"), "{not json").unwrap();
    expect_io(&d, "header.json");
    let d = fresh(&ring);
    let h = std::fs::read_to_string(d.join("header.json"))
        .unwrap()
        .replace("\"version\": 1", "\"version\": 99");
    std::fs::write(d.join("header.json"), h).unwrap();
    expect_io(&d, "version 99");
    // refuses to replace a directory that is not a saved ring
    let other = base.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    assert!(matches!(ring.save(&other), Err(CoreError::Io(m)) if m.contains("refusing")));
    assert!(other.join("keep.txt").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

/// One stream of 40 steps (0..=39) in a ring of 32 (steps 8.. stored); episodes start at steps 0 and 17 and 26
/// (step 15 terminated, step 16 its final observation; step 25 truncated, 26 starts the next), step 33 is
/// truncated without an episode start after it (a time limit the worker bootstraps through).
fn nstep_ring(seed: u64) -> ReplayRing {
    let ring = ReplayRing::new(spec(32), Some(seed));
    let mut t = steps(0, 0, 40, &[0, 17, 26]);
    t.terminated = (0..40).map(|s| s == 15).collect();
    t.truncated = (0..40).map(|s| s == 25 || s == 33).collect();
    append(&ring, 0, &t).unwrap();
    ring
}

#[test]
fn nstep_returns_follow_the_stream_and_stop_at_episode_ends() {
    let (n, gamma) = (4, 0.5f32);
    let ring = nstep_ring(11);
    let (o, discount) = sample_with(&ring, 400, Some(NStep::new(n, gamma).unwrap())).unwrap();
    let (oldest, last) = (8u64, 39u64);
    let has_successor = |u: u64| u < last && ![16, 25].contains(&u);
    let mut lengths = [0usize; 5];
    for i in 0..400 {
        let t = o.s[i] as u64;
        assert!(
            has_successor(t) && t >= oldest,
            "step {t} is no transition start"
        );
        // The reference walk, step by step.
        let (mut sum, mut g, mut m) = (0.0f32, 1.0f32, 0u64);
        loop {
            let u = t + m;
            sum += g * (u as f32 * 0.5);
            g *= gamma;
            m += 1;
            if u == 15 || u == 25 || u == 33 || m == n as u64 || !has_successor(u + 1) {
                break;
            }
        }
        let end = t + m;
        lengths[m as usize] += 1;
        assert!(
            (o.reward[i] - sum).abs() <= 1e-5 * sum.abs().max(1.0),
            "step {t}"
        );
        assert_eq!(discount[i], g);
        assert_eq!(o.terminated[i], end - 1 == 15);
        assert_eq!(o.truncated[i], end - 1 == 25 || end - 1 == 33);
        assert_eq!(
            o.action[i * A + 1],
            -(t as f32),
            "the action is the first step's"
        );
        assert_eq!(o.ns[i], end as f32, "next_obs is {m} steps later");
        // Histories: obs ends at t, next_obs at t + m, each repeating its episode's oldest stored step.
        let start = |u: u64| {
            [0u64, 17, 26]
                .into_iter()
                .filter(|&e| e <= u)
                .max()
                .unwrap()
                .max(oldest)
        };
        for (hist, at) in [(&o.x, t), (&o.nx, end)] {
            let got: Vec<f32> = (0..3).map(|k| hist[i * 6 + 2 * k + 1]).collect();
            let want: Vec<f32> = (0..3).map(|k| (at - 2 + k).max(start(at)) as f32).collect();
            assert_eq!(got, want, "history ending at step {at}");
        }
        assert_eq!(o.nimg[i * 6 + 3], (end % 251) as u8);
        assert_eq!(o.nimg[i * 6], ((end - 1).max(start(end)) % 251) as u8);
    }
    assert!(
        lengths[1..].iter().all(|&c| c > 0),
        "returns of every length 1..=4: {lengths:?}"
    );
}

#[test]
fn nstep_one_is_the_one_step_sample_with_gamma() {
    let (a, b) = (nstep_ring(5), nstep_ring(5));
    let plain = sample(&a, 300).unwrap();
    let (one, discount) = sample_with(&b, 300, Some(NStep::new(1, 0.9).unwrap())).unwrap();
    assert_eq!(format!("{plain:?}"), format!("{one:?}"));
    assert!(discount.iter().all(|&d| d == 0.9));
}

#[test]
fn nstep_refuses_windows_bad_discounts_and_bad_settings() {
    let ring = nstep_ring(1);
    assert!(NStep::new(0, 0.9).is_err());
    assert!(NStep::new(NStep::MAX + 1, 0.9).is_err());
    assert!(NStep::new(3, 0.0).is_err());
    assert!(NStep::new(3, 1.5).is_err());
    assert!(NStep::new(3, f32::NAN).is_err());
    let (mut win, mut ni, mut i, mut s, mut ns) = (
        vec![0.0; 2 * 4 * 2],
        vec![0; 12],
        vec![0; 12],
        vec![0.0; 2],
        vec![0.0; 2],
    );
    let (mut act, mut rew, mut te, mut tr) = (
        vec![0.0; 2 * A],
        vec![0.0; 2],
        vec![false; 2],
        vec![false; 2],
    );
    let mut out = SampleOut {
        comps: vec![
            CompOut::Window(ColumnOut::F32(&mut win)),
            CompOut::Split {
                obs: ColumnOut::U8(&mut i),
                next_obs: ColumnOut::U8(&mut ni),
            },
            CompOut::Split {
                obs: ColumnOut::F32(&mut s),
                next_obs: ColumnOut::F32(&mut ns),
            },
        ],
        action: &mut act,
        reward: &mut rew,
        terminated: &mut te,
        truncated: &mut tr,
    };
    let err = ring
        .sample_n(&mut out, NStep::new(3, 0.9).unwrap(), &mut [0.0; 2])
        .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
    let err = ring
        .sample_n(&mut out, NStep::new(1, 0.9).unwrap(), &mut [0.0; 3])
        .unwrap_err();
    assert!(err.to_string().contains("discount"), "{err}");
    ring.sample_n(&mut out, NStep::new(1, 0.9).unwrap(), &mut [0.0; 2])
        .unwrap();
}
