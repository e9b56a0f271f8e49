//! Namespaces wired together for one test: two nodes on a veth pair, or more on a bridge in a
//! hub namespace. Addresses come from ranges reserved for testing (198.18.0.0/15) and unique
//! local IPv6 (fd00::/8), and exist only inside the namespaces made here.
//!
//! Interface names never derive from namespace names: every node's link is `eth0` and the
//! hub's ports are `v<index>`, each created directly in its own namespace, so they cannot
//! collide with other tests and always fit IFNAMSIZ.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::process::Command;

use crate::netns::{Netns, run_ok};
use crate::require::{require_root, require_tools};

/// The link every node has towards its peer or the hub.
pub const NODE_IFACE: &str = "eth0";
const BRIDGE: &str = "br0";
const PREFIX4: u8 = 24;
const PREFIX6: u8 = 64;
/// At most this many nodes: addresses are `.2` upwards in one /24.
const MAX_NODES: usize = 250;

fn node_ipv4(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, index as u8 + 2)
}

fn node_ipv6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, index as u16 + 2)
}

const HUB_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HUB_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);

/// An IPv4 address from 198.19.0.0/16, assigned to no node: routed out of every node by its
/// default route, so a connection to it reaches the capture rules like one to a service VIP.
/// [`Node::add_ip`] makes a node answer for it.
pub fn service_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, n)
}

/// The IPv6 counterpart of [`service_ip`], from fd00:198:19::/64.
pub fn service_ipv6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x19, 0, 0, 0, 0, n)
}

/// One namespace of a topology with its address(es). Derefs to its [`Netns`].
pub struct Node {
    label: String,
    ns: Netns,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

impl Node {
    /// The label given to the builder (`"vm"`, `"mesh"`).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// `None` unless the topology was built with IPv6.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// The node's IPv4 address with `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ipv4), port)
    }

    /// The node's IPv6 address with `port`.
    ///
    /// # Panics
    /// When the topology has no IPv6.
    pub fn addr6(&self, port: u16) -> SocketAddr {
        let ip = self.ipv6.unwrap_or_else(|| {
            panic!(
                "node {} has no IPv6: build the topology with ipv6()",
                self.label
            )
        });
        SocketAddr::new(IpAddr::V6(ip), port)
    }

    /// Makes this node answer for `ip` too (on `lo`, as a host route), e.g. a
    /// [`service_ip`] that other nodes already route towards.
    pub fn add_ip(&self, ip: IpAddr) {
        let cidr = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        let mut argv = vec!["ip", "addr", "add", &cidr, "dev", "lo"];
        if ip.is_ipv6() {
            argv.push("nodad");
        }
        self.ns.run_ok(&argv);
    }
}

impl Deref for Node {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.ns
    }
}

/// Describes a topology; see [`Topology::builder`].
#[derive(Default)]
pub struct TopologyBuilder {
    labels: Vec<String>,
    ipv6: bool,
    sysctls: Vec<(String, String, String)>,
}

impl TopologyBuilder {
    /// Adds a node; its namespace is named `<label>-<pid>-<n>`.
    pub fn node(mut self, label: &str) -> Self {
        self.labels.push(label.to_string());
        self
    }

