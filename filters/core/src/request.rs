//! The request attributes policies scope on, as the host reports them.

use crate::path::PathRejection;

/// The request attributes rules can scope on.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// `:path` as received; query and fragment are ignored for matching.
    pub path: &'a str,
    pub method: &'a str,
    /// `:authority`; a port is ignored for matching.
    pub host: &'a str,
}

impl<'a> RequestInfo<'a> {
    pub fn path_without_query(&self) -> &'a str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        self.path.get(..end).unwrap_or(self.path)
    }

    pub fn host_without_port(&self) -> &'a str {
        let host = self.host;
        if let Some(rest) = host.strip_prefix('[') {
            // IPv6 literal: keep the brackets, drop what follows `]`.
            return match rest.find(']') {
                Some(i) => host.get(..i.saturating_add(2)).unwrap_or(host),
                None => host,
            };
        }
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    }
}

/// The canonical `:authority` every section matches and the upstream
/// receives: the host in lower case without a trailing dot, an IPv6 literal
/// in its RFC 5952 form, and the port when one is given. `None` when the
/// text already is canonical. What cannot be read one way is refused:
/// userinfo (`user@host`), an empty, repeated (`:80:80`), non-numeric or
/// out-of-range port, a malformed IPv6 literal, empty labels, and characters
/// no host name carries.
pub fn canonical_authority(authority: &str) -> Result<Option<String>, PathRejection> {
    if authority.is_empty() {
        return Ok(None); // HTTP/1.0 without Host: nothing to match
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(PathRejection::InvalidHost)?;
        let ip: std::net::Ipv6Addr = literal.parse().map_err(|_| PathRejection::InvalidHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(PathRejection::InvalidHost)?),
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let valid = !host.is_empty()
            && host.split('.').all(|label| !label.is_empty())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(PathRejection::InvalidHost);
        }
        (host.to_ascii_lowercase(), port)
    };
    let canonical = match port {
        None => host,
        Some(port) => {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !valid {
                return Err(PathRejection::InvalidHost);
            }
            // Leading zeros are one more spelling of the same port.
            let port = port
                .parse::<u16>()
                .map_err(|_| PathRejection::InvalidHost)?;
            format!("{host}:{port}")
        }
    };
    Ok((canonical != authority).then_some(canonical))
}

/// Parses the proxy-wasm serialization of a header map (a little-endian u32
/// count, then a (key length, value length) u32 pair per header, then each key
/// and value followed by a NUL byte) into borrowed pairs, in order. `None` if
/// the bytes are not exactly that: a host answer we cannot read is no answer.
pub fn parse_header_map(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count.min(bytes.len() / 8));
    for n in 0..count {
        let sizes = n.checked_mul(8)?.checked_add(4)?;
        let (key_len, value_len) = (u32_at(sizes)?, u32_at(sizes.checked_add(4)?)?);
        let key_end = data.checked_add(key_len)?;
        let key = bytes.get(data..key_end)?;
        let value_start = key_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = bytes.get(value_start..value_end)?;
        data = value_end.checked_add(1)?;
        pairs.push((key, value));
    }
    (data == bytes.len()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(k.as_bytes());
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn header_maps_parse_in_order_with_repeats_and_raw_bytes() {
        let pairs: [(&str, &[u8]); 4] = [
            (":path", b"/a"),
            ("x-dup", b"1"),
            ("x-dup", b"\xff\x00"),
            ("empty", b""),
        ];
        let bytes = serialize(&pairs);
        let parsed = parse_header_map(&bytes).unwrap();
        let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        assert_eq!(parsed, want);
        assert_eq!(parse_header_map(&[]), Some(Vec::new()));
    }

    #[test]
    fn truncated_or_inconsistent_header_maps_are_refused() {
        let bytes = serialize(&[("a", b"b"), ("c", b"d")]);
        for cut in 1..bytes.len() {
            assert_eq!(parse_header_map(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(parse_header_map(&extra), None);
        let mut huge = bytes;
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header_map(&huge), None);
    }

    #[test]
    fn every_spelling_of_a_host_has_one_canonical_form_or_is_refused() {
        for (authority, want) in [
            ("api.example.com", None),
            ("API.Example.COM", Some("api.example.com")),
            ("api.example.com.", Some("api.example.com")),
            ("api.example.com.:8080", Some("api.example.com:8080")),
            ("api.example.com:08080", Some("api.example.com:8080")),
            ("svc:80", None),
            ("[::1]", None),
            ("[::1]:443", None),
            ("[0:0:0:0:0:0:0:1]:443", Some("[::1]:443")),
            ("[2001:DB8::1]", Some("[2001:db8::1]")),
            ("10.0.0.1:80", None),
            ("", None),
        ] {
            assert_eq!(
                canonical_authority(authority),
                Ok(want.map(String::from)),
                "{authority:?}"
            );
        }
        for refused in [
            "user@api.example.com",
            "user:pw@api",
            "api:80:80",
            "api:",
            "api:0",
            "api:65536",
            "api:8o",
            "api..example",
            ".",
            "..",
            "api example",
            "api%2eexample",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[not-ipv6]",
            "[::1]:80:80",
            "caf\u{e9}.example",
        ] {
            assert_eq!(
                canonical_authority(refused),
                Err(PathRejection::InvalidHost),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn request_paths_and_hosts_are_trimmed_for_matching() {
        let r = RequestInfo {
            path: "/a/b?x=1#f",
            method: "GET",
            host: "API.example.com:8443",
        };
        assert_eq!(r.path_without_query(), "/a/b");
        assert_eq!(r.host_without_port(), "API.example.com");
        for (host, want) in [
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("example.com", "example.com"),
            ("example.com:x", "example.com:x"),
        ] {
            let r = RequestInfo {
                path: "/",
                method: "GET",
                host,
            };
            assert_eq!(r.host_without_port(), want);
        }
    }
}
