//! Numbers and booleans that interpolation may have turned into strings (`retries:
//! ${RETRIES:-3}`), read as Compose's schema casts them.

use serde::{de::Error, Deserialize, Deserializer};

use super::model::Scalar;

pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(value) = Option::<Scalar>::deserialize(d)? else {
        return Ok(None);
    };
    scalar_u64(&value)
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{value} is not a whole number")))
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Bool(b)) => Ok(Some(b)),
        Some(Scalar::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(D::Error::custom(format!("{other} is not true or false"))),
    }
}

/// A whole number written as a number or a string.
pub fn scalar_u64(value: &Scalar) -> Option<u64> {
    match value {
        Scalar::Int(v) => Some(*v),
        Scalar::String(s) => s.trim().parse().ok(),
        Scalar::Float(_) | Scalar::Bool(_) => None,
    }
}

/// A number written as a number or a string.
pub fn scalar_f64(value: &Scalar) -> Option<f64> {
    match value {
        Scalar::Int(v) => Some(*v as f64),
        Scalar::Float(v) => Some(*v),
        Scalar::String(s) => s.trim().parse().ok(),
        Scalar::Bool(_) => None,
    }
}
