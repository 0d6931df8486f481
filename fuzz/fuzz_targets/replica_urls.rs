//! `--peers` / `--replicas` (`ReplicaUrls`) and base URLs. Never panics; what is accepted
//! prints and parses back to the same value.
#![no_main]

use bazaar_api::replica::{ReplicaUrls, validate_base_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = validate_base_url(text);
    if let Ok(urls) = text.parse::<ReplicaUrls>() {
        for url in urls.0.values() {
            assert!(validate_base_url(url).is_ok(), "{url:?}");
        }
        let printed = urls.to_string();
        assert_eq!(printed.parse::<ReplicaUrls>(), Ok(urls), "{printed:?}");
    }
});
