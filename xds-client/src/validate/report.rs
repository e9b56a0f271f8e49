//! What a check found: per resource type, how many were accepted and why each other one was not.

use std::fmt;

/// The kinds of configuration a check counts, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The bootstrap's own settings (admin, stats, runtime, ADS...); one per bootstrap.
    Bootstrap,
    Listener,
    Cluster,
    RouteConfiguration,
    /// Cluster load assignments.
    Endpoints,
    Secret,
    /// Config dump sections of a type vm-proxy does not know.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Bootstrap,
        Kind::Listener,
        Kind::Cluster,
        Kind::RouteConfiguration,
        Kind::Endpoints,
        Kind::Secret,
        Kind::Other,
    ];

    /// The label of the report line.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bootstrap => "bootstrap",
            Kind::Listener => "listeners",
            Kind::Cluster => "clusters",
            Kind::RouteConfiguration => "route configurations",
            Kind::Endpoints => "endpoints",
            Kind::Secret => "secrets",
            Kind::Other => "other config dump sections",
        }
    }
}

/// What kind of file was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Bootstrap,
    ConfigDump,
}

/// One resource vm-proxy would not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    /// Every distinct reason, in the order found.
    pub reasons: Vec<String>,
    /// Envoy's own reason, when the dump shows that Envoy rejected this resource too.
    pub envoy_rejected: Option<String>,
}

/// The verdicts on every resource of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: Kind,
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

/// The result of checking one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub origin: String,
    pub source: Source,
    /// One per [`Kind`], in [`Kind::ALL`] order; `Other` only when a dump has such sections.
    pub sections: Vec<Section>,
}

impl Report {
    /// An empty report with a section for every kind but `Other`.
    pub(crate) fn new(origin: &str, source: Source) -> Report {
        Report {
            origin: origin.to_string(),
            source,
            sections: Kind::ALL
                .into_iter()
                .filter(|k| *k != Kind::Other)
                .map(|kind| Section {
                    kind,
                    accepted: 0,
                    rejected: Vec::new(),
                })
                .collect(),
        }
    }

    /// Whether every resource was accepted: `vm-proxy run` would take this configuration.
    pub fn all_accepted(&self) -> bool {
        self.sections.iter().all(|s| s.rejected.is_empty())
    }

    /// The section of `kind`, if the report has one.
    pub fn section(&self, kind: Kind) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    fn section_mut(&mut self, kind: Kind) -> &mut Section {
        let index = match self.sections.iter().position(|s| s.kind == kind) {
            Some(i) => i,
            None => {
                self.sections.push(Section {
                    kind,
                    accepted: 0,
                    rejected: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[index]
    }

    pub(crate) fn accept(&mut self, kind: Kind) {
        self.section_mut(kind).accepted += 1;
    }

    /// Records a rejection with its reasons, deduplicated: repeats are dropped, and reasons
    /// that differ only in list indices (one filter in every filter chain) become one, with
    /// `[*]` for the indices and the number of places.
    pub(crate) fn reject(
        &mut self,
        kind: Kind,
        name: &str,
        reasons: Vec<String>,
        envoy_rejected: Option<String>,
    ) {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for reason in reasons {
            let pattern = without_indices(&reason);
            match groups.iter_mut().find(|(p, _)| *p == pattern) {
                Some((_, members)) if members.contains(&reason) => {}
                Some((_, members)) => members.push(reason),
                None => groups.push((pattern, vec![reason])),
            }
        }
        let reasons = groups
            .into_iter()
            .map(|(pattern, mut members)| match members.len() {
                1 => members.remove(0),
                n => format!("{pattern} ({n} places)"),
            })
            .collect();
        self.section_mut(kind).rejected.push(Rejected {
            name: name.to_string(),
            reasons,
            envoy_rejected,
        });
    }
}

/// `reason` with every list index (`[3]`) written as `[*]`.
fn without_indices(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(']') {
            out.push('*');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// One line per kind, `listeners: 3 accepted, 2 rejected`, each followed by one indented line
/// per rejected resource with all its reasons.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for section in &self.sections {
            writeln!(
                f,
                "{}: {} accepted, {} rejected",
                section.kind.label(),
                section.accepted,
                section.rejected.len()
            )?;
            for rejected in &section.rejected {
                let name = match rejected.name.as_str() {
                    "" => "(unnamed)",
                    name => name,
                };
                write!(f, "  {name}: {}", rejected.reasons.join("; "))?;
                if let Some(envoy) = &rejected.envoy_rejected {
                    write!(f, " (Envoy rejected it too: {envoy})")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
