use std::fmt;

/// Which configuration resource an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: ResourceKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Listener,
    Cluster,
    /// EDS resources (named after their cluster or EDS service name).
    ClusterLoadAssignment,
    /// The bootstrap's own fields, `admin` included; the name is empty.
    Bootstrap,
}

impl Resource {
    pub(crate) fn listener(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceKind::Listener,
            name: name.into(),
        }
    }

    pub(crate) fn cluster(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceKind::Cluster,
            name: name.into(),
        }
    }

    pub(crate) fn assignment(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceKind::ClusterLoadAssignment,
            name: name.into(),
        }
    }

    pub(crate) fn bootstrap() -> Self {
        Self {
            kind: ResourceKind::Bootstrap,
            name: String::new(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ResourceKind::Listener => "listener",
            ResourceKind::Cluster => "cluster",
            ResourceKind::ClusterLoadAssignment => "cluster load assignment",
            ResourceKind::Bootstrap => return f.write_str("bootstrap"),
        };
        write!(f, "{kind} {:?}", self.name)
    }
}

/// Why an Envoy resource cannot become part of a [`crate::model::Snapshot`].
///
/// `field` and `what` are written as paths inside the resource (`filter_chains[0].filters[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Valid Envoy configuration that vm-proxy does not implement. Rejected rather than ignored,
    /// as Envoy rejects an extension it does not know.
    #[error("{resource}: not supported: {what}")]
    Unsupported { resource: Resource, what: String },
    /// Configuration Envoy itself would reject.
    #[error("{resource}: {field}: {reason}")]
    Invalid {
        resource: Resource,
        field: String,
        reason: String,
    },
    /// Two resources of one kind share a name.
    #[error("{resource}: name defined more than once")]
    DuplicateName { resource: Resource },
    /// Two listeners would own the same address.
    #[error("{resource}: address {address} is already used by listener {other:?}")]
    DuplicateAddress {
        resource: Resource,
        address: String,
        other: String,
    },
    /// A reference to a cluster that the configuration does not define.
    #[error("{resource}: {field}: unknown cluster {cluster:?}")]
    UnknownCluster {
        resource: Resource,
        field: String,
        cluster: String,
    },
}

/// Where in a resource decoding currently is, so that errors can say so.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    resource: &'a Resource,
    path: String,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(resource: &'a Resource) -> Self {
        Self {
            resource,
            path: String::new(),
        }
    }

    /// The context of a field below this one.
    pub(crate) fn at(&self, field: &str) -> Ctx<'a> {
        Ctx {
            resource: self.resource,
            path: self.join(field),
        }
    }

    /// The context of the `index`th element of the repeated field `field`.
    pub(crate) fn at_index(&self, field: &str, index: usize) -> Ctx<'a> {
        self.at(&format!("{field}[{index}]"))
    }

    fn join(&self, field: &str) -> String {
        match (self.path.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{field}", self.path),
        }
    }

    /// `field` (below this context; empty for this context itself) is invalid.
    pub(crate) fn invalid(&self, field: &str, reason: impl Into<String>) -> DecodeError {
        let field = self.join(field);
        DecodeError::Invalid {
            resource: self.resource.clone(),
            field: if field.is_empty() { ".".into() } else { field },
            reason: reason.into(),
        }
    }

    /// What this context holds, `what`, is not supported.
    pub(crate) fn unsupported(&self, what: impl fmt::Display) -> DecodeError {
        let what = match self.path.is_empty() {
            true => what.to_string(),
            false => format!("{}: {what}", self.path),
        };
        DecodeError::Unsupported {
            resource: self.resource.clone(),
            what,
        }
    }

    /// Starts a list of set-but-unsupported fields of the message at this context.
    pub(crate) fn unsupported_fields(&self) -> UnsupportedFields<'_, 'a> {
        UnsupportedFields {
            ctx: self,
            fields: Vec::new(),
        }
    }
}

/// Collects every unsupported field a message sets, so one error names them all.
pub(crate) struct UnsupportedFields<'c, 'a> {
    ctx: &'c Ctx<'a>,
    fields: Vec<&'static str>,
}

impl UnsupportedFields<'_, '_> {
    /// Records `field` when `set` is true.
    pub(crate) fn check(&mut self, field: &'static str, set: bool) -> &mut Self {
        if set {
            self.fields.push(field);
        }
        self
    }

    /// Records `field` when the message value is present and not all defaults: an empty
    /// message configures nothing.
    pub(crate) fn check_msg<T: Default + PartialEq>(
        &mut self,
        field: &'static str,
        value: &Option<T>,
    ) -> &mut Self {
        let set = value.as_ref().is_some_and(|v| *v != T::default());
        self.check(field, set)
    }

    pub(crate) fn finish(&mut self) -> Result<(), DecodeError> {
        if self.fields.is_empty() {
            return Ok(());
        }
        Err(self.ctx.unsupported(self.fields.join(", ")))
    }
}
