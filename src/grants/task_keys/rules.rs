//! The restrictions a task key or a workload binding carries, checked the same way for both:
//! a printable name, networks in canonical form that do not hold a proxy, and whether a
//! presented credential may be used now, from where it is presented.

use std::net::IpAddr;

use chrono::Utc;
use ipnet::IpNet;

use super::{KeyRefusal, TaskKeyError, MAX_CIDRS, MAX_NAME_LEN};
use crate::vault::TaskKey;

/// Why `key` may not be used now from `from`, if it may not.
pub(super) fn refusal(key: &TaskKey, from: Option<IpAddr>) -> Option<KeyRefusal> {
    if key.revoked_at.is_some() {
        Some(KeyRefusal::Revoked)
    } else if key.expires_at <= Utc::now() {
        Some(KeyRefusal::Expired)
    } else if key.max_uses.is_some_and(|max| key.uses >= max) {
        Some(KeyRefusal::Exhausted)
    } else if !address_allowed(&key.allowed_cidrs, from) {
        Some(KeyRefusal::Address)
    } else {
        None
    }
}

pub(crate) fn validate_name(name: &str) -> Result<String, TaskKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(TaskKeyError::Invalid(
            "name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// CIDRs (or single addresses), in their canonical form; none may share an address with a
/// trusted proxy network.
pub(super) fn parse_cidrs(raw: &[String], proxies: &[IpNet]) -> Result<Vec<String>, TaskKeyError> {
    if raw.len() > MAX_CIDRS {
        return Err(TaskKeyError::Invalid(format!(
            "allowedCidrs may list at most {MAX_CIDRS} networks"
        )));
    }
    raw.iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    TaskKeyError::Invalid(format!(
                        "allowedCidrs: `{}` is not a network like 10.0.0.0/8 or an address",
                        entry.chars().take(64).collect::<String>()
                    ))
                })
                .and_then(|net| match overlapping_proxy(&net, proxies) {
                    Some(proxy) => Err(TaskKeyError::Invalid(format!(
                        "allowedCidrs: {net} overlaps the trusted proxy network {proxy}: \
                             a proxy's addresses do not say who the task is"
                    ))),
                    None => Ok(net.to_string()),
                })
        })
        .collect()
}

/// The trusted proxy network `net` shares an address with, if any.
fn overlapping_proxy<'a>(net: &IpNet, proxies: &'a [IpNet]) -> Option<&'a IpNet> {
    proxies
        .iter()
        .find(|proxy| proxy.contains(net) || net.contains(*proxy))
}

fn address_allowed(cidrs: &[String], from: Option<IpAddr>) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    let Some(from) = from else { return false };
    // An IPv4 client may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
    let from = match from {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
        v4 => v4,
    };
    cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|net| net.contains(&from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_parsed_canonical_and_bounded() {
        let parsed = parse_cidrs(
            &["10.1.2.3/8".into(), "192.0.2.7".into(), "::1".into()],
            &[],
        )
        .unwrap();
        assert_eq!(parsed, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        assert!(parse_cidrs(&["10.0.0.0/33".into()], &[]).is_err());
        assert!(parse_cidrs(&["example.com".into()], &[]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("10.0.0.{i}")).collect();
        assert!(parse_cidrs(&many, &[]).is_err());
    }

    #[test]
    fn networks_that_share_an_address_with_a_proxy_overlap() {
        let proxies: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        for net in ["10.20.0.0/16", "0.0.0.0/0", "192.0.2.0/24", "10.0.0.1/32"] {
            assert!(
                overlapping_proxy(&net.parse().unwrap(), &proxies).is_some(),
                "{net}"
            );
        }
        assert!(overlapping_proxy(&"198.51.100.0/24".parse().unwrap(), &proxies).is_none());
    }

    #[test]
    fn addresses_are_matched_against_the_networks() {
        let nets = vec!["10.0.0.0/8".to_owned()];
        assert!(address_allowed(&nets, Some("10.9.9.9".parse().unwrap())));
        assert!(address_allowed(
            &nets,
            Some("::ffff:10.9.9.9".parse().unwrap())
        ));
        assert!(!address_allowed(&nets, Some("192.0.2.1".parse().unwrap())));
        assert!(!address_allowed(&nets, None), "no address, no entry");
        assert!(address_allowed(&[], None), "no restriction");
    }

    #[test]
    fn names_are_printable_and_short() {
        assert_eq!(validate_name("  nightly ").unwrap(), "nightly");
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(101)).is_err());
    }
}
