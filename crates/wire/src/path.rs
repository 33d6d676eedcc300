//! Paths a client sends that the gateway passes on to a provider, under the provider's own key.

use crate::WireError;

/// A pass-through path as it may reach a provider: under `/v1/`, of URL path characters only, with no
/// segment that decodes to `.` or `..` or holds a slash, a backslash or a control character. A URL parser resolves such segments (`%2e%2e`
/// included), which would send the gateway's key to any path on the provider's host.
pub fn checked(path: &str) -> Result<&str, WireError> {
    let refuse = || {
        WireError::invalid(format!(
            "`{path}` is not a path LeanLM passes on: only `/v1/…` without `.` or `..` segments"
        ))
    };
    let rest = path.strip_prefix("/v1/").ok_or_else(refuse)?;
    // Only the characters a URL path is made of: a `#` would end the path a URL parser sees early, and
    // spaces it trims, each leaving a segment it then resolves (both found by fuzzing: `/v1/%2E%2E#//`,
    // `/v1/%2e%2E   `).
    let path_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&b);
    if !rest.bytes().all(path_char) {
        return Err(refuse());
    }
    for segment in rest.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        let bad = decoded == b"."
            || decoded == b".."
            || decoded
                .iter()
                .any(|b| *b == b'/' || *b == b'\\' || b.is_ascii_control());
        if bad {
            return Err(refuse());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_would_leave_the_api_are_refused() {
        for bad in [
            "/v1/../../etc/passwd",
            "/v1/%2e%2e/%2E%2E/admin",
            "/v1/files/./x",
            "/v1/files/%2f..%2fsecret",
            "/v1/a%5c..%5cb",
            "/v1/x/..",
            "/v1/%00",
            "/v2/models",
            "/v1/%2E%2E#////v",
            "/v1/%2e%2E     ",
            "/v1/x?y",
            "/v1/\t..",
        ] {
            let e = checked(bad).unwrap_err();
            assert!(e.message.contains("not a path"), "{bad}: {}", e.message);
        }
        assert!(checked("/v1/files/file-1.jsonl/content").is_ok());
        assert!(checked("/v1/a...b/..c").is_ok(), "dots inside a name are a name");
    }
}
