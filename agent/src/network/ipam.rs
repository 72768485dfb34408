//! Address plan of the app networks: the agent's pool (`[network] pool`, default
//! `172.29.0.0/16`) is cut into subnets of `subnet_prefix` bits (default /24), one per app
//! network, numbered in the order networks were first made. In each subnet the first host
//! address is the bridge (the containers' gateway) and containers take the lowest free one.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use coracle_proto::network::{parse_ipv4, DottedQuad, Ipv4};

/// An IPv4 network: address and prefix length, the address masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub address: Ipv4,
    pub prefix: u8,
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", DottedQuad(self.address), self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not ADDRESS/PREFIX"))?;
        let address =
            parse_ipv4(address).ok_or_else(|| format!("{address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to 32"))?;
        let net = Ipv4Net { address, prefix };
        if net.masked() != net {
            return Err(format!(
                "{text:?} has host bits set (the network is {})",
                net.masked()
            ));
        }
        Ok(net)
    }
}

impl Ipv4Net {
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    fn masked(self) -> Self {
        let bits = u32::from_be_bytes(self.address) & Self::mask(self.prefix);
        Self {
            address: bits.to_be_bytes(),
            prefix: self.prefix,
        }
    }

    /// Whether `address` lies in this network.
    pub fn contains(self, address: Ipv4) -> bool {
        let mask = Self::mask(self.prefix);
        u32::from_be_bytes(address) & mask == u32::from_be_bytes(self.address) & mask
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn host(self, n: u32) -> Ipv4 {
        u32::from_be_bytes(self.address)
            .wrapping_add(n)
            .to_be_bytes()
    }

    /// Addresses in the network, the network and broadcast addresses included.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

/// The pool app networks take their subnets from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub range: Ipv4Net,
    pub subnet_prefix: u8,
}

impl Pool {
    /// Checks that subnets fit the pool and hold a gateway and at least two containers.
    pub fn new(range: Ipv4Net, subnet_prefix: u8) -> Result<Self, String> {
        if subnet_prefix < range.prefix || subnet_prefix > 29 {
            return Err(format!(
                "subnet_prefix {subnet_prefix} must be from the pool's prefix ({}) to 29",
                range.prefix
            ));
        }
        Ok(Self {
            range,
            subnet_prefix,
        })
    }

    /// How many subnets the pool holds.
    pub fn subnets(&self) -> u32 {
        let bits = u32::from(self.subnet_prefix - self.range.prefix);
        1u32.checked_shl(bits).unwrap_or(u32::MAX)
    }

    /// The `index`th subnet, if the pool has that many.
    pub fn subnet(&self, index: u32) -> Option<Ipv4Net> {
        if index >= self.subnets() {
            return None;
        }
        let step = Ipv4Net {
            address: [0; 4],
            prefix: self.subnet_prefix,
        }
        .size();
        let offset = u64::from(index) * step;
        Some(Ipv4Net {
            address: self.range.host(u32::try_from(offset).ok()?),
            prefix: self.subnet_prefix,
        })
    }
}

/// The bridge's own address in a subnet: the containers' gateway.
pub fn gateway(subnet: Ipv4Net) -> Ipv4 {
    subnet.host(1)
}

/// The lowest address of `subnet` after the gateway that `taken` does not hold, short of
/// the broadcast address.
pub fn free_address(subnet: Ipv4Net, taken: &BTreeSet<Ipv4>) -> Option<Ipv4> {
    let last = u32::try_from(subnet.size() - 1).ok()?;
    (2..last)
        .map(|n| subnet.host(n))
        .find(|address| !taken.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_refuse_what_is_not_one() {
        let net: Ipv4Net = "172.29.0.0/16".parse().unwrap();
        assert_eq!(net.to_string(), "172.29.0.0/16");
        assert!(net.contains([172, 29, 200, 1]));
        assert!(!net.contains([172, 30, 0, 1]));
        for (bad, says) in [
            ("172.29.0.0", "ADDRESS/PREFIX"),
            ("172.29.0/16", "IPv4"),
            ("172.29.0.0/33", "prefix"),
            ("172.29.0.1/16", "host bits"),
        ] {
            let err = bad.parse::<Ipv4Net>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_pool_is_cut_into_subnets_in_order() {
        let pool = Pool::new("10.88.0.0/16".parse().unwrap(), 24).unwrap();
        assert_eq!(pool.subnets(), 256);
        assert_eq!(pool.subnet(0).unwrap().to_string(), "10.88.0.0/24");
        assert_eq!(pool.subnet(3).unwrap().to_string(), "10.88.3.0/24");
        assert_eq!(pool.subnet(256), None);
        let small = Pool::new("10.88.0.0/24".parse().unwrap(), 28).unwrap();
        assert_eq!(small.subnet(2).unwrap().to_string(), "10.88.0.32/28");
        assert!(Pool::new("10.88.0.0/24".parse().unwrap(), 16).is_err());
        assert!(Pool::new("10.88.0.0/24".parse().unwrap(), 30).is_err());
    }

    #[test]
    fn containers_take_the_lowest_free_address_after_the_gateway() {
        let subnet: Ipv4Net = "10.88.1.0/29".parse().unwrap();
        assert_eq!(gateway(subnet), [10, 88, 1, 1]);
        let mut taken = BTreeSet::new();
        for expected in 2..=6 {
            let got = free_address(subnet, &taken).unwrap();
            assert_eq!(got, [10, 88, 1, expected]);
            taken.insert(got);
        }
        // .7 is the broadcast address.
        assert_eq!(free_address(subnet, &taken), None);
        taken.remove(&[10, 88, 1, 3]);
        assert_eq!(free_address(subnet, &taken), Some([10, 88, 1, 3]));
    }
}
