//! A small rtnetlink client: just the link, address and route requests container networking
//! needs (bridges, veth pairs, addresses, a default route), each sent with an ack awaited.
//! No dumps and no listening: the agent knows what it made. Used instead of shelling out to
//! `ip`, which a device need not have, and instead of a netlink crate, which would pull an
//! async stack into the static agent for a dozen messages.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::ipam::Ipv4Net;

const NLMSG_HDR: usize = 16;
const IFINFO_LEN: usize = 16;
const IFADDR_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 1 << 15;

/// A netlink request failed: the kernel's errno and what was asked.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    /// The kernel refused because the object is already there.
    pub fn already_exists(&self) -> bool {
        self.source.raw_os_error() == Some(libc::EEXIST)
    }

    /// The kernel refused because the object is not there.
    pub fn not_found(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
        )
    }
}

/// One message being built: header, fixed part, then attributes (nested ones by offset).
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = vec![0u8; NLMSG_HDR];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(fixed);
        Self { buf }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        self.pad();
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self
    }

    fn name(&mut self, kind: u16, name: &str) -> &mut Self {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// Opens a nested attribute; close it with `end` and the returned offset.
    fn begin(&mut self, kind: u16) -> usize {
        self.pad();
        let at = self.buf.len();
        self.attr(kind | NLA_F_NESTED, &[]);
        at
    }

    /// Opens a nested attribute whose payload starts with a fixed struct (veth's peer).
    fn begin_with(&mut self, kind: u16, fixed: &[u8]) -> usize {
        let at = self.begin(kind);
        self.buf.extend_from_slice(fixed);
        at
    }

    fn end(&mut self, at: usize) {
        self.pad();
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        self.pad();
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; IFINFO_LEN] {
    let mut out = [0u8; IFINFO_LEN];
    out[0] = libc::AF_UNSPEC as u8;
    out[4..8].copy_from_slice(&index.to_ne_bytes());
    out[8..12].copy_from_slice(&flags.to_ne_bytes());
    out[12..16].copy_from_slice(&change.to_ne_bytes());
    out
}

/// A route netlink socket, bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is checked and then owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    fn request(&mut self, what: impl Fn() -> String, message: Message) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = message.finish(seq);
        let fail = |source| NetlinkError {
            what: what(),
            source,
        };
        // SAFETY: a zeroed sockaddr_nl with the family set addresses the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `bytes` and `kernel` outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let mut reply = [0u8; 4096];
        loop {
            // SAFETY: `reply` is a writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(fail(err));
            }
            if let Some(errno) = ack_for(&reply[..n as usize], seq) {
                return match errno {
                    0 => Ok(()),
                    e => Err(fail(io::Error::from_raw_os_error(e))),
                };
            }
        }
    }

    /// Creates a bridge with a fixed MAC address (else it takes its ports' lowest, which
    /// changes as containers come and go and leaves their ARP caches stale); an existing
    /// one of that name is fine.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWLINK, flags, &ifinfo(0, 0, 0));
        m.name(IFLA_IFNAME, name);
        m.attr(IFLA_ADDRESS, &mac);
        let info = m.begin(IFLA_LINKINFO);
        m.name(IFLA_INFO_KIND, "bridge");
        m.end(info);
        match self.request(|| format!("create bridge {name}"), m) {
            Err(e) if e.already_exists() => Ok(()),
            other => other,
        }
    }

    /// Creates a veth pair: `host` here, `peer` in the namespace `peer_netns` with the MAC
    /// address `peer_mac`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns: RawFd,
    ) -> Result<(), NetlinkError> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWLINK, flags, &ifinfo(0, 0, 0));
        m.name(IFLA_IFNAME, host);
        let info = m.begin(IFLA_LINKINFO);
        m.name(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let peer_attr = m.begin_with(VETH_INFO_PEER, &ifinfo(0, 0, 0));
        m.name(IFLA_IFNAME, peer);
        m.attr(IFLA_ADDRESS, &peer_mac);
        m.attr(IFLA_NET_NS_FD, &(peer_netns as u32).to_ne_bytes());
        m.end(peer_attr);
        m.end(data);
        m.end(info);
        self.request(|| format!("create veth pair {host} / {peer}"), m)
    }

    /// Brings a link up and, when given, puts it on a bridge.
    pub fn link_up(&mut self, name: &str, master: Option<&str>) -> Result<(), NetlinkError> {
        let up = libc::IFF_UP as u32;
        let mut m = Message::new(libc::RTM_NEWLINK, 0, &ifinfo(0, up, up));
        m.name(IFLA_IFNAME, name);
        if let Some(bridge) = master {
            let index = self.index(bridge)?;
            m.attr(IFLA_MASTER, &index.to_ne_bytes());
        }
        self.request(|| format!("bring up {name}"), m)
    }

    /// Turns on hairpin mode of a bridge port (`bridge link set dev NAME hairpin on`): a
    /// frame may leave by the port it came in on, so a container reaches its own published
    /// port through the device's address (DNAT sends it back to where it came from).
    pub fn set_hairpin(&mut self, name: &str) -> Result<(), NetlinkError> {
        let index = i32::try_from(self.index(name)?).unwrap_or(0);
        let mut fixed = ifinfo(index, 0, 0);
        fixed[0] = libc::AF_BRIDGE as u8;
        let mut m = Message::new(libc::RTM_SETLINK, 0, &fixed);
        let info = m.begin(IFLA_PROTINFO);
        m.attr(IFLA_BRPORT_MODE, &[1]);
        m.end(info);
        self.request(|| format!("set hairpin mode on {name}"), m)
    }

    /// Deletes a link (a veth's peer goes with it); a missing one is fine.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Message::new(libc::RTM_DELLINK, 0, &ifinfo(0, 0, 0));
        m.name(IFLA_IFNAME, name);
        match self.request(|| format!("delete link {name}"), m) {
            Err(e) if e.not_found() => Ok(()),
            other => other,
        }
    }

    /// Adds `address/prefix` to a link; the same address again is fine.
    pub fn add_address(
        &mut self,
        link: &str,
        address: [u8; 4],
        net: Ipv4Net,
    ) -> Result<(), NetlinkError> {
        let index = self.index(link)?;
        let mut fixed = [0u8; IFADDR_LEN];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = net.prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWADDR, flags, &fixed);
        m.attr(IFA_LOCAL, &address);
        m.attr(IFA_ADDRESS, &address);
        let what = || format!("add {}/{} to {link}", dotted(address), net.prefix);
        match self.request(what, m) {
            Err(e) if e.already_exists() => Ok(()),
            other => other,
        }
    }

    /// Adds the default route through `gateway` on `link`.
    pub fn add_default_route(&mut self, link: &str, gateway: [u8; 4]) -> Result<(), NetlinkError> {
        let index = self.index(link)?;
        let mut fixed = [0u8; RTMSG_LEN];
        fixed[0] = libc::AF_INET as u8;
        fixed[4] = libc::RT_TABLE_MAIN;
        fixed[5] = libc::RTPROT_BOOT;
        fixed[6] = libc::RT_SCOPE_UNIVERSE;
        fixed[7] = libc::RTN_UNICAST;
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWROUTE, flags, &fixed);
        m.attr(RTA_GATEWAY, &gateway);
        m.attr(RTA_OIF, &index.to_ne_bytes());
        let what = || format!("add default route via {} on {link}", dotted(gateway));
        match self.request(what, m) {
            Err(e) if e.already_exists() => Ok(()),
            other => other,
        }
    }

    /// A link's index in this socket's namespace.
    fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        link_index(name).map_err(|source| NetlinkError {
            what: format!("find link {name}"),
            source,
        })
    }
}

