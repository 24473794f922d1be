//! Arbitrary bytes as a client certificate: reading its common name never panics, and a name it yields is
//! text the DER held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quotad_server::auth::cert::common_name;

fuzz_target!(|data: &[u8]| {
    let der = rustls_pki_types::CertificateDer::from(data.to_vec());
    if let Some(cn) = common_name(&der) {
        assert!(data.windows(cn.len().max(1)).any(|w| w == cn.as_bytes()) || cn.is_empty());
    }
});
