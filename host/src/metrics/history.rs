//! A fixed-size window of a metric's recent values, oldest first.

use std::borrow::Cow;
use std::collections::VecDeque;

/// The last `capacity` finite values of a metric.
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    values: VecDeque<f64>,
    /// A reading taken since the newest point, within the same forecast step: it stands in
    /// for that point in `current` until the next step's point is pushed.
    between: Option<f64>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, values: VecDeque::with_capacity(capacity), between: None }
    }

    /// Appends a value, dropping the oldest when full. Values that are not finite are ignored.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
        self.between = None;
        // Kept contiguous so that `values` can lend one slice (a window is small).
        self.values.make_contiguous();
    }

    /// Takes a reading that falls within the newest point's step: the points stay one per
    /// step, as the forecaster reads them, and the reading stands in for the newest point in
    /// `current`. With no point yet, the reading is the first point. Values that are not
    /// finite are ignored.
    pub fn note_between(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values.is_empty() {
            self.push(value);
        } else {
            self.between = Some(value);
        }
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.values.clear();
        self.between = None;
    }

    /// The values, oldest first, as one slice.
    pub fn values(&self) -> &[f64] {
        let (front, back) = self.values.as_slices();
        debug_assert!(back.is_empty(), "push keeps the buffer contiguous");
        front
    }

    /// The newest reading: the one taken since the newest point, else that point.
    pub fn newest(&self) -> Option<f64> {
        self.between.or_else(|| self.values.back().copied())
    }

    /// The points with the newest reading in place of the newest point: what the rules read
    /// as the metric's history (its last value is the current usage).
    pub fn current(&self) -> Cow<'_, [f64]> {
        match self.between {
            None => Cow::Borrowed(self.values()),
            Some(reading) => {
                let mut values = self.values().to_vec();
                if let Some(last) = values.last_mut() {
                    *last = reading;
                }
                Cow::Owned(values)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_values_in_order_and_skips_nan() {
        let mut h = History::new(3);
        for v in [1.0, 2.0, f64::NAN, 3.0, 4.0] {
            h.push(v);
        }
        assert_eq!(h.values(), &[2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_reading_between_points_stands_in_for_the_newest_until_the_next_point() {
        let mut h = History::new(3);
        h.note_between(1.0); // no point yet: the first point
        h.push(2.0);
        h.note_between(5.0);
        h.note_between(f64::INFINITY);
        assert_eq!(h.values(), &[1.0, 2.0], "the points stay one per step");
        assert_eq!(&*h.current(), &[1.0, 5.0]);
        assert_eq!(h.newest(), Some(5.0));
        h.push(3.0);
        assert_eq!(&*h.current(), &[1.0, 2.0, 3.0], "a new point ends the stand-in");
    }
}
