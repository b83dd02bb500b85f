//! Which address a request comes from, when proxies stand in between.
//!
//! The socket's peer is the client unless it is one of `TRUSTED_PROXIES`. Then the client is
//! the rightmost address in `X-Forwarded-For` that is not a trusted proxy: each proxy appends
//! the address it received the request from, so everything left of the last untrusted hop was
//! written by the client itself and proves nothing. When every hop is a trusted proxy, the
//! client is the rightmost hop, the one the nearest proxy wrote: the leftmost entry would be
//! whatever the caller sent. Every address is canonicalised first, so an IPv4 peer seen as
//! `::ffff:a.b.c.d` on a dual-stack socket matches IPv4 networks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

impl TrustedProxies {
    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client's address, from the socket's peer and the forwarded-for chain.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // The first untrusted hop from the right is the client. If every readable hop is a
        // trusted proxy, the leftmost of them may be the caller's own writing: believe the
        // rightmost, which the nearest proxy wrote. A hop that is not an address ends the walk:
        // nothing left of it can be believed.
        let mut rightmost = None;
        for hop in hops.iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>().map(canonical) else {
                break;
            };
            if !self.trusts(addr) {
                return Some(addr);
            }
            rightmost.get_or_insert(addr);
        }
        Some(rightmost.unwrap_or(peer))
    }
}

/// The calling client's address (None only without connection info, e.g. in some tests).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The client of a request, as `proxies` let it be named.
    pub fn of(parts: &Parts, proxies: &TrustedProxies) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        proxies.client(peer, &parts.headers)
    }
}

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(Self::of(
            parts,
            &Arc::<TrustedProxies>::from_ref(state),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.client(ip("203.0.113.9"), &forwarded("1.2.3.4")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client wrote "6.6.6.6"; the proxy appended the address it saw.
        let headers = forwarded("6.6.6.6, 198.51.100.7");
        assert_eq!(p.client(ip("10.0.0.2"), &headers), ip("198.51.100.7"));
        // Two proxies of ours in a row.
        let headers = forwarded("6.6.6.6, 198.51.100.7, 10.1.1.1");
        assert_eq!(p.client(ip("10.0.0.2"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_nearest_proxys_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // A host in 10/8 writes "10.20.0.5" itself, directly or through the ingress.
        let direct = forwarded("10.20.0.5");
        assert_eq!(p.client(ip("10.99.0.1"), &direct), ip("10.20.0.5"));
        let through_ingress = forwarded("10.20.0.5, 10.99.0.1");
        assert_eq!(
            p.client(ip("10.0.0.2"), &through_ingress),
            ip("10.99.0.1"),
            "the hop the ingress wrote, not the one the caller wrote"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded("198.51.100.7, ::ffff:10.1.1.1");
        assert_eq!(
            p.client(ip("::ffff:10.0.0.2"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            p.client(ip("::ffff:203.0.113.9"), &HeaderMap::new()),
            ip("203.0.113.9"),
            "an untrusted mapped peer is named as IPv4"
        );
    }

    #[test]
    fn garbage_in_the_chain_stops_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded("198.51.100.7, not-an-ip, 10.1.1.1");
        assert_eq!(p.client(ip("10.0.0.2"), &headers), ip("10.1.1.1"));
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }
}
