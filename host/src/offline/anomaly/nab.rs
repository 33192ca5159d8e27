//! The Numenta Anomaly Benchmark's scoring (NAB v1.1, `nab/sweeper.py`), for detections
//! against labelled windows.
//!
//! Per file: the first 15% (at most 750 points) is probationary and not scored. A detection
//! inside a window scores `scaled_sigmoid(position)`, where position runs from -1 at the
//! window's start towards 0 at its end, normalised so that a detection at the start is worth
//! the profile's true-positive weight; only the best (earliest) detection of a window counts.
//! A detection outside any window costs the false-positive weight times a sigmoid of its
//! distance past the preceding window (a full -1 when no window precedes it). Each window
//! with no detection costs the false-negative weight. The corpus score is normalised so that
//! the null detector (no detections) scores 0 and the perfect one 100.

/// A scoring profile's weights (NAB's `config/profiles.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const STANDARD: Profile = Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 };
pub const REWARD_LOW_FP: Profile = Profile { name: "reward_low_FP_rate", tp: 1.0, fp: 0.22, fn_: 1.0 };
pub const REWARD_LOW_FN: Profile = Profile { name: "reward_low_FN_rate", tp: 1.0, fp: 0.11, fn_: 2.0 };
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// NAB's sigmoid: 1 well before a window's end, 0 at it, towards -1 far after.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * relative_position).exp()) - 1.0 }
}

/// NAB's probationary length for a file of `rows` rows.
pub fn probation(rows: usize) -> usize {
    (0.15 * rows.min(5000) as f64).floor() as usize
}

/// One file's raw score parts under a profile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileScore {
    pub raw: f64,
    /// Windows with a scored point (outside probation).
    pub windows: usize,
    pub detected_windows: usize,
    pub false_positives: usize,
}

/// Scores one file: `detected[i]` for each row; `windows` as inclusive row ranges, in order.
pub fn score_file(detected: &[bool], windows: &[(usize, usize)], profile: Profile) -> FileScore {
    let rows = detected.len();
    let probationary = probation(rows);
    let max_tp = scaled_sigmoid(-1.0);
    let mut window_best: Vec<Option<f64>> = vec![None; windows.len()];
    let mut window_scored = vec![false; windows.len()];
    let (mut fp_score, mut false_positives) = (0.0, 0);
    let mut previous: Option<(usize, usize)> = None; // (right index, width) of the last window passed
    let mut w = 0;
    for (i, &hit) in detected.iter().enumerate() {
        while w < windows.len() && windows[w].1 < i {
            previous = Some((windows[w].1, windows[w].1 - windows[w].0 + 1));
            w += 1;
        }
        let inside = w < windows.len() && windows[w].0 <= i;
        if i < probationary {
            continue;
        }
        if inside {
            window_scored[w] = true;
        }
        if !hit {
            continue;
        }
        if inside {
            let (left, right) = windows[w];
            let width = (right - left + 1) as f64;
            let position = -((right - i + 1) as f64) / width;
            let score = scaled_sigmoid(position) * profile.tp / max_tp;
            let best = window_best[w].get_or_insert(f64::NEG_INFINITY);
            *best = best.max(score);
        } else {
            let unweighted = match previous {
                None => -1.0,
                Some((right, width)) => scaled_sigmoid((i - right) as f64 / (width as f64 - 1.0).max(1.0)),
            };
            fp_score += unweighted * profile.fp;
            false_positives += 1;
        }
    }
    let windows_counted = window_scored.iter().filter(|s| **s).count();
    let detected_windows = window_best.iter().filter(|b| b.is_some()).count();
    let tp_score: f64 = window_best.iter().flatten().sum();
    let raw = tp_score + fp_score - profile.fn_ * (windows_counted - detected_windows) as f64;
    FileScore { raw, windows: windows_counted, detected_windows, false_positives }
}

/// The corpus score, 0 (null detector) to 100 (perfect), from each file's score.
pub fn normalised(files: &[FileScore], profile: Profile) -> f64 {
    let raw: f64 = files.iter().map(|f| f.raw).sum();
    let windows: usize = files.iter().map(|f| f.windows).sum();
    let null = -profile.fn_ * windows as f64;
    let perfect = profile.tp * windows as f64;
    if perfect == null { 0.0 } else { 100.0 * (raw - null) / (perfect - null) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand from sweeper.py's formulas: 20 rows (probation 3), one window at rows
    /// 8..=11 (width 4), detections at row 9 and row 15.
    /// - row 9 is in the window at position -(11 - 9 + 1) / 4 = -0.75:
    ///   (2 / (1 + e^-3.75) - 1) / (2 / (1 + e^-5) - 1) = 0.954046 / 0.986614 = 0.966990;
    /// - row 15 is 4 rows past the window's end, relative (15 - 11) / (4 - 1) = 1.3333:
    ///   2 / (1 + e^6.6667) - 1 = -0.997459, times the FP weight.
    /// Standard: 0.966990 - 0.11 * 0.997459 = 0.857270; null -1, perfect 1 -> 92.86.
    /// Reward low FP: 0.966990 - 0.22 * 0.997459 = 0.747549 -> 87.38.
    /// Reward low FN: the same raw as standard, null -2, perfect 1 -> (0.857270 + 2) / 3 = 95.24.
    #[test]
    fn a_hand_checked_file() {
        let mut detected = vec![false; 20];
        detected[9] = true;
        detected[15] = true;
        let windows = [(8, 11)];
        let standard = score_file(&detected, &windows, STANDARD);
        assert!((standard.raw - 0.857270).abs() < 1e-5, "{standard:?}");
        assert_eq!((standard.windows, standard.detected_windows, standard.false_positives), (1, 1, 1));
        assert!((normalised(&[standard], STANDARD) - 92.8635).abs() < 1e-3);
        let low_fp = score_file(&detected, &windows, REWARD_LOW_FP);
        assert!((normalised(&[low_fp], REWARD_LOW_FP) - 87.3775).abs() < 1e-3, "{low_fp:?}");
        let low_fn = score_file(&detected, &windows, REWARD_LOW_FN);
        assert!((normalised(&[low_fn], REWARD_LOW_FN) - 95.2423).abs() < 1e-3);
    }

    #[test]
    fn only_the_earliest_detection_in_a_window_counts_and_a_miss_costs_the_fn_weight() {
        let mut detected = vec![false; 40];
        for i in 10..=13 {
            detected[i] = true; // the whole first window
        }
        let windows = [(10, 13), (30, 33)];
        let s = score_file(&detected, &windows, STANDARD);
        // First window detected at its start: exactly the TP weight; second missed: -1.
        assert!((s.raw - 0.0).abs() < 1e-12, "{s:?}");
        assert_eq!((s.detected_windows, s.false_positives), (1, 0));
        assert!((normalised(&[s], STANDARD) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn probation_is_not_scored_and_null_and_perfect_bound_the_scale() {
        let mut detected = vec![false; 100];
        detected[3] = true; // inside probation (15 rows): ignored
        let windows = [(50, 59)];
        assert_eq!(normalised(&[score_file(&detected, &windows, STANDARD)], STANDARD), 0.0);
        detected[50] = true;
        assert!((normalised(&[score_file(&detected, &windows, STANDARD)], STANDARD) - 100.0).abs() < 1e-9);
        // A false positive before any window costs the full FP weight.
        detected[20] = true;
        assert!((score_file(&detected, &windows, STANDARD).raw - (1.0 - 0.11)).abs() < 1e-12);
    }
}
