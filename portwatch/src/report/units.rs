//! Number formatting shared by the text and Markdown renderers.

/// Bytes with a decimal unit: `999 B`, `1.5 kB`, `12.0 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Microseconds as a short duration: `850us`, `12.3ms`, `4.0s`, `3.2min`, `5.1h`.
pub fn micros(us: u64) -> String {
    let f = us as f64;
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", f / 1e3)
    } else if us < 60_000_000 {
        format!("{:.1}s", f / 1e6)
    } else if us < 3_600_000_000 {
        format!("{:.1}min", f / 6e7)
    } else {
        format!("{:.1}h", f / 3.6e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(12_000_000), "12.0 MB");
        assert_eq!(micros(850), "850us");
        assert_eq!(micros(12_300), "12.3ms");
        assert_eq!(micros(4_000_000), "4.0s");
        assert_eq!(micros(7_200_000_000), "2.0h");
    }
}
