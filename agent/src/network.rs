//! Guest networking over rtnetlink: UpdateInterface, UpdateRoutes, ListInterfaces,
//! ListRoutes, AddARPNeighbors, with upstream's semantics. A link that does not exist
//! yet answers an error containing `Link not found` (the runtime retries on that text).

use std::net::IpAddr;

use cocoon_protocols::types::{ARPNeighbor, IPAddress, IPFamily, Interface, Route};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::{AgentError, Result};

fn nl(context: &str) -> impl Fn(rtnetlink::Error) -> AgentError + '_ {
    move |e| AgentError::Internal(format!("{context}: {e}"))
}

fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| AgentError::internal("netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn is_eexist(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    (bytes.len() == 6).then_some(bytes)
}

fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn link_name(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn link_mac(m: &LinkMessage) -> Vec<u8> {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn links(h: &Handle) -> Result<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing links"))
}

async fn link_by_name(h: &Handle, name: &str) -> Result<LinkMessage> {
    links(h)
        .await?
        .into_iter()
        .find(|l| link_name(l) == name)
        .ok_or_else(|| AgentError::LinkNotFound(format!("name {name}")))
}

async fn addresses(h: &Handle, index: u32) -> Result<Vec<AddressMessage>> {
    h.address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))
}

fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    let mut local = None;
    let mut addr = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    local.or(addr)
}

fn ip_family(ip: &IpAddr) -> IPFamily {
    if ip.is_ipv4() {
        IPFamily::v4
    } else {
        IPFamily::v6
    }
}

async fn describe(h: &Handle, l: &LinkMessage) -> Result<Interface> {
    let mut iface = Interface::new();
    iface.name = link_name(l);
    iface.device = iface.name.clone();
    iface.hwAddr = format_mac(&link_mac(l));
    iface.mtu = l
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(u64::from(*m)),
            _ => None,
        })
        .unwrap_or(0);
    iface.raw_flags = l.header.flags.bits();
    iface.type_ = format!("{:?}", l.header.link_layer_type).to_lowercase();
    for a in addresses(h, l.header.index).await? {
        if let Some(ip) = address_of(&a) {
            let mut x = IPAddress::new();
            x.family = ip_family(&ip).into();
            x.address = ip.to_string();
            x.mask = a.header.prefix_len.to_string();
            iface.IPAddresses.push(x);
        }
    }
    Ok(iface)
}

pub async fn list_interfaces() -> Result<Vec<Interface>> {
    let h = connect()?;
    let mut out = Vec::new();
    for l in links(&h).await? {
        out.push(describe(&h, &l).await?);
    }
    Ok(out)
}