    /// Gives every node an IPv6 address as well (fd00:198:18::/64, no DAD delay).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Sets `key=value` in node `label`'s namespace after its links are up, e.g.
    /// `net.ipv4.conf.all.route_localnet` for TPROXY towards 127.0.0.1.
    pub fn sysctl(mut self, label: &str, key: &str, value: &str) -> Self {
        self.sysctls
            .push((label.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// Creates everything. Two nodes get a veth pair between them and a default route via
    /// each other; more get one veth each to a bridge in a hub namespace, whose address
    /// (198.18.0.1, fd00:198:18::1) is their default gateway.
    ///
    /// # Panics
    /// When not root, when `ip` is missing, on a bad or repeated label, or when a command
    /// fails; whatever was made until then is removed again.
    pub fn build(self) -> Topology {
        require_root();
        require_tools(&["ip", "sysctl"]);
        assert!(
            (2..=MAX_NODES).contains(&self.labels.len()),
            "a topology needs 2 to {MAX_NODES} nodes, got {:?}",
            self.labels
        );
        for (i, l) in self.labels.iter().enumerate() {
            assert!(
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "node label {l:?} must be letters, digits and '-'"
            );
            assert!(!self.labels[..i].contains(l), "node label {l:?} used twice");
        }
        // Each piece is owned as soon as it exists, so a failing command unwinds through
        // Drop and removes what was made so far.
        let mut topo = Topology {
            nodes: Vec::new(),
            hub: None,
        };
        for (i, label) in self.labels.iter().enumerate() {
            let ns = Netns::new(label);
            prepare_node(&ns, self.ipv6);
            topo.nodes.push(Node {
                label: label.clone(),
                ns,
                ipv4: node_ipv4(i),
                ipv6: self.ipv6.then(|| node_ipv6(i)),
            });
        }
        if topo.nodes.len() == 2 {
            wire_pair(&topo.nodes[0], &topo.nodes[1]);
        } else {
            let hub = Netns::new("hub");
            prepare_node(&hub, self.ipv6);
            wire_hub(&hub, &topo.nodes, self.ipv6);
            topo.hub = Some(hub);
        }
        for (label, key, value) in &self.sysctls {
            topo.node(label).sysctl(key, value);
        }
        topo
    }
}

/// Nodes and, for more than two, the hub between them. Dropping removes the nodes first,
/// then the hub; each namespace kills what still runs in it before it goes.
pub struct Topology {
    // Field order is drop order: nodes, then the hub their links hang off.
    nodes: Vec<Node>,
    hub: Option<Netns>,
}

/// The usual end-to-end shape: the VM under capture and one mesh peer, on a veth pair.
pub struct VmAndMesh {
    pub vm: Node,
    pub mesh: Node,
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// `vm` (198.18.0.2) and `mesh` (198.18.0.3), IPv4 only.
    pub fn vm_and_mesh() -> VmAndMesh {
        Topology::builder()
            .node("vm")
            .node("mesh")
            .build()
            .into_pair()
    }

    /// `vm` and `mesh` with IPv6 too (fd00:198:18::2 and ::3).
    pub fn vm_and_mesh_dual_stack() -> VmAndMesh {
        Topology::builder()
            .node("vm")
            .node("mesh")
            .ipv6()
            .build()
            .into_pair()
    }

    /// The node built with `label`.
    ///
    /// # Panics
    /// When there is none.
    pub fn node(&self, label: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.label == label)
            .unwrap_or_else(|| {
                let known: Vec<&str> = self.nodes.iter().map(|n| n.label()).collect();
                panic!("no node {label:?} in this topology; it has {known:?}")
            })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The bridge's namespace, present when there are more than two nodes.
    pub fn hub(&self) -> Option<&Netns> {
        self.hub.as_ref()
    }

    fn into_pair(self) -> VmAndMesh {
        let mut nodes = self.nodes.into_iter();
        match (nodes.next(), nodes.next()) {
            (Some(vm), Some(mesh)) => VmAndMesh { vm, mesh },
            _ => unreachable!("vm_and_mesh builds exactly two nodes"),
        }
    }
}

/// Per-namespace settings that must precede the links: IPv6 addresses usable at once, and
/// no reverse-path filtering to drop policy-routed (TPROXY) replies.
fn prepare_node(ns: &Netns, ipv6: bool) {
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
    ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
    if ipv6 {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
    }
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

fn wire_pair(a: &Node, b: &Node) {
    ip(&[
        "-n",
        a.name(),
        "link",
        "add",
        NODE_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        NODE_IFACE,
        "netns",
        b.name(),
    ]);
    for (me, other) in [(a, b), (b, a)] {
        address_node(me);
        ip(&[
            "-n",
            me.name(),
            "route",
            "add",
            "default",
            "via",
            &other.ipv4.to_string(),
        ]);
        if let Some(gw) = other.ipv6 {
            ip(&[
                "-6",
                "-n",
                me.name(),
                "route",
                "add",
                "default",
                "via",
                &gw.to_string(),
            ]);
        }
    }
}

fn wire_hub(hub: &Netns, nodes: &[Node], ipv6: bool) {
    let h = hub.name();
    ip(&["-n", h, "link", "add", BRIDGE, "type", "bridge"]);
    ip(&[
        "-n",
        h,
        "addr",
        "add",
        &format!("{HUB_IPV4}/{PREFIX4}"),
        "dev",
        BRIDGE,
    ]);
    if ipv6 {
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{HUB_IPV6}/{PREFIX6}"),
            "dev",
            BRIDGE,
            "nodad",
        ]);
    }
    ip(&["-n", h, "link", "set", BRIDGE, "up"]);
    for (i, node) in nodes.iter().enumerate() {
        let port = format!("v{i}");
        ip(&[
            "-n",
            h,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            NODE_IFACE,
            "netns",
            node.name(),
        ]);
        ip(&["-n", h, "link", "set", &port, "master", BRIDGE, "up"]);
        address_node(node);
        ip(&[
            "-n",
            node.name(),
            "route",
            "add",
            "default",
            "via",
            &HUB_IPV4.to_string(),
        ]);
        if ipv6 {
            ip(&[
                "-6",
                "-n",
                node.name(),
                "route",
                "add",
                "default",
                "via",
                &HUB_IPV6.to_string(),
            ]);
        }
    }
}

fn address_node(n: &Node) {
    let name = n.name();
    ip(&[
        "-n",
        name,
        "addr",
        "add",
        &format!("{}/{PREFIX4}", n.ipv4),
        "dev",
        NODE_IFACE,
    ]);
    if let Some(v6) = n.ipv6 {
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{v6}/{PREFIX6}"),
            "dev",
            NODE_IFACE,
            "nodad",
        ]);
    }
    ip(&["-n", name, "link", "set", NODE_IFACE, "up"]);
}
