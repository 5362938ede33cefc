//! The request attributes policies scope on, as the host reports them.

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
                Some(i) => host.get(..i + 2).unwrap_or(host),
                None => host,
            };
        }
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
