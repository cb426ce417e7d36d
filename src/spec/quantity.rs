//! Kubernetes resource quantities as pipeline files write them under `resources:`: CPU as
//! cores (`1.5`, `2`) or millicores (`500m`); memory as bytes with a binary (`Ki`, `Mi`, `Gi`,
//! `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix (`512Mi`, `2G`, `1.5Gi`). A quantity keeps the
//! text as written (Kubernetes and Compose receive it unchanged) next to its exact value.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `resources.*.cpu`: in thousandths of a core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuQuantity {
    pub written: String,
    pub millicores: u64,
}

/// `resources.*.memory`: in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryQuantity {
    pub written: String,
    pub bytes: u64,
}

impl CpuQuantity {
    /// Parses `500m`, `1`, `1.5`, `0.25`.
    pub fn parse(text: &str) -> Result<CpuQuantity, String> {
        let invalid = || {
            format!("`{text}` is not a CPU quantity (cores such as `1` or `1.5`, or millicores such as `500m`)")
        };
        let millicores = match text.strip_suffix('m') {
            Some(milli) => parse_decimal(milli, 1).ok_or_else(invalid)?,
            None => parse_decimal(text, 1000).ok_or_else(invalid)?,
        };
        if millicores == 0 {
            return Err(format!("`{text}` must be more than zero CPUs"));
        }
        Ok(CpuQuantity {
            written: text.to_string(),
            millicores,
        })
    }

    /// The `--cpus` value: cores with up to three decimals.
    pub fn cores(&self) -> String {
        let (whole, fraction) = (self.millicores / 1000, self.millicores % 1000);
        if fraction == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{fraction:03}")
                .trim_end_matches('0')
                .to_string()
        }
    }
}

impl MemoryQuantity {
    /// Parses `128974848`, `512Mi`, `2G`, `1.5Gi`, `64k`.
    pub fn parse(text: &str) -> Result<MemoryQuantity, String> {
        let invalid = || {
            format!(
                "`{text}` is not a memory quantity (bytes, or a number with a suffix such as \
                 `512Mi`, `2Gi` or `2G`)"
            )
        };
        const SUFFIXES: [(&str, u64); 8] = [
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
        ];
        let (number, unit) = SUFFIXES
            .iter()
            .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, *unit)))
            .unwrap_or((text, 1));
        let bytes = parse_decimal(number, unit).ok_or_else(invalid)?;
        if bytes == 0 {
            return Err(format!("`{text}` must be more than zero bytes"));
        }
        Ok(MemoryQuantity {
            written: text.to_string(),
            bytes,
        })
    }
}

/// `digits[.digits]` times `unit`, exactly (rounded down below one unit); `None` if malformed
/// or too large.
fn parse_decimal(text: &str, unit: u64) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // The fraction as numerator / 10^digits, exact in u128 for the 18 digits kept.
    let fraction = &fraction[..fraction.len().min(18)];
    let numerator: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let fraction_value = numerator * u128::from(unit) / 10u128.pow(fraction.len() as u32);
    whole
        .checked_mul(unit)?
        .checked_add(u64::try_from(fraction_value).ok()?)
}

/// Reads a quantity written as text or as a YAML number (`cpu: 1.5`, `memory: 1024`), parsed
/// inside the visitor so serde's error carries the field's path and line.
struct QuantityVisitor<T>(fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for QuantityVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a quantity such as `500m`, `1.5`, `512Mi` or `2G`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v.trim()).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

impl<'de> Deserialize<'de> for CpuQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor(CpuQuantity::parse))
    }
}

impl<'de> Deserialize<'de> for MemoryQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor(MemoryQuantity::parse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(CpuQuantity::parse("500m").unwrap().millicores, 500);
        assert_eq!(CpuQuantity::parse("1.5").unwrap().millicores, 1500);
        assert_eq!(CpuQuantity::parse("2").unwrap().cores(), "2");
        assert_eq!(CpuQuantity::parse("250m").unwrap().cores(), "0.25");
        assert_eq!(CpuQuantity::parse(".5").unwrap().cores(), "0.5");
        for bad in ["", "m", "1.", "half", "-1", "1.5m5", "0", "1e3"] {
            assert!(CpuQuantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(MemoryQuantity::parse("512Mi").unwrap().bytes, 512 << 20);
        assert_eq!(MemoryQuantity::parse("2G").unwrap().bytes, 2_000_000_000);
        assert_eq!(MemoryQuantity::parse("1.5Gi").unwrap().bytes, 3 << 29);
        assert_eq!(MemoryQuantity::parse("1024").unwrap().bytes, 1024);
        for bad in ["", "Mi", "512MB", "lots", "-1Gi", "0", "99999999999T"] {
            assert!(MemoryQuantity::parse(bad).is_err(), "{bad}");
        }
    }
}
