//! Address ranges (`10.0.0.0/8`, `::1/128`) from which a subsystem's information system may
//! call the gateway. X-Road lets an information system reach its security server over plain
//! HTTP where the network is trusted; the range is what makes that trust explicit.

use std::net::IpAddr;

use crate::ExchangeError;

/// One range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

/// The ranges a new subsystem gets: this machine only.
pub const LOOPBACK: &str = "127.0.0.0/8,::1/128";

impl Network {
    /// Parses `ADDRESS/BITS` or a bare address (all bits).
    pub fn parse(text: &str) -> Result<Network, ExchangeError> {
        let bad = || {
            ExchangeError::Invalid(format!(
                "{text:?} is not an address range such as 10.0.0.0/8 or ::1/128"
            ))
        };
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, bits })
    }

    /// Whether `ip` is in the range (an IPv4 address given as IPv6-mapped counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        (a >> shift) == (b >> shift)
    }
}

/// Parses a comma-separated list of ranges; at least one.
pub fn parse_list(text: &str) -> Result<Vec<Network>, ExchangeError> {
    let list = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Network::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(ExchangeError::Invalid(
            "give at least one address range for the information system".into(),
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_their_addresses_only() {
        let list = parse_list("10.1.0.0/16, ::1/128").unwrap();
        let inside = |ip: &str| list.iter().any(|n| n.contains(ip.parse().unwrap()));
        assert!(inside("10.1.200.3"));
        assert!(inside("::ffff:10.1.0.9"));
        assert!(inside("::1"));
        assert!(!inside("10.2.0.1"));
        assert!(!inside("127.0.0.1"));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("ten").is_err());
        assert!(parse_list(" , ").is_err());
    }
}
