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
    /// RDS resources.
    RouteConfiguration,
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

    pub(crate) fn route(name: impl Into<String>) -> Self {
        Self {
            kind: ResourceKind::RouteConfiguration,
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
            ResourceKind::RouteConfiguration => "route configuration",
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
    #[error("{resource}: {}", self.reason())]
    Unsupported { resource: Resource, what: String },
    /// Configuration Envoy itself would reject.
    #[error("{resource}: {}", self.reason())]
    Invalid {
        resource: Resource,
        field: String,
        reason: String,
    },
    /// Two resources of one kind share a name.
    #[error("{resource}: {}", self.reason())]
    DuplicateName { resource: Resource },
    /// Two listeners would own the same address.
    #[error("{resource}: {}", self.reason())]
    DuplicateAddress {
        resource: Resource,
        address: String,
        other: String,
    },
    /// A reference to a cluster that the configuration does not define.
    #[error("{resource}: {}", self.reason())]
    UnknownCluster {
        resource: Resource,
        field: String,
        cluster: String,
    },
    /// Every distinct problem of one resource, when it has more than one, so that an operator
    /// (and a NACK's `error_detail`) sees the whole list at once. Never nested, never empty.
    #[error("{resource}: {}", self.reasons().join("; "))]
    Several {
        resource: Resource,
        errors: Vec<DecodeError>,
    },
}

impl DecodeError {
    /// The resource the error is about.
    pub fn resource(&self) -> &Resource {
        match self {
            DecodeError::Unsupported { resource, .. }
            | DecodeError::Invalid { resource, .. }
            | DecodeError::DuplicateName { resource }
            | DecodeError::DuplicateAddress { resource, .. }
            | DecodeError::UnknownCluster { resource, .. }
            | DecodeError::Several { resource, .. } => resource,
        }
    }

    /// Why the resource was rejected, one entry per distinct problem, without naming the
    /// resource.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            DecodeError::Several { errors, .. } => errors.iter().map(Self::reason).collect(),
            single => vec![single.reason()],
        }
    }

    /// The problems this error stands for: itself, or those of [`DecodeError::Several`].
    pub fn problems(&self) -> &[DecodeError] {
        match self {
            DecodeError::Several { errors, .. } => errors,
            single => std::slice::from_ref(single),
        }
    }

    fn reason(&self) -> String {
        match self {
            DecodeError::Unsupported { what, .. } => format!("not supported: {what}"),
            DecodeError::Invalid { field, reason, .. } => format!("{field}: {reason}"),
            DecodeError::DuplicateName { .. } => "name defined more than once".to_string(),
            DecodeError::DuplicateAddress { address, other, .. } => {
                format!("address {address} is already used by listener {other:?}")
            }
            DecodeError::UnknownCluster { field, cluster, .. } => {
                format!("{field}: unknown cluster {cluster:?}")
            }
            DecodeError::Several { .. } => self.reasons().join("; "),
        }
    }

    /// One error for all of `errors` (about `resource`): `None` for none, the error itself for
    /// one, [`DecodeError::Several`] for more; nested lists are flattened and repeats dropped.
    pub fn combine(resource: &Resource, errors: Vec<DecodeError>) -> Option<DecodeError> {
        let mut flat: Vec<DecodeError> = Vec::new();
        for error in errors {
            let parts = match error {
                DecodeError::Several { errors, .. } => errors,
                single => vec![single],
            };
            for part in parts {
                if !flat.contains(&part) {
                    flat.push(part);
                }
            }
        }
        match flat.len() {
            0 => None,
            1 => flat.pop(),
            _ => Some(DecodeError::Several {
                resource: resource.clone(),
                errors: flat,
            }),
        }
    }
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

/// Gathers the problems of one resource as decoding carries on past them, so that a rejection
/// names all of them rather than the first.
pub(crate) struct Problems<'a> {
    ctx: Ctx<'a>,
    errors: Vec<DecodeError>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(ctx: &Ctx<'a>) -> Self {
        Self {
            ctx: ctx.clone(),
            errors: Vec::new(),
        }
    }

    /// Records a problem.
    pub(crate) fn push(&mut self, error: DecodeError) {
        self.errors.push(error);
    }

    /// The value of `result`, or `None` with its error recorded.
    pub(crate) fn take<T>(&mut self, result: Result<T, DecodeError>) -> Option<T> {
        result.map_err(|err| self.push(err)).ok()
    }

    /// The values of the results that succeeded, in order; every error recorded.
    pub(crate) fn take_all<T>(
        &mut self,
        results: impl IntoIterator<Item = Result<T, DecodeError>>,
    ) -> Vec<T> {
        results.into_iter().filter_map(|r| self.take(r)).collect()
    }

    /// `value` if nothing was recorded, else every recorded problem as one error.
    ///
    /// `value` is `None` only when a required part failed, which recorded why; the fallback
    /// error covers a decoder that forgot to.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, DecodeError> {
        match (DecodeError::combine(self.ctx.resource, self.errors), value) {
            (Some(err), _) => Err(err),
            (None, Some(value)) => Ok(value),
            (None, None) => Err(self.ctx.invalid("", "could not be decoded")),
        }
    }
}
