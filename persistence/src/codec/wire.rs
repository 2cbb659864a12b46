//! Format 4's primitives: LEB128 varints, zigzag, decimals as (sign and scale, mantissa), and a
//! bounds-checked reader that reports damage as a [`Bad`] value instead of panicking.

use surge_engine::Decimal;

/// Why bytes do not decode, and where (an offset into the record's event bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bad {
    /// What was wrong.
    pub what: &'static str,
    /// Offset of the byte where it was found, from the first event byte.
    pub at: usize,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at event byte {}", self.what, self.at)
    }
}

/// Append `v` as an unsigned LEB128 varint (1 byte below 128, at most 10).
#[inline]
pub(crate) fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append a 128-bit unsigned LEB128 varint (decimal mantissas: at most 14 bytes for 96 bits).
#[inline]
fn put_uv128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Append a signed number (zigzag varint).
#[inline]
pub(crate) fn put_sv(out: &mut Vec<u8>, v: i64) {
    put_uv(out, zigzag(v));
}

/// Append a string inline: its length (varint), then its UTF-8 bytes.
#[inline]
pub(crate) fn put_txt(out: &mut Vec<u8>, s: &str) {
    put_uv(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Append an optional inline string: 0 for `None`, else length + 1 and the bytes.
#[inline]
pub(crate) fn put_opt_txt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_uv(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Bit 7 of a decimal's head byte: the sign (kept for zero too: `-0` stays `-0`).
const DEC_SIGN: u8 = 0x80;
/// Bits 0..=4 of a decimal's head byte: the scale (0..=28).
const DEC_SCALE: u8 = 0x1F;
/// The largest scale `rust_decimal` holds.
const DEC_SCALE_MAX: u8 = 28;

/// Append a decimal exactly (its bits, trailing zeros and the sign of zero included): a head
/// byte (sign in bit 7, scale in bits 0..=4), then the 96-bit mantissa's magnitude as a varint.
/// "59.90" takes 3 bytes.
#[inline]
pub(crate) fn put_dec(out: &mut Vec<u8>, d: Decimal) {
    let b = d.serialize();
    out.push((b[2] & DEC_SCALE) | (b[3] & DEC_SIGN));
    let mut m = [0u8; 16];
    m[..12].copy_from_slice(&b[4..16]);
    put_uv128(out, u128::from_le_bytes(m));
}

/// A decimal's parts: (negative, scale, magnitude < 2^96).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecParts {
    /// The sign bit.
    pub negative: bool,
    /// 0..=28.
    pub scale: u8,
    /// The mantissa's magnitude, below 2^96.
    pub magnitude: u128,
}

impl DecParts {
    /// The parts of `d`.
    #[inline]
    pub fn of(d: Decimal) -> Self {
        let b = d.serialize();
        let mut m = [0u8; 16];
        m[..12].copy_from_slice(&b[4..16]);
        Self { negative: b[3] & DEC_SIGN != 0, scale: b[2] & DEC_SCALE, magnitude: u128::from_le_bytes(m) }
    }

    /// The decimal, if the parts are in range (scale ≤ 28, magnitude < 2^96).
    #[inline]
    pub fn to_decimal(self) -> Option<Decimal> {
        if self.scale > DEC_SCALE_MAX || self.magnitude >> 96 != 0 {
            return None;
        }
        let mut b = [0u8; 16];
        b[2] = self.scale;
        b[3] = if self.negative { DEC_SIGN } else { 0 };
        b[4..16].copy_from_slice(&self.magnitude.to_le_bytes()[..12]);
        Some(Decimal::deserialize(b))
    }
}

/// A reader over a record's event bytes. Every read checks its bounds; damage is a [`Bad`].
pub(crate) struct In<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> In<'b> {
    /// Read `bytes` from the start.
    pub fn new(bytes: &'b [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// A [`Bad`] at the current position.
    #[cold]
    pub fn bad(&self, what: &'static str) -> Bad {
        Bad { what, at: self.pos }
    }

    /// Bytes not read yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Bad> {
        match self.bytes.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => Err(self.bad("unexpected end of record")),
        }
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    #[inline]
    pub fn uv(&mut self) -> Result<u64, Bad> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.bad("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.bad("varint longer than 10 bytes"));
            }
        }
    }

    /// A varint that must fit a `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Bad> {
        let v = self.uv()?;
        u32::try_from(v).map_err(|_| self.bad("number exceeds 32 bits"))
    }

    /// A zigzag varint.
    #[inline]
    pub fn sv(&mut self) -> Result<i64, Bad> {
        self.uv().map(unzigzag)
    }

    /// A count of things that each take at least one byte: bounded by the bytes left, so
    /// damage cannot become a huge allocation.
    #[inline]
    pub fn count(&mut self) -> Result<usize, Bad> {
        let n = self.uv()?;
        if n > self.remaining() as u64 {
            return Err(self.bad("count exceeds the bytes left"));
        }
        Ok(n as usize)
    }

    /// The next `n` raw bytes.
    #[inline]
    pub fn raw(&mut self, n: u64) -> Result<&'b [u8], Bad> {
        if n > self.remaining() as u64 {
            return Err(self.bad("field longer than the bytes left"));
        }
        let bytes = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    /// The next `n` bytes as UTF-8.
    #[inline]
    pub fn str(&mut self, n: u64) -> Result<&'b str, Bad> {
        if n > self.remaining() as u64 {
            return Err(self.bad("string longer than the bytes left"));
        }
        let bytes = &self.bytes[self.pos..self.pos + n as usize];
        let s = std::str::from_utf8(bytes).map_err(|_| self.bad("string is not UTF-8"))?;
        self.pos += n as usize;
        Ok(s)
    }

    /// An inline string (see [`put_txt`]).
    #[inline]
    pub fn txt(&mut self) -> Result<&'b str, Bad> {
        let n = self.uv()?;
        self.str(n)
    }

    /// An optional inline string (see [`put_opt_txt`]).
    #[inline]
    pub fn opt_txt(&mut self) -> Result<Option<&'b str>, Bad> {
        match self.uv()? {
            0 => Ok(None),
            n => self.str(n - 1).map(Some),
        }
    }

    /// A 128-bit varint below 2^96 (a decimal's magnitude).
    #[inline]
    fn magnitude(&mut self) -> Result<u128, Bad> {
        let mut v = 0u128;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            v |= u128::from(b & 0x7F) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
            if shift >= 98 {
                return Err(self.bad("decimal mantissa longer than 96 bits"));
            }
        }
        if v >> 96 != 0 {
            return Err(self.bad("decimal mantissa exceeds 96 bits"));
        }
        Ok(v)
    }

    /// A decimal (see [`put_dec`]).
    #[inline]
    pub fn dec(&mut self) -> Result<Decimal, Bad> {
        let head = self.u8()?;
        if head & !(DEC_SIGN | DEC_SCALE) != 0 {
            return Err(self.bad("decimal head has unknown bits"));
        }
        let magnitude = self.magnitude()?;
        let parts = DecParts { negative: head & DEC_SIGN != 0, scale: head & DEC_SCALE, magnitude };
        parts.to_decimal().ok_or_else(|| self.bad("decimal scale exceeds 28"))
    }

    /// True once every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_uv(v: u64) -> u64 {
        let mut out = Vec::new();
        put_uv(&mut out, v);
        let mut r = In::new(&out);
        let got = r.uv().unwrap();
        assert!(r.at_end());
        got
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                assert_eq!(round_uv(v), v);
            }
        }
        assert_eq!(round_uv(u64::MAX), u64::MAX);
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
    }

    #[test]
    fn overlong_and_overflowing_varints_are_bad() {
        let mut r = In::new(&[0xFF; 11]);
        assert!(r.uv().is_err());
        // 10 bytes whose last carries more than the 64th bit.
        let mut bytes = vec![0xFF; 9];
        bytes.push(0x02);
        assert!(In::new(&bytes).uv().is_err());
        assert!(In::new(&[0x80]).uv().is_err(), "truncated");
        assert!(In::new(&[0x05, b'a']).txt().is_err(), "string past the end");
        assert!(In::new(&[0x02, 0xC3, 0x28]).txt().is_err(), "invalid UTF-8");
        assert!(In::new(&[0x02]).count().is_err(), "count past the end");
    }

    #[test]
    fn decimals_keep_their_exact_bits() {
        for s in ["0", "59.90", "-12.5", "0.00", "79228162514264337593543950335", "-0.0000000000000000000000000001"] {
            let d: Decimal = s.parse().unwrap();
            let mut out = Vec::new();
            put_dec(&mut out, d);
            let back = In::new(&out).dec().unwrap();
            assert_eq!(back.serialize(), d.serialize(), "{s}");
            assert_eq!(back.to_string(), s);
        }
        let neg_zero = Decimal::deserialize([0, 0, 2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        put_dec(&mut out, neg_zero);
        assert_eq!(In::new(&out).dec().unwrap().serialize(), neg_zero.serialize(), "-0.00 keeps its sign");
        assert!(In::new(&[29, 1]).dec().is_err(), "scale 29");
        assert!(In::new(&[0x40, 1]).dec().is_err(), "unknown head bit");
        let mut big = vec![0];
        put_uv128(&mut big, 1u128 << 96);
        assert!(In::new(&big).dec().is_err(), "97-bit mantissa");
    }
}
