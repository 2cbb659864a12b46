//! Assets: the codes, scales and conversion rates a wallet may hold, and amounts in minor units.

use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Longest asset code, in bytes (ISO 4217 codes are 3; loyalty schemes use longer names).
pub const ASSET_CODE_BYTES_MAX: usize = 12;
/// Most assets one engine lists (a bound on every per-user table of accounts).
pub const ASSETS_MAX: usize = 16;
/// Most decimal places an asset may have (8: a satoshi; 2 for CNY, 0 for points).
pub const ASSET_SCALE_MAX: u32 = 8;
/// Largest amount of one operation, in minor units (10^15: ten trillion yuan in fen). With
/// [`BALANCE_MINOR_MAX`] it keeps every sum of an account's totals far inside `u64`.
pub const AMOUNT_MINOR_MAX: u64 = 1_000_000_000_000_000;
/// Largest balance + frozen of one account, in minor units (10^17); a credit past it is
/// refused with `invalid_request`, so no counter can overflow.
pub const BALANCE_MINOR_MAX: u64 = 100_000_000_000_000_000;

/// A short uppercase asset code such as `CNY` or `POINTS`: 1..=[`ASSET_CODE_BYTES_MAX`] bytes of
/// `A-Z`, `0-9` and `_`, starting with a letter. Cheap to clone.
///
/// ```
/// use surge_engine::wallet::AssetCode;
/// assert_eq!(AssetCode::parse("CNY").unwrap().as_str(), "CNY");
/// assert!(AssetCode::parse("cny").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssetCode(Arc<str>);

impl AssetCode {
    /// Check and wrap a code.
    ///
    /// # Errors
    /// `invalid_request` when the code is empty, too long, or has other characters.
    pub fn parse(code: &str) -> Result<Self, EngineError> {
        let ok = !code.is_empty()
            && code.len() <= ASSET_CODE_BYTES_MAX
            && code.as_bytes()[0].is_ascii_uppercase()
            && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(Arc::from(code)))
        } else {
            Err(EngineError::invalid(format!(
                "asset code must be 1..={ASSET_CODE_BYTES_MAX} bytes of A-Z, 0-9 and _, starting with a letter"
            )))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One asset as the `[[engine.assets]]` config lists it.
///
/// `rate` is what one whole unit is worth in the shop's currency (the currency SKU prices are
/// in): `1` for the shop currency itself, `0.01` for points of which 100 make 1.00. An asset
/// without a rate can be credited and debited but cannot pay orders.
///
/// ```
/// use surge_engine::wallet::AssetSpec;
/// use surge_engine::Decimal;
/// let points = AssetSpec { code: "POINTS".into(), scale: 0, rate: Some(Decimal::new(1, 2)) };
/// assert_eq!(points.rate, Some("0.01".parse().unwrap()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    /// The code ([`AssetCode`] rules).
    pub code: String,
    /// Decimal places of its amounts, 0..=[`ASSET_SCALE_MAX`] (2 for CNY: amounts in fen).
    pub scale: u32,
    /// Shop-currency value of one whole unit; `None`: cannot pay orders.
    #[serde(default)]
    pub rate: Option<Decimal>,
}

impl AssetSpec {
    /// The defaults `surge serve` starts with: `CNY` (scale 2, rate 1) and `POINTS` (scale 0,
    /// 100 points = 1.00: the issue's example).
    pub fn defaults() -> Vec<AssetSpec> {
        vec![
            AssetSpec { code: "CNY".into(), scale: 2, rate: Some(Decimal::ONE) },
            AssetSpec { code: "POINTS".into(), scale: 0, rate: Some(Decimal::new(1, 2)) },
        ]
    }
}

/// A checked asset: its code, scale and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Code.
    pub code: AssetCode,
    /// Decimal places.
    pub scale: u32,
    /// Shop-currency value of one whole unit, if it pays orders.
    pub rate: Option<Decimal>,
}

