//! Percentiles and the JSON lines the benchmarks print.

use serde_json::{json, Value};

/// The `p`-th percentile (0..=100) of `samples` (sorted in place).
pub(crate) fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// The median.
pub(crate) fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 50.0)
}

/// Prints one figure as a JSON line; with a baseline, also the ratio.
pub(crate) fn emit(bench: &str, value: f64, unit: &str, baseline: Option<f64>, extra: Value) {
    let mut line = json!({ "bench": bench, "value": round(value), "unit": unit });
    if let Some(b) = baseline {
        line["baseline"] = json!(round(b));
        line["ratio"] = json!((value / b * 1000.0).round() / 1000.0);
    }
    if let (Some(obj), Value::Object(more)) = (line.as_object_mut(), extra) {
        obj.extend(more);
    }
    println!("{line}");
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_samples() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&mut s), 51.0);
        assert_eq!(percentile(&mut s, 99.0), 99.0);
        assert_eq!(percentile(&mut s, 0.0), 1.0);
        assert!(percentile(&mut [], 50.0).is_nan());
    }
}
