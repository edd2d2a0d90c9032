//! The NIC trait the network backend (and the self-tests) use, and the few
//! Ethernet/ARP frames the self-test speaks.
//!
//! A NIC moves whole Ethernet frames (no FCS). Frames are copied in on
//! transmit and out on receive: the backend copies from and to granted pages
//! anyway, and the driver keeps its receive buffers posted.

use core::fmt;

/// Bytes in a MAC address.
pub type Mac = [u8; 6];
/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// Largest frame without FCS (1500-byte MTU + 14-byte header).
pub const MAX_FRAME: usize = 1514;
/// Shortest frame on the wire without FCS.
pub const MIN_FRAME: usize = 60;

/// Why a frame could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Every transmit buffer is in flight: reclaim and retry.
    Busy,
    /// Shorter than an Ethernet header or longer than [`MAX_FRAME`].
    BadLength,
    /// The device misbehaved.
    DeviceFault,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            NetError::Busy => "transmit queue full",
            NetError::BadLength => "bad frame length",
            NetError::DeviceFault => "device fault",
        };
        f.write_str(what)
    }
}

/// A network interface.
pub trait Nic {
    /// The interface's MAC address.
    fn mac(&self) -> Mac;
    /// Queues `frame` for transmission (copied).
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError>;
    /// Copies the next received frame into `buf` (truncated to it) and returns
    /// its full length; `None` when nothing arrived.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Whether a received frame waits for [`Nic::receive`] (nothing is
    /// consumed: a wait loop's condition).
    fn has_received(&self) -> bool;
    /// Takes back transmit buffers the device is done with; returns how many.
    fn reclaim(&mut self) -> usize;
}

/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// An ARP request "who has `target_ip`? tell `sender_ip`" from `mac`,
/// broadcast, padded to [`MIN_FRAME`].
pub fn arp_request(mac: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> [u8; MIN_FRAME] {
    let mut f = [0u8; MIN_FRAME];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&sender_ip);
    // target MAC stays zero
    f[38..42].copy_from_slice(&target_ip);
    f
}

/// If `frame` is an ARP reply to `mac` saying where `ip` is, that MAC.
pub fn arp_reply_from(frame: &[u8], mac: Mac, ip: [u8; 4]) -> Option<Mac> {
    if frame.len() < 42
        || frame[0..6] != mac
        || frame[12..14] != ETHERTYPE_ARP.to_be_bytes()
        || frame[20..22] != 2u16.to_be_bytes()
        || frame[28..32] != ip
        || frame[32..38] != mac
    {
        return None;
    }
    let mut sender = [0u8; 6];
    sender.copy_from_slice(&frame[22..28]);
    Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const GW: Mac = [0x52, 0x55, 10, 0, 2, 2];

    /// The reply a peer at `GW` sends to a request.
    fn reply_to(req: &[u8]) -> [u8; MIN_FRAME] {
        let mut r = [0u8; MIN_FRAME];
        r[0..6].copy_from_slice(&req[6..12]);
        r[6..12].copy_from_slice(&GW);
        r[12..22].copy_from_slice(&req[12..22]);
        r[20..22].copy_from_slice(&2u16.to_be_bytes());
        r[22..28].copy_from_slice(&GW);
        r[28..32].copy_from_slice(&req[38..42]);
        r[32..38].copy_from_slice(&req[22..28]);
        r[38..42].copy_from_slice(&req[28..32]);
        r
    }

    #[test]
    fn arp_round_trip() {
        let req = arp_request(ME, [10, 0, 2, 15], [10, 0, 2, 2]);
        assert_eq!(req[0..6], BROADCAST);
        let reply = reply_to(&req);
        assert_eq!(arp_reply_from(&reply, ME, [10, 0, 2, 2]), Some(GW));
        assert_eq!(arp_reply_from(&reply, ME, [10, 0, 2, 3]), None, "other ip");
        assert_eq!(
            arp_reply_from(&reply, GW, [10, 0, 2, 2]),
            None,
            "not for us"
        );
        assert_eq!(arp_reply_from(&req, ME, [10, 0, 2, 2]), None, "a request");
        assert_eq!(
            arp_reply_from(&reply[..41], ME, [10, 0, 2, 2]),
            None,
            "short"
        );
    }
}
