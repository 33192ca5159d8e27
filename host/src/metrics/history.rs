//! A fixed-size window of a metric's recent values, oldest first.

use std::borrow::Cow;

/// The last `capacity` finite values of a metric, lent as one slice.
///
/// Kept in a `Vec` whose oldest values are dropped in batches: a push is amortised O(1) at
/// the price of up to a quarter more values held, at least 16. (A history as long as a
/// model's seasonal context reads, 2,076 points, would otherwise move all of them at every
/// point.)
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    buffer: Vec<f64>,
    /// Index in `buffer` of the oldest value kept.
    start: usize,
    /// A reading taken since the newest point, within the same forecast step: it stands in
    /// for that point in `current` until the next step's point is pushed.
    between: Option<f64>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, buffer: Vec::with_capacity(capacity.min(1 << 16)), start: 0, between: None }
    }

    /// Appends a value, dropping the oldest when full. Values that are not finite are ignored.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.buffer.push(value);
        if self.buffer.len() - self.start > self.capacity {
            self.start += 1;
        }
        // Drop the values no longer kept once they are a quarter of the capacity (at least 16).
        if self.start >= (self.capacity / 4).max(16) {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.between = None;
    }

    /// Takes a reading that falls within the newest point's step: the points stay one per
    /// step, as the forecaster reads them, and the reading stands in for the newest point in
    /// `current`. With no point yet, the reading is the first point. Values that are not
    /// finite are ignored.
    pub fn note_between(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values().is_empty() {
            self.push(value);
        } else {
            self.between = Some(value);
        }
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.start = 0;
        self.between = None;
    }

    /// The values, oldest first, as one slice.
    pub fn values(&self) -> &[f64] {
        &self.buffer[self.start..]
    }

    /// The newest reading: the one taken since the newest point, else that point.
    pub fn newest(&self) -> Option<f64> {
        self.between.or_else(|| self.buffer.last().copied())
    }

    /// The newest `n` points with the newest reading in place of the newest point: what the
    /// rules read as the metric's history (its last value is the current usage). Only those
    /// `n` are copied when a reading stands in.
    pub fn current(&self, n: usize) -> Cow<'_, [f64]> {
        let values = self.values();
        let values = &values[values.len().saturating_sub(n)..];
        match self.between {
            None => Cow::Borrowed(values),
            Some(reading) => {
                let mut values = values.to_vec();
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
    fn a_long_history_slides_through_its_batched_drops() {
        let mut h = History::new(100);
        for v in 0..1_000 {
            h.push(f64::from(v));
            let want: Vec<f64> = (0.max(v - 99)..=v).map(f64::from).collect();
            assert_eq!(h.values(), &want[..], "after {v}");
        }
        assert!(h.buffer.len() <= 100 + 25, "at most a quarter more held: {}", h.buffer.len());
        h.clear();
        assert!(h.values().is_empty() && h.newest().is_none());
    }

    #[test]
    fn a_reading_between_points_stands_in_for_the_newest_until_the_next_point() {
        let mut h = History::new(3);
        h.note_between(1.0); // no point yet: the first point
        h.push(2.0);
        h.note_between(5.0);
        h.note_between(f64::INFINITY);
        assert_eq!(h.values(), &[1.0, 2.0], "the points stay one per step");
        assert_eq!(&*h.current(3), &[1.0, 5.0]);
        assert_eq!(&*h.current(1), &[5.0], "the newest n");
        assert_eq!(h.newest(), Some(5.0));
        h.push(3.0);
        assert_eq!(&*h.current(3), &[1.0, 2.0, 3.0], "a new point ends the stand-in");
    }
}
