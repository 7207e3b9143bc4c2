//! Per-sample random streams. A sample's random start depends only on (seed, sample index,
//! attack, restart), never on which other samples share its batch.

/// SplitMix64's finaliser: a good 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 generator keyed by the four coordinates of a stream.
pub struct Stream {
    state: u64,
}

impl Stream {
    pub fn new(seed: u64, sample: u64, attack: u64, restart: u64) -> Self {
        let mut key = mix(seed.wrapping_add(GOLDEN));
        for part in [sample, attack, restart] {
            key = mix(key ^ mix(part.wrapping_add(GOLDEN)));
        }
        Self { state: key }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// `len` uniforms for each sample, row after row.
pub fn uniforms(samples: &[u64], len: usize, seed: u64, attack: u64, restart: u64) -> Vec<f32> {
    let mut out = Vec::with_capacity(samples.len() * len);
    for &sample in samples {
        let mut stream = Stream::new(seed, sample, attack, restart);
        out.extend((0..len).map(|_| stream.uniform()));
    }
    out
}

/// `len` standard normals then one uniform for each sample, row after row (an L2 start: a
/// direction and a radius).
pub fn normals_and_radius(
    samples: &[u64],
    len: usize,
    seed: u64,
    attack: u64,
    restart: u64,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(samples.len() * (len + 1));
    for &sample in samples {
        let mut stream = Stream::new(seed, sample, attack, restart);
        out.extend((0..len).map(|_| stream.normal()));
        out.push(stream.uniform());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_stream_does_not_depend_on_its_neighbours() {
        let alone = uniforms(&[7], 16, 42, 0, 0);
        let mixed = uniforms(&[3, 7, 11], 16, 42, 0, 0);
        assert_eq!(alone, mixed[16..32]);
        assert_ne!(mixed[..16], mixed[16..32]);
    }

    #[test]
    fn every_coordinate_changes_the_stream() {
        let base = uniforms(&[1], 8, 1, 1, 1);
        for other in [
            uniforms(&[2], 8, 1, 1, 1),
            uniforms(&[1], 8, 2, 1, 1),
            uniforms(&[1], 8, 1, 2, 1),
            uniforms(&[1], 8, 1, 1, 2),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn uniforms_and_normals_have_the_right_moments() {
        let u = uniforms(&[0], 100_000, 9, 0, 0);
        let mean = u.iter().map(|&x| f64::from(x)).sum::<f64>() / u.len() as f64;
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let n = normals_and_radius(&[0], 100_000, 9, 0, 0);
        let n = &n[..100_000];
        let mean = n.iter().map(|&x| f64::from(x)).sum::<f64>() / n.len() as f64;
        let var = n
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
