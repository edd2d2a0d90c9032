//! An L2 learning bridge (SPEC.md NET-4) between the vifs and, with
//! `nic=virtio-net`, the physical NIC ([`UPLINK_PORT`]): it learns which
//! port each source MAC lives behind and forwards a unicast frame to that
//! port only; broadcast, multicast and unknown destinations are flooded to
//! every other port. Pure logic, host-tested; ports are numbers the caller
//! chooses (netback uses a vif's devbus record id).
//!
//! # Invariants
//! - The table holds at most [`MAX_ENTRIES`] addresses (the least recently
//!   seen is forgotten first), never a multicast one.
//! - A frame is never sent back out of the port it came in on.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// The bridge port of the physical NIC (devbus record ids, the vifs'
/// ports, never reach it).
pub const UPLINK_PORT: u32 = u32::MAX;

/// Addresses the bridge remembers.
pub const MAX_ENTRIES: usize = 256;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To this port only.
    To(u32),
    /// To every port but the one it came from.
    Flood,
    /// Nowhere (too short, or its destination is behind its own port).
    Drop,
}

/// The ports a flooded frame that came in on `in_port` goes to: every vif
/// port in `vifs` but `in_port`, then the uplink if there is one and the
/// frame did not come from it.
pub fn flood_targets(vifs: impl Iterator<Item = u32>, uplink: bool, in_port: u32) -> Vec<u32> {
    vifs.chain(uplink.then_some(UPLINK_PORT))
        .filter(|&p| p != in_port)
        .collect()
}

/// Whether a frame from the wire may enter the bridge: not when it is
/// shorter than a header, nor when its source MAC is one of the vifs'
/// (`vif_macs`), which would move that vif's entry to the uplink.
pub fn wire_frame_allowed<'a>(
    frame: &[u8],
    mut vif_macs: impl Iterator<Item = &'a [u8; 6]>,
) -> bool {
    match frame.get(6..12) {
        Some(src) if frame.len() >= 14 => !vif_macs.any(|m| m[..] == *src),
        _ => false,
    }
}

/// The learning table.
#[derive(Debug, Default)]
pub struct Bridge {
    table: BTreeMap<[u8; 6], (u32, u64)>,
    clock: u64,
}

fn mac_at(frame: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[at..at + 6]);
    mac
}

impl Bridge {
    pub fn new() -> Bridge {
        Bridge::default()
    }

    /// Learns the frame's source and says where it goes.
    pub fn forward(&mut self, in_port: u32, frame: &[u8]) -> Forward {
        if frame.len() < 14 {
            return Forward::Drop;
        }
        let (dst, src) = (mac_at(frame, 0), mac_at(frame, 6));
        self.clock += 1;
        if src[0] & 1 == 0 {
            if self.table.len() >= MAX_ENTRIES && !self.table.contains_key(&src) {
                let oldest = self
                    .table
                    .iter()
                    .min_by_key(|(_, &(_, seen))| seen)
                    .map(|(&mac, _)| mac);
                if let Some(mac) = oldest {
                    self.table.remove(&mac);
                }
            }
            self.table.insert(src, (in_port, self.clock));
        }
        if dst[0] & 1 != 0 {
            return Forward::Flood;
        }
        match self.table.get(&dst) {
            Some(&(port, _)) if port == in_port => Forward::Drop,
            Some(&(port, _)) => Forward::To(port),
            None => Forward::Flood,
        }
    }

    /// Forgets every address behind `port` (its vif went away).
    pub fn remove_port(&mut self, port: u32) {
        self.table.retain(|_, &mut (p, _)| p != port);
    }

    /// The port `mac` was last seen behind.
    #[cfg(test)]
    pub fn lookup(&self, mac: &[u8; 6]) -> Option<u32> {
        self.table.get(mac).map(|&(p, _)| p)
    }

