//! A fixed-size window of a metric's recent values, oldest first.

use std::collections::VecDeque;

/// The last `capacity` finite values of a metric.
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    values: VecDeque<f64>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, values: VecDeque::with_capacity(capacity) }
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
        // Kept contiguous so that `values` can lend one slice (a window is small).
        self.values.make_contiguous();
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// The values, oldest first, as one slice.
    pub fn values(&self) -> &[f64] {
        let (front, back) = self.values.as_slices();
        debug_assert!(back.is_empty(), "push keeps the buffer contiguous");
        front
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
}
