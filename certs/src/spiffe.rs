//! SPIFFE IDs as Istio uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
//! carried as the only URI SAN of a workload certificate.

use std::fmt;

use rustls_pki_types::CertificateDer;

use crate::error::PeerIdentityError;

const SCHEME: &str = "spiffe://";

/// A validated SPIFFE ID (`spiffe://<trust-domain>/<path>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses `s`, requiring the `spiffe://` scheme, a non-empty trust domain of lower-case
    /// letters, digits, `.`, `-` and `_`, and a non-empty path.
    pub fn parse(s: &str) -> Result<Self, PeerIdentityError> {
        let invalid = |reason: &'static str| PeerIdentityError::InvalidSpiffeId {
            id: s.to_owned(),
            reason,
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("does not start with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("has no path after the trust domain"))?;
        if td.is_empty() {
            return Err(invalid("has an empty trust domain"));
        }
        if !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(invalid(
                "trust domain may only hold lower-case letters, digits, '.', '-' and '_'",
            ));
        }
        if path.is_empty() || path.split('/').any(str::is_empty) {
            return Err(invalid("path is empty or has an empty segment"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The identity Istio gives a workload: `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn istio(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, PeerIdentityError> {
        Self::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain (host part).
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0[SCHEME.len()..];
        rest.split_once('/').map_or(rest, |(td, _)| td)
    }

    /// The namespace of an Istio-form ID (`/ns/<ns>/sa/<sa>`), if it has that form.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio-form ID, if it has that form.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let path = self.0[SCHEME.len()..].split_once('/')?.1;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The SPIFFE ID of a DER certificate: its one `spiffe://` URI SAN.
    ///
    /// Uses webpki's parser, the same one the handshake verified the certificate with.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, PeerIdentityError> {
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| PeerIdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = ee.valid_uri_names().collect();
        let mut spiffe = uris.iter().filter(|u| u.starts_with(SCHEME));
        match (spiffe.next(), spiffe.next()) {
            (Some(id), None) => Self::parse(id),
            (None, _) => Err(PeerIdentityError::NoSpiffeId {
                presented: uris.iter().map(|u| (*u).to_owned()).collect(),
            }),
            (Some(_), Some(_)) => Err(PeerIdentityError::SeveralSpiffeIds {
                presented: uris.iter().map(|u| (*u).to_owned()).collect(),
            }),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which peer identities a TLS endpoint accepts, mirroring Envoy's `match_subject_alt_names`
/// as Istio uses it: exact IDs on the client side, a trust-domain prefix on the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeMatcher {
    /// Any SPIFFE ID (the chain must still verify against the trust bundle).
    Any,
    /// Any ID in this trust domain.
    TrustDomain(String),
    /// One of these IDs exactly.
    Exact(Vec<SpiffeId>),
}

impl SpiffeMatcher {
    /// Accepts `id` or says why not.
    pub fn check(&self, id: &SpiffeId) -> Result<(), PeerIdentityError> {
        let ok = match self {
            Self::Any => true,
            Self::TrustDomain(td) => id.trust_domain() == td,
            Self::Exact(ids) => ids.contains(id),
        };
        if ok {
            Ok(())
        } else {
            Err(PeerIdentityError::NotAllowed {
                presented: id.clone(),
                expected: self.to_string(),
            })
        }
    }
}

impl fmt::Display for SpiffeMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any SPIFFE ID"),
            Self::TrustDomain(td) => write!(f, "an ID in trust domain {td}"),
            Self::Exact(ids) => {
                f.write_str("one of [")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(id.as_str())?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_form_round_trips() {
        let id = SpiffeId::istio("cluster.local", "bar", "vm-sa").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/bar/sa/vm-sa");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), Some("bar"));
        assert_eq!(id.service_account(), Some("vm-sa"));
    }

    #[test]
    fn non_istio_paths_parse_without_ns_and_sa() {
        let id = SpiffeId::parse("spiffe://example.org/workload/web").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.namespace(), None);
    }

    #[test]
    fn malformed_ids_say_why() {
        for (s, why) in [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe:///ns/a/sa/b", "empty trust domain"),
            ("spiffe://Cluster.local/ns/a", "lower-case"),
            ("spiffe://cluster.local", "no path"),
            ("spiffe://cluster.local/ns//sa/b", "empty segment"),
        ] {
            let err = SpiffeId::parse(s).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(s), "{s}: {err}");
        }
    }

    #[test]
    fn matchers_accept_and_reject_with_reason() {
        let a = SpiffeId::istio("cluster.local", "ns1", "a").unwrap();
        let b = SpiffeId::istio("other.td", "ns1", "b").unwrap();
        assert!(SpiffeMatcher::Any.check(&b).is_ok());
        let td = SpiffeMatcher::TrustDomain("cluster.local".into());
        assert!(td.check(&a).is_ok());
        let err = td.check(&b).unwrap_err().to_string();
        assert!(
            err.contains("spiffe://other.td/ns/ns1/sa/b") && err.contains("cluster.local"),
            "{err}"
        );
        let exact = SpiffeMatcher::Exact(vec![a.clone()]);
        assert!(exact.check(&a).is_ok());
        assert!(exact.check(&b).is_err());
    }
}