impl Asset {
    /// `minor` minor units as a decimal amount of this asset (`4010` at scale 2 is `40.10`).
    pub fn to_decimal(&self, minor: u64) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(minor), self.scale)
    }

    /// A decimal amount in minor units: positive, at most `scale` decimal places, at most
    /// [`AMOUNT_MINOR_MAX`].
    ///
    /// # Errors
    /// `invalid_request` otherwise.
    pub fn to_minor(&self, amount: Decimal) -> Result<u64, EngineError> {
        let scaled = amount.checked_mul(Decimal::from(10u64.pow(self.scale))).filter(|d| d.fract().is_zero());
        let minor = scaled.and_then(|d| u64::try_from(d).ok()).filter(|m| (1..=AMOUNT_MINOR_MAX).contains(m));
        minor.ok_or_else(|| {
            EngineError::invalid(format!(
                "{} amount must be positive, with at most {} decimal places, at most {}",
                self.code,
                self.scale,
                self.to_decimal(AMOUNT_MINOR_MAX)
            ))
        })
    }

    /// What `minor` units are worth in the shop currency (exact), if this asset pays orders.
    pub fn value(&self, minor: u64) -> Option<Decimal> {
        self.rate.and_then(|r| self.to_decimal(minor).checked_mul(r))
    }
}

/// The engine's assets, checked once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assets {
    list: Vec<Asset>,
}

impl Assets {
    /// Check a config list.
    ///
    /// # Errors
    /// `invalid_config` for a bad code, a duplicate, a scale past [`ASSET_SCALE_MAX`], a rate
    /// that is not positive, or more than [`ASSETS_MAX`] assets.
    pub fn new(specs: &[AssetSpec]) -> Result<Self, EngineError> {
        let bad = |m: String| EngineError::InvalidConfig { message: format!("engine.assets: {m}") };
        if specs.len() > ASSETS_MAX {
            return Err(bad(format!("at most {ASSETS_MAX} assets")));
        }
        let mut list: Vec<Asset> = Vec::with_capacity(specs.len());
        for s in specs {
            let code = AssetCode::parse(&s.code).map_err(|e| bad(format!("{:?}: {e}", s.code)))?;
            if list.iter().any(|a| a.code == code) {
                return Err(bad(format!("{code} listed twice")));
            }
            if s.scale > ASSET_SCALE_MAX {
                return Err(bad(format!("{code}: scale must be 0..={ASSET_SCALE_MAX}")));
            }
            if s.rate.is_some_and(|r| r <= Decimal::ZERO) {
                return Err(bad(format!("{code}: rate must be positive")));
            }
            list.push(Asset { code, scale: s.scale, rate: s.rate });
        }
        Ok(Self { list })
    }

    /// The asset with this code.
    ///
    /// # Errors
    /// `unknown_asset` when it is not listed.
    pub fn get(&self, code: &str) -> Result<&Asset, EngineError> {
        self.list
            .iter()
            .find(|a| a.code.as_str() == code)
            .ok_or_else(|| EngineError::UnknownAsset { asset: code.to_string() })
    }

    /// Every asset, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Asset> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny() -> Asset {
        Asset { code: AssetCode::parse("CNY").unwrap(), scale: 2, rate: Some(Decimal::ONE) }
    }

    #[test]
    fn minor_units_round_trip_and_refuse_extra_places() {
        let a = cny();
        assert_eq!(a.to_minor("40.10".parse().unwrap()).unwrap(), 4010);
        assert_eq!(a.to_decimal(4010).to_string(), "40.10");
        assert!(a.to_minor("0.001".parse().unwrap()).is_err(), "3 places at scale 2");
        assert!(a.to_minor(Decimal::ZERO).is_err());
        assert!(a.to_minor("-1".parse().unwrap()).is_err());
        assert!(a.to_minor(a.to_decimal(AMOUNT_MINOR_MAX) + Decimal::ONE).is_err());
    }

    #[test]
    fn config_is_checked() {
        assert!(Assets::new(&AssetSpec::defaults()).is_ok());
        let dup = [AssetSpec::defaults()[0].clone(), AssetSpec::defaults()[0].clone()];
        assert!(Assets::new(&dup).is_err());
        let bad_rate = [AssetSpec { code: "X".into(), scale: 0, rate: Some(Decimal::ZERO) }];
        assert!(Assets::new(&bad_rate).is_err());
        let bad_code = [AssetSpec { code: "cny".into(), scale: 2, rate: None }];
        assert!(Assets::new(&bad_code).is_err());
        let a = Assets::new(&AssetSpec::defaults()).unwrap();
        assert_eq!(a.get("EUR").unwrap_err().code(), "unknown_asset");
        assert_eq!(a.get("POINTS").unwrap().value(250), Some("2.50".parse().unwrap()));
    }
}
