//! `embed --precision bf16`: mixed precision (bf16 weights and products, f32 activation stream,
//! LayerNorm and softmax in f32) against f32 on the same cells, per path.

mod common;

use common::*;

/// Lowest per-row cosine and largest absolute difference of two [rows, cols] matrices.
fn compare(a: &[f32], b: &[f32], cols: usize) -> (f64, f64) {
    let (mut min_cos, mut max_abs) = (f64::INFINITY, 0f64);
    for (x, y) in a.chunks(cols).zip(b.chunks(cols)) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let nx = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let ny = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
        min_cos = min_cos.min(dot / (nx * ny).max(1e-30));
        for (p, q) in x.iter().zip(y) {
            max_abs = max_abs.max((*p as f64 - *q as f64).abs());
        }
    }
    (min_cos, max_abs)
}

#[test]
fn bf16_tracks_f32_on_every_path() {
    let dir = tmp();
    let input = test_data("pbmc_tiny.h5ad");
    // (mode args, lowest cosine allowed, largest absolute difference allowed). Measured on this model:
    // cosine 0.99999 and 0.03 (cell), 0.99998 and 0.016 (expression); bf16 carries 8 bits.
    let cases: [(&[&str], f64, f64); 3] = [
        (&["--mode", "cell"], 0.9999, 0.1),
        (&["--mode", "gene", "--gene-embedding", "mean"], 0.9999, 0.1),
        (&["--mode", "expression"], 0.9999, 0.1),
    ];
    for (args, min_cos, max_abs) in cases {
        let mut out = vec![];
        for p in ["f32", "bf16"] {
            let path = dir.path().join(format!("{}_{p}.npy", args[1]));
            let mut extra = args.to_vec();
            extra.extend(["--precision", p]);
            embed_ok(&input, &path, &extra);
            let prov =
                std::fs::read_to_string(format!("{}.provenance.json", path.display())).unwrap();
            assert!(prov.contains(&format!("\"precision\": \"{p}\"")), "{prov}");
            out.push(read_npy(&path));
        }
        let ((sa, a), (sb, b)) = (&out[0], &out[1]);
        assert_eq!(sa, sb);
        let cols = sa[1..].iter().product();
        let (cos, abs) = compare(a, b, cols);
        assert!(
            cos >= min_cos && abs <= max_abs,
            "{args:?}: bf16 vs f32 lowest cosine {cos}, largest difference {abs}"
        );
        // Not the f32 numbers by accident: bf16 products must change something.
        assert!(abs > 0.0, "{args:?}: bf16 output equals f32 exactly");
    }
}
