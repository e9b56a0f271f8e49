//! What the ADS client holds right now, for `/config_dump` and for tests.

use std::sync::Arc;
use std::time::SystemTime;

/// The accepted dynamic resources and the stream's state, published after every response.
#[derive(Debug, Clone, Default)]
pub struct AdsStatus {
    /// Whether a stream to the server is open.
    pub connected: bool,
    pub clusters: Vec<DynamicResource>,
    /// EDS load assignments, by name.
    pub assignments: Vec<DynamicResource>,
    pub listeners: Vec<DynamicResource>,
    /// RDS route configurations, by name.
    pub routes: Vec<DynamicResource>,
    /// The last SotW `version_info` accepted for CDS (empty under Delta).
    pub cluster_version: String,
    /// The last SotW `version_info` accepted for LDS (empty under Delta).
    pub listener_version: String,
    /// The reasons of the last NACK sent, one per rejected resource; empty after an ACK.
    pub rejected: Vec<String>,
}

/// One accepted resource.
#[derive(Debug, Clone)]
pub struct DynamicResource {
    pub name: String,
    /// Its version: the SotW `version_info` of its response, or its own Delta version.
    pub version: String,
    /// Accepted but not yet serving: an EDS cluster without endpoints, or a listener using a
    /// cluster that is warming or gone, or a route configuration RDS has not delivered.
    pub warming: bool,
    pub last_updated: SystemTime,
    /// The resource as proto3 JSON, as `/config_dump` shows it.
    pub config: Arc<serde_json::Value>,
}

impl AdsStatus {
    /// The accepted listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&DynamicResource> {
        self.listeners.iter().find(|r| r.name == name)
    }

    /// The accepted cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&DynamicResource> {
        self.clusters.iter().find(|r| r.name == name)
    }

    /// The accepted route configuration named `name`.
    pub fn route(&self, name: &str) -> Option<&DynamicResource> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The accepted load assignment named `name`.
    pub fn assignment(&self, name: &str) -> Option<&DynamicResource> {
        self.assignments.iter().find(|r| r.name == name)
    }
}
