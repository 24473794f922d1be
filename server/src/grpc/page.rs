//! Paged listings: page sizes, opaque page tokens, and the byte budget that keeps every answer under a
//! client's default 4 MiB limit however many keys the server holds.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use crate::engine::EngineError;

/// Page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;
/// A page stops growing past this many encoded bytes (a quarter of gRPC clients' default 4 MiB limit).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// The page size asked for: 0 means the default; above the maximum is INVALID_ARGUMENT.
pub fn size(page_size: u32) -> Result<usize, EngineError> {
    match page_size as usize {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        n => Err(EngineError::invalid(
            "page_size",
            format!("{n} is above the maximum of {MAX_PAGE_SIZE}"),
        )),
    }
}

/// A resource listing's token: the last name listed, hex-encoded behind `r`.
pub fn resource_token(last: &str) -> String {
    let mut t = String::with_capacity(last.len().saturating_mul(2).saturating_add(1));
    t.push('r');
    for b in last.bytes() {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// The last name a resource token names; `None` for an empty token.
pub fn resource_after(token: &str) -> Result<Option<String>, EngineError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || EngineError::invalid("page_token", "is not a token this listing gave out");
    let hex = token.strip_prefix('r').ok_or_else(bad)?;
    if hex.len() % 2 != 0 || hex.len() > 2 * 4096 {
        return Err(bad());
    }
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

/// A lease listing's token: the store's cursor behind `l`.
pub fn lease_token(cursor: u64) -> String {
    format!("l{cursor:x}")
}

/// The cursor a lease token names; `None` for an empty token.
pub fn lease_after(token: &str) -> Result<Option<u64>, EngineError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix('l')
        .filter(|h| !h.is_empty() && h.len() <= 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .map(Some)
        .ok_or_else(|| EngineError::invalid("page_token", "is not a token this listing gave out"))
}

/// Keeps items while their encoded sizes fit in [`MAX_PAGE_BYTES`] (at least one, so a listing always
/// moves on). Returns how many fit.
pub fn fitting(sizes: impl IntoIterator<Item = usize>) -> usize {
    let mut total = 0usize;
    let mut n = 0usize;
    for size in sizes {
        total = total.saturating_add(size);
        if n > 0 && total > MAX_PAGE_BYTES {
            break;
        }
        n = n.saturating_add(1);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_name_the_field() {
        for name in ["", "a", "partner.stripe", "é☃\u{10ffff}"] {
            assert_eq!(
                resource_after(&resource_token(name)).unwrap().as_deref(),
                Some(name)
            );
        }
        for cursor in [0, 1, u64::MAX] {
            assert_eq!(lease_after(&lease_token(cursor)).unwrap(), Some(cursor));
        }
        assert_eq!(resource_after("").unwrap(), None);
        assert_eq!(lease_after("").unwrap(), None);
        for bad in [
            "x",
            "r0",
            "rzz",
            "rff",
            "l",
            "lzz",
            "l00000000000000000",
            "r",
        ] {
            let r = resource_after(bad).err().or(lease_after(bad).err());
            assert!(
                matches!(r, Some(EngineError::InvalidArgument { ref field, .. }) if field == "page_token"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(size(1000).unwrap(), 1000);
        assert!(size(1001).is_err());
        assert!(size(u32::MAX).is_err());
        assert_eq!(fitting([MAX_PAGE_BYTES * 2, 1]), 1);
        assert_eq!(fitting([MAX_PAGE_BYTES / 2; 3]), 2);
        assert_eq!(fitting([10; 5]), 5);
    }
}
