//! The RBAC filters: istiod's goldens, a real sidecar's dump, and the decode rules.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{Value, json};

use crate::decode::{
    Resource, http_rbac_config, http_rbac_per_route_config, listener, network_rbac_config,
};
use crate::model::{
    self, Enforcement, HeaderMatchRule, NetworkFilter, Permission, Principal, RbacAction,
    StringPattern, ValueMatcher,
};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const HTTP_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../shared/fixtures/istio-xds/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// An istiod golden: one filter (`name` + `typedConfig`) as camelCase protojson in YAML.
fn golden(name: &str) -> Value {
    serde_saphyr::from_str(&fixture(name)).unwrap()
}

fn res() -> Resource {
    Resource::listener("l")
}

/// A listener whose one chain runs `filter` and then tcp_proxy: the decoder's real path.
fn listener_with(filter: Value) -> Result<model::Listener, crate::DecodeError> {
    listener(&pb::<Listener>(json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": [{"filters": [filter, {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "c"}}]}],
    })))
}

fn network(config: Value) -> Result<model::NetworkRbac, crate::DecodeError> {
    network_rbac_config(&res(), &pb::<Any>(config))
}

fn http(config: Value) -> Result<model::HttpRbac, crate::DecodeError> {
    http_rbac_config(&res(), &pb::<Any>(config))
}

/// A network RBAC config with one policy of the given permission and principal.
fn one_policy(permission: Value, principal: Value) -> Value {
    json!({"@type": NETWORK_RBAC, "stat_prefix": "tcp.", "rules": {"action": "ALLOW",
        "policies": {"p": {"permissions": [permission], "principals": [principal]}}}})
}

#[test]
fn istiod_network_golden_decodes_through_the_filter_chain() {
    let l = listener_with(golden("istiod-rbac-network-filter-golden.yaml")).unwrap();
    let filters = &l.filter_chains[0].filters;
    assert_eq!(filters.len(), 2);
    let NetworkFilter::Rbac(rbac) = &filters[0] else {
        panic!("not RBAC: {:?}", filters[0])
    };
    assert!(matches!(filters[1], NetworkFilter::TcpProxy(_)));
    assert_eq!(&*rbac.stat_prefix, "tcp.");
    assert_eq!(&*rbac.shadow_rules_stat_prefix, "istio_dry_run_allow_");
    assert_eq!(rbac.enforcement, Enforcement::OneTimeOnFirstByte);
    assert_eq!(rbac.delay_deny, None);
    assert!(rbac.shadow_rules.is_none());
    let rules = rbac.rules.as_ref().unwrap();
    assert_eq!(rules.action, RbacAction::Deny);
    // Envoy keeps policies in a name-ordered map; so does the model.
    let names: Vec<&str> = rules.policies.iter().map(|p| &*p.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 11);
    assert_eq!(names[0], "ns[foo]-policy[httpbin-deny]-rule[0]");

    let rule3 = &rules.policies[names.iter().position(|n| n.ends_with("rule[3]")).unwrap()];
    let Principal::And(ids) = &rule3.principals[0] else {
        panic!("{:?}", rule3.principals[0])
    };
    let Principal::Or(ids) = &ids[0] else {
        panic!("{ids:?}")
    };
    let Principal::Authenticated(Some(m)) = &ids[0] else {
        panic!("{ids:?}")
    };
    let StringPattern::Regex(re) = &m.pattern else {
        panic!("{m:?}")
    };
    assert_eq!(&*re.source, ".*/ns/ns-1/.*");
    assert!(re.is_match("spiffe://cluster.local/ns/ns-1/sa/x"));
    assert!(!re.is_match("spiffe://cluster.local/ns/ns-10/sa/x"));

    // rule[10] carries every TCP attribute istiod emits, metadata included.
    let rule10 = &rules.policies[names.iter().position(|n| n.ends_with("rule[10]")).unwrap()];
    let Permission::And(all) = &rule10.permissions[0] else {
        panic!("{:?}", rule10.permissions[0])
    };
    assert_eq!(all.len(), 10);
    assert!(
        matches!(&all[0], Permission::Or(p) if matches!(p[0], Permission::DestinationPort(80)))
    );
    assert!(matches!(&all[2], Permission::Or(p)
        if matches!(p[0], Permission::DestinationIp(net) if net == "10.10.10.10/32".parse().unwrap())));
    assert!(
        matches!(&all[6], Permission::Or(p) if matches!(&p[0], Permission::RequestedServerName(_)))
    );
    let Permission::Metadata(meta) = &all[8] else {
        panic!("{:?}", all[8])
    };
    assert_eq!(&*meta.filter, "envoy.filters.a.b");
    assert_eq!(meta.path.iter().map(|k| &**k).collect::<Vec<_>>(), ["c"]);
    assert!(matches!(&meta.value, ValueMatcher::String(_)));
    assert!(!meta.invert);
}

