//! SPIFFE IDs as the mesh writes them.
//!
//! The certificate carries `spiffe://TD/ns/NS/sa/SA`; Istio's policies write the
//! same identity without the scheme (`TD/ns/NS/sa/SA`). Both are accepted in
//! config and normalized to the URI form, which is what the peer certificate says.

use std::fmt;

const SCHEME: &str = "spiffe://";
/// The SPIFFE specification caps a SPIFFE ID at 2048 bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The specification caps a trust domain at 255 characters.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("does not start with `spiffe://` (or Istio's `TRUST_DOMAIN/ns/...` form)")]
    MissingScheme,
    #[error("has an empty trust domain")]
    EmptyTrustDomain,
    #[error("has a trust domain longer than {MAX_TRUST_DOMAIN_LEN} characters")]
    TrustDomainTooLong,
    #[error(
        "has the character {0:?} in its trust domain (allowed: lowercase a-z, 0-9, '.', '-', '_')"
    )]
    BadTrustDomainChar(char),
    #[error("has an empty path segment")]
    EmptySegment,
    #[error("has a `.` or `..` path segment")]
    DotSegment,
    #[error("has the character {0:?} in its path (allowed: a-z, A-Z, 0-9, '.', '-', '_')")]
    BadPathChar(char),
}

/// A validated SPIFFE ID, always in its `spiffe://` form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: Box<str>,
    /// Byte offset where the path (`/...`) starts, or `uri.len()` without a path.
    path_start: usize,
}

impl SpiffeId {
    /// Parses the `spiffe://` form only: what a peer certificate carries.
    pub fn parse_uri(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let (trust_domain, path) = split_uri(input)?;
        validate_path(path)?;
        Ok(Self {
            uri: input.into(),
            path_start: SCHEME.len().saturating_add(trust_domain.len()),
        })
    }

    /// Parses either form users write in config: `spiffe://TD/...` or Istio's `TD/...`.
    pub fn parse_config(input: &str) -> Result<Self, SpiffeIdError> {
        Self::parse_uri(&normalize_principal_text(input))
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        self.uri.get(SCHEME.len()..self.path_start).unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.uri.get(self.path_start..).unwrap_or("")
    }

    /// The namespace of an Istio-style identity (`/ns/NS/sa/SA`), if the path has that shape.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio-style identity (`/ns/NS/sa/SA`).
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

/// Adds the `spiffe://` scheme to Istio's scheme-less principal form. Text that
/// already has a scheme, or that starts with a wildcard, is returned unchanged.
pub fn normalize_principal_text(input: &str) -> std::borrow::Cow<'_, str> {
    if input.starts_with(SCHEME) || input.starts_with('*') || input.contains("://") {
        std::borrow::Cow::Borrowed(input)
    } else {
        std::borrow::Cow::Owned(format!("{SCHEME}{input}"))
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // The path starts with '/', so the first split item is the empty string before it.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::BadPathChar(c));
        }
    }
    Ok(())
}

/// Splits `spiffe://TRUST_DOMAIN/PATH` into its validated trust domain and
/// the rest (`/...`, or empty without a path), which is not checked.
fn split_uri(input: &str) -> Result<(&str, &str), SpiffeIdError> {
    let rest = input
        .strip_prefix(SCHEME)
        .ok_or(SpiffeIdError::MissingScheme)?;
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    validate_trust_domain(trust_domain)?;
    Ok((trust_domain, path))
}

/// Checks the literal part of a `spiffe://...*` prefix pattern: a non-empty start
/// of a trust domain, then path characters. Segments may be incomplete.
pub fn check_prefix(literal: &str) -> Result<(), SpiffeIdError> {
    let (_, path) = split_uri(literal)?;
    match path
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | '/'))
    {
        Some(c) => Err(SpiffeIdError::BadPathChar(c)),
        None => Ok(()),
    }
}

/// Parses a trust domain name on its own (as config writes it in `trust_domains`).
pub fn parse_trust_domain(input: &str) -> Result<&str, SpiffeIdError> {
    validate_trust_domain(input).map(|()| input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_expose_their_parts() {
        let id = SpiffeId::parse_uri("spiffe://cluster.local/ns/default/sa/frontend").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/default/sa/frontend");
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(id.service_account(), Some("frontend"));
    }

    #[test]
    fn istio_form_is_normalized_to_the_uri_form() {
        let id = SpiffeId::parse_config("cluster.local/ns/default/sa/frontend").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/frontend");
    }

    #[test]
    fn ids_without_the_istio_shape_have_no_namespace() {
        for uri in [
            "spiffe://example.org",
            "spiffe://example.org/workload",
            "spiffe://example.org/ns/default",
            "spiffe://example.org/ns/default/sa/x/extra",
        ] {
            let id = SpiffeId::parse_uri(uri).unwrap();
            assert_eq!(id.namespace(), None, "{uri}");
        }
    }

    #[test]
    fn invalid_ids_are_refused_with_the_reason() {
        let long = format!("spiffe://a/{}", "x".repeat(MAX_SPIFFE_ID_LEN));
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", SpiffeIdError::Empty),
            ("http://cluster.local/ns/a", SpiffeIdError::MissingScheme),
            ("spiffe://", SpiffeIdError::EmptyTrustDomain),
            ("spiffe:///ns/a", SpiffeIdError::EmptyTrustDomain),
            (
                "spiffe://Cluster.local/ns/a",
                SpiffeIdError::BadTrustDomainChar('C'),
            ),
            (
                "spiffe://td:8080/ns/a",
                SpiffeIdError::BadTrustDomainChar(':'),
            ),
            ("spiffe://td/ns//sa/b", SpiffeIdError::EmptySegment),
            ("spiffe://td/ns/a/", SpiffeIdError::EmptySegment),
            ("spiffe://td/ns/../sa", SpiffeIdError::DotSegment),
            ("spiffe://td/ns/a?x=1", SpiffeIdError::BadPathChar('?')),
            ("spiffe://td/ns/a#frag", SpiffeIdError::BadPathChar('#')),
            ("spiffe://td/ns/ä", SpiffeIdError::BadPathChar('ä')),
            (&long, SpiffeIdError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(
                SpiffeId::parse_uri(input).as_ref().err(),
                Some(want),
                "{input}"
            );
        }
    }
}