    /// Addresses known.
    pub fn known_addresses(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> alloc::vec::Vec<u8> {
        let mut f = alloc::vec::Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_and_forwards() {
        let mut br = Bridge::new();
        assert_eq!(br.forward(1, &frame(B, A)), Forward::Flood, "B unknown yet");
        assert_eq!(br.forward(2, &frame(BCAST, B)), Forward::Flood);
        assert_eq!(br.forward(1, &frame(B, A)), Forward::To(2));
        assert_eq!(br.forward(2, &frame(A, B)), Forward::To(1));
        assert_eq!(br.forward(1, &frame(A, A)), Forward::Drop, "never back out");
        assert_eq!(br.forward(1, &[0u8; 10]), Forward::Drop);
        br.remove_port(2);
        assert_eq!(br.lookup(&B), None);
        assert_eq!(br.forward(1, &frame(B, A)), Forward::Flood);
    }

    #[test]
    fn the_uplink_is_one_more_port() {
        assert_eq!(
            flood_targets([1, 2, 3].into_iter(), true, 2),
            [1, 3, UPLINK_PORT]
        );
        assert_eq!(flood_targets([1, 2].into_iter(), true, UPLINK_PORT), [1, 2]);
        assert_eq!(flood_targets([1, 2].into_iter(), false, 1), [2]);
        // Learned behind the uplink: unicast goes out there only.
        let mut br = Bridge::new();
        let gw = [0x52, 0x55, 10, 0, 2, 2];
        assert_eq!(br.forward(UPLINK_PORT, &frame(BCAST, gw)), Forward::Flood);
        assert_eq!(br.forward(1, &frame(gw, A)), Forward::To(UPLINK_PORT));
        assert_eq!(br.forward(UPLINK_PORT, &frame(A, gw)), Forward::To(1));
        // The wire cannot claim a vif's address.
        let vifs = [A, B];
        assert!(wire_frame_allowed(&frame(A, gw), vifs.iter()));
        assert!(!wire_frame_allowed(&frame(gw, B), vifs.iter()));
        assert!(!wire_frame_allowed(&[0u8; 13], vifs.iter()));
    }

    proptest! {
        /// Flooding never sends a frame back where it came from, always
        /// reaches every other vif, and reaches the uplink exactly when
        /// there is one and the frame is not from it.
        #[test]
        fn flood_targets_are_every_other_port(
            vifs in proptest::collection::btree_set(1u32..50, 0..10),
            uplink in any::<bool>(),
            from_uplink in any::<bool>(),
            pick in any::<u32>(),
        ) {
            let list: Vec<u32> = vifs.iter().copied().collect();
            let in_port = if from_uplink || list.is_empty() {
                UPLINK_PORT
            } else {
                list[pick as usize % list.len()]
            };
            let targets = flood_targets(list.iter().copied(), uplink, in_port);
            prop_assert!(!targets.contains(&in_port));
            for v in &list {
                prop_assert_eq!(targets.contains(v), *v != in_port);
            }
            prop_assert_eq!(targets.contains(&UPLINK_PORT), uplink && in_port != UPLINK_PORT);
        }

        /// NET-4: whatever frames arrive, the table stays bounded, holds no
        /// multicast source, and a frame never goes back where it came from.
        #[test]
        fn random_traffic_keeps_the_invariants(
            frames in proptest::collection::vec((0u32..6, any::<[u8; 6]>(), 0u8..40, any::<bool>()), 1..600)
        ) {
            let mut br = Bridge::new();
            for (port, dst, src_low, multicast_src) in frames {
                let src = [if multicast_src { 1 } else { 2 }, 0, 0, 0, 0, src_low];
                match br.forward(port, &frame(dst, src)) {
                    Forward::To(p) => prop_assert_ne!(p, port),
                    Forward::Flood | Forward::Drop => {}
                }
                prop_assert!(br.known_addresses() <= MAX_ENTRIES);
                if !multicast_src {
                    prop_assert_eq!(br.lookup(&src), Some(port));
                }
                prop_assert!(br.table.keys().all(|m| m[0] & 1 == 0));
            }
        }
    }
}
