//! A small deterministic random number generator whose whole state is four `u64`s, so a checkpoint can
//! save it and a resumed run continues the same stream: xoshiro256** (Blackman & Vigna), seeded through
//! splitmix64. On top of it the few distributions training needs, each sampled exactly (no
//! approximations): uniform, normal, gamma, beta, Bernoulli and binomial.
//!
//! Independent streams (data split, epoch order, masking, validation, per-tensor init) come from
//! [`Rng::derive`], which hashes a seed, a stream name and an index, so adding a stream never shifts
//! another.

/// splitmix64: seeds xoshiro and mixes stream names.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, for turning stream names into seeds.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix64(&mut sm);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    /// An independent stream for (`seed`, `stream`, `index`).
    pub fn derive(seed: u64, stream: &str, index: u64) -> Self {
        let mut sm = seed ^ fnv1a(stream).rotate_left(17);
        let a = splitmix64(&mut sm);
        let mut sm2 = a ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03);
        Self::seed_from_u64(splitmix64(&mut sm2))
    }

    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    pub fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1): never exactly 0, for logarithms.
    pub fn uniform_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` without modulo bias (Lemire's method with rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Marsaglia's polar method).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Gamma(shape, 1) by Marsaglia & Tsang; shapes below 1 through Gamma(shape + 1) * U^(1/shape).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        assert!(shape > 0.0, "gamma shape must be positive");
        if shape < 1.0 {
            let g = self.gamma(shape + 1.0);
            return g * self.uniform_open().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform_open();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta(a, b) as G_a / (G_a + G_b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// Binomial(n, p), exactly. Small `n` counts Bernoulli trials; larger `n` uses the order-statistic
    /// recursion (Knuth, TAOCP vol. 2, 3.4.1): the median of `n` uniforms is Beta-distributed, and
    /// comparing it with `p` halves `n` with the law unchanged, so the cost is O(log n) beta draws.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        let mut n = n;
        let mut p = p.clamp(0.0, 1.0);
        let mut acc = 0u64;
        loop {
            if n == 0 || p == 0.0 {
                return acc;
            }
            if p == 1.0 {
                return acc + n;
            }
            if n <= 64 {
                for _ in 0..n {
                    if self.uniform() < p {
                        acc += 1;
                    }
                }
                return acc;
            }
            // The i-th smallest of n uniforms is Beta(i, n + 1 - i).
            let i = n.div_ceil(2);
            let x = self.beta(i as f64, (n + 1 - i) as f64);
            if x < p {
                // The i smallest are successes; the other n - i are uniform on (x, 1).
                acc += i;
                n -= i;
                p = (p - x) / (1.0 - x);
            } else {
                // Only the i - 1 below x can succeed; they are uniform on (0, x).
                n = i - 1;
                p /= x;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_xoshiro_output() {
        // xoshiro256** with state [1, 2, 3, 4] (the reference implementation's first outputs).
        let mut r = Rng::from_state([1, 2, 3, 4]);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240]);
    }

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = Rng::derive(7, "sample", 0);
        for _ in 0..10 {
            a.next_u64();
        }
        let mut b = Rng::from_state(a.state());
        assert_eq!(
            (0..5).map(|_| a.normal()).collect::<Vec<_>>(),
            (0..5).map(|_| b.normal()).collect::<Vec<_>>()
        );
        assert_ne!(Rng::derive(7, "a", 0), Rng::derive(7, "b", 0));
        assert_ne!(Rng::derive(7, "a", 0), Rng::derive(7, "a", 1));
        assert_ne!(Rng::derive(7, "a", 0), Rng::derive(8, "a", 0));
    }

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, v)
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut r = Rng::seed_from_u64(1);
        let n = 200_000;
        let (m, v) = mean_var(&(0..n).map(|_| r.normal()).collect::<Vec<_>>());
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.015, "normal {m} {v}");
        let (m, v) = mean_var(&(0..n).map(|_| r.gamma(2.5)).collect::<Vec<_>>());
        assert!(
            (m - 2.5).abs() < 0.02 && (v - 2.5).abs() < 0.06,
            "gamma {m} {v}"
        );
        let (m, _) = mean_var(&(0..n).map(|_| r.gamma(0.4)).collect::<Vec<_>>());
        assert!((m - 0.4).abs() < 0.01, "gamma<1 {m}");
        // Beta(2, 2): mean 1/2, variance 1/20.
        let (m, v) = mean_var(&(0..n).map(|_| r.beta(2.0, 2.0)).collect::<Vec<_>>());
        assert!(
            (m - 0.5).abs() < 0.004 && (v - 0.05).abs() < 0.002,
            "beta {m} {v}"
        );
        let mut c = [0usize; 5];
        for _ in 0..n {
            c[r.below(5) as usize] += 1;
        }
        for k in c {
            assert!((k as f64 / n as f64 - 0.2).abs() < 0.005, "{c:?}");
        }
    }

    #[test]
    fn binomial_mean_and_variance_small_and_large_n() {
        let mut r = Rng::seed_from_u64(3);
        for &(n, p) in &[
            (10u64, 0.3),
            (1000, 0.07),
            (123_457, 0.42),
            (5_000_000, 0.001),
        ] {
            let k = 20_000;
            let xs: Vec<f64> = (0..k).map(|_| r.binomial(n, p) as f64).collect();
            let (m, v) = mean_var(&xs);
            let (em, ev) = (n as f64 * p, n as f64 * p * (1.0 - p));
            // Mean within 5 standard errors; variance within 6%.
            assert!(
                (m - em).abs() < 5.0 * (ev / k as f64).sqrt(),
                "n={n} p={p}: mean {m} vs {em}"
            );
            assert!((v / ev - 1.0).abs() < 0.06, "n={n} p={p}: var {v} vs {ev}");
            assert!(xs.iter().all(|&x| x <= n as f64));
        }
        assert_eq!(r.binomial(0, 0.5), 0);
        assert_eq!(r.binomial(77, 1.0), 77);
        assert_eq!(r.binomial(77, 0.0), 0);
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut v: Vec<u32> = (0..100).collect();
        Rng::seed_from_u64(5).shuffle(&mut v);
        let mut w: Vec<u32> = (0..100).collect();
        Rng::seed_from_u64(5).shuffle(&mut w);
        assert_eq!(v, w);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
