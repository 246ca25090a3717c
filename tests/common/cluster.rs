//! A Redis Cluster of three masters with one replica each, made by
//! `redis-cli --cluster create`, on OS-chosen ports of 127.0.0.1; killed on drop. Every
//! wait and every read of the nodes' view retries until
//! [`patience`](wait::patience): during a failover a node may refuse, drop a
//! connection or answer with a view still changing.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::redis_server::{RedisServer, wait, wait_replicated};

/// A master's node id, port and slot ranges.
type Master = (String, u16, Vec<(u16, u16)>);

/// The users in every `*:seen` set of one Redis node (the markers left out).
pub fn seen_members(conn: &mut redis::Connection) -> std::collections::HashSet<u64> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*:seen").query(conn).unwrap();
    let mut users = std::collections::HashSet::new();
    for key in keys {
        let members: Vec<String> =
            redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(conn).unwrap();
        users.extend(members.iter().filter_map(|m| m.parse::<u64>().ok()));
    }
    users
}

pub struct ClusterTopology {
    pub nodes: Vec<RedisServer>,
    /// The port of a node frozen with SIGSTOP, which nothing asks any more.
    frozen: Option<u16>,
}

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(100);

fn redis_cli() -> Command {
    let mut cmd =
        Command::new(std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".into()));
    cmd.stdin(Stdio::null());
    cmd
}

impl ClusterTopology {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::start_cluster_node(&["--cluster-node-timeout", "1000"]))
            .collect();
        let out = redis_cli()
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (install redis-tools / redis-server)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let topology = Self { nodes, frozen: None };
        topology.wait_ok();
        topology.wait_formed();
        topology
    }

    /// Waits until every node sees three masters serving slots and three replicas, with no
    /// node in a handshake or failing: `cluster_state:ok` comes as soon as the slots are
    /// covered, while a node may still list a replica-to-be as a master (a reshard to it
    /// then fails with "not known or not a master").
    fn wait_formed(&self) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let what =
                format!("the node on port {} to see three masters and three replicas", node.port());
            wait::retry(&what, POLL, || {
                let view: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut node.sync_connection())
                    .map_err(|e| e.to_string())?;
                let flags = |l: &str| l.split_whitespace().nth(2).unwrap_or_default().to_owned();
                let lines: Vec<&str> = view.lines().collect();
                let serving = lines
                    .iter()
                    .filter(|l| flags(l).contains("master") && l.split_whitespace().count() > 8);
                let replicas = lines.iter().filter(|l| flags(l).contains("slave"));
                let settled = lines.iter().all(|l| {
                    let f = flags(l);
                    !f.contains("fail") && !f.contains("handshake") && !f.contains("noaddr")
                });
                match (serving.count(), replicas.count(), settled) {
                    (3, 3, true) => Ok(()),
                    _ => Err(view),
                }
            });
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.is_running()).map(|n| n.url()).collect()
    }

    /// Waits until every running node says the cluster is ok and agrees on who serves
    /// `slot`-holding masters.
    pub fn wait_ok(&self) {
        for node in self.nodes.iter().filter(|n| n.is_running() && Some(n.port()) != self.frozen) {
            let what = format!("cluster_state:ok on the node on port {}", node.port());
            wait::retry(&what, POLL, || {
                match redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut node.sync_connection())
                {
                    Ok(info) if info.contains("cluster_state:ok") => Ok(()),
                    Ok(_) => Err("cluster_state is not ok".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            });
        }
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        let mut conn = self.any().sync_connection();
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn).unwrap()
    }

    fn any(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running() && Some(n.port()) != self.frozen)
            .expect("a running node")
    }

    /// `(node id, port, slot ranges)` of every healthy master that serves slots, from
    /// `CLUSTER NODES`.
    fn masters(&self) -> Vec<Master> {
        let nodes: String = wait::retry("a node to answer CLUSTER NODES", POLL, || {
            redis::cmd("CLUSTER").arg("NODES").query(&mut self.any().sync_connection())
        });
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                let ranges = f[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .map(|r| match r.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (r.parse().unwrap(), r.parse().unwrap()),
                    })
                    .collect();
                (f[0].to_owned(), port, ranges)
            })
            .filter(|(_, _, ranges): &Master| !ranges.is_empty())
            .collect()
    }

    /// The node id and port of the master serving `slot`.
    pub fn master_of(&self, slot: u16) -> (String, u16) {
        self.try_master_of(slot).expect("a master serves the slot")
    }

    fn try_master_of(&self, slot: u16) -> Option<(String, u16)> {
        self.masters()
            .into_iter()
            .find(|(_, _, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(id, port, _)| (id, port))
    }

    /// Another master than the one serving `slot`.
    pub fn other_master(&self, slot: u16) -> (String, u16) {
        let (owner, _) = self.master_of(slot);
        self.masters()
            .into_iter()
            .find(|(id, _, _)| *id != owner)
            .map(|(id, p, _)| (id, p))
            .unwrap()
    }

    /// The number of slots `node` serves.
    pub fn slots_of(&self, node: &str) -> u32 {
        let masters = self.masters();
        let (_, _, ranges) = masters.iter().find(|(id, _, _)| id == node).unwrap();
        ranges.iter().map(|(a, b)| u32::from(b - a + 1)).sum()
    }

    /// The ports of the healthy masters.
    pub fn master_ports(&self) -> Vec<u16> {
        self.masters().into_iter().map(|(_, port, _)| port).collect()
    }

    /// Tracked users (members of every `*:seen` set but the marker) on each master.
    pub fn seen_per_master(&self) -> Vec<(u16, u64)> {
        self.master_ports()
            .into_iter()
            .map(|port| {
                let node = self.nodes.iter().find(|n| n.port() == port).unwrap();
                (port, seen_members(&mut node.sync_connection()).len() as u64)
            })
            .collect()
    }

    /// Waits until the replica has every write of the master on `port`.
    pub fn sync_replica_of(&self, port: u16) {
        wait_replicated(port);
    }

    /// Kills the master serving `slot` and waits until its replica serves it.
    pub fn kill_master_of(&mut self, slot: u16) -> u16 {
        let (_, port) = self.master_of(slot);
        self.nodes.iter_mut().find(|n| n.port() == port).unwrap().stop();
        wait::until("the replica to take the slot over", POLL, || {
            self.try_master_of(slot).is_some_and(|(_, now)| now != port)
        });
        self.wait_ok();
        self.master_of(slot).1
    }

    /// Freezes the master serving `slot` (SIGSTOP: its connections stay open and nothing
    /// answers, as with a hung Redis); returns its port.
    pub fn freeze_master_of(&mut self, slot: u16) -> u16 {
        let (_, port) = self.master_of(slot);
        self.nodes.iter().find(|n| n.port() == port).unwrap().pause();
        self.frozen = Some(port);
        port
    }

    /// Waits until another master than the one on `old` serves `slot`; returns its port.
    pub fn wait_for_new_master_of(&self, slot: u16, old: u16) -> u16 {
        wait::until("the replica to take the slot over", POLL, || {
            self.try_master_of(slot).is_some_and(|(_, now)| now != old)
        });
        self.wait_ok();
        self.master_of(slot).1
    }

    /// Starts `redis-cli --cluster reshard` moving every slot of `from` to `to`; returns the
    /// running process, whose output goes to `log` (a pipe nobody reads would fill up and
    /// stall it).
    pub fn reshard(&self, from: &str, to: &str, log: &std::path::Path) -> std::process::Child {
        let out = std::fs::File::create(log).unwrap();
        redis_cli()
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", self.any().port())])
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &self.slots_of(from).to_string(), "--cluster-yes"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("redis-cli")
    }
}