#[test]
fn istiod_http_golden_decodes() {
    let golden = golden("istiod-rbac-http-filter-golden.yaml");
    assert_eq!(golden["name"], "envoy.filters.http.rbac");
    let rbac = http(golden["typedConfig"].clone()).unwrap();
    assert_eq!(&*rbac.shadow_rules_stat_prefix, "istio_dry_run_allow_");
    assert_eq!(&*rbac.rules_stat_prefix, "");
    assert!(!rbac.track_per_rule_stats);
    let rules = rbac.rules.as_ref().unwrap();
    assert_eq!(
        rules.action,
        RbacAction::Allow,
        "ALLOW is the default action"
    );
    assert_eq!(rules.policies.len(), 2);
    let p = &rules.policies[0];
    assert_eq!(&*p.name, "ns[foo]-policy[httpbin]-rule[0]");
    assert_eq!((p.permissions.len(), p.principals.len()), (2, 2));
    let Permission::And(all) = &p.permissions[0] else {
        panic!()
    };
    let Permission::Or(hosts) = &all[0] else {
        panic!()
    };
    let Permission::Header(h) = &hosts[0] else {
        panic!()
    };
    assert_eq!(&*h.name, ":authority");
    assert!(matches!(&h.rule, HeaderMatchRule::String(s) if s.ignore_case));
    assert!(matches!(&all[2], Permission::Or(paths) if matches!(paths[0], Permission::UrlPath(_))));

    let Principal::And(ids) = &p.principals[0] else {
        panic!()
    };
    // Request principals are JWT claims in `jwt_authn` metadata.
    let Principal::Or(jwt) = &ids[1] else {
        panic!()
    };
    let Principal::And(claims) = &jwt[0] else {
        panic!()
    };
    let Principal::Metadata(iss) = &claims[0] else {
        panic!()
    };
    assert_eq!(&*iss.filter, "envoy.filters.http.jwt_authn");
    assert_eq!(
        iss.path.iter().map(|k| &**k).collect::<Vec<_>>(),
        ["payload", "iss"]
    );
    // X-header: lowercased, with `present_match` among the alternatives.
    let Principal::Or(headers) = &ids[5] else {
        panic!()
    };
    assert!(matches!(&headers[0], Principal::Header(h) if &*h.name == "x-header"));
    assert!(
        matches!(&headers[3], Principal::Header(h) if matches!(h.rule, HeaderMatchRule::Present(true)))
    );
}

/// Every RBAC filter of the httpbin sidecar dump (Istio 1.18: `filter_state` principals,
/// `istio_authn` claims, dry-run shadow rules, empty TCP rules).
#[test]
fn every_rbac_filter_of_the_httpbin_dump_decodes() {
    fn walk(v: &Value, found: &mut Vec<Value>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("name")
                    && name.ends_with(".rbac")
                {
                    found.push(map["typed_config"].clone());
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let dump: Value = serde_json::from_str(&fixture(
        "sidecar-lds-config_dump-httpbin-istio-2023-06.json",
    ))
    .unwrap();
    let mut found = Vec::new();
    walk(&dump, &mut found);
    let (mut networks, mut https, mut shadows, mut peer_principals) = (0, 0, 0, 0);
    for config in found {
        if config["@type"] == NETWORK_RBAC {
            let rbac = network(config).unwrap();
            // `rules: {}`: present and empty, so an ALLOW that denies every connection.
            let rules = rbac.rules.as_ref().unwrap();
            assert_eq!(rules.action, RbacAction::Allow);
            assert!(rules.policies.is_empty());
            networks += 1;
        } else {
            assert_eq!(config["@type"], HTTP_RBAC);
            let rbac = http(config).unwrap();
            shadows += usize::from(rbac.shadow_rules.is_some());
            let text = format!("{rbac:?}");
            peer_principals += usize::from(text.contains("PeerPrincipal"));
            https += 1;
        }
    }
    assert_eq!((networks, https), (3, 10));
    assert_eq!(shadows, 5);
    assert_eq!(peer_principals, 10);
}

#[test]
fn absent_rules_enforce_nothing() {
    let rbac = network(json!({"@type": NETWORK_RBAC, "stat_prefix": "tcp.",
        "enforcement_type": "CONTINUOUS", "delay_deny": "2s",
        "shadow_rules": {"action": "DENY"}}))
    .unwrap();
    assert!(rbac.rules.is_none());
    assert_eq!(rbac.shadow_rules.unwrap().action, RbacAction::Deny);
    assert_eq!(rbac.enforcement, Enforcement::Continuous);
    assert_eq!(rbac.delay_deny, Some(std::time::Duration::from_secs(2)));
}

#[test]
fn unsupported_parts_are_named() {
    let err = network(json!({"@type": NETWORK_RBAC, "stat_prefix": "tcp.",
        "matcher": {"on_no_match": {"action": {"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.rbac.v3.Action", "name": "x"}}}}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["typed_config", "matcher"]);

    let err = network(
        json!({"@type": NETWORK_RBAC, "stat_prefix": "tcp.", "rules": {
        "policies": {"p": {"permissions": [{"any": true}], "principals": [{"any": true}],
            "condition": {"const_expr": {"bool_value": true}}}}}}),
    )
    .unwrap_err();
    assert_unsupported(&err, &res(), &["policies[\"p\"]", "CEL"]);

    let err = network(one_policy(
        json!({"any": true}),
        json!({"filter_state": {"key": "other", "string_match": {"exact": "x"}}}),
    ))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["principals[0].filter_state", "\"other\""]);

    let err = network(one_policy(
        json!({"sourced_metadata": {"metadata_source": "ROUTE", "metadata_matcher": {
            "filter": "f", "path": [{"key": "k"}], "value": {"present_match": true}}}}),
        json!({"any": true}),
    ))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["sourced_metadata", "ROUTE"]);

    let err = network(one_policy(
        json!({"uri_template": {"name": "envoy.path.match.uri_template.uri_template_matcher",
            "typed_config": {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}}}}),
        json!({"any": true}),
    ))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["permissions[0]", "uri_template"]);
}

