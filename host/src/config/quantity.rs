//! Kubernetes quantities (`250m`, `64Mi`, `1e3`): the notation of pod resources and of the
//! sizes a policy writes (`limits.memory`). Pure parsing; nothing here reads a cluster.

/// A Kubernetes quantity (`250m`, `1.5`, `128974848`, `129Mi`, `1e3`, `12345n`) as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [("250m", 0.25), ("2", 2.0), ("12345678n", 0.012345678), ("1500u", 0.0015), ("64Mi", 67108864.0), ("1Gi", 1073741824.0), ("2k", 2000.0), ("1e3", 1000.0), ("0.5", 0.5)];
        for (text, want) in cases {
            let got = parse_quantity(text).unwrap_or_else(|| panic!("{text} does not parse"));
            assert!((got - want).abs() < 1e-12 * want.max(1.0), "{text}: {got} != {want}");
        }
        for bad in ["", "m", "12Q", "1.2.3"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
