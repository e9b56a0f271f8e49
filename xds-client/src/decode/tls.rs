//! TLS transport sockets (`envoy.transport_sockets.tls`) → [`model::DownstreamTls`] and
//! [`model::UpstreamTls`], as Istio configures mesh mTLS: the certificate and trust bundle
//! come from SDS secrets `default` and `ROOTCA`, which vm-proxy serves from its own workload
//! identity; file-mounted or inline certificates are not supported yet.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

use super::error::{Ctx, DecodeError};
use super::extension::Extension;
use crate::model::{self, WORKLOAD_CERTIFICATE, WORKLOAD_TRUST_BUNDLE};

const SPIFFE_SCHEME: &str = "spiffe://";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// No transport socket or `raw_buffer` (both plaintext), or TLS whose context message `C`
/// `decode_tls` turns into the model; every other socket is rejected.
pub(crate) fn transport_socket_of<C, T>(
    ctx: &Ctx,
    socket: Option<&TransportSocket>,
    decode_tls: fn(&Ctx, &C) -> Result<T, DecodeError>,
) -> Result<model::TransportSocket<T>, DecodeError>
where
    C: prost::Message + prost::Name + Default,
{
    let Some(TransportSocket { name, config_type }) = socket else {
        return Ok(model::TransportSocket::Raw);
    };
    let typed_config = config_type.as_ref().map(|c| match c {
        transport_socket::ConfigType::TypedConfig(any) => any,
    });
    let ext = Extension::new(ctx, name, typed_config)?;
    if ext.is::<RawBuffer>("envoy.transport_sockets.raw_buffer") {
        let RawBuffer {} = ext.config(ctx)?;
        Ok(model::TransportSocket::Raw)
    } else if ext.is::<C>(TLS_SOCKET) {
        let config: C = ext.config(ctx)?;
        Ok(model::TransportSocket::Tls(decode_tls(
            &ctx.at("typed_config"),
            &config,
        )?))
    } else {
        Err(ctx.unsupported(format!("transport socket {ext}")))
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn downstream(
    ctx: &Ctx,
    pb: &DownstreamTlsContext,
) -> Result<model::DownstreamTls, DecodeError> {
    let DownstreamTlsContext {
        common_tls_context,
        require_client_certificate,
        require_sni,
        // Session resumption is always off in vm-proxy (every handshake verifies the peer
        // against the current bundle), which is what these ask for or allow.
        disable_stateful_session_resumption: _,
        session_timeout: _,
        ocsp_staple_policy: _, // the workload certificate carries no OCSP staple to act on
        full_scan_certs_on_sni_mismatch: _, // one certificate only: nothing to scan
        prefer_client_ciphers,
        session_ticket_keys_type,
    } = pb;
    ctx.unsupported_fields()
        .check("require_sni", require_sni.is_some_and(|v| v.value))
        .check("prefer_client_ciphers", *prefer_client_ciphers)
        .check(
            "session_ticket_keys_type",
            session_ticket_keys_type.is_some(),
        )
        .finish()?;
    let require_client_certificate = require_client_certificate.is_some_and(|v| v.value);
    let common = common(&ctx.at("common_tls_context"), common_tls_context.as_ref())?;
    Ok(model::DownstreamTls {
        require_client_certificate,
        common,
    })
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn upstream(
    ctx: &Ctx,
    pb: &UpstreamTlsContext,
) -> Result<model::UpstreamTls, DecodeError> {
    let UpstreamTlsContext {
        common_tls_context,
        sni,
        auto_host_sni,
        auto_sni_san_validation,
        allow_renegotiation,
        max_session_keys: _,      // session resumption is always off in vm-proxy
        enforce_rsa_key_usage: _, // rustls always enforces key usage
    } = pb;
    ctx.unsupported_fields()
        .check("auto_host_sni", *auto_host_sni)
        .check("auto_sni_san_validation", *auto_sni_san_validation)
        .check("allow_renegotiation", *allow_renegotiation)
        .finish()?;
    let common = common(&ctx.at("common_tls_context"), common_tls_context.as_ref())?;
    Ok(model::UpstreamTls {
        sni: (!sni.is_empty()).then(|| Arc::from(sni.as_str())),
        common,
    })
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn common(ctx: &Ctx, pb: Option<&CommonTlsContext>) -> Result<model::CommonTls, DecodeError> {
    let Some(CommonTlsContext {
        tls_params,
        tls_certificates,
        tls_certificate_sds_secret_configs,
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        alpn_protocols,
        custom_handshaker,
        key_log,
        validation_context_type,
    }) = pb
    else {
        return Err(ctx.unsupported("TLS without a certificate (common_tls_context unset)"));
    };
    ctx.unsupported_fields()
        .check("tls_certificates", !tls_certificates.is_empty())
        .check(
            "tls_certificate_provider_instance",
            tls_certificate_provider_instance.is_some(),
        )
        .check(
            "custom_tls_certificate_selector",
            custom_tls_certificate_selector.is_some(),
        )
        .check(
            "tls_certificate_certificate_provider",
            tls_certificate_certificate_provider.is_some(),
        )
        .check(
            "tls_certificate_certificate_provider_instance",
            tls_certificate_certificate_provider_instance.is_some(),
        )
        .check("custom_handshaker", custom_handshaker.is_some())
        .check("key_log", key_log.is_some())
        .finish()?;
    let params = tls_params
        .as_ref()
        .map(|p| self::tls_params(&ctx.at("tls_params"), p))
        .transpose()?
        .unwrap_or_default();
    let certificate_secret = match tls_certificate_sds_secret_configs.as_slice() {
        [one] => sds_name(
            &ctx.at_index("tls_certificate_sds_secret_configs", 0),
            one,
            WORKLOAD_CERTIFICATE,
        )?,
        [] => {
            return Err(ctx.unsupported(
                "TLS without a certificate from SDS (tls_certificate_sds_secret_configs empty)",
            ));
        }
        _ => {
            return Err(
                ctx.unsupported("more than one certificate (tls_certificate_sds_secret_configs)")
            );
        }
    };
    let validation = match validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            combined_validation(&ctx.at("combined_validation_context"), combined)?
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => model::Validation {
            trusted_ca: sds_name(
                &ctx.at("validation_context_sds_secret_config"),
                sds,
                WORKLOAD_TRUST_BUNDLE,
            )?,
            peer: model::PeerMatch::Any,
        },
        Some(ValidationContextType::ValidationContext(_)) => {
            return Err(ctx.unsupported(
                "validation_context (inline trusted CA; only the SDS ROOTCA bundle is supported)",
            ));
        }
        Some(ValidationContextType::ValidationContextCertificateProvider(_)) => {
            return Err(ctx.unsupported("validation_context_certificate_provider"));
        }
        Some(ValidationContextType::ValidationContextCertificateProviderInstance(_)) => {
            return Err(ctx.unsupported("validation_context_certificate_provider_instance"));
        }
        // vm-proxy's TLS always verifies the peer against the workload trust bundle.
        None => {
            return Err(
                ctx.unsupported("TLS without peer validation (validation_context_type unset)")
            );
        }
    };
    Ok(model::CommonTls {
        certificate_secret,
        validation,
        alpn_protocols: alpn_protocols
            .iter()
            .map(|p| Arc::from(p.as_str()))
            .collect(),
        params,
    })
}

/// BoringSSL cipher names (as Envoy takes them) of the TLS 1.2 suites vm-proxy implements.
const TLS12_SUITES: &[(&str, model::Tls12CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        model::Tls12CipherSuite::EcdheEcdsaAes128GcmSha256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        model::Tls12CipherSuite::EcdheEcdsaAes256GcmSha384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        model::Tls12CipherSuite::EcdheEcdsaChacha20Poly1305,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        model::Tls12CipherSuite::EcdheRsaAes128GcmSha256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        model::Tls12CipherSuite::EcdheRsaAes256GcmSha384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        model::Tls12CipherSuite::EcdheRsaChacha20Poly1305,
    ),
];

/// Suites BoringSSL knows that rustls does not implement (no forward secrecy or CBC). A
/// cipher list only allows suites: listing one of these allows something vm-proxy never
/// offers, so it narrows nothing and is accepted (istiod lists `AES256-GCM-SHA384` and
/// `AES128-GCM-SHA256` on inbound chains by default).
const TLS12_NOT_OFFERED: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

/// Envoy's curve names of the key exchange groups vm-proxy implements.
const CURVES: &[(&str, model::EcdhCurve)] = &[
    ("X25519", model::EcdhCurve::X25519),
    ("P-256", model::EcdhCurve::P256),
    ("P-384", model::EcdhCurve::P384),
    ("X25519MLKEM768", model::EcdhCurve::X25519Mlkem768),
];

/// Curves BoringSSL knows that vm-proxy does not offer; allowed like [`TLS12_NOT_OFFERED`].
const CURVES_NOT_OFFERED: &[&str] = &["P-224", "P-521", "X25519Kyber768Draft00"];

/// `TlsParameters` → [`model::TlsParams`]. Versions outside TLS 1.2–1.3 cannot be spoken;
/// a range within them is honoured. `TLS_AUTO` means 1.2 to 1.3 on both sides (Envoy's
/// client default tops at 1.2, but istiod always sets the maximum it wants).
fn tls_params(ctx: &Ctx, pb: &TlsParameters) -> Result<model::TlsParams, DecodeError> {
    let TlsParameters {
        tls_minimum_protocol_version,
        tls_maximum_protocol_version,
        cipher_suites,
        ecdh_curves,
        signature_algorithms,
        compliance_policies,
    } = pb;
    ctx.unsupported_fields()
        .check("signature_algorithms", !signature_algorithms.is_empty())
        .check("compliance_policies", !compliance_policies.is_empty())
        .finish()?;
    let version = |field: &str, v: i32| {
        TlsProtocol::try_from(v).map_err(|_| ctx.invalid(field, format!("unknown TLS version {v}")))
    };
    let min = version(
        "tls_minimum_protocol_version",
        *tls_minimum_protocol_version,
    )?;
    let max = version(
        "tls_maximum_protocol_version",
        *tls_maximum_protocol_version,
    )?;
    if matches!(max, TlsProtocol::TlSv10 | TlsProtocol::TlSv11) {
        return Err(ctx.unsupported(format!(
            "tls_maximum_protocol_version {} (vm-proxy speaks TLS 1.2 and 1.3 only)",
            max.as_str_name()
        )));
    }
    let only_13 = min == TlsProtocol::TlSv13;
    let only_12 = max == TlsProtocol::TlSv12;
    let versions = match (only_12, only_13) {
        (false, false) => model::TlsVersions::Tls12And13,
        (true, false) => model::TlsVersions::Tls12Only,
        (false, true) => model::TlsVersions::Tls13Only,
        (true, true) => {
            return Err(ctx.invalid(
                "tls_minimum_protocol_version",
                "TLSv1_3 is above tls_maximum_protocol_version TLSv1_2",
            ));
        }
    };
    let ctx_suites = ctx.at("cipher_suites");
    let tls12_cipher_suites = names(
        ctx,
        "cipher_suites",
        cipher_suites,
        TLS12_SUITES,
        TLS12_NOT_OFFERED,
    )?;
    if !cipher_suites.is_empty()
        && tls12_cipher_suites.is_empty()
        && versions == model::TlsVersions::Tls12Only
    {
        return Err(ctx_suites.unsupported(format!(
            "{cipher_suites:?}: none of these TLS 1.2 suites is implemented, and TLS 1.3 is off"
        )));
    }
    let ctx_curves = ctx.at("ecdh_curves");
    let curves = names(ctx, "ecdh_curves", ecdh_curves, CURVES, CURVES_NOT_OFFERED)?;
    if !ecdh_curves.is_empty() && curves.is_empty() {
        return Err(ctx_curves.unsupported(format!(
            "{ecdh_curves:?}: none of these curves is implemented"
        )));
    }
    Ok(model::TlsParams {
        versions,
        tls12_cipher_suites,
        ecdh_curves: curves,
    })
}

/// The implemented entries of a BoringSSL-style list, in order, without repeats. An entry
/// may be an equal-preference group `[A|B]`; names that are neither implemented nor known
/// to BoringSSL are errors, as Envoy fails on them.
fn names<T: Copy + PartialEq>(
    ctx: &Ctx,
    field: &str,
    list: &[String],
    known: &[(&str, T)],
    not_offered: &[&str],
) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let inner = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        for name in inner.split('|') {
            match known.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if !out.contains(v) => out.push(*v),
                Some(_) => {}
                None if not_offered.contains(&name) => {}
                None => {
                    return Err(
                        ctx.invalid(&format!("{field}[{i}]"), format!("unknown name {name:?}"))
                    );
                }
            }
        }
    }
    Ok(out)
}

