//! Opaque page tokens shared by stores that paginate by offset-free positions.

use crate::ports::StoreError;

/// Encodes a position as an opaque token (hex of the JSON, so it survives URLs).
pub fn encode_token<T: serde::Serialize>(pos: &T) -> String {
    let json = serde_json::to_vec(pos).expect("page positions serialise");
    json.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token from [`encode_token`]; a bad token is `Invalid`.
pub fn decode_token<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, StoreError> {
    let bad = || StoreError::Invalid("malformed page token".into());
    if !token.len().is_multiple_of(2) || token.len() > 8192 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect();
    serde_json::from_slice(&bytes?).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = encode_token(&("2026-01-01T00:00:00Z", "k1"));
        let back: (String, String) = decode_token(&t).unwrap();
        assert_eq!(back.1, "k1");
        assert!(decode_token::<(String, String)>("zz").is_err());
        assert!(decode_token::<(String, String)>("abc").is_err());
        assert!(decode_token::<(String, String)>("7b7d").is_err());
    }
}
