//! The pod network: a host bridge `ffbr0` (10.244.0.1/16), one network namespace per pod with a
//! veth on the bridge and an address from its node's /24, and the `kubernetes` Service VIP
//! (10.0.0.1:443) forwarded to the API server on 127.0.0.1, which is how pods reach it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};

use super::cmd::run;
use crate::error::{Error, Result};

/// The bridge's name.
pub const BRIDGE: &str = "ffbr0";
/// The bridge's MAC address, fixed (locally administered).
const BRIDGE_MAC: &str = "02:fe:f1:00:00:01";
/// The bridge's address: the pods' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The `kubernetes` Service's cluster IP (the first of the control plane's service range).
pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The port of the `kubernetes` Service.
pub const SERVICE_PORT: u16 = 443;
/// Prefix of the agent's network namespaces, so that a new agent can clear an old one's.
const NETNS_PREFIX: &str = "ffpod-";

/// A node's pod addresses: 10.244.<index>.0/24, handed out round-robin so that an address
/// (and the interface named after it) is not reused while the kernel still tears the old down.
#[derive(Debug)]
pub struct NodeSubnet {
    index: u8,
    used: Mutex<(BTreeSet<u8>, u8)>,
}

impl NodeSubnet {
    /// The subnet of the node numbered `index` (1 to 250).
    pub fn new(index: u8) -> Self {
        Self { index, used: Mutex::new((BTreeSet::new(), 254)) }
    }

    /// The node's `spec.podCIDR`.
    pub fn cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    fn take(&self) -> Option<Ipv4Addr> {
        let mut guard = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        let (used, last) = &mut *guard;
        // Hosts .2 to .254, starting after the last one given (u16: the sum passes 255).
        let next = |step: u16| (2 + (u16::from(*last) - 2 + step) % 253) as u8;
        let host = (1..=253u16).map(next).find(|h| !used.contains(h))?;
        used.insert(host);
        *last = host;
        Some(Ipv4Addr::new(10, 244, self.index, host))
    }

    /// The node powered off: every address is free again.
    fn clear(&self) {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).0.clear();
    }

    fn give_back(&self, ip: Ipv4Addr) {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).0.remove(&ip.octets()[3]);
    }
}

/// One pod's network namespace.
#[derive(Debug)]
pub struct PodNet {
    /// The namespace's name (`ip netns`).
    pub name: String,
    /// The pod's IP.
    pub ip: Ipv4Addr,
    subnet: Arc<NodeSubnet>,
}

impl PodNet {
    /// The namespace's file, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Deletes the veth pair, then the namespace, and frees the address. The veth goes first:
    /// a deleted namespace is torn down by the kernel later, and its interfaces with it.
    pub async fn delete(self) {
        let [_, _, node, host] = self.ip.octets();
        let _ = run("ip", &["link", "delete", &veth_name(node, host)]).await;
        if let Err(err) = run("ip", &["netns", "delete", &self.name]).await {
            tracing::warn!(netns = %self.name, %err, "cannot delete the pod's network namespace");
        }
        self.subnet.give_back(self.ip);
    }
}

/// Creates the bridge with the gateway and the Service VIP on it (idempotent), and deletes the
/// network namespaces an earlier agent left.
pub async fn setup_bridge() -> Result<()> {
    for netns in run("ip", &["netns", "list"]).await.unwrap_or_default().lines() {
        let name = netns.split_whitespace().next().unwrap_or_default();
        if name.starts_with(NETNS_PREFIX) {
            let _ = run("ip", &["netns", "delete", name]).await;
        }
    }
    if run("ip", &["link", "show", BRIDGE]).await.is_err() {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"]).await?;
    }
    // A bridge takes the lowest MAC address of its ports unless given one: as pods' veths come
    // and go, the gateway's MAC would change under the pods' ARP caches, and their packets to
    // the API server would go nowhere for a minute (seen: lease renewals that never connected).
    run("ip", &["link", "set", BRIDGE, "address", BRIDGE_MAC]).await?;
    let addresses = run("ip", &["-4", "addr", "show", "dev", BRIDGE]).await?;
    for address in [format!("{GATEWAY}/16"), format!("{SERVICE_VIP}/32")] {
        if !addresses.contains(&format!("inet {address}")) {
            run("ip", &["addr", "add", &address, "dev", BRIDGE]).await?;
        }
    }
    run("ip", &["link", "set", BRIDGE, "up"]).await?;
    Ok(())
}