/// Finds the link (by MAC address, as upstream; else by name), then sets its addresses,
/// MTU, name and flags, and brings it up.
pub async fn update_interface(iface: &Interface) -> Result<Interface> {
    let h = connect()?;
    let all = links(&h).await?;
    let link = if !iface.hwAddr.is_empty() {
        let mac = parse_mac(&iface.hwAddr)
            .ok_or_else(|| AgentError::invalid("interface.hwAddr", &iface.hwAddr))?;
        all.into_iter().find(|l| link_mac(l) == mac)
    } else {
        all.into_iter().find(|l| link_name(l) == iface.name)
    };
    let link = link.ok_or_else(|| {
        AgentError::LinkNotFound(format!("hwAddr {:?} name {:?}", iface.hwAddr, iface.name))
    })?;
    let index = link.header.index;
    let mut wanted = Vec::new();
    for (i, a) in iface.IPAddresses.iter().enumerate() {
        let ip: IpAddr = a.address.parse().map_err(|_| {
            AgentError::invalid(format!("interface.IPAddresses[{i}].address"), &a.address)
        })?;
        let default = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = if a.mask.is_empty() {
            default
        } else {
            a.mask
                .parse()
                .ok()
                .filter(|p| *p <= default)
                .ok_or_else(|| {
                    AgentError::invalid(format!("interface.IPAddresses[{i}].mask"), &a.mask)
                })?
        };
        wanted.push((ip, prefix));
    }

    h.link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(nl("setting the link down"))?;
    for a in addresses(&h, index).await? {
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(nl("removing an address"))?;
    }
    let mut set = LinkUnspec::new_with_index(index);
    if iface.mtu > 0 {
        let mtu = u32::try_from(iface.mtu)
            .map_err(|_| AgentError::invalid("interface.mtu", iface.mtu))?;
        set = set.mtu(mtu);
    }
    if !iface.name.is_empty() && iface.name != link_name(&link) {
        set = set.name(iface.name.clone());
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(nl("setting MTU and name"))?;
    for (ip, prefix) in wanted {
        if let Err(e) = h.address().add(index, ip, prefix).execute().await {
            if !is_eexist(&e) {
                return Err(nl("adding an address")(e));
            }
        }
    }
    let mut up = LinkUnspec::new_with_index(index).up();
    if iface.raw_flags & LinkFlags::Noarp.bits() != 0 {
        up = up.arp(false);
    }
    h.link()
        .set(up.build())
        .execute()
        .await
        .map_err(nl("setting the link up"))?;
    let link = links(&h)
        .await?
        .into_iter()
        .find(|l| l.header.index == index)
        .ok_or_else(|| AgentError::LinkNotFound(format!("index {index}")))?;
    describe(&h, &link).await
}

async fn routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    let mut out = Vec::new();
    for msg in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut got: Vec<RouteMessage> = h
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing routes"))?;
        out.append(&mut got);
    }
    Ok(out
        .into_iter()
        .filter(|r| r.header.table == RouteHeader::RT_TABLE_MAIN)
        .collect())
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

pub async fn list_routes() -> Result<Vec<Route>> {
    let h = connect()?;
    let names: std::collections::HashMap<u32, String> = links(&h)
        .await?
        .iter()
        .map(|l| (l.header.index, link_name(l)))
        .collect();
    let mut out = Vec::new();
    for r in routes(&h).await? {
        let mut route = Route::new();
        route.family = if r.header.address_family == AddressFamily::Inet6 {
            IPFamily::v6
        } else {
            IPFamily::v4
        }
        .into();
        route.scope = u8::from(r.header.scope).into();
        route.flags = r.header.flags.bits();
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(d) => {
                    if let Some(ip) = route_ip(d) {
                        route.dest = format!("{ip}/{}", r.header.destination_prefix_length);
                    }
                }
                RouteAttribute::Gateway(g) => {
                    route.gateway = route_ip(g).map(|i| i.to_string()).unwrap_or_default()
                }
                RouteAttribute::PrefSource(s) => {
                    route.source = route_ip(s).map(|i| i.to_string()).unwrap_or_default()
                }
                RouteAttribute::Oif(i) => route.device = names.get(i).cloned().unwrap_or_default(),
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            route.mtu = *mtu;
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(route);
    }
    Ok(out)
}

fn parse_dest(field: &str, dest: &str) -> Result<Option<(IpAddr, u8)>> {
    if dest.is_empty() || dest == "default" {
        return Ok(None);
    }
    let (ip, prefix) = match dest.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (dest, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| AgentError::invalid(field, dest))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| AgentError::invalid(field, dest))?,
        None => max,
    };
    Ok(Some((ip, prefix)))
}

