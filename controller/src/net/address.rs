//! `dialable`: a listener's bound address as an address to connect to from this host. A
//! wildcard bind (`0.0.0.0`, `::`) accepts on every address but cannot be dialled, and the
//! controller's TLS certificate does not name it: the broker's relay and the CLI's
//! `api.url` use loopback instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `addr`, with a wildcard IP replaced by the loopback address of its family.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_dialled_on_loopback() {
        let any4: SocketAddr = "0.0.0.0:1883".parse().unwrap();
        assert_eq!(dialable(any4), "127.0.0.1:1883".parse().unwrap());
        let any6: SocketAddr = "[::]:1883".parse().unwrap();
        assert_eq!(dialable(any6), "[::1]:1883".parse().unwrap());
        let fixed: SocketAddr = "10.1.2.3:1883".parse().unwrap();
        assert_eq!(dialable(fixed), fixed);
    }
}