/// Creates a network namespace for a pod of the node with `subnet`; `tag` names it.
pub async fn create(subnet: &Arc<NodeSubnet>, tag: &str) -> Result<PodNet> {
    let ip = subnet.take().ok_or_else(|| Error::NotReady {
        reason: "FailedCreatePodSandBox",
        message: format!("no free address in {}", subnet.cidr()),
    })?;
    let [_, _, node, host] = ip.octets();
    let name = format!("{NETNS_PREFIX}{node}-{host}-{tag}");
    let veth = veth_name(node, host);
    let result = async {
        run("ip", &["netns", "add", &name]).await?;
        run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name]).await?;
        run("ip", &["link", "set", &veth, "master", BRIDGE, "up"]).await?;
        run("ip", &["-n", &name, "addr", "add", &format!("{ip}/16"), "dev", "eth0"]).await?;
        run("ip", &["-n", &name, "link", "set", "eth0", "up"]).await?;
        run("ip", &["-n", &name, "link", "set", "lo", "up"]).await?;
        run("ip", &["-n", &name, "route", "add", "default", "via", &GATEWAY.to_string()]).await?;
        Ok::<(), Error>(())
    }
    .await;
    let net = PodNet { name, ip, subnet: Arc::clone(subnet) };
    match result {
        Ok(()) => Ok(net),
        Err(err) => {
            net.delete().await;
            Err(err)
        }
    }
}

/// The host side of a pod's veth (at most 15 characters).
fn veth_name(node: u8, host: u8) -> String {
    format!("ffv{node}x{host}")
}

/// Deletes every network namespace of the node's pods (the node powered off), and frees its
/// addresses.
pub async fn delete_node_namespaces(subnet: &NodeSubnet) {
    let prefix = format!("{NETNS_PREFIX}{}-", subnet.index);
    for line in run("ip", &["netns", "list"]).await.unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(host) = name.strip_prefix(&prefix).and_then(|rest| rest.split('-').next()) else { continue };
        let _ = run("ip", &["link", "delete", &veth_name(subnet.index, host.parse().unwrap_or(0))]).await;
        let _ = run("ip", &["netns", "delete", name]).await;
    }
    subnet.clear();
}

/// Listens on the Service VIP (the agent binds it before it says it is ready).
pub async fn bind_service_vip() -> Result<TcpListener> {
    let address = SocketAddr::from((SERVICE_VIP, SERVICE_PORT));
    TcpListener::bind(address).await.map_err(|e| Error::io("listen", address.to_string(), e))
}

/// Forwards connections to the Service VIP to the API server at `apiserver`, until dropped.
pub async fn serve_service_vip(listener: TcpListener, apiserver: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            match TcpStream::connect(apiserver).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(err) => tracing::warn!(%apiserver, %err, "the Service VIP cannot reach the API server"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_robin_so_a_freed_one_is_not_reused_at_once() {
        let subnet = NodeSubnet::new(3);
        let first = subnet.take().unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 244, 3, 2));
        subnet.give_back(first);
        let second = subnet.take().unwrap();
        assert_eq!(second, Ipv4Addr::new(10, 244, 3, 3), "the freed .2 waits its turn");
        let taken: Vec<Ipv4Addr> = std::iter::from_fn(|| subnet.take()).collect();
        assert_eq!(taken.len(), 252, "every other host address .2 to .254 once");
        assert!(!taken.contains(&second) && taken.contains(&first));
        assert_eq!(subnet.take(), None);
        // Wrapped around with the low addresses still taken: the search passes 255 (in u16).
        for ip in &taken[..200] {
            subnet.give_back(*ip);
        }
        let again = subnet.take().unwrap();
        assert!(taken[..200].contains(&again), "{again}");
        subnet.clear();
        assert!(subnet.take().is_some());
    }
}
