//! Which address a request comes from, when proxies stand in between.
//!
//! The socket's peer is the client unless it is one of `TRUSTED_PROXIES`. Then the client is
//! the rightmost address in `X-Forwarded-For` that is not a trusted proxy: each proxy appends
//! the address it received the request from, so everything left of the last untrusted hop was
//! written by the client itself and proves nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client's address, from the socket's peer and the forwarded-for chain.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?;
        if !self.trusts(client) {
            return Some(client);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(addr) => {
                    client = addr;
                    if !self.trusts(addr) {
                        break;
                    }
                }
                // A hop that is not an address: nothing left of it can be believed.
                Err(_) => break,
            }
        }
        Some(client)
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
    fn garbage_in_the_chain_stops_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = forwarded("198.51.100.7, not-an-ip, 10.1.1.1");
        assert_eq!(p.client(ip("10.0.0.2"), &headers), ip("10.1.1.1"));
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }
}
