//! A pass-through path: whatever passes the check has no segment a URL parser would resolve, so the
//! gateway's key never reaches another path on the provider's host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = leanlm_wire::path::checked(path) {
        let url = format!("https://api.example.com{p}");
        if let Ok(parsed) = url::Url::parse(&url) {
            // The parser kept it under /v1/: nothing resolved it elsewhere.
            assert!(parsed.path().starts_with("/v1/"), "{path} became {}", parsed.path());
            assert_eq!(parsed.host_str(), Some("api.example.com"), "{path}");
        }
    }
});
