//! A short fuzzing run of every decoder on each test run: valid seeds, the saved regressions in
//! `fuzz/regressions/`, and a few thousand deterministic mutations of the seeds (bit flips,
//! interesting integers, cuts, repeats, splices). Each input must be answered, not panicked on.
//! Long coverage-guided runs use the cargo-fuzz targets in `fuzz/` (`./dev fuzz TARGET SECONDS`).
//!
//! `ROBUSTD_FUZZ_ITERATIONS` sets the mutations per target (default 10000).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use robustd::dataset::Dataset;
use robustd::fuzz::TARGETS;
use robustd::tensor::{write_npy, HostTensor};
use robustd::worker::protocol::{encode_frame, Reply, Request};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Valid inputs of each target, the starting points of the mutations.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let x = HostTensor::f32(
        vec![2, 1, 2, 2],
        vec![0.0, 0.25, 0.5, 1.0, 0.1, 0.2, 0.3, 0.4],
    );
    let y = HostTensor::i64(vec![2], vec![3, 7]);
    match target {
        "oip_json" => vec![
            br#"[{"name":"input","shape":[1,2,2],"datatype":"FP32","data":[[0.5,1],[0,0.25]]},
                {"name":"label","shape":[1],"datatype":"INT64","data":[3]}]"#
                .to_vec(),
            br#"[{"name":"m","shape":[3],"datatype":"BOOL","data":[true,false,true]},
                {"name":"h","shape":[2],"datatype":"FP16","data":[1e3,-2]}]"#
                .to_vec(),
        ],
        "oip_binary" => {
            let header = br#"[{"name":"input","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}},{"name":"label","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}}]"#;
            let mut seed = (header.len() as u16).to_le_bytes().to_vec();
            seed.extend_from_slice(header);
            seed.extend(x.to_le_bytes()[..16].iter());
            seed.extend(y.to_le_bytes());
            vec![seed]
        }
        "npy" => vec![write_npy(&x), write_npy(&y)],
        "safetensors" => vec![Dataset::to_safetensors(&[("x", &x), ("y", &y)])],
        "worker_frame" => vec![
            encode_frame(&Request::Shutdown, &[x.clone(), y.clone()]).unwrap(),
            encode_frame(&Reply::Loaded, &[x]).unwrap(),
        ],
        "model_archive" => vec![
            std::fs::read(repo().join("models/digits_cnn.pt")).unwrap(),
            std::fs::read(repo().join("fuzz/seeds/model_archive/tiny_linear.pt")).unwrap(),
        ],
        other => panic!("no seeds for target {other}"),
    }
}

/// The saved inputs that once broke a decoder.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let folder = repo().join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// xorshift64*: deterministic, so a failure repeats on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
    i64::MAX as u64,
];

/// A position in `len` bytes, biased toward the start and the end where formats keep their
/// headers and directories.
fn position(rng: &mut Rng, len: usize) -> usize {
    match rng.below(3) {
        0 => rng.below(len.min(64)),
        1 => len.saturating_sub(1 + rng.below(len.min(1024))),
        _ => rng.below(len),
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = position(rng, len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = position(rng, len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if len >= 8 => {
                let at = position(rng, len - 7);
                let width = [2, 4, 8][rng.below(3)];
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                input[at..at + width].copy_from_slice(&value[..width]);
            }
            3 => input.truncate(position(rng, len + 1)),
            4 if len > 0 => {
                let at = position(rng, len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            5 if len > 0 => {
                let at = position(rng, len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = input[at..end].to_vec();
                let to = position(rng, len + 1);
                input.splice(to..to, copy);
            }
            6 if !other.is_empty() => {
                let cut = position(rng, len + 1);
                let from = rng.below(other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = position(rng, len + 1);
                let digit = b"0123456789-e.,[]{}\":"[rng.below(20)];
                input.insert(at, digit);
            }
        }
    }
    input
}

/// Runs `input` through the target; a panic saves it under target/ and fails the test with
/// where to find it.
fn run_one(name: &str, target: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("{name}-{}", input.len()));
        std::fs::write(&path, input).unwrap();
        panic!(
            "fuzz target {name} panicked on {what}; input saved to {}",
            path.display()
        );
    }
}

#[test]
fn every_decoder_survives_seeds_regressions_and_mutations() {
    let iterations: usize = std::env::var("ROBUSTD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Quiet the default hook: caught panics are reported by run_one with the input's path.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for &(name, target) in TARGETS {
        let seeds = seeds(name);
        for seed in &seeds {
            run_one(name, target, seed, "a seed");
        }
        for (path, bytes) in regressions(name) {
            run_one(
                name,
                target,
                &bytes,
                &format!("regression {}", path.display()),
            );
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for i in 0..iterations {
            let seed = &seeds[i % seeds.len()];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            run_one(name, target, &input, &format!("mutation {i}"));
        }
    }
    std::panic::set_hook(hook);
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(repo().join("fuzz/Cargo.toml")).unwrap();
    for &(name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        let source = repo().join(format!("fuzz/fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(
            text.contains(&format!("robustd::fuzz::{name}(")),
            "{}",
            source.display()
        );
    }
}