/// The name of an SDS secret, which must be the one of the workload identity (`expected`).
/// Where the config says to fetch it (`sds_config`, Istio's `sds-grpc` cluster) does not
/// matter: vm-proxy holds the identity itself.
fn sds_name(ctx: &Ctx, pb: &SdsSecretConfig, expected: &str) -> Result<Arc<str>, DecodeError> {
    let SdsSecretConfig {
        name,
        sds_config: _,
    } = pb;
    if name != expected {
        return Err(ctx.unsupported(format!(
            "SDS secret {name:?} (only {expected:?}, the workload identity, is supported)"
        )));
    }
    Ok(Arc::from(name.as_str()))
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn combined_validation(
    ctx: &Ctx,
    pb: &CombinedCertificateValidationContext,
) -> Result<model::Validation, DecodeError> {
    let CombinedCertificateValidationContext {
        default_validation_context,
        validation_context_sds_secret_config,
        validation_context_certificate_provider,
        validation_context_certificate_provider_instance,
    } = pb;
    ctx.unsupported_fields()
        .check(
            "validation_context_certificate_provider",
            validation_context_certificate_provider.is_some(),
        )
        .check(
            "validation_context_certificate_provider_instance",
            validation_context_certificate_provider_instance.is_some(),
        )
        .finish()?;
    let Some(sds) = validation_context_sds_secret_config else {
        return Err(ctx.invalid(
            "validation_context_sds_secret_config",
            "a combined validation context needs an SDS secret",
        ));
    };
    let trusted_ca = sds_name(
        &ctx.at("validation_context_sds_secret_config"),
        sds,
        WORKLOAD_TRUST_BUNDLE,
    )?;
    let peer = match default_validation_context {
        None => model::PeerMatch::Any,
        Some(v) => validation_context(&ctx.at("default_validation_context"), v)?,
    };
    Ok(model::Validation { trusted_ca, peer })
}

/// The static part of a validation context: only SAN matchers, the trust bundle being the
/// SDS one.
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn validation_context(
    ctx: &Ctx,
    pb: &CertificateValidationContext,
) -> Result<model::PeerMatch, DecodeError> {
    let CertificateValidationContext {
        trusted_ca,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        match_typed_subject_alt_names,
        match_subject_alt_names,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        only_verify_leaf_cert_crl,
        max_verify_depth,
        suppress_client_ca_list: _, // vm-proxy never sends a CA list
    } = pb;
    ctx.unsupported_fields()
        .check("trusted_ca", trusted_ca.is_some())
        .check(
            "ca_certificate_provider_instance",
            ca_certificate_provider_instance.is_some(),
        )
        .check("system_root_certs", system_root_certs.is_some())
        .check("watched_directory", watched_directory.is_some())
        .check(
            "verify_certificate_spki",
            !verify_certificate_spki.is_empty(),
        )
        .check(
            "verify_certificate_hash",
            !verify_certificate_hash.is_empty(),
        )
        .check(
            "require_signed_certificate_timestamp",
            require_signed_certificate_timestamp.is_some_and(|v| v.value),
        )
        .check("crl", crl.is_some())
        .check("allow_expired_certificate", *allow_expired_certificate)
        .check("trust_chain_verification", *trust_chain_verification != 0)
        .check("custom_validator_config", custom_validator_config.is_some())
        .check("only_verify_leaf_cert_crl", *only_verify_leaf_cert_crl)
        .check("max_verify_depth", max_verify_depth.is_some())
        .finish()?;
    let mut matchers = Vec::new();
    for (i, m) in match_typed_subject_alt_names.iter().enumerate() {
        let ctx = ctx.at_index("match_typed_subject_alt_names", i);
        let SubjectAltNameMatcher {
            san_type,
            matcher,
            oid,
        } = m;
        if *san_type != SanType::Uri as i32 || !oid.is_empty() {
            return Err(ctx.unsupported("a SAN matcher of a type other than URI"));
        }
        let Some(matcher) = matcher else {
            return Err(ctx.invalid("matcher", "a SAN matcher needs a string matcher"));
        };
        matchers.push(san(&ctx.at("matcher"), matcher)?);
    }
    // Untyped matchers look at every SAN; mesh certificates carry a URI SAN only, and a
    // spiffe:// pattern can only match one.
    for (i, m) in match_subject_alt_names.iter().enumerate() {
        matchers.push(san(&ctx.at_index("match_subject_alt_names", i), m)?);
    }
    peer_match(ctx, matchers)
}

enum San {
    Exact(Arc<str>),
    TrustDomain(Arc<str>),
}

fn san(ctx: &Ctx, pb: &StringMatcher) -> Result<San, DecodeError> {
    let StringMatcher {
        ignore_case,
        match_pattern,
    } = pb;
    if *ignore_case {
        return Err(ctx.unsupported("ignore_case on a SAN matcher"));
    }
    match match_pattern {
        Some(MatchPattern::Exact(id)) if id.starts_with(SPIFFE_SCHEME) => {
            Ok(San::Exact(Arc::from(id.as_str())))
        }
        Some(MatchPattern::Prefix(prefix)) => prefix
            .strip_prefix(SPIFFE_SCHEME)
            .and_then(|rest| rest.strip_suffix('/'))
            .filter(|td| !td.is_empty() && !td.contains('/'))
            .map(|td| San::TrustDomain(Arc::from(td)))
            .ok_or_else(|| {
                ctx.unsupported(format!(
                    "SAN prefix {prefix:?} (only spiffe://<trust-domain>/ is supported)"
                ))
            }),
        Some(MatchPattern::Exact(other)) => Err(ctx.unsupported(format!(
            "exact SAN {other:?} (only SPIFFE IDs are supported)"
        ))),
        Some(_) => Err(ctx.unsupported("a SAN matcher other than exact or prefix")),
        None => Err(ctx.invalid("match_pattern", "a string matcher needs a pattern")),
    }
}

fn peer_match(ctx: &Ctx, matchers: Vec<San>) -> Result<model::PeerMatch, DecodeError> {
    let mut exact = Vec::new();
    let mut domains = Vec::new();
    for m in matchers {
        match m {
            San::Exact(id) => exact.push(id),
            San::TrustDomain(td) => domains.push(td),
        }
    }
    match (exact.is_empty(), domains.as_slice()) {
        (true, []) => Ok(model::PeerMatch::Any),
        (false, []) => Ok(model::PeerMatch::Exact(exact)),
        (true, [td]) => Ok(model::PeerMatch::TrustDomain(td.clone())),
        _ => Err(ctx.unsupported(
            "SAN matchers mixing exact IDs and trust domains, or several trust domains",
        )),
    }
}