/// The MAC address of an interface holding `address`: locally administered, derived from
/// the address as Docker does (02:42:a.b.c.d). A container that comes back on the same
/// address (an update) keeps its MAC, so neighbours' ARP caches stay right.
pub fn mac_for(address: [u8; 4]) -> [u8; 6] {
    let [a, b, c, d] = address;
    [0x02, 0x42, a, b, c, d]
}

/// `if_nametoindex` in the calling thread's namespace, which is the socket's: each socket
/// is used only from the thread (and so the namespace) it was opened in.
fn link_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

fn dotted(address: [u8; 4]) -> String {
    coracle_proto::network::DottedQuad(address).to_string()
}

/// The errno of the ack (`NLMSG_ERROR`) for `seq` in a reply, if it holds one: 0 for
/// success. Other messages (and acks of other requests) are skipped.
fn ack_for(mut reply: &[u8], seq: u32) -> Option<i32> {
    while reply.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(reply[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(reply[4..6].try_into().ok()?);
        let got_seq = u32::from_ne_bytes(reply[8..12].try_into().ok()?);
        if len < NLMSG_HDR || len > reply.len() {
            return None;
        }
        if kind == libc::NLMSG_ERROR as u16 && got_seq == seq && len >= NLMSG_HDR + 4 {
            let errno = i32::from_ne_bytes(reply[NLMSG_HDR..NLMSG_HDR + 4].try_into().ok()?);
            return Some(-errno);
        }
        let step = len.div_ceil(4) * 4;
        reply = reply.get(step..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_length_attributes_and_nesting() {
        let mut m = Message::new(libc::RTM_NEWLINK, 0, &ifinfo(0, 0, 0));
        m.name(IFLA_IFNAME, "br0");
        let info = m.begin(IFLA_LINKINFO);
        m.name(IFLA_INFO_KIND, "bridge");
        m.end(info);
        let bytes = m.finish(7);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        // ifname "br0\0": 4-byte header + 4 bytes.
        let at = NLMSG_HDR + IFINFO_LEN;
        assert_eq!(u16::from_ne_bytes([bytes[at], bytes[at + 1]]), 8);
        assert_eq!(&bytes[at + 4..at + 8], b"br0\0");
        // The nested linkinfo: header + (4 + "bridge\0" padded to 8) = 16 bytes.
        let nested = at + 8;
        assert_eq!(u16::from_ne_bytes([bytes[nested], bytes[nested + 1]]), 16);
        assert_eq!(
            u16::from_ne_bytes([bytes[nested + 2], bytes[nested + 3]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
    }

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut out = vec![0u8; NLMSG_HDR + 4 + NLMSG_HDR];
        let len = out.len() as u32;
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out[16..20].copy_from_slice(&(-errno).to_ne_bytes());
        out
    }

    #[test]
    fn acks_are_matched_by_sequence() {
        assert_eq!(ack_for(&ack(3, 0), 3), Some(0));
        assert_eq!(ack_for(&ack(3, libc::EEXIST), 3), Some(libc::EEXIST));
        assert_eq!(ack_for(&ack(2, 0), 3), None);
        let mut two = ack(2, 0);
        two.extend(ack(3, libc::ENODEV));
        assert_eq!(ack_for(&two, 3), Some(libc::ENODEV));
        assert_eq!(ack_for(&[1, 2, 3], 3), None);
        let mut short = ack(3, 0);
        short[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(ack_for(&short, 3), None);
    }
}
