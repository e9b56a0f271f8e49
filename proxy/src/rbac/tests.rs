//! The engine on istiod's goldens (with connections and requests derived from the
//! AuthorizationPolicies they were generated from) and on Envoy's matching rules.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use xds_client::decode::{http_rbac_config, network_rbac_config};
use xds_client::model::{
    HeaderMatchRule, HeaderMatcher, HttpRbac, MetadataMatcher, NetworkRbac, Permission, Principal,
    RbacAction, RbacPolicy, RbacRules, StringMatcher, StringPattern, ValueMatcher,
};
use xds_client::{Resource, ResourceKind};

use super::*;

fn golden(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../shared/fixtures/istio-xds/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let filter: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    filter["typedConfig"].clone()
}

fn resource() -> Resource {
    Resource {
        kind: ResourceKind::Listener,
        name: "golden".into(),
    }
}

fn network_golden() -> NetworkRbac {
    let any = xds_client::json::any_from_json(golden("istiod-rbac-network-filter-golden.yaml"));
    network_rbac_config(&resource(), &any.unwrap()).unwrap()
}

fn http_golden() -> HttpRbac {
    let any = xds_client::json::any_from_json(golden("istiod-rbac-http-filter-golden.yaml"));
    http_rbac_config(&resource(), &any.unwrap()).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn conn<'a>(peer: Option<&'a str>, source: &str, destination: &str) -> Connection<'a> {
    Connection::new(peer, addr(source), addr(destination), None)
}

/// Rules of one policy.
fn rules(
    action: RbacAction,
    permissions: Vec<Permission>,
    principals: Vec<Principal>,
) -> RbacRules {
    RbacRules {
        action,
        policies: vec![RbacPolicy {
            name: "p".into(),
            permissions,
            principals,
        }],
    }
}

/// The golden's policy whose name ends with `rule`, alone under the same action.
fn only(all: &RbacRules, rule: &str) -> RbacRules {
    RbacRules {
        action: all.action,
        policies: all
            .policies
            .iter()
            .filter(|p| p.name.ends_with(rule))
            .cloned()
            .collect(),
    }
}

fn denied_by(d: &Decision) -> Option<&str> {
    (!d.allowed).then(|| d.policy.as_deref().unwrap_or("none"))
}

const NS1: &str = "spiffe://cluster.local/ns/ns-1/sa/client";
const NS2: &str = "spiffe://cluster.local/ns/ns-2/sa/client";

/// deny-both-http-tcp: rules 0–2 only have HTTP conditions, which istiod turns into
/// match-all rules on TCP, so every connection is denied — by rule[0], the first by name.
#[test]
fn network_golden_denies_every_connection_as_istiod_intends() {
    let rbac = network_golden();
    for (peer, destination) in [
        (None, "10.0.0.9:80"),
        (Some(NS1), "10.0.0.9:8080"),
        (Some(NS2), "10.0.0.9:443"),
    ] {
        let verdict = check_network(&rbac, &conn(peer, "10.1.1.1:40000", destination));
        assert!(!verdict.allowed(), "{peer:?} {destination}");
        assert_eq!(
            verdict.enforced.as_ref().and_then(|d| d.policy.as_deref()),
            Some("ns[foo]-policy[httpbin-deny]-rule[0]")
        );
        assert_eq!(verdict.shadow, None);
    }
}

/// The TCP-expressible rules, each on its own.
#[test]
fn network_golden_rules_one_by_one() {
    let all = network_golden().rules.unwrap();
    let check = |rule: &str, peer: Option<&str>, dst: &str| {
        let d = evaluate(&only(&all, rule), &conn(peer, "10.1.1.1:40000", dst), None);
        !d.allowed
    };
    // rule[3] `from.namespaces: [ns-1]` (its `to.methods` cannot apply to TCP).
    assert!(check("rule[3]", Some(NS1), "10.0.0.9:1"));
    assert!(!check("rule[3]", Some(NS2), "10.0.0.9:1"));
    assert!(
        !check("rule[3]", None, "10.0.0.9:1"),
        "plaintext has no namespace"
    );
    // rule[4]: port 80 from anyone.
    assert!(check("rule[4]", None, "10.0.0.9:80"));
    assert!(!check("rule[4]", None, "10.0.0.9:81"));
    // rule[6]: port 8080 and namespace ns-2.
    assert!(check("rule[6]", Some(NS2), "10.0.0.9:8080"));
    assert!(!check("rule[6]", Some(NS1), "10.0.0.9:8080"));
    assert!(!check("rule[6]", Some(NS2), "10.0.0.9:80"));
    // rule[7]: port 80 and namespace ns-1.
    assert!(check("rule[7]", Some(NS1), "10.0.0.9:80"));
    assert!(!check("rule[7]", Some(NS2), "10.0.0.9:80"));
}