/// Replaces the main table's non-kernel routes by `list` (link-scope routes first, so
/// gateways are reachable), then answers the resulting table.
pub async fn update_routes(list: &[Route]) -> Result<Vec<Route>> {
    let h = connect()?;
    let all_links = links(&h).await?;
    // Check everything first.
    let mut planned = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let dest = parse_dest(&format!("routes[{i}].dest"), &r.dest)?;
        let gateway: Option<IpAddr> = if r.gateway.is_empty() {
            None
        } else {
            Some(
                r.gateway
                    .parse()
                    .map_err(|_| AgentError::invalid(format!("routes[{i}].gateway"), &r.gateway))?,
            )
        };
        let source: Option<IpAddr> = if r.source.is_empty() {
            None
        } else {
            Some(
                r.source
                    .parse()
                    .map_err(|_| AgentError::invalid(format!("routes[{i}].source"), &r.source))?,
            )
        };
        let index = all_links
            .iter()
            .find(|l| link_name(l) == r.device)
            .map(|l| l.header.index)
            .ok_or_else(|| AgentError::LinkNotFound(format!("device {:?}", r.device)))?;
        let scope = u8::try_from(r.scope)
            .map_err(|_| AgentError::invalid(format!("routes[{i}].scope"), r.scope))?;
        planned.push((dest, gateway, source, index, scope, r.mtu));
    }
    for r in routes(&h).await? {
        if r.header.protocol != RouteProtocol::Kernel {
            let _ = h.route().del(r).execute().await;
        }
    }
    planned.sort_by_key(|p| p.1.is_some());
    for (dest, gateway, source, index, scope, mtu) in planned {
        let v6 = dest
            .map(|(ip, _)| ip)
            .or(gateway)
            .or(source)
            .is_some_and(|ip| ip.is_ipv6());
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .output_interface(index)
            .scope(RouteScope::from(scope));
        b.get_mut().header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if let Some((ip, prefix)) = dest {
            b = b
                .destination_prefix(ip, prefix)
                .map_err(|e| AgentError::invalid("routes.dest", e))?;
        }
        if let Some(gw) = gateway {
            b = b
                .gateway(gw)
                .map_err(|e| AgentError::invalid("routes.gateway", e))?;
        }
        if let Some(src) = source {
            b = b
                .pref_source(src)
                .map_err(|e| AgentError::invalid("routes.source", e))?;
        }
        let mut msg = b.build();
        // RTAX_MTU in RTA_METRICS, as upstream's `ip route ... mtu N`; 0 leaves it unset.
        if mtu > 0 {
            msg.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        if dest.is_none() && gateway.is_none() && msg.header.address_family == AddressFamily::Unspec
        {
            msg.header.address_family = AddressFamily::Inet;
        }
        if let Err(e) = h.route().add(msg).execute().await {
            if !is_eexist(&e) {
                return Err(nl("adding a route")(e));
            }
        }
    }
    drop(h);
    list_routes().await
}

pub async fn add_arp_neighbors(list: &[ARPNeighbor]) -> Result<()> {
    let h = connect()?;
    for (i, n) in list.iter().enumerate() {
        let to = n
            .toIPAddress
            .as_ref()
            .ok_or_else(|| AgentError::invalid(format!("neighbors[{i}].toIPAddress"), "missing"))?;
        let ip: IpAddr = to.address.parse().map_err(|_| {
            AgentError::invalid(format!("neighbors[{i}].toIPAddress.address"), &to.address)
        })?;
        let link = link_by_name(&h, &n.device).await?;
        let mut req = h.neighbours().add(link.header.index, ip);
        if !n.lladdr.is_empty() {
            let mac = parse_mac(&n.lladdr)
                .ok_or_else(|| AgentError::invalid(format!("neighbors[{i}].lladdr"), &n.lladdr))?;
            req = req.link_layer_address(&mac);
        }
        let state = u16::try_from(n.state).unwrap_or(0);
        if state != 0 {
            req = req.state(NeighbourState::from(state));
        }
        let flags = u8::try_from(n.flags).unwrap_or(0);
        req = req.flags(NeighbourFlags::from_bits_retain(flags));
        req.replace()
            .execute()
            .await
            .map_err(nl("adding an ARP neighbour"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(
            parse_mac("02:00:ca:fe:00:01").unwrap(),
            vec![2, 0, 0xca, 0xfe, 0, 1]
        );
        assert!(parse_mac("02:00").is_none());
        assert_eq!(format_mac(&[2, 0, 0xca, 0xfe, 0, 1]), "02:00:ca:fe:00:01");
        assert_eq!(parse_dest("d", "default").unwrap(), None);
        assert_eq!(
            parse_dest("d", "10.1.0.0/16").unwrap(),
            Some(("10.1.0.0".parse().unwrap(), 16))
        );
        assert_eq!(
            parse_dest("d", "fd00::1").unwrap(),
            Some(("fd00::1".parse().unwrap(), 128))
        );
        assert!(parse_dest("d", "10.0.0.0/33").is_err());
        assert!(parse_dest("d", "x/1").is_err());
    }
}
