//! Classification metrics: confusion matrix, accuracy, per-class precision/recall/F1 and macro-F1
//! (the unweighted mean of the per-class F1 over the classes present in the truth or the predictions,
//! as scikit-learn's `f1_score(average='macro')` with its default labels).

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// `confusion[t][p]`: cells of true class `t` predicted as `p`.
    pub confusion: Vec<Vec<u64>>,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Per class: F1, `NaN` for a class absent from both truth and predictions.
    pub f1: Vec<f64>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub support: Vec<u64>,
    pub n: u64,
}

impl Classification {
    /// Metrics of `pred` against `truth` (class indices below `n_classes`).
    pub fn new(truth: &[usize], pred: &[usize], n_classes: usize) -> Self {
        assert_eq!(
            truth.len(),
            pred.len(),
            "truth and predictions differ in length"
        );
        let mut confusion = vec![vec![0u64; n_classes]; n_classes];
        for (&t, &p) in truth.iter().zip(pred) {
            confusion[t][p] += 1;
        }
        let n = truth.len() as u64;
        let correct: u64 = (0..n_classes).map(|k| confusion[k][k]).sum();
        let support: Vec<u64> = confusion.iter().map(|r| r.iter().sum()).collect();
        let predicted: Vec<u64> = (0..n_classes)
            .map(|k| confusion.iter().map(|r| r[k]).sum())
            .collect();
        let (mut f1, mut precision, mut recall) = (vec![], vec![], vec![]);
        for k in 0..n_classes {
            let tp = confusion[k][k] as f64;
            let p = if predicted[k] > 0 {
                tp / predicted[k] as f64
            } else {
                0.0
            };
            let r = if support[k] > 0 {
                tp / support[k] as f64
            } else {
                0.0
            };
            precision.push(p);
            recall.push(r);
            f1.push(if support[k] == 0 && predicted[k] == 0 {
                f64::NAN
            } else if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            });
        }
        let present: Vec<f64> = f1.iter().copied().filter(|v| !v.is_nan()).collect();
        let macro_f1 = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        Self {
            confusion,
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            macro_f1,
            f1,
            precision,
            recall,
            support,
            n,
        }
    }

    /// A JSON report with class names (`null` for an F1 that is undefined).
    pub fn to_json(&self, classes: &[String]) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        let per_class: Vec<Value> = classes
            .iter()
            .enumerate()
            .map(|(k, c)| {
                json!({
                    "class": c,
                    "f1": num(self.f1[k]),
                    "precision": num(self.precision[k]),
                    "recall": num(self.recall[k]),
                    "support": self.support[k],
                })
            })
            .collect();
        json!({
            "n_cells": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": per_class,
            "classes": classes,
            "confusion_matrix": self.confusion,
            "confusion_matrix_layout": "rows: true class, columns: predicted class, in the order of 'classes'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        // truth 0,0,1,1,2 ; pred 0,1,1,1,0
        let m = Classification::new(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], 4);
        assert_eq!(m.confusion[0], vec![1, 1, 0, 0]);
        assert_eq!(m.confusion[2], vec![1, 0, 0, 0]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // class 0: p 1/2 r 1/2 → 0.5; class 1: p 2/3 r 1 → 0.8; class 2: 0; class 3 absent.
        assert!((m.f1[0] - 0.5).abs() < 1e-12);
        assert!((m.f1[1] - 0.8).abs() < 1e-12);
        assert_eq!(m.f1[2], 0.0);
        assert!(m.f1[3].is_nan());
        assert!((m.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
        let j = m.to_json(&["a".into(), "b".into(), "c".into(), "d".into()]);
        assert!(j["per_class"][3]["f1"].is_null());
    }
}