/// rule[8] of the input (every field) became rule[10]: it needs port 80 and port 91 at
/// once, and the `notPrincipals: ["*"]` part refuses every authenticated peer, so no
/// connection matches, not even one that satisfies every other condition.
#[test]
fn network_golden_all_fields_rule_cannot_match() {
    let rule = only(&network_golden().rules.unwrap(), "rule[10]");
    for dst in ["10.10.10.10:80", "10.10.10.10:91"] {
        for peer in [
            None,
            Some("spiffe://principal"),
            Some("spiffe://x/ns/ns/sa/y"),
        ] {
            let mut c = conn(peer, "1.2.3.4:5000", dst);
            c.server_name = Some("exact.com");
            assert!(evaluate(&rule, &c, None).allowed, "{peer:?} {dst}");
        }
    }
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    headers: &'a HeaderMap,
    remote: &str,
) -> Request<'a> {
    Request {
        method,
        path,
        authority,
        scheme: "http",
        headers,
        remote_ip: remote.parse().unwrap(),
        metadata: &NoMetadata,
    }
}

/// The claims `jwt_authn` would write for a token of issuer `iss` without subject.
struct JwtClaims(MetadataValue, MetadataValue);

impl DynamicMetadata for JwtClaims {
    fn get(&self, filter: &str, path: &[Arc<str>]) -> Option<&MetadataValue> {
        let keys: Vec<&str> = path.iter().map(|k| &**k).collect();
        match (filter, keys.as_slice()) {
            ("envoy.filters.http.jwt_authn", ["payload", "iss"]) => Some(&self.0),
            ("envoy.filters.http.jwt_authn", ["payload", "sub"]) => Some(&self.1),
            _ => None,
        }
    }
}

/// single-policy: every source sets `principals` (exact IDs) and `namespaces` (regexes on
/// the same ID) together, which no SPIFFE ID satisfies, and `remoteIpBlocks` twice over
/// disjoint ranges; so the ALLOW policy allows nothing and every request is denied.
#[test]
fn http_golden_allows_nothing() {
    let rbac = http_golden();
    let mut headers = HeaderMap::new();
    headers.insert("x-header", "header".parse().unwrap());
    let claims = JwtClaims(
        MetadataValue::String("rule[0]-from[0]-requestPrincipal[1]".into()),
        MetadataValue::String("".into()),
    );
    let mut req = request(
        "rule[0]-to[0]-method[1]",
        "rule[0]-to[0]-path[1]",
        "rule[0]-to[0]-host[1]",
        &headers,
        "172.16.10.10",
    );
    req.metadata = &claims;
    let c = conn(
        Some("spiffe://rule[0]-from[0]-principal[1]"),
        "10.0.0.1:1234",
        "10.10.10.10:9001",
    );
    let verdict = check_http(&rbac, &c, &req);
    assert!(!verdict.allowed());
    assert_eq!(verdict.enforced.unwrap().policy, None);
}

/// The operation half of rule[0] with any principal: each `to` is a conjunction of its
/// fields, the two `to`s are alternatives.
#[test]
fn http_golden_operations() {
    let policy = &http_golden().rules.unwrap().policies[0];
    let ops = rules(
        RbacAction::Allow,
        policy.permissions.clone(),
        vec![Principal::Any],
    );
    let headers = HeaderMap::new();
    let allowed = |method, path, host, dst: &str| {
        let req = request(method, path, host, &headers, "10.9.9.9");
        evaluate(&ops, &conn(None, "10.9.9.9:1", dst), Some(&req)).allowed
    };
    // Hosts compare without case; the query is not part of the path.
    assert!(allowed(
        "rule[0]-to[0]-method[2]",
        "rule[0]-to[0]-path[1]?a=b",
        "RULE[0]-TO[0]-HOST[2]",
        "192.168.10.7:9002"
    ));
    assert!(allowed(
        "rule[0]-to[1]-method[1]",
        "rule[0]-to[1]-path[2]",
        "rule[0]-to[1]-host[1]",
        "10.10.10.10:9011"
    ));
    // Mixing the two `to`s matches neither.
    assert!(!allowed(
        "rule[0]-to[0]-method[1]",
        "rule[0]-to[0]-path[1]",
        "rule[0]-to[0]-host[1]",
        "10.10.10.10:9011"
    ));
    // Method case matters; destination outside the IPs.
    assert!(!allowed(
        "RULE[0]-TO[0]-METHOD[1]",
        "rule[0]-to[0]-path[1]",
        "rule[0]-to[0]-host[1]",
        "10.10.10.10:9001"
    ));
    assert!(!allowed(
        "rule[0]-to[0]-method[1]",
        "rule[0]-to[0]-path[1]",
        "rule[0]-to[0]-host[1]",
        "192.168.11.1:9001"
    ));
    // Without a request (a TCP connection) the path never matches.
    assert!(!evaluate(&ops, &conn(None, "10.9.9.9:1", "10.10.10.10:9001"), None).allowed);
}

