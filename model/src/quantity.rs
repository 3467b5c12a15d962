//! Kubernetes quantities: parsing to bytes, Fluid's human-readable sizes, and an int-or-string field type.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ModelError;

/// A quantity as written by the user (`40960`, `2Gi`, `500M`), kept verbatim so manifests
/// round-trip. Kubernetes accepts both a YAML number and a string here; so do we.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(pub String);

impl Quantity {
    /// Parses into bytes, naming `field` on failure.
    pub fn to_bytes(&self, field: &str) -> Result<u64, ModelError> {
        parse_bytes(&self.0).map_err(|reason| ModelError::BadQuantity {
            field: field.to_string(),
            value: self.0.clone(),
            reason,
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Quantity(text.to_string())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as 40960, \"2Gi\" or \"500M\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Quantity, E> {
                Ok(Quantity(text.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Quantity, E> {
                Ok(Quantity(number.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Quantity, E> {
                Ok(Quantity(number.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Quantity, E> {
                Ok(Quantity(number.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// The apiserver's own quantity pattern (non-negative only: sizes cannot be negative).
pub const QUANTITY_PATTERN: &str =
    r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

const SUFFIXES: &[(&str, u128)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Parses a Kubernetes quantity into bytes, rounding a fraction up (as the apiserver does).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') {
        return Err("a size cannot be negative".to_string());
    }
    let (number, multiplier) = match SUFFIXES.iter().find(|(suffix, _)| text.ends_with(suffix)) {
        Some((suffix, multiplier)) => (&text[..text.len() - suffix.len()], *multiplier),
        None if text.ends_with('m') => {
            return Err("milli-units ('m') are not allowed for a size in bytes".to_string());
        }
        None if text.contains(['e', 'E']) => return parse_exponent(text),
        None => (text, 1),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err("there is no number before the unit".to_string());
    }
    if !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) {
        return Err("expected digits, an optional fraction and a unit: Ki Mi Gi Ti Pi Ei k M G T P E".to_string());
    }
    let whole: u128 =
        if whole.is_empty() { 0 } else { whole.parse().map_err(|_| "the number is too large".to_string())? };
    let mut bytes = whole.checked_mul(multiplier).ok_or("the quantity is too large")?;
    if !fraction.is_empty() {
        let digits = fraction.len().min(18) as u32;
        let numerator: u128 = fraction[..digits as usize].parse().map_err(|_| "bad fraction".to_string())?;
        let denominator = 10u128.pow(digits);
        bytes += (numerator * multiplier).div_ceil(denominator);
    }
    u64::try_from(bytes).map_err(|_| "the quantity is too large".to_string())
}

fn parse_exponent(text: &str) -> Result<u64, String> {
    let (mantissa, exponent) = text.split_once(['e', 'E']).ok_or("bad exponent")?;
    let exponent: u32 = exponent
        .trim_start_matches('+')
        .parse()
        .map_err(|_| "only non-negative whole exponents are allowed".to_string())?;
    let base = parse_bytes(mantissa)?;
    10u64
        .checked_pow(exponent)
        .and_then(|scale| base.checked_mul(scale))
        .ok_or_else(|| "the quantity is too large".to_string())
}

/// `bytes` in the largest binary unit that keeps the value at or above 1: `(1.5, "GiB")`.
fn binary_scale(bytes: u64) -> (f64, &'static str) {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    (value, UNITS[unit])
}

/// Fluid's human-readable size: `10.00GiB`, `512.00MiB`, `0.00B`.
pub fn format_bytes(bytes: u64) -> String {
    let (value, unit) = binary_scale(bytes);
    format!("{value:.2}{unit}")
}

/// A node's capacity label value as Fluid writes it (go-units' `BytesSize`): binary units, at
/// most four significant digits, no trailing zeros: `40GiB`, `1.5GiB`, `1000B`.
pub fn format_label_bytes(bytes: u64) -> String {
    let (value, unit) = binary_scale(bytes);
    // Four significant digits: as many decimals as the integer part leaves.
    let integer_digits = if value < 1.0 { 1 } else { value.log10().floor() as usize + 1 };
    let decimals = 4usize.saturating_sub(integer_digits);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{unit}")
}

/// Bytes to whole MiB, rounded up so that a small non-zero quota never becomes "0 = no cache".
pub fn bytes_to_mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(parse_bytes("40960"), Ok(40960));
        assert_eq!(parse_bytes("40960Mi"), Ok(40960 << 20));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("100Pi"), Ok(100 << 50));
        assert_eq!(parse_bytes("+5Ki"), Ok(5120));
        assert_eq!(parse_bytes(".5Ki"), Ok(512));
    }

    #[test]
    fn refuses_bad_quantities_with_a_reason() {
        assert!(parse_bytes("").unwrap_err().contains("empty"));
        assert!(parse_bytes("-1Gi").unwrap_err().contains("negative"));
        assert!(parse_bytes("5Xi").unwrap_err().contains("unit"));
        assert!(parse_bytes("100m").unwrap_err().contains("milli"));
        assert!(parse_bytes("99999999999Ei").unwrap_err().contains("too large"));
        assert!(parse_bytes("Gi").unwrap_err().contains("no number"));
    }

    #[test]
    fn quantity_accepts_yaml_number_and_string() {
        let number: Quantity = serde_json::from_str("40960").unwrap();
        let text: Quantity = serde_json::from_str("\"40960Mi\"").unwrap();
        assert_eq!(number.0, "40960");
        assert_eq!(text.to_bytes("quota").unwrap(), 40960 << 20);
        let err = Quantity("lots".into()).to_bytes("spec.tieredstore.levels[0].quota").unwrap_err();
        assert!(err.to_string().starts_with("spec.tieredstore.levels[0].quota:"), "{err}");
    }

    #[test]
    fn formats_like_fluid() {
        assert_eq!(format_bytes(0), "0.00B");
        assert_eq!(format_bytes(10 << 30), "10.00GiB");
        assert_eq!(format_bytes(1536), "1.50KiB");
        assert_eq!(format_label_bytes(40 << 30), "40GiB");
        assert_eq!(format_label_bytes(1000), "1000B");
        assert_eq!(format_label_bytes(1536 << 20), "1.5GiB");
        assert_eq!(format_label_bytes(1234), "1.205KiB");
        assert_eq!(format_label_bytes(100 << 30), "100GiB");
        assert_eq!(format_label_bytes((1 << 30) - 1), "1024MiB", "rounded to four digits, as %.4g does");
        assert_eq!(format_label_bytes(0), "0B");
        assert_eq!(bytes_to_mib_ceil(40960), 1);
        assert_eq!(bytes_to_mib_ceil(0), 0);
        assert_eq!(bytes_to_mib_ceil(2 << 20), 2);
    }

    proptest! {
        /// A label value is a valid label value and reads back within four significant digits.
        #[test]
        fn label_sizes_read_back_within_four_digits(bytes in 1u64..(1 << 60)) {
            let text = format_label_bytes(bytes);
            prop_assert!(text.len() <= 63 && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "{}", text);
            let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let exponent = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"].iter().position(|u| *u == unit);
            prop_assert!(exponent.is_some(), "{}", text);
            let read = number.parse::<f64>().unwrap_or(f64::NAN) * 1024f64.powi(exponent.unwrap_or(0) as i32);
            prop_assert!((read - bytes as f64).abs() <= bytes as f64 * 5e-4, "{} -> {}", bytes, text);
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,24}") {
            let _ = parse_bytes(&text);
        }
    }
}
