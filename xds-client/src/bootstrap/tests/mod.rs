//! Bootstrap loading: a hand-written L4 bootstrap, error reporting, Istio's real files.

mod config_dump;
mod dynamic;
mod errors;
mod istio_fixtures;
mod l4_yaml;

/// A path under the shared fixtures, beside the repository.
fn shared_fixture(name: &str) -> String {
    format!(
        "{}/../../shared/fixtures/istio-xds/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

const L4_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/l4-bootstrap.yaml"
));
const L4_YAML_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/l4-bootstrap.yaml");
