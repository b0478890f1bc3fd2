//! A small network of our own for partition tests: one network namespace per node, joined by
//! veth links to a bridge in a hub namespace, and one more link from the test process (the
//! clients) to the same bridge. Links between nodes are cut with iptables inside a node's
//! namespace, so the clients still reach every node (an isolated leader can still be asked to
//! append); loss is iptables' random drop, and a slow link is an htb rate limit on traffic to
//! the other nodes (this kernel has no netem).
//!
//! Every address is in 10.213.0.0/24, made here and removed on drop. Needs root.

use std::process::Command;

const HUB: &str = "stl-hub";
const HOST_IF: &str = "stl-host";
const SUBNET: &str = "10.213.0";

/// Runs `ip`/`iptables`/`tc` (optionally inside a namespace) and insists that it worked.
fn run(netns: Option<&str>, args: &[&str]) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (partition tests need iproute2 and root)"));
    assert!(
        out.status.success(),
        "{netns:?} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`run`], ignoring failure (clean-up of what may not exist).
fn try_run(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// The namespaces and links of one test; removed when dropped.
pub struct Lab {
    nodes: usize,
}

impl Lab {
    /// Node `i` (1-based) gets namespace `stl-n<i>` and address `10.213.0.<i>`; the test
    /// process reaches them from `10.213.0.254`.
    pub fn new(nodes: usize) -> Lab {
        assert!((1..=9).contains(&nodes), "a lab has between 1 and 9 nodes");
        Self::remove(nodes.max(9));
        let lab = Lab { nodes };
        run(None, &["ip", "netns", "add", HUB]);
        run(Some(HUB), &["ip", "link", "add", "br0", "type", "bridge"]);
        run(Some(HUB), &["ip", "link", "set", "br0", "up"]);
        run(Some(HUB), &["ip", "link", "set", "lo", "up"]);
        // The test process's own leg.
        run(
            None,
            &[
                "ip",
                "link",
                "add",
                HOST_IF,
                "type",
                "veth",
                "peer",
                "name",
                "stl-hostp",
            ],
        );
        run(None, &["ip", "link", "set", "stl-hostp", "netns", HUB]);
        run(
            Some(HUB),
            &["ip", "link", "set", "stl-hostp", "master", "br0", "up"],
        );
        let host_addr = format!("{SUBNET}.254/24");
        run(None, &["ip", "addr", "add", &host_addr, "dev", HOST_IF]);
        run(None, &["ip", "link", "set", HOST_IF, "up"]);
        for i in 1..=nodes {
            let ns = Self::netns(i);
            let hub_end = format!("stl-p{i}");
            run(None, &["ip", "netns", "add", &ns]);
            run(Some(&ns), &["ip", "link", "set", "lo", "up"]);
            run(
                None,
                &[
                    "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name",
                    &hub_end, "netns", HUB,
                ],
            );
            run(
                Some(HUB),
                &["ip", "link", "set", &hub_end, "master", "br0", "up"],
            );
            let addr = format!("{}/24", Self::addr(i));
            run(Some(&ns), &["ip", "addr", "add", &addr, "dev", "eth0"]);
            run(Some(&ns), &["ip", "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// The namespace of node `i`.
    pub fn netns(i: usize) -> String {
        format!("stl-n{i}")
    }

    /// The address of node `i`.
    pub fn addr(i: usize) -> String {
        format!("{SUBNET}.{i}")
    }

    /// Drops all traffic between nodes `a` and `b` (both directions; clients unaffected).
    pub fn cut(&self, a: usize, b: usize) {
        for (me, other) in [(a, b), (b, a)] {
            let ns = Self::netns(me);
            let peer = Self::addr(other);
            run(
                Some(&ns),
                &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"],
            );
            run(
                Some(&ns),
                &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"],
            );
        }
    }

    /// Cuts node `i` off from every other node: it is alone in a minority.
    pub fn isolate(&self, i: usize) {
        for other in (1..=self.nodes).filter(|&o| o != i) {
            self.cut(i, other);
        }
    }

    /// Drops a share (0..1) of the packets arriving at node `i` from other nodes.
    pub fn lossy(&self, i: usize, share: f64) {
        let ns = Self::netns(i);
        let p = format!("{share}");
        for other in (1..=self.nodes).filter(|&o| o != i) {
            let peer = Self::addr(other);
            run(
                Some(&ns),
                &[
                    "iptables",
                    "-A",
                    "INPUT",
                    "-s",
                    &peer,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Limits what node `i` sends to the other nodes to `rate` (e.g. "1mbit"), with a queue
    /// of 50 packets: a slow link whose delay grows with the traffic (up to about 0.6 s at
    /// 1 Mbit/s). Clients' traffic is not limited. (An htb class with u32 filters: this
    /// kernel has neither netem nor prio.)
    pub fn slow(&self, i: usize, rate: &str) {
        let ns = Self::netns(i);
        let tc = |args: &[&str]| {
            let mut all = vec!["tc"];
            all.extend_from_slice(args);
            run(Some(&ns), &all);
        };
        tc(&[
            "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10",
        ]);
        tc(&[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit",
        ]);
        tc(&[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", rate,
            "ceil", rate,
        ]);
        tc(&[
            "qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "pfifo", "limit",
            "50",
        ]);
        for other in (1..=self.nodes).filter(|&o| o != i) {
            let dst = format!("{}/32", Self::addr(other));
            tc(&[
                "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "dst", &dst, "flowid", "1:20",
            ]);
        }
    }

    /// Removes every cut, loss and rate limit.
    pub fn heal(&self) {
        for i in 1..=self.nodes {
            let ns = Self::netns(i);
            run(Some(&ns), &["iptables", "-F"]);
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                ])
                .output();
        }
    }

    fn remove(nodes: usize) {
        try_run(&["ip", "link", "del", HOST_IF]);
        try_run(&["ip", "netns", "del", HUB]);
        for i in 1..=nodes {
            try_run(&["ip", "netns", "del", &Self::netns(i)]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Self::remove(self.nodes);
    }
}