/// Each condition of rule[0]'s first source, alone with any operation.
#[test]
fn http_golden_source_conditions() {
    let policy = &http_golden().rules.unwrap().policies[0];
    let Principal::And(parts) = &policy.principals[0] else {
        panic!("{:?}", policy.principals[0])
    };
    let part = |i: usize| {
        rules(
            RbacAction::Allow,
            vec![Permission::Any],
            vec![parts[i].clone()],
        )
    };
    let mut headers = HeaderMap::new();
    let claims = JwtClaims(
        MetadataValue::String("rule[0]-from[0]-requestPrincipal[2]".into()),
        MetadataValue::String("".into()),
    );
    let peer = Some("spiffe://rule[0]-from[0]-principal[2]");
    let run = |i: usize, peer, source: &str, req: &Request<'_>| {
        evaluate(&part(i), &conn(peer, source, "10.10.10.10:9001"), Some(req)).allowed
    };
    let plain = request("GET", "/", "h", &headers, "172.16.10.10");
    // principals
    assert!(run(0, peer, "10.0.0.1:1", &plain));
    assert!(!run(0, Some("spiffe://other"), "10.0.0.1:1", &plain));
    assert!(!run(0, None, "10.0.0.1:1", &plain));
    // requestPrincipals: JWT claims, absent without jwt_authn.
    assert!(!run(1, peer, "10.0.0.1:1", &plain));
    let mut with_jwt = plain;
    with_jwt.metadata = &claims;
    assert!(run(1, peer, "10.0.0.1:1", &with_jwt));
    // namespaces
    assert!(run(
        2,
        Some("spiffe://td/ns/rule[0]-from[0]-ns[1]/sa/a"),
        "10.0.0.1:1",
        &plain
    ));
    // remoteIpBlocks (the trusted client address) and ipBlocks (the peer address).
    assert!(run(3, None, "10.5.5.5:1", &plain));
    assert!(!run(
        3,
        None,
        "172.16.10.10:1",
        &request("GET", "/", "h", &headers, "10.5.5.5")
    ));
    assert!(run(4, None, "10.0.0.2:1", &plain));
    assert!(!run(4, None, "10.0.0.3:1", &plain));
    // when request.headers[X-header]: exact, prefix, suffix, or present.
    assert!(!run(5, None, "10.0.0.1:1", &plain));
    headers.insert("x-header", "anything".parse().unwrap());
    assert!(run(
        5,
        None,
        "10.0.0.1:1",
        &request("GET", "/", "h", &headers, "1.1.1.1")
    ));
}

fn header(name: &str, rule: HeaderMatchRule, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        rule,
        invert,
        treat_missing_as_empty: false,
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        pattern: StringPattern::Exact(s.into()),
        ignore_case: false,
    }
}

#[test]
fn header_rules_follow_envoy() {
    let mut headers = HeaderMap::new();
    headers.append("x-a", "1".parse().unwrap());
    headers.append("x-a", "2".parse().unwrap());
    let req = request("GET", "/p", "h", &headers, "1.1.1.1");
    let matches = |m: HeaderMatcher, req: Option<&Request<'_>>| {
        let r = rules(
            RbacAction::Allow,
            vec![Permission::Header(m)],
            vec![Principal::Any],
        );
        evaluate(&r, &conn(None, "1.1.1.1:1", "2.2.2.2:2"), req).allowed
    };
    let string = |s| HeaderMatchRule::String(exact(s));
    // Repeated headers are joined with a comma.
    assert!(matches(header("x-a", string("1,2"), false), Some(&req)));
    assert!(matches(header(":method", string("GET"), false), Some(&req)));
    // A missing header matches only `present_match: false` (or inverted `true`).
    assert!(!matches(header("x-b", string("1"), true), Some(&req)));
    assert!(matches(
        header("x-b", HeaderMatchRule::Present(false), false),
        Some(&req)
    ));
    assert!(matches(
        header("x-b", HeaderMatchRule::Present(true), true),
        Some(&req)
    ));
    // On a TCP connection headers are empty, as in Envoy's network filter.
    assert!(!matches(header(":method", string("GET"), false), None));
    assert!(matches(
        header("x-b", HeaderMatchRule::Present(false), false),
        None
    ));
    let mut missing_is_empty = header("x-b", string(""), false);
    missing_is_empty.treat_missing_as_empty = true;
    assert!(matches(missing_is_empty, Some(&req)));
    assert!(matches(
        header("x-a", HeaderMatchRule::Range { start: 0, end: 10 }, true),
        Some(&req)
    ));
}

