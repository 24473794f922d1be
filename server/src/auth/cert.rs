//! The names a client certificate proves: its subject alternative names (DNS or IP, checked by webpki), and
//! its subject common name (CN), read here with a small DER walk, for the private CAs that issue client
//! certificates with a CN alone. The certificate itself was verified against `server.tls.client_ca` during
//! the handshake; this only reads what it says.

// Wire-facing: every byte here comes from a client, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use rustls_pki_types::{CertificateDer, ServerName};

/// A configured certificate name: matched against the SANs when it is a DNS name or IP address, and
/// against the subject CN in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertName {
    /// As configured.
    pub text: String,
    /// The same as a DNS name or IP address, when it is one.
    pub san: Option<ServerName<'static>>,
}

impl CertName {
    /// `text` as a certificate name.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            san: ServerName::try_from(text.to_owned()).ok(),
        }
    }
}

/// True when `cert` carries `name`: as a SAN, or as its subject CN (compared ignoring ASCII case).
pub fn names(cert: &CertificateDer<'_>, name: &CertName) -> bool {
    let san = name.san.as_ref().is_some_and(|n| {
        webpki::EndEntityCert::try_from(cert)
            .is_ok_and(|c| c.verify_is_valid_for_subject_name(n).is_ok())
    });
    san || common_name(cert).is_some_and(|cn| cn.eq_ignore_ascii_case(&name.text))
}

/// One DER element: (tag, contents, the rest after it).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// 2.5.4.3, commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject's (last) common name, if it is a UTF8String, PrintableString or IA5String.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(cert.as_ref())? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    // version (optional), serialNumber, signature, issuer, validity, then subject.
    let (tag, _, rest) = element(tbs)?;
    if tag == VERSION {
        tbs = rest;
    }
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, mut rdns, _) = element(tbs)? else {
        return None;
    };
    let mut found = None;
    while !rdns.is_empty() {
        let (tag, set, rest) = element(rdns)?;
        rdns = rest;
        if tag != SET {
            continue;
        }
        let (SEQUENCE, attribute, _) = element(set)? else {
            continue;
        };
        let (OID, oid, value) = element(attribute)? else {
            continue;
        };
        if oid != COMMON_NAME {
            continue;
        }
        let (kind, text, _) = element(value)?;
        if matches!(kind, 0x0c | 0x13 | 0x16) {
            found = std::str::from_utf8(text).ok().map(str::to_owned);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_odd_der_reads_as_no_name() {
        for der in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 0x30],
            &[0x02, 0x01, 0x00],
        ] {
            assert_eq!(common_name(&CertificateDer::from(der.to_vec())), None);
        }
    }
}
