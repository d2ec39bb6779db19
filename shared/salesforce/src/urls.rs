//! URL building: every path segment percent-encoded on its own, so an object or field name
//! can never change the shape of the path.

/// A base URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a usable http(s) URL: {0}")]
pub struct UrlError(pub String);

/// `base` with `segments` appended.
pub fn join(base: &str, segments: &[&str]) -> Result<reqwest::Url, UrlError> {
    let url = reqwest::Url::parse(base).map_err(|_| UrlError(base.to_owned()))?;
    with_segments(&url, segments)
}

/// `base` (its query dropped) with `segments` appended.
pub fn with_segments(base: &reqwest::Url, segments: &[&str]) -> Result<reqwest::Url, UrlError> {
    if !matches!(base.scheme(), "http" | "https") {
        return Err(UrlError(base.to_string()));
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| UrlError(base.to_string()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_one_by_one() {
        let u = join("https://x.example/base/", &["services", "a b", "c/d"]).unwrap();
        assert_eq!(u.as_str(), "https://x.example/base/services/a%20b/c%2Fd");
        let u = join("https://x.example", &["services"]).unwrap();
        assert_eq!(u.as_str(), "https://x.example/services");
        let u = join("http://127.0.0.1:8080/?x=1", &["a"]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/a");
        assert!(join("ftp://x.example", &[]).is_err());
        assert!(join("not a url", &[]).is_err());
    }
}
