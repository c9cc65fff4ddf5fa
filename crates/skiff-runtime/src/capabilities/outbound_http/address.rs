//! Classes of IP addresses, for the outbound policy: the public internet; the host itself and
//! its link (loopback, unspecified, link-local, which holds the cloud metadata service at
//! 169.254.169.254); and everything else that is not public (private networks, carrier-grade
//! NAT, multicast, reserved ranges). IPv6 forms that embed an IPv4 address are judged by it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is the host itself or its link: loopback, unspecified (which connects to the
/// host), or link-local (cloud metadata lives there).
pub fn is_host_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_host_local_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_host_local_v4(v4),
            None if is_local_nat64(v6) => {
                local_nat64_candidates(v6).into_iter().any(is_host_local_v4)
            }
            None => v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local(),
        },
    }
}

fn is_host_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_link_local() || ip.octets()[0] == 0
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (b & 0b1100_0000) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24, IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 192.88.99.0/24, 6to4 relays (deprecated)
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || a >= 240; // 240.0.0.0/4, reserved
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || is_local_nat64(ip) // a translator of the operator's, to its own networks
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // 100::/64, discard-only
        || (first & 0xffc0) == 0xfec0 // fec0::/10, deprecated site-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x2001 && ip.segments()[1] == 0); // Teredo: tunnels to anywhere
    !special
}

/// `64:ff9b:1::/48`, NAT64 for local use (RFC 8215): it translates to whatever IPv4 networks
/// the operator's translator reaches, so it is never public.
fn is_local_nat64(ip: Ipv6Addr) -> bool {
    ip.segments()[..3] == [0x64, 0xff9b, 1]
}

/// Where a local-use NAT64 address may carry its IPv4 address: after a /48 prefix (RFC 6052:
/// bits 48..64 and 72..88) or, as most translators are set up, in the low 32 bits (then the
/// bits between are zero). Either one being the host or its link makes the address host-local.
fn local_nat64_candidates(ip: Ipv6Addr) -> [Ipv4Addr; 2] {
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if o[6..12].iter().all(|&b| b == 0) {
        return [low, low];
    }
    [Ipv4Addr::new(o[6], o[7], o[9], o[10]), low]
}

/// The IPv4 address inside an IPv6 form that routes to it: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(addr: &str) -> bool {
        is_public(addr.parse().unwrap())
    }

    #[test]
    fn the_internet_is_public() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(public(addr), "{addr}");
        }
    }

    #[test]
    fn loopback_private_link_local_and_metadata_are_not() {
        for addr in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::",
            "2001:db8::1",
            "2001::1",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            "192.88.99.1",
            "100::1",
        ] {
            assert!(!public(addr), "{addr}");
        }
    }

    #[test]
    fn host_local_is_loopback_unspecified_and_link_local() {
        let local = |addr: &str| is_host_local(addr.parse().unwrap());
        // Local-use NAT64 to the host or the metadata service, in either layout.
        assert!(local("64:ff9b:1::a9fe:a9fe"));
        assert!(local("64:ff9b:1:7f00:1:1::"));
        assert!(!local("64:ff9b:1::a00:1"));
        for addr in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(local(addr), "{addr}");
        }
        for addr in [
            "10.0.0.1",
            "192.168.1.1",
            "fd00::1",
            "8.8.8.8",
            "100.64.0.1",
        ] {
            assert!(!local(addr), "{addr}");
        }
    }

    #[test]
    fn embedded_public_v4_stays_public() {
        assert!(public("::ffff:8.8.8.8"));
        assert!(public("64:ff9b::808:808"));
        assert!(public("2002:0808:0808::1"));
    }

    #[test]
    fn neighbours_of_private_ranges_are_public() {
        for addr in [
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "11.0.0.1",
        ] {
            assert!(public(addr), "{addr}");
        }
    }
}