#[test]
fn actions_and_shadow_rules() {
    let by_port = |action| {
        rules(
            action,
            vec![Permission::DestinationPort(80)],
            vec![Principal::Any],
        )
    };
    let at = |port: u16| conn(None, "1.1.1.1:1", &format!("2.2.2.2:{port}"));
    assert_eq!(
        denied_by(&evaluate(&by_port(RbacAction::Allow), &at(81), None)),
        Some("none")
    );
    assert!(evaluate(&by_port(RbacAction::Allow), &at(80), None).allowed);
    assert_eq!(
        denied_by(&evaluate(&by_port(RbacAction::Deny), &at(80), None)),
        Some("p")
    );
    let logged = evaluate(&by_port(RbacAction::Log), &at(80), None);
    assert!(logged.allowed);
    assert_eq!(logged.policy.as_deref(), Some("p"));

    // Shadow rules are reported, never enforced; no enforced rules allow everything.
    let rbac = NetworkRbac {
        rules: None,
        shadow_rules: Some(by_port(RbacAction::Deny)),
        stat_prefix: "tcp.".into(),
        shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
        enforcement: Default::default(),
        delay_deny: None,
    };
    let verdict = check_network(&rbac, &at(80));
    assert!(verdict.allowed());
    assert_eq!(denied_by(verdict.shadow.as_ref().unwrap()), Some("p"));
    // Present but empty rules with ALLOW deny everything (istiod's TCP chains under an
    // HTTP-only ALLOW policy).
    let empty = NetworkRbac {
        rules: Some(RbacRules {
            action: RbacAction::Allow,
            policies: Vec::new(),
        }),
        ..rbac
    };
    assert!(!check_network(&empty, &at(80)).allowed());
}

#[test]
fn metadata_on_a_missing_value() {
    let meta = |value, invert| {
        rules(
            RbacAction::Allow,
            vec![Permission::Metadata(MetadataMatcher {
                filter: "f".into(),
                path: vec!["k".into()],
                value,
                invert,
            })],
            vec![Principal::Any],
        )
    };
    let c = conn(None, "1.1.1.1:1", "2.2.2.2:2");
    assert!(!evaluate(&meta(ValueMatcher::String(exact("")), false), &c, None).allowed);
    assert!(evaluate(&meta(ValueMatcher::String(exact("")), true), &c, None).allowed);
    assert!(evaluate(&meta(ValueMatcher::Present(false), false), &c, None).allowed);
    assert!(!evaluate(&meta(ValueMatcher::Null, false), &c, None).allowed);
}

#[test]
fn connection_attributes() {
    let allow = |p: Permission| rules(RbacAction::Allow, vec![p], vec![Principal::Any]);
    let mut c = conn(None, "10.0.0.1:5555", "10.0.0.2:8080");
    let range = allow(Permission::DestinationPortRange {
        start: 8000,
        end: 8080,
    });
    assert!(!evaluate(&range, &c, None).allowed, "the end is exclusive");
    c.destination = addr("10.0.0.2:8079");
    assert!(evaluate(&range, &c, None).allowed);
    // Without SNI the requested server name is the empty string, as in Envoy.
    let sni = |s| allow(Permission::RequestedServerName(exact(s)));
    assert!(evaluate(&sni(""), &c, None).allowed);
    c.server_name = Some("a.example");
    assert!(evaluate(&sni("a.example"), &c, None).allowed);
    assert!(!evaluate(&sni(""), &c, None).allowed);
    // `authenticated` without a name: any mTLS peer, never plaintext.
    let any_peer = rules(
        RbacAction::Allow,
        vec![Permission::Any],
        vec![Principal::Authenticated(None)],
    );
    assert!(!evaluate(&any_peer, &c, None).allowed);
    c.peer_principal = Some("spiffe://td/ns/a/sa/b");
    assert!(evaluate(&any_peer, &c, None).allowed);
    // `not_rule` and `destination_ip`.
    let not_net = allow(Permission::Not(Box::new(Permission::DestinationIp(
        "10.0.0.0/24".parse().unwrap(),
    ))));
    assert!(!evaluate(&not_net, &c, None).allowed);
}