#[test]
fn invalid_rules_are_refused_with_their_place() {
    let err = network(one_policy(
        json!({"and_rules": {"rules": []}}),
        json!({"any": true}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "typed_config.rules.policies[\"p\"].permissions[0].and_rules.rules",
        "at least one",
    );

    let err = network(one_policy(
        json!({"any": true}),
        json!({"authenticated": {"principal_name": {"safe_regex": {"regex": "(unclosed"}}}}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "typed_config.rules.policies[\"p\"].principals[0].authenticated.principal_name.safe_regex.regex",
        "unclosed",
    );

    let err = network(one_policy(
        json!({"destination_port_range": {"start": 90, "end": 80}}),
        json!({"any": true}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "typed_config.rules.policies[\"p\"].permissions[0].destination_port_range",
        "not a port range",
    );

    let err = network(json!({"@type": NETWORK_RBAC})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "typed_config.stat_prefix",
        "must not be empty",
    );

    let err = http(json!({"@type": NETWORK_RBAC, "stat_prefix": "x"})).unwrap_err();
    assert_invalid(&err, &res(), "typed_config", "not an HTTP RBAC config");
}

#[test]
fn deprecated_header_forms_and_value_matchers() {
    let rbac = network(one_policy(
        json!({"or_rules": {"rules": [
            {"header": {"name": ":method", "exact_match": "GET"}},
            {"header": {"name": "X-Any", "exact_match": ""}},
            {"header": {"name": "x-n", "range_match": {"start": 1, "end": 5}, "invert_match": true}},
        ]}}),
        json!({"metadata": {"filter": "istio_authn", "path": [{"key": "request.auth.claims"},
            {"key": "iss"}], "value": {"list_match": {"one_of": {"string_match": {"exact": "i"}}}}}}),
    ))
    .unwrap();
    let policy = &rbac.rules.unwrap().policies[0];
    let Permission::Or(rules) = &policy.permissions[0] else {
        panic!()
    };
    assert!(matches!(&rules[0], Permission::Header(h)
        if matches!(&h.rule, HeaderMatchRule::String(s) if matches!(&s.pattern, StringPattern::Exact(e) if &**e == "GET"))));
    assert!(matches!(&rules[1], Permission::Header(h)
        if &*h.name == "x-any" && matches!(h.rule, HeaderMatchRule::Present(true))));
    assert!(matches!(&rules[2], Permission::Header(h)
        if h.invert && matches!(h.rule, HeaderMatchRule::Range { start: 1, end: 5 })));
    assert!(matches!(&policy.principals[0], Principal::Metadata(m)
        if matches!(&m.value, ValueMatcher::ListOneOf(inner) if matches!(**inner, ValueMatcher::String(_)))));
}

#[test]
fn per_route_config_replaces_or_disables() {
    let per_route = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
    let disabled = http_rbac_per_route_config(&res(), &pb::<Any>(json!({"@type": per_route})));
    assert!(disabled.unwrap().is_none());
    let replaced = http_rbac_per_route_config(
        &res(),
        &pb::<Any>(json!({"@type": per_route, "rbac": {"rules": {"action": "DENY"}}})),
    )
    .unwrap()
    .unwrap();
    assert_eq!(replaced.rules.unwrap().action, RbacAction::Deny);
    let err = http_rbac_per_route_config(
        &res(),
        &pb::<Any>(json!({"@type": per_route, "rbac": {"rules": {"policies": {"p": {}}}}})),
    )
    .unwrap_err();
    assert_invalid(
        &err.problems()[0],
        &res(),
        "typed_config.rbac.rules.policies[\"p\"].permissions",
        "at least one",
    );
}
