//! Salesforce-shaped record ids: 3-character key prefix, 15 characters, plus the 3-character
//! case-safe checksum that makes the 18-character form.

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Appends Salesforce's checksum to a 15-character id (one character per 5-character chunk,
/// encoding which of its characters are upper case).
pub fn with_checksum(id15: &str) -> String {
    debug_assert_eq!(id15.len(), 15);
    let mut out = String::with_capacity(18);
    out.push_str(id15);
    for chunk in id15.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        out.push(CHECKSUM[bits] as char);
    }
    out
}

/// The id of the `n`-th record created in the org, for an object with `prefix`.
pub fn record_id(prefix: &str, n: u64) -> String {
    // "5g0" mimics the pod/instance characters; the rest is the counter in base 62.
    let mut digits = [b'0'; 9];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let id15 = format!(
        "{prefix}5g0{}",
        std::str::from_utf8(&digits).unwrap_or("000000000")
    );
    with_checksum(&id15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_salesforce() {
        // Upper case at positions 0 and 4 of the last chunk: bits 17, "R".
        assert_eq!(with_checksum("0015000000Gv7qJ"), "0015000000Gv7qJAAR");
    }

    #[test]
    fn record_ids_are_distinct_and_18_chars() {
        let a = record_id("003", 1);
        let b = record_id("003", 62);
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("0035g0"));
        assert_ne!(a, b);
    }
}
